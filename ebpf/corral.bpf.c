// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Corral TC programs, attached to the HOST side of each pod veth:
 *   corral_from_pod: host ingress = pod EGRESS
 *   corral_to_pod:   host egress  = pod INGRESS
 * Per packet: parse -> conntrack/policy -> per-endpoint token bucket ->
 * node class budget -> optional DSCP mark -> counters.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "corral_abi.h"
#include "corral_pkt.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define MAX_ENDPOINTS 16384
#define CT_TIMEOUT_NEW_NS (60ULL * 1000000000ULL)
#define CT_TIMEOUT_EST_NS (6ULL * 3600ULL * 1000000000ULL)
#define CT_TIMEOUT_CLOSING_NS (10ULL * 1000000000ULL)
#define CT_TIMEOUT_UDP_NS (120ULL * 1000000000ULL)
/* conntrack timestamps are refreshed at most this often */
#define CT_REFRESH_NS 1000000000ULL
/* Refill at most this much elapsed time at once, keeps elapsed*rate in u64
 * for rates up to 4.6e9 B/s (agent validates the rate). */
#define MAX_ELAPSED_NS 4000000000ULL

enum drop_reason {
	DROP_NONE = 0,
	DROP_POLICY,
	DROP_RATE,
	DROP_CLASS,
	DROP_MALFORMED,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct corral_endpoint_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENDPOINTS * CORRAL_NUM_DIRS);
	__type(key, struct corral_ep_dir_key);
	__type(value, struct corral_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_ep_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_ENDPOINTS * CORRAL_NUM_DIRS);
	__type(key, struct corral_ep_dir_key);
	__type(value, struct corral_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CORRAL_NUM_DIRS);
	__type(key, __u32);
	__type(value, struct corral_node_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_node_cfg SEC(".maps");

/* index dir * (CORRAL_NUM_CLASSES + 1) + class; class CORRAL_NUM_CLASSES is
 * the shared node bucket. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CORRAL_NUM_DIRS * (CORRAL_NUM_CLASSES + 1));
	__type(key, __u32);
	__type(value, struct corral_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_class_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__type(key, struct corral_policy_key);
	__type(value, struct corral_policy_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct corral_ct_key);
	__type(value, struct corral_ct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_ct SEC(".maps");

/* struct corral_frag_key: corral_pkt.h */

struct corral_frag_value {
	__u16 sport;
	__u16 dport;
	/* Service translation of the datagram (its first fragment's), applied
	 * to the later fragments: FRAG_NAT_DST the destination (client side,
	 * to the backend), FRAG_NAT_SRC the source (the reply, back to the
	 * frontend); nat_port is the translated port, for policy/conntrack */
	__u16 nat_port;
	__u8 nat;
	__u8 pad;
	__u8 nat_addr[16];
	__u64 seen_ns;
};

#define FRAG_NAT_DST 1
#define FRAG_NAT_SRC 2

#define FRAG_TIMEOUT_NS (30ULL * 1000000000ULL)

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct corral_frag_key);
	__type(value, struct corral_frag_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_frag SEC(".maps");

/* Refill and try to take len tokens. floor: lowest value tokens may reach
 * after taking (0 for plain policing, negative for debt). reserve: tokens
 * that must stay in the bucket for the packet to pass. */
static __always_inline int bucket_take(struct corral_bucket *b, __u64 now,
				       __u64 rate, __u64 burst, __u64 len,
				       __s64 reserve, int force)
{
	int ok = 0;
	__u64 elapsed;

	bpf_spin_lock(&b->lock);
	elapsed = now > b->last_ns ? now - b->last_ns : 0;
	if (elapsed > MAX_ELAPSED_NS)
		elapsed = MAX_ELAPSED_NS;
	if (elapsed > 0) {
		__s64 add = (__s64)(elapsed * rate / 1000000000ULL);
		/* only advance time by what produced whole tokens */
		if (add > 0 || elapsed == MAX_ELAPSED_NS) {
			b->tokens += add;
			b->last_ns = now;
		}
		if (b->tokens > (__s64)burst)
			b->tokens = (__s64)burst;
	}
	if (force) {
		b->tokens -= (__s64)len;
		if (b->tokens < -(__s64)burst)
			b->tokens = -(__s64)burst;
		ok = 1;
	} else if (b->tokens - (__s64)len >= reserve) {
		b->tokens -= (__s64)len;
		ok = 1;
	}
	bpf_spin_unlock(&b->lock);
	return ok;
}

static __always_inline int ports_allowed(struct corral_policy_value *v, struct pkt *p)
{
	if (v->flags & CORRAL_PV_ALL_PORTS)
		return 1;
#pragma clang loop unroll(full)
	for (int i = 0; i < CORRAL_MAX_PORT_RANGES; i++) {
		if ((__u32)i >= v->nranges)
			break;
		struct corral_port_range *r = &v->ranges[i];
		if (r->proto == p->proto && p->dport >= r->port_lo && p->dport <= r->port_hi)
			return 1;
	}
	return 0;
}

static __always_inline int policy_allows(__u32 ifindex, __u32 dir, struct pkt *p)
{
	struct corral_policy_key k = {};
	struct corral_policy_value *v;

	k.prefixlen = 64 + 128;
	k.ifindex = ifindex;
	k.dir = dir;
	/* peer: source for pod ingress, destination for pod egress */
	if (dir == CORRAL_DIR_INGRESS)
		__builtin_memcpy(k.addr, p->saddr, 16);
	else
		__builtin_memcpy(k.addr, p->daddr, 16);
	v = bpf_map_lookup_elem(&corral_policy, &k);
	if (!v)
		return 0;
	return ports_allowed(v, p);
}

/* ---- Policy tiers (see corral_abi.h): one LPM lookup and a bounded
 * scan of disjoint port ranges, whatever the number of rules. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__type(key, struct corral_policy_key);
	__type(value, struct corral_tier_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_tier SEC(".maps");

static __always_inline int tier_allows(__u32 ifindex, __u32 dir, struct pkt *p)
{
	struct corral_policy_key k = {};
	struct corral_tier_value *v;
	int has_ports = p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP ||
			p->proto == IPPROTO_SCTP;

	k.prefixlen = 64 + 128;
	k.ifindex = ifindex;
	k.dir = dir;
	if (dir == CORRAL_DIR_INGRESS)
		__builtin_memcpy(k.addr, p->saddr, 16);
	else
		__builtin_memcpy(k.addr, p->daddr, 16);
	v = bpf_map_lookup_elem(&corral_tier, &k);
	if (!v)
		return 0; /* the agent always writes a ::/0 entry: fail closed */
	if (has_ports) {
#pragma clang loop unroll(full)
		for (int i = 0; i < CORRAL_MAX_TIER_RANGES; i++) {
			if ((__u32)i >= v->nranges)
				break;
			struct corral_tier_range *r = &v->ranges[i];
			if (r->proto == p->proto && p->dport >= r->port_lo && p->dport <= r->port_hi) {
				p->rule = r->rule;
				return r->verdict == CORRAL_VERDICT_ALLOW;
			}
		}
	}
	p->rule = v->default_rule;
	return v->default_verdict == CORRAL_VERDICT_ALLOW;
}

