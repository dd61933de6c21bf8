/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Corral data plane kernel/user ABI.
 *
 * This is the ONLY header shared between the eBPF programs (corral.bpf.c)
 * and the agent. Every struct here is mirrored by a #[repr(C)] type in
 * dataplane/src/abi.rs; dataplane/build.rs compiles ebpf/abi_layout.c against
 * this header and generates size/offset assertions that a unit test checks.
 * All structs use explicit padding so that there are no implicit holes.
 */
#ifndef CORRAL_ABI_H
#define CORRAL_ABI_H

#include <linux/types.h>
#include <linux/bpf.h>

/* Directions, seen from the POD. The program attached to the host-side
 * ingress of the veth sees pod egress; host-side egress sees pod ingress. */
#define CORRAL_DIR_INGRESS 0
#define CORRAL_DIR_EGRESS 1
#define CORRAL_NUM_DIRS 2

/* Traffic classes (strict priority, lower value = higher priority). */
#define CORRAL_CLASS_CRITICAL 0
#define CORRAL_CLASS_STANDARD 1
#define CORRAL_CLASS_BULK 2
#define CORRAL_NUM_CLASSES 3

/* endpoint_cfg.flags */
#define CORRAL_EP_POLICY_INGRESS (1u << 0) /* isolated for ingress */
#define CORRAL_EP_POLICY_EGRESS (1u << 1)  /* isolated for egress */
#define CORRAL_EP_DSCP (1u << 2)           /* rewrite DSCP with class dscp */

/* Maximum port ranges per LPM policy entry. */
#define CORRAL_MAX_PORT_RANGES 16

/* policy_value.flags */
#define CORRAL_PV_ALL_PORTS (1u << 0) /* every protocol and port allowed */

/* Protocol numbers used in port ranges. */
#define CORRAL_PROTO_TCP 6
#define CORRAL_PROTO_UDP 17
#define CORRAL_PROTO_SCTP 132

/* Connection tracking states. */
#define CORRAL_CT_NEW 0
#define CORRAL_CT_ESTABLISHED 1
#define CORRAL_CT_CLOSING 2

/* Rate limit of one direction of one endpoint. rate 0 = unlimited. */
struct corral_limit {
	__u64 rate_bytes_per_sec;
	__u64 burst_bytes;
};

/* Map "corral_endpoints": key __u32 host-side ifindex. Written by the agent. */
struct corral_endpoint_cfg {
	__u32 endpoint_id;
	__u32 flags;
	__u8 class_id;
	__u8 dscp;
	__u8 pad[6];
	struct corral_limit limits[CORRAL_NUM_DIRS];
};

/* Key of per-endpoint-direction maps (buckets, counters). */
struct corral_ep_dir_key {
	__u32 ifindex;
	__u32 dir;
};

/* Token bucket state. Maps "corral_ep_buckets" (key corral_ep_dir_key) and
 * "corral_class_buckets" (key __u32 dir * CORRAL_NUM_CLASSES + class, plus
 * the shared bucket at index CORRAL_NUM_CLASSES for each dir).
 * tokens is signed: the shared node bucket may go into debt. */
struct corral_bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	__s64 tokens;
	__u64 last_ns;
};

/* Per-CPU counters (map "corral_counters", key corral_ep_dir_key). */
struct corral_counters {
	__u64 packets;
	__u64 bytes;
	__u64 drop_policy;
	__u64 drop_rate;
	__u64 drop_class;
	__u64 drop_malformed;
};

/* Node aggregate budget config (array "corral_node_cfg", key __u32 dir).
 * rate 0 = no node budget. min_share_permille[c] guarantees class c that
 * share of the rate; reserve_permille[c] is the part of the shared burst a
 * class may NOT use (critical 0, bulk largest), giving strict priority. */
struct corral_node_cfg {
	__u64 rate_bytes_per_sec;
	__u64 burst_bytes;
	__u16 min_share_permille[CORRAL_NUM_CLASSES];
	__u16 reserve_permille[CORRAL_NUM_CLASSES];
	__u8 dscp[CORRAL_NUM_CLASSES];
	__u8 pad[1];
};

