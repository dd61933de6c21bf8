/* Host program run by dataplane/build.rs: prints Rust assertions comparing
 * the layout of every ABI struct in corral_abi.h with its Rust mirror. */
#include <stddef.h>
#include <stdio.h>
#include "corral_abi.h"

#define S(C, R) \
	printf("assert_eq!(core::mem::size_of::<%s>(), %zu, \"size of %s vs struct %s\");\n", #R, sizeof(struct C), #R, #C); \
	printf("assert_eq!(core::mem::align_of::<%s>(), %zu, \"align of %s vs struct %s\");\n", #R, _Alignof(struct C), #R, #C)
#define F(C, R, cf, rf) \
	printf("assert_eq!(core::mem::offset_of!(%s, %s), %zu, \"offset of %s.%s vs %s.%s\");\n", #R, #rf, offsetof(struct C, cf), #R, #rf, #C, #cf)
#define K(C, R) printf("assert_eq!(%s as u64, %llu, \"constant %s\");\n", #R, (unsigned long long)(C), #C)

int main(void)
{
	S(corral_limit, Limit);
	F(corral_limit, Limit, rate_bytes_per_sec, rate_bytes_per_sec);
	F(corral_limit, Limit, burst_bytes, burst_bytes);

	S(corral_endpoint_cfg, EndpointCfg);
	F(corral_endpoint_cfg, EndpointCfg, endpoint_id, endpoint_id);
	F(corral_endpoint_cfg, EndpointCfg, flags, flags);
	F(corral_endpoint_cfg, EndpointCfg, class_id, class_id);
	F(corral_endpoint_cfg, EndpointCfg, dscp, dscp);
	F(corral_endpoint_cfg, EndpointCfg, limits, limits);

	S(corral_ep_dir_key, EpDirKey);
	F(corral_ep_dir_key, EpDirKey, ifindex, ifindex);
	F(corral_ep_dir_key, EpDirKey, dir, dir);

	S(corral_bucket, Bucket);
	F(corral_bucket, Bucket, tokens, tokens);
	F(corral_bucket, Bucket, last_ns, last_ns);

	S(corral_counters, Counters);
	F(corral_counters, Counters, packets, packets);
	F(corral_counters, Counters, bytes, bytes);
	F(corral_counters, Counters, drop_policy, drop_policy);
	F(corral_counters, Counters, drop_rate, drop_rate);
	F(corral_counters, Counters, drop_class, drop_class);
	F(corral_counters, Counters, drop_malformed, drop_malformed);

	S(corral_node_cfg, NodeCfg);
	F(corral_node_cfg, NodeCfg, rate_bytes_per_sec, rate_bytes_per_sec);
	F(corral_node_cfg, NodeCfg, burst_bytes, burst_bytes);
	F(corral_node_cfg, NodeCfg, min_share_permille, min_share_permille);
	F(corral_node_cfg, NodeCfg, reserve_permille, reserve_permille);
	F(corral_node_cfg, NodeCfg, dscp, dscp);

	S(corral_policy_key, PolicyKey);
	F(corral_policy_key, PolicyKey, prefixlen, prefixlen);
	F(corral_policy_key, PolicyKey, ifindex, ifindex);
	F(corral_policy_key, PolicyKey, dir, dir);
	F(corral_policy_key, PolicyKey, addr, addr);

	S(corral_port_range, PortRange);
	F(corral_port_range, PortRange, proto, proto);
	F(corral_port_range, PortRange, port_lo, port_lo);
	F(corral_port_range, PortRange, port_hi, port_hi);

	S(corral_policy_value, PolicyValue);
	F(corral_policy_value, PolicyValue, flags, flags);
	F(corral_policy_value, PolicyValue, nranges, nranges);
	F(corral_policy_value, PolicyValue, ranges, ranges);

	S(corral_ct_key, CtKey);
	F(corral_ct_key, CtKey, ifindex, ifindex);
	F(corral_ct_key, CtKey, dir, dir);
	F(corral_ct_key, CtKey, proto, proto);
	F(corral_ct_key, CtKey, saddr, saddr);
	F(corral_ct_key, CtKey, daddr, daddr);
	F(corral_ct_key, CtKey, sport, sport);
	F(corral_ct_key, CtKey, dport, dport);

	S(corral_ct_value, CtValue);
	F(corral_ct_value, CtValue, last_seen_ns, last_seen_ns);
	F(corral_ct_value, CtValue, state, state);

	S(corral_svc_key, SvcKey);
	F(corral_svc_key, SvcKey, addr, addr);
	F(corral_svc_key, SvcKey, port, port);
	F(corral_svc_key, SvcKey, proto, proto);

	S(corral_svc_value, SvcValue);
	F(corral_svc_value, SvcValue, flags, flags);

	S(corral_lb_svc, LbSvc);
	F(corral_lb_svc, LbSvc, svc_id, svc_id);
	F(corral_lb_svc, LbSvc, count, count);
	F(corral_lb_svc, LbSvc, affinity_s, affinity_s);
	F(corral_lb_svc, LbSvc, flags, flags);
	F(corral_lb_svc, LbSvc, local_count, local_count);

	S(corral_lb_be_key, LbBeKey);
	F(corral_lb_be_key, LbBeKey, svc_id, svc_id);
	F(corral_lb_be_key, LbBeKey, index, index);

	S(corral_lb_be, LbBe);
	F(corral_lb_be, LbBe, addr, addr);
	F(corral_lb_be, LbBe, port, port);

	S(lb_nat_key, LbNatKey);
	F(lb_nat_key, LbNatKey, saddr, saddr);
	F(lb_nat_key, LbNatKey, daddr, daddr);
	F(lb_nat_key, LbNatKey, sport, sport);
	F(lb_nat_key, LbNatKey, dport, dport);
	F(lb_nat_key, LbNatKey, proto, proto);

	S(lb_nat_value, LbNatValue);
	F(lb_nat_value, LbNatValue, addr, addr);
	F(lb_nat_value, LbNatValue, port, port);
	F(lb_nat_value, LbNatValue, seen_ns, seen_ns);

	S(corral_defer_key, DeferKey);
	F(corral_defer_key, DeferKey, saddr, saddr);
	F(corral_defer_key, DeferKey, sport, sport);
	F(corral_defer_key, DeferKey, proto, proto);

	S(corral_defer_value, DeferValue);
	F(corral_defer_value, DeferValue, ifindex, ifindex);
	F(corral_defer_value, DeferValue, vport, vport);
	F(corral_defer_value, DeferValue, vaddr, vaddr);

	K(CORRAL_MARK_DEFER, MARK_DEFER);
	K(CORRAL_LB_NODEPORT, LB_NODEPORT);
	K(CORRAL_LB_ETP_LOCAL, LB_ETP_LOCAL);
	K(CORRAL_LB_EXTERNAL, LB_EXTERNAL);
	K(CORRAL_LB_ON, LB_ON);
	K(CORRAL_LB_HAS_NODEPORTS, LB_HAS_NODEPORTS);

	S(corral_tier_range, TierRange);
	F(corral_tier_range, TierRange, proto, proto);
	F(corral_tier_range, TierRange, verdict, verdict);
	F(corral_tier_range, TierRange, port_lo, port_lo);
	F(corral_tier_range, TierRange, port_hi, port_hi);
	F(corral_tier_range, TierRange, rule, rule);

	S(corral_tier_value, TierValue);
	F(corral_tier_value, TierValue, default_verdict, default_verdict);
	F(corral_tier_value, TierValue, default_rule, default_rule);
	F(corral_tier_value, TierValue, nranges, nranges);
	F(corral_tier_value, TierValue, ranges, ranges);

	S(corral_drop_event, DropEvent);
	F(corral_drop_event, DropEvent, time_ns, time_ns);
	F(corral_drop_event, DropEvent, ifindex, ifindex);
	F(corral_drop_event, DropEvent, len, len);
	F(corral_drop_event, DropEvent, dir, dir);
	F(corral_drop_event, DropEvent, reason, reason);
	F(corral_drop_event, DropEvent, proto, proto);
	F(corral_drop_event, DropEvent, rule, rule);
	F(corral_drop_event, DropEvent, sport, sport);
	F(corral_drop_event, DropEvent, dport, dport);
	F(corral_drop_event, DropEvent, saddr, saddr);
	F(corral_drop_event, DropEvent, daddr, daddr);

	K(CORRAL_DIR_INGRESS, DIR_INGRESS);
	K(CORRAL_DIR_EGRESS, DIR_EGRESS);
	K(CORRAL_NUM_CLASSES, NUM_CLASSES);
	K(CORRAL_EP_POLICY_INGRESS, EP_POLICY_INGRESS);
	K(CORRAL_EP_POLICY_EGRESS, EP_POLICY_EGRESS);
	K(CORRAL_EP_DSCP, EP_DSCP);
	K(CORRAL_MAX_PORT_RANGES, MAX_PORT_RANGES);
	K(CORRAL_PV_ALL_PORTS, PV_ALL_PORTS);
	K(CORRAL_CT_ESTABLISHED, CT_ESTABLISHED);
	K(CORRAL_EP_TIER_INGRESS, EP_TIER_INGRESS);
	K(CORRAL_EP_TIER_EGRESS, EP_TIER_EGRESS);
	K(CORRAL_MAX_TIER_RANGES, MAX_TIER_RANGES);
	K(CORRAL_VERDICT_ALLOW, VERDICT_ALLOW);
	K(CORRAL_VERDICT_DENY, VERDICT_DENY);
	K(CORRAL_RULE_NP, RULE_NP);
	K(CORRAL_DROP_POLICY, DROP_POLICY);
	K(CORRAL_DROP_RATE, DROP_RATE);
	K(CORRAL_DROP_CLASS, DROP_CLASS);
	K(CORRAL_DROP_MALFORMED, DROP_MALFORMED);
	return 0;
}