/* Verdict of a new flow for an isolated direction: tiers or NetworkPolicy. */
static __always_inline int flow_allowed(struct corral_endpoint_cfg *cfg, __u32 ifindex,
					__u32 dir, struct pkt *p)
{
	__u32 tier = dir == CORRAL_DIR_INGRESS ? CORRAL_EP_TIER_INGRESS : CORRAL_EP_TIER_EGRESS;
	if (cfg->flags & tier)
		return tier_allows(ifindex, dir, p);
	p->rule = CORRAL_RULE_NP;
	return policy_allows(ifindex, dir, p);
}

static __always_inline void ct_fill(struct corral_ct_key *k, __u32 ifindex, __u32 dir,
				    struct pkt *p, int reverse)
{
	k->ifindex = ifindex;
	k->dir = dir;
	k->proto = p->proto;
	if (!reverse) {
		__builtin_memcpy(k->saddr, p->saddr, 16);
		__builtin_memcpy(k->daddr, p->daddr, 16);
		k->sport = p->sport;
		k->dport = p->dport;
	} else {
		__builtin_memcpy(k->saddr, p->daddr, 16);
		__builtin_memcpy(k->daddr, p->saddr, 16);
		k->sport = p->dport;
		k->dport = p->sport;
	}
}

static __always_inline int ct_live(struct corral_ct_value *v, __u8 proto, __u64 now)
{
	__u64 timeout;
	if (proto != IPPROTO_TCP)
		timeout = CT_TIMEOUT_UDP_NS;
	else if (v->state == CORRAL_CT_ESTABLISHED)
		timeout = CT_TIMEOUT_EST_NS;
	else if (v->state == CORRAL_CT_CLOSING)
		timeout = CT_TIMEOUT_CLOSING_NS;
	else
		timeout = CT_TIMEOUT_NEW_NS;
	return now - v->last_seen_ns < timeout;
}