/* LPM key of map "corral_policy": prefixlen covers ifindex+dir (64 bits)
 * plus the address prefix. IPv4 is stored as IPv4-mapped IPv6
 * (::ffff:a.b.c.d), so an IPv4 /n is prefixlen 64 + 96 + n. */
struct corral_policy_key {
	__u32 prefixlen;
	__u32 ifindex;
	__u32 dir;
	__u8 addr[16];
};

struct corral_port_range {
	__u8 proto;
	__u8 pad;
	__u16 port_lo; /* host byte order */
	__u16 port_hi; /* inclusive */
};

struct corral_policy_value {
	__u32 flags;
	__u32 nranges;
	struct corral_port_range ranges[CORRAL_MAX_PORT_RANGES];
};

/* Conntrack key (LRU map "corral_ct"): the flow as first seen on an
 * endpoint in a direction. Ports are 0 for protocols without ports. */
struct corral_ct_key {
	__u32 ifindex;
	__u8 dir;
	__u8 proto;
	__u16 pad;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* host byte order */
	__u16 dport;
};

struct corral_ct_value {
	__u64 last_seen_ns;
	__u32 state;
	__u32 pad;
};

/* ---- Services: egress policy decided on the translated destination
 * (issue 16). With a DNAT in front (kube-proxy), a pod's packet to a Service
 * address is not yet translated at the pod's veth; its egress verdict is
 * deferred to the point where the real backend is known (see
 * corral.bpf.c, section "deferred egress"). */

/* skb->mark bit of a packet whose egress verdict is deferred */
#define CORRAL_MARK_DEFER 0x00100000u

/* Map "corral_svc" (hash): a Service frontend (ClusterIP, port, protocol);
 * value: flags (reserved, 0). Written by the agent from Service objects. */
struct corral_svc_key {
	__u8 addr[16];
	__u16 port; /* host byte order */
	__u8 proto;
	__u8 pad;
};

struct corral_svc_value {
	__u32 flags;
};

/* Corral's own Service translation (corral-agent --kube-proxy-replacement).
 * Map "corral_lb_svc" (hash, key corral_svc_key: frontend = ClusterIP,
 * port, protocol) -> the Service port's backends, which are map
 * "corral_lb_be" (hash) entries (svc_id, 0 .. count-1). A new flow from a
 * pod to a frontend is translated (DNAT) at the pod's veth to a backend
 * chosen at random, before policy, so egress policy decides on the backend;
 * replies are translated back at the client's veth. Established flows keep
 * their backend (kernel LRU maps, not part of this ABI). */
struct corral_lb_svc {
	__u32 svc_id;
	__u32 count; /* 0: no ready backend, not translated */
	/* sessionAffinity ClientIP: a client's new flows reuse its last
	 * backend (by index) for this long after its last new flow; 0 = off */
	__u32 affinity_s;
	__u16 flags; /* CORRAL_LB_* */
	/* backends 0 .. local_count-1 are on this node (the agent writes
	 * them first); externalTrafficPolicy Local picks among these */
	__u16 local_count;
};

/* corral_lb_svc.flags: a NodePort frontend (node address, nodePort),
 * translated also where it arrives from outside (corral_node_in on the
 * node's uplink): externalTrafficPolicy Cluster = any backend, the client
 * source SNATed to the node address; Local = this node's backends only,
 * client source kept. From a pod on this node it is translated like a
 * ClusterIP (any backend, no SNAT). */
#define CORRAL_LB_NODEPORT 1
#define CORRAL_LB_ETP_LOCAL 2
/* With CORRAL_LB_NODEPORT: an external frontend (spec.externalIPs, a
 * load-balancer ingress IP with ipMode VIP) × Service port, translated
 * like a NodePort; not a node address, so the Cluster SNAT source is the
 * node's source address on the route to the backend (as MASQUERADE). */
#define CORRAL_LB_EXTERNAL 4

/* Array "corral_lb_cfg"[0]: 0 = translation off, else these bits. The
 * NodePort paths (corral_node_in; the backend-side reply lookup at every
 * pod's egress) run only with CORRAL_LB_HAS_NODEPORTS. */