/* Writes the entry only when something changes: the state, or the
 * timestamp by at least CT_REFRESH_NS (timeouts are >= 10 s, so 1 s
 * granularity is harmless). An established flow thus dirties its entry's
 * cache line once a second instead of on every packet. */
static __always_inline void ct_touch(struct corral_ct_value *v, struct pkt *p, int is_reply,
				     __u64 now)
{
	if (now - v->last_seen_ns >= CT_REFRESH_NS)
		v->last_seen_ns = now;
	if (p->proto != IPPROTO_TCP)
		return;
	if (p->tcp_flags & 5) { /* FIN or RST */
		if (v->state != CORRAL_CT_CLOSING)
			v->state = CORRAL_CT_CLOSING;
	} else if (is_reply && v->state == CORRAL_CT_NEW) {
		v->state = CORRAL_CT_ESTABLISHED;
	}
}

/* Returns 1 if the packet passes connection tracking + policy. */
static __attribute__((noinline)) int check_policy(struct corral_endpoint_cfg *cfg, __u32 ifindex,
					__u32 dir, struct pkt *p, __u64 *nowp)
{
	__u32 any = CORRAL_EP_POLICY_INGRESS | CORRAL_EP_POLICY_EGRESS;
	__u32 mine = dir == CORRAL_DIR_INGRESS ? CORRAL_EP_POLICY_INGRESS : CORRAL_EP_POLICY_EGRESS;
	struct corral_ct_key k = {};
	struct corral_ct_value *v;

	__u64 now;

	if (!(cfg->flags & any) || !p->has_l3 || p->is_nd)
		return 1;
	now = clock_ns(nowp);
	/* reply of a flow first seen in the other direction */
	ct_fill(&k, ifindex, dir ^ 1, p, 1);
	v = bpf_map_lookup_elem(&corral_ct, &k);
	if (v && ct_live(v, p->proto, now)) {
		ct_touch(v, p, 1, now);
		return 1;
	}
	/* packet of a flow already admitted in this direction */
	ct_fill(&k, ifindex, dir, p, 0);
	v = bpf_map_lookup_elem(&corral_ct, &k);
	if (v && ct_live(v, p->proto, now)) {
		ct_touch(v, p, 0, now);
		return 1;
	}
	if ((cfg->flags & mine) && !flow_allowed(cfg, ifindex, dir, p))
		return 0;
	{
		struct corral_ct_value nv = {};
		nv.last_seen_ns = now;
		nv.state = CORRAL_CT_NEW;
		bpf_map_update_elem(&corral_ct, &k, &nv, BPF_ANY);
	}
	return 1;
}

static __attribute__((noinline)) int class_budget(struct corral_endpoint_cfg *cfg, __u32 dir, __u64 len,
					__u64 *nowp)
{
	__u32 d = dir;
	struct corral_node_cfg *nc = bpf_map_lookup_elem(&corral_node_cfg, &d);
	__u32 cls = cfg->class_id;
	struct corral_bucket *own, *shared;
	__u32 idx;
	__u64 now;

	if (!nc || nc->rate_bytes_per_sec == 0)
		return 1;
	now = clock_ns(nowp);
	if (cls >= CORRAL_NUM_CLASSES)
		cls = CORRAL_CLASS_STANDARD;
	idx = dir * (CORRAL_NUM_CLASSES + 1) + CORRAL_NUM_CLASSES;
	shared = bpf_map_lookup_elem(&corral_class_buckets, &idx);
	idx = dir * (CORRAL_NUM_CLASSES + 1) + cls;
	own = bpf_map_lookup_elem(&corral_class_buckets, &idx);
	if (!shared || !own)
		return 1;
	{
		__u64 share = nc->min_share_permille[cls];
		__u64 own_rate = nc->rate_bytes_per_sec * share / 1000;
		__u64 own_burst = nc->burst_bytes * share / 1000;
		if (own_rate > 0 && bucket_take(own, now, own_rate, own_burst, len, 0, 0)) {
			/* guaranteed share: also charge the shared bucket (may go
			 * into debt) so the node total stays within the budget */
			bucket_take(shared, now, nc->rate_bytes_per_sec, nc->burst_bytes, len, 0, 1);
			return 1;
		}
	}
	{
		__s64 reserve = (__s64)(nc->burst_bytes * nc->reserve_permille[cls] / 1000);
		return bucket_take(shared, now, nc->rate_bytes_per_sec, nc->burst_bytes, len,
				   reserve, 0);
	}
}

static __always_inline void mark_dscp(struct __sk_buff *skb, struct pkt *p, __u8 dscp)
{
	if (!p->has_l3)
		return;
	if (!p->is_v6) {
		__u8 tos;
		__u32 off = p->l3_off + 1;
		if (bpf_skb_load_bytes(skb, off, &tos, 1) < 0)
			return;
		__u8 ntos = (dscp << 2) | (tos & 3);
		if (ntos == tos)
			return;
		bpf_l3_csum_replace(skb, p->l3_off + 10, bpf_htons(tos), bpf_htons(ntos), 2);
		bpf_skb_store_bytes(skb, off, &ntos, 1, 0);
	} else {
		__u16 w;
		if (bpf_skb_load_bytes(skb, p->l3_off, &w, 2) < 0)
			return;
		__u16 h = bpf_ntohs(w);
		h = (h & 0xf03f) | ((__u16)dscp << 6);
		w = bpf_htons(h);
		bpf_skb_store_bytes(skb, p->l3_off, &w, 2, 0);
	}
}

/* First fragment: remember its ports. Later fragment: take them from the
 * first one (if it was seen; otherwise the ports stay 0 and only rules
 * without port restriction can admit it). */
static __attribute__((noinline)) void frag_ports(__u32 ifindex, struct pkt *p, __u64 now)
{
	struct corral_frag_key k = {};
	struct corral_frag_value *v;

	frag_key(&k, ifindex, p);
	if (p->frag == 1) {
		struct corral_frag_value nv = {};
		nv.sport = p->sport;
		nv.dport = p->dport;
		nv.seen_ns = now;
		bpf_map_update_elem(&corral_frag, &k, &nv, BPF_ANY);
		return;
	}
	v = bpf_map_lookup_elem(&corral_frag, &k);
	if (v && now - v->seen_ns < FRAG_TIMEOUT_NS) {
		p->sport = v->sport;
		p->dport = v->dport;
	}
}

/* ---- Drop events (see corral_abi.h): only on the drop path. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_monitor SEC(".maps");

/* events that did not fit in corral_events (per CPU, summed by the agent) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_events_lost SEC(".maps");

static __always_inline void emit_drop(__u32 ifindex, __u32 dir, struct pkt *p, int reason,
				      __u64 len, __u64 *nowp)
{
	__u32 zero = 0;
	__u32 *on = bpf_map_lookup_elem(&corral_monitor, &zero);
	struct corral_drop_event *e;

	if (!on || !*on)
		return;
	e = bpf_ringbuf_reserve(&corral_events, sizeof(*e), 0);
	if (!e) {
		/* consumer behind: the event is lost (counted), the drop stands */
		__u64 *lost = bpf_map_lookup_elem(&corral_events_lost, &zero);

		if (lost)
			*lost += 1;
		return;
	}
	e->time_ns = clock_ns(nowp);
	e->ifindex = ifindex;
	e->len = (__u32)len;
	e->dir = (__u8)dir;
	e->reason = (__u8)reason;
	e->proto = p->proto;
	e->pad = 0;
	e->rule = reason == DROP_POLICY ? p->rule : 0;
	e->sport = p->sport;
	e->dport = p->dport;
	__builtin_memset(e->pad2, 0, sizeof(e->pad2));
	__builtin_memcpy(e->saddr, p->saddr, 16);
	__builtin_memcpy(e->daddr, p->daddr, 16);
	bpf_ringbuf_submit(e, 0);
}