#define CORRAL_LB_ON 1
#define CORRAL_LB_HAS_NODEPORTS 2

struct corral_lb_be_key {
	__u32 svc_id;
	__u32 index;
};

struct corral_lb_be {
	__u8 addr[16];
	__u16 port; /* host byte order */
	__u16 pad;
};

/* LRU maps "corral_lb_fwd" / "corral_lb_rev": a flow as the client
 * addressed it (fwd) or as the backend answers it (rev) -> the address and
 * port to translate to (ports host byte order). Kernel-written; the agent
 * deletes UDP fwd entries whose backend left its frontend (as kube-proxy
 * clears UDP conntrack entries of removed endpoints). */
struct lb_nat_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct lb_nat_value {
	__u8 addr[16];
	__u16 port;
	__u16 pad;
	__u32 pad2;
	__u64 seen_ns;
};

/* LRU map "corral_defer": a deferred flow by its source (the source port
 * and address survive the DNAT): the client's endpoint and the frontend it
 * addressed. */
struct corral_defer_key {
	__u8 saddr[16];
	__u16 sport;
	__u8 proto;
	__u8 pad;
};

struct corral_defer_value {
	__u32 ifindex;
	__u16 vport;
	__u16 pad;
	__u8 vaddr[16];
};

/* ---- Policy tiers (ClusterNetworkPolicy / AdminNetworkPolicy /
 * BaselineAdminNetworkPolicy). Appended section; nothing above changes. */

/* endpoint_cfg.flags: the direction's verdict comes from map
 * "corral_tier" (set together with CORRAL_EP_POLICY_* of that direction,
 * which turns on connection tracking). */
#define CORRAL_EP_TIER_INGRESS (1u << 3)
#define CORRAL_EP_TIER_EGRESS (1u << 4)

#define CORRAL_MAX_TIER_RANGES 32
#define CORRAL_VERDICT_DENY 0
#define CORRAL_VERDICT_ALLOW 1

/* One (protocol, destination port range) with its final verdict and the
 * id of the rule that decided it (agent-side table, for diagnostics). */
struct corral_tier_range {
	__u8 proto;
	__u8 verdict;
	__u16 port_lo; /* host byte order */
	__u16 port_hi; /* inclusive */
	__u16 rule;
};

/* LPM map "corral_tier": key struct corral_policy_key (same layout and
 * prefix rules as "corral_policy"). The agent resolves Admin tier →
 * NetworkPolicy → Baseline tier → default allow into this value: the
 * ranges are disjoint; a packet outside every range gets default_verdict. */
struct corral_tier_value {
	__u8 default_verdict;
	__u8 pad;
	__u16 default_rule;
	__u32 nranges;
	struct corral_tier_range ranges[CORRAL_MAX_TIER_RANGES];
};

/* ---- Drop events (corral-agent monitor). Appended section. */

/* drop_event.rule for a NetworkPolicy drop (endpoint not in tier mode) */
#define CORRAL_RULE_NP 0xfffe
/* drop_event.reason (the programs' drop reasons) */
#define CORRAL_DROP_POLICY 1
#define CORRAL_DROP_RATE 2
#define CORRAL_DROP_CLASS 3
#define CORRAL_DROP_MALFORMED 4

/* Ring buffer "corral_events": one record per dropped packet while
 * array "corral_monitor"[0] is non-zero (a monitor client is connected).
 * Allowed packets never touch either map. A record that does not fit (the
 * consumer is behind) is counted in the per-CPU array
 * "corral_events_lost"[0] (__u64); the drop itself stands. */
struct corral_drop_event {
	__u64 time_ns; /* bpf_ktime_get_ns */
	__u32 ifindex;
	__u32 len;
	__u8 dir;
	__u8 reason;
	__u8 proto;
	__u8 pad;
	__u16 rule; /* policy drops: deciding tier rule id or CORRAL_RULE_NP */
	__u16 sport;
	__u16 dport;
	__u8 pad2[6];
	__u8 saddr[16];
	__u8 daddr[16];
};

#endif