/* ---- deferred egress (Services behind a DNAT, issue 16) ----------------
 * A pod's packet to a Service frontend (map corral_svc) is not translated
 * yet at the pod's veth when kube-proxy (or any DNAT) runs in the node's
 * PREROUTING. Deciding the pod's egress policy on the frontend address would
 * match rules written for backend pods against the ClusterIP. So a new flow
 * to a frontend from an egress-isolated pod is let through here, marked
 * (CORRAL_MARK_DEFER) and recorded by its source (address, port, protocol:
 * the DNAT keeps them); where the translated packet leaves the node's
 * routing — the destination pod's veth (corral_to_pod) or an uplink /
 * overlay device (corral_node_out) — the source pod's egress policy is
 * evaluated on the real backend address and port. Allowed: the flow enters
 * the source's conntrack under the frontend tuple, so its later packets
 * and the (un-DNATed) replies pass the source's veth the normal way.
 * Denied: dropped, counted as the source's egress policy drop. A marked
 * packet without a record is dropped (fail closed). */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct corral_svc_key);
	__type(value, struct corral_svc_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct corral_defer_key);
	__type(value, struct corral_defer_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_defer SEC(".maps");

/* An egress-isolated pod's packet to a Service frontend: 1 when its
 * verdict is deferred (marked and recorded). Not inlined: its keys stay
 * off the calling program's stack frame. */
static __attribute__((noinline)) int egress_defer_svc(struct __sk_buff *skb, struct pkt *p,
						      __u64 *nowp)
{
	__u32 ifindex = skb->ifindex;
	__u32 dir = CORRAL_DIR_EGRESS;
	struct corral_svc_key sk = {};
	struct corral_ct_key ck = {};
	struct corral_ct_value *cv;

	__builtin_memcpy(sk.addr, p->daddr, 16);
	sk.port = p->dport;
	sk.proto = p->proto;
	if (!bpf_map_lookup_elem(&corral_svc, &sk))
		return 0;
	/* an admitted flow (or a reply) goes the normal conntrack way */
	ct_fill(&ck, ifindex, dir, p, 0);
	cv = bpf_map_lookup_elem(&corral_ct, &ck);
	if (cv && ct_live(cv, p->proto, clock_ns(nowp)))
		return 0;
	ct_fill(&ck, ifindex, dir ^ 1, p, 1);
	cv = bpf_map_lookup_elem(&corral_ct, &ck);
	if (cv && ct_live(cv, p->proto, clock_ns(nowp)))
		return 0;
	{
		struct corral_defer_key dk = {};
		struct corral_defer_value dv = {};
		__builtin_memcpy(dk.saddr, p->saddr, 16);
		dk.sport = p->sport;
		dk.proto = p->proto;
		dv.ifindex = ifindex;
		dv.vport = p->dport;
		__builtin_memcpy(dv.vaddr, p->daddr, 16);
		if (bpf_map_update_elem(&corral_defer, &dk, &dv, BPF_ANY))
			return 0; /* cannot defer: decide here */
	}
	skb->mark |= CORRAL_MARK_DEFER;
	return 1;
}

/* 1 when this packet's egress verdict is deferred (marked and recorded). */
static __always_inline int egress_defer(struct corral_endpoint_cfg *cfg, __u32 ifindex,
					__u32 dir, struct __sk_buff *skb, struct pkt *p,
					__u64 *nowp)
{
	if (dir != CORRAL_DIR_EGRESS || !(cfg->flags & CORRAL_EP_POLICY_EGRESS) || !p->has_l3 ||
	    p->is_nd)
		return 0;
	return egress_defer_svc(skb, p, nowp);
}

/* Verdict on a packet marked by egress_defer, after the DNAT: TC_ACT_SHOT
 * or TC_ACT_UNSPEC (go on). */
static __always_inline int deferred_verdict(struct __sk_buff *skb)
{
	struct corral_defer_key dk = {};
	struct corral_defer_value *dv;
	struct corral_endpoint_cfg *scfg;
	struct pkt p = {};
	__u64 now = 0;
	__u32 src;

	if (!(skb->mark & CORRAL_MARK_DEFER))
		return TC_ACT_UNSPEC;
	skb->mark &= ~CORRAL_MARK_DEFER;
	if (parse(skb, &p) < 0 || !p.has_l3)
		return TC_ACT_SHOT;
	/* the DNAT reassembled and re-fragmented the datagram (the mark is
	 * copied to every fragment): later fragments get their ports from
	 * the first one, as at the pod's veth */
	if (p.frag)
		frag_ports(skb->ifindex, &p, clock_ns(&now));
	__builtin_memcpy(dk.saddr, p.saddr, 16);
	dk.sport = p.sport;
	dk.proto = p.proto;
	dv = bpf_map_lookup_elem(&corral_defer, &dk);
	if (!dv)
		return TC_ACT_SHOT;
	src = dv->ifindex;
	scfg = bpf_map_lookup_elem(&corral_endpoints, &src);
	if (!scfg)
		return TC_ACT_SHOT; /* the source pod is gone */
	if ((scfg->flags & CORRAL_EP_POLICY_EGRESS) &&
	    !flow_allowed(scfg, src, CORRAL_DIR_EGRESS, &p)) {
		struct corral_ep_dir_key key = {.ifindex = src, .dir = CORRAL_DIR_EGRESS};
		struct corral_counters *c = bpf_map_lookup_elem(&corral_counters, &key);
		if (c)
			c->drop_policy++;
		emit_drop(src, CORRAL_DIR_EGRESS, &p, DROP_POLICY, skb->len, &now);
		return TC_ACT_SHOT;
	}
	{
		/* admitted under the frontend tuple the source pod sees */
		struct corral_ct_key ck = {};
		struct corral_ct_value nv = {};
		ck.ifindex = src;
		ck.dir = CORRAL_DIR_EGRESS;
		ck.proto = p.proto;
		__builtin_memcpy(ck.saddr, p.saddr, 16);
		__builtin_memcpy(ck.daddr, dv->vaddr, 16);
		ck.sport = p.sport;
		ck.dport = dv->vport;
		nv.last_seen_ns = clock_ns(&now);
		nv.state = CORRAL_CT_NEW;
		bpf_map_update_elem(&corral_ct, &ck, &nv, BPF_ANY);
	}
	return TC_ACT_UNSPEC;
}

#include "corral_lb.h"

static __always_inline int handle(struct __sk_buff *skb, __u32 dir)
{
	__u32 ifindex = skb->ifindex;
	struct corral_endpoint_cfg *cfg = bpf_map_lookup_elem(&corral_endpoints, &ifindex);
	struct corral_ep_dir_key key = {.ifindex = ifindex, .dir = dir};
	struct corral_counters *c;
	struct pkt p = {};
	__u64 len = skb->len;
	__u64 now = 0; /* read lazily, see clock_ns() */
	int reason = DROP_NONE;
	__u32 lb = 0;
	int redir = 0;
	int hp = 0; /* hairpin: 1 the pod's flow to itself, 2 its answer */

	if (!cfg)
		return TC_ACT_UNSPEC; /* not ours: let other programs decide */
	if (parse(skb, &p) < 0) {
		reason = DROP_MALFORMED;
		goto out;
	}
	if (p.frag)
		frag_ports(ifindex, &p, clock_ns(&now));
	lb = p.has_l3 ? lb_on() : 0;
	if (dir == CORRAL_DIR_EGRESS && lb && lb_proto(p.proto)) {
		int r;

		if (p.frag == 2) {
			/* a later fragment: its datagram's translation */
			r = lb_frag(skb, &p, 1);
		} else {
			r = is_hairpin_addr(p.daddr, p.is_v6) ? hairpin_reply(skb, &p) : 0;
			if (r > 0) {
				hp = 2;
			} else if (!r) {
				r = lb_dnat(skb, &p, &now);
				hp = r == 2;
			}
		}
		if (r < 0) {
			reason = DROP_MALFORMED;
			goto out;
		}
	}
	/* a hairpin answer (hp 2) belongs to the flow the pod's egress
	 * verdict admitted (both directions leave through this hook) */
	if (hp != 2 && !egress_defer(cfg, ifindex, dir, skb, &p, &now) &&
	    !check_policy(cfg, ifindex, dir, &p, &now)) {
		reason = DROP_POLICY;
		goto out;
	}
	{
		struct corral_limit *lim = &cfg->limits[dir & 1];
		if (lim->rate_bytes_per_sec) {
			struct corral_bucket *b = bpf_map_lookup_elem(&corral_ep_buckets, &key);
			if (b && !bucket_take(b, clock_ns(&now), lim->rate_bytes_per_sec, lim->burst_bytes,
					      len, 0, 0)) {
				reason = DROP_RATE;
				goto out;
			}
		}
	}
	if (!class_budget(cfg, dir, len, &now)) {
		reason = DROP_CLASS;
		goto out;
	}
	if (cfg->flags & CORRAL_EP_DSCP)
		mark_dscp(skb, &p, cfg->dscp);
	if (dir == CORRAL_DIR_INGRESS && lb) {
		if (p.frag == 2) {
			if (lb_frag(skb, &p, 0) < 0) {
				reason = DROP_MALFORMED;
				goto out;
			}
		} else {
			lb_reply(skb, &p);
		}
	}
	if (hp && hairpin_src(skb, &p, hp) < 0) {
		reason = DROP_MALFORMED;
		goto out;
	}
	/* a local backend's reply to a NodePort client */
	if (dir == CORRAL_DIR_EGRESS && (lb & CORRAL_LB_HAS_NODEPORTS) && !hp && !p.frag &&
	    lb_proto(p.proto)) {
		redir = np_reverse(skb, &p, &now);
		if (redir < 0) {
			reason = DROP_MALFORMED;
			goto out;
		}
	}
out:
	if (reason != DROP_NONE)
		emit_drop(ifindex, dir, &p, reason, len, &now);
	c = bpf_map_lookup_elem(&corral_counters, &key);
	if (c) {
		switch (reason) {
		case DROP_NONE:
			c->packets++;
			c->bytes += len;
			break;
		case DROP_POLICY:
			c->drop_policy++;
			break;
		case DROP_RATE:
			c->drop_rate++;
			break;
		case DROP_CLASS:
			c->drop_class++;
			break;
		default:
			c->drop_malformed++;
		}
	}
	/* allowed: TC_ACT_UNSPEC (TCX_NEXT), not TC_ACT_OK, so Corral running
	 * first in line does not cut off the tc filters / TCX programs behind
	 * it (e.g. a chained bandwidth plugin's shaping); with nothing behind
	 * it the kernel passes the packet. */
	if (reason != DROP_NONE)
		return TC_ACT_SHOT;
	if (hp)
		return hairpin_redirect(skb);
	return redir ? np_redirect(skb, &p) : TC_ACT_UNSPEC;
}

SEC("classifier")
int corral_from_pod(struct __sk_buff *skb)
{
	return handle(skb, CORRAL_DIR_EGRESS);
}

SEC("classifier")
int corral_to_pod(struct __sk_buff *skb)
{
	/* a same-node backend: the deferred egress verdict of the source */
	if (deferred_verdict(skb) == TC_ACT_SHOT)
		return TC_ACT_SHOT;
	return handle(skb, CORRAL_DIR_INGRESS);
}

/* Egress of the node's uplink / overlay devices: deferred egress verdicts
 * of flows to backends on other nodes; with NodePort/external frontends
 * (--kube-proxy-replacement), the reply of a host-network backend on this
 * node (no pod veth on its way) gets its frontend back as source. Touches
 * nothing else. */
SEC("classifier")
int corral_node_out(struct __sk_buff *skb)
{
	struct pkt p = {};
	__u64 now = 0;

	if (deferred_verdict(skb) == TC_ACT_SHOT)
		return TC_ACT_SHOT;
	if (!(lb_on() & CORRAL_LB_HAS_NODEPORTS) || parse(skb, &p) < 0 || !p.has_l3 || p.frag ||
	    !lb_proto(p.proto))
		return TC_ACT_UNSPEC;
	return np_reverse(skb, &p, &now) < 0 ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}

/* Ingress of the node's uplink (--kube-proxy-replacement): NodePort
 * traffic from outside (translated, sent on to the backend) and replies
 * from backends on other nodes to SNATed NodePort flows (translated back,
 * sent on to the client). Everything else passes untouched. */
SEC("classifier")
int corral_node_in(struct __sk_buff *skb)
{
	struct pkt p = {};
	__u64 now = 0;
	int r;

	if (!(lb_on() & CORRAL_LB_HAS_NODEPORTS) || parse(skb, &p) < 0 || !p.has_l3 || p.frag || !lb_proto(p.proto))
		return TC_ACT_UNSPEC;
	r = np_reverse(skb, &p, &now);
	if (!r)
		r = np_forward(skb, &p, &now);
	if (r == 1)
		return np_redirect(skb, &p);
	if (r == 3)
		return TC_ACT_UNSPEC; /* to this node: the stack delivers it */
	return r ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}
