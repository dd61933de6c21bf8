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

/* Fragments: the first fragment's ports, keyed by the datagram, so that
 * later fragments (no L4 header) get the same connection-tracking and policy
 * verdict. Kernel-internal (not part of the user ABI). */
struct corral_frag_key {
	__u32 ifindex;
	__u32 id;
	__u8 saddr[16];
	__u8 daddr[16];
	__u8 proto;
	__u8 pad[3];
};

struct corral_frag_value {
	__u16 sport;
	__u16 dport;
	__u32 pad;
	__u64 seen_ns;
};

#define FRAG_TIMEOUT_NS (30ULL * 1000000000ULL)
/* IPv6 extension headers walked before the L4 header */
#define MAX_EXT_HDRS 8

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct corral_frag_key);
	__type(value, struct corral_frag_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_frag SEC(".maps");

struct pkt {
	__u8 proto;
	__u8 is_v6;
	__u8 tcp_flags; /* bit0 FIN, bit1 SYN, bit2 RST */
	__u8 has_l3;
	__u8 is_nd; /* IPv6 neighbour/router discovery: never policed by policy */
	__u8 frag; /* 1 = first fragment of several, 2 = later fragment */
	__u8 pad[2];
	__u32 frag_id;
	__u16 sport;
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 l3_off;
	__u16 rule; /* deciding policy rule of a policy drop (drop events) */
	__u16 pad2;
	__u32 l4_off; /* set when ports were read (TCP/UDP/SCTP) */
};

static __always_inline void map_v4(__u8 *dst, __u32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

/* Monotonic time, read at most once per packet and only when something
 * needs it (conntrack, buckets, fragments): an endpoint without policy,
 * limits or node budget never reads the clock. */
static __always_inline __u64 clock_ns(__u64 *now)
{
	if (!*now)
		*now = bpf_ktime_get_ns();
	return *now;
}

/* L4 bytes at off: direct packet access when they are in the linear part
 * of the skb (the common case, no helper call), else bpf_skb_load_bytes. */
#define LOAD_L4(skb, off, dst)                                                        \
	({                                                                            \
		void *_d = (void *)(long)(skb)->data;                                 \
		void *_e = (void *)(long)(skb)->data_end;                             \
		int _r = 0;                                                           \
		if ((off) < 256 && _d + (off) + sizeof(*(dst)) <= _e)                 \
			__builtin_memcpy((dst), _d + (off), sizeof(*(dst)));          \
		else                                                                  \
			_r = bpf_skb_load_bytes((skb), (off), (dst), sizeof(*(dst)));  \
		_r;                                                                   \
	})

/* Returns 0 on success, -1 if malformed. Non-IP frames: has_l3 = 0. */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 l4_off;

	if ((void *)(eth + 1) > end)
		return -1;
	p->l3_off = sizeof(*eth);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return -1;
		if (ip->ihl < 5)
			return -1;
		p->has_l3 = 1;
		p->proto = ip->protocol;
		map_v4(p->saddr, ip->saddr);
		map_v4(p->daddr, ip->daddr);
		l4_off = sizeof(*eth) + ip->ihl * 4;
		p->frag_id = bpf_ntohs(ip->id);
		/* later fragments carry no ports; the first has MF set */
		if (ip->frag_off & bpf_htons(0x1fff))
			p->frag = 2;
		else if (ip->frag_off & bpf_htons(0x2000))
			p->frag = 1;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		__u8 nh;
		int i;
		if ((void *)(ip6 + 1) > end)
			return -1;
		p->has_l3 = 1;
		p->is_v6 = 1;
		nh = ip6->nexthdr;
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		l4_off = sizeof(*eth) + sizeof(*ip6);
		/* extension headers (RFC 8200 4.1), bounded */
		for (i = 0; i < MAX_EXT_HDRS; i++) {
			__u8 h[8];
			if (nh != 0 && nh != 43 && nh != 44 && nh != 60 && nh != 51)
				break;
			if (bpf_skb_load_bytes(skb, l4_off, h, sizeof(h)) < 0)
				return -1;
			if (nh == 44) { /* fragment: fixed 8 bytes */
				__u16 off = ((__u16)h[2] << 8) | h[3];
				p->frag_id = ((__u32)h[4] << 24) | ((__u32)h[5] << 16) |
					     ((__u32)h[6] << 8) | h[7];
				if (off & 0xfff8)
					p->frag = 2;
				else if (off & 1)
					p->frag = 1;
				l4_off += 8;
			} else if (nh == 51) { /* AH: length in 4-octet units - 2 */
				l4_off += ((__u32)h[1] + 2) * 4;
			} else { /* hop-by-hop, routing, destination options */
				l4_off += ((__u32)h[1] + 1) * 8;
			}
			nh = h[0];
			if (p->frag == 2)
				break; /* what follows is not a header */
		}
		/* still an extension header: chain longer than we walk */
		if (p->frag != 2 && (nh == 0 || nh == 43 || nh == 44 || nh == 60 || nh == 51))
			return -1;
		p->proto = nh;
	} else {
		return 0;
	}
	if (p->frag == 2)
		return 0;
	p->l4_off = l4_off;
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr th;
		if (LOAD_L4(skb, l4_off, &th) < 0)
			return -1;
		p->sport = bpf_ntohs(th.source);
		p->dport = bpf_ntohs(th.dest);
		p->tcp_flags = (th.fin ? 1 : 0) | (th.syn ? 2 : 0) | (th.rst ? 4 : 0);
	} else if (p->proto == IPPROTO_UDP || p->proto == IPPROTO_SCTP) {
		/* UDP and SCTP both start with 16-bit source and dest ports */
		__u32 ports32;
		__u16 *ports = (__u16 *)&ports32;
		if (LOAD_L4(skb, l4_off, &ports32) < 0)
			return -1;
		p->sport = bpf_ntohs(ports[0]);
		p->dport = bpf_ntohs(ports[1]);
	} else if (p->is_v6 && p->proto == 58 /* ICMPv6 */) {
		__u8 type;
		if (bpf_skb_load_bytes(skb, l4_off, &type, 1) < 0)
			return -1;
		/* router solicitation/advertisement, neighbour solicitation/
		 * advertisement, redirect: the IPv6 equivalent of ARP */
		p->is_nd = type >= 133 && type <= 137;
	}
	return 0;
}

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

	k.ifindex = ifindex;
	k.id = p->frag_id;
	k.proto = p->proto;
	__builtin_memcpy(k.saddr, p->saddr, 16);
	__builtin_memcpy(k.daddr, p->daddr, 16);
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

/* ---- Service translation (--kube-proxy-replacement, issue 16) ----------
 * At the client pod's veth (corral_from_pod), before policy: a packet to a
 * frontend in corral_lb_svc is translated to a backend (DNAT; a new flow
 * picks one at random, an established flow keeps its backend through
 * corral_lb_fwd), so egress policy, conntrack and counters see the real
 * backend. At the client's veth on the way back (corral_to_pod), after the
 * verdict, replies from the backend get the frontend as their source again
 * (corral_lb_rev). Switched on by corral_lb_cfg[0] (the agent's
 * --kube-proxy-replacement); off, it costs one array read per packet. */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_lb_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct corral_svc_key);
	__type(value, struct corral_lb_svc);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_lb_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct corral_lb_be_key);
	__type(value, struct corral_lb_be);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_lb_be SEC(".maps");

/* kernel-internal: a flow as the client addressed it (fwd) or as the
 * backend answers it (rev) -> the address/port to translate to */
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

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct lb_nat_key);
	__type(value, struct lb_nat_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_lb_fwd SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct lb_nat_key);
	__type(value, struct lb_nat_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_lb_rev SEC(".maps");

/* sessionAffinity ClientIP: (frontend id, client address) -> the index of
 * the backend its last new flow got, and when */
struct lb_aff_key {
	__u32 svc_id;
	__u32 pad;
	__u8 client[16];
};

struct lb_aff_value {
	__u32 index;
	__u32 pad;
	__u64 seen_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct lb_aff_key);
	__type(value, struct lb_aff_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_lb_aff SEC(".maps");

static __always_inline int lb_on(void)
{
	__u32 zero = 0;
	__u32 *on = bpf_map_lookup_elem(&corral_lb_cfg, &zero);

	return on && *on;
}

/* SCTP (RFC 9260): the CRC32c covers the SCTP packet only, no IP
 * pseudo-header, so an address change leaves it valid; a port change does
 * not. CRC32c is linear: crc(M ^ D) = crc(M) ^ crc0(D) for equal lengths,
 * crc0 without initial value and final xor. D is the 4-byte port delta at
 * the start of the packet followed by len - 4 zero bytes, so crc0(D) =
 * crc0(delta) * x^(8 (len - 4)) mod P; the powers x^(8 * 2^k) (k < 16,
 * packets < 64 KiB) are constants (reflected bit order, as zlib's
 * multmodp). The kernel stores the CRC little-endian. */
#define CRC32C_POLY 0x82F63B78u
static const __u32 crc32c_x8pow2[16] = {
	0x00800000, 0x00008000, 0x82f63b78, 0x6ea2d55c, 0x18b8ea18, 0x510ac59a,
	0xb82be955, 0xb8fdb1e7, 0x88e56f72, 0x74c360a4, 0xe4172b16, 0x0d65762a,
	0x35d73a62, 0x28461564, 0xbf455269, 0xe2ea32dc,
};

/* a * b mod P (reflected), branch-free */
static __always_inline __u32 crc32c_mulmod(__u32 a, __u32 b)
{
	__u32 r = 0;
	int i;

	for (i = 0; i < 32; i++) {
		r ^= b & -((a >> (31 - i)) & 1);
		b = (b >> 1) ^ (CRC32C_POLY & -(b & 1));
	}
	return r;
}

/* New SCTP ports (network order, both in one 32-bit word as they lie in
 * the packet): the checksum update. 0 or -1. A global function: the
 * verifier checks it once, not at every inlined NAT site. */
__attribute__((noinline)) int corral_sctp_ports_csum(struct __sk_buff *skb, __u32 l3_off,
						     __u32 l4_off, __u32 is_v6, __u32 delta)
{
	__u32 len, c = delta, sum;
	__u16 l16;
	int i;

	if (!skb)
		return -1;
	if (bpf_skb_load_bytes(skb, l3_off + (is_v6 ? 4 : 2), &l16, 2) < 0)
		return -1;
	/* the SCTP packet: IPv6 payload after the extension headers, IPv4
	 * total length after the header */
	len = l3_off + (is_v6 ? 40 : 0) + bpf_ntohs(l16) - l4_off;
	if (len < 12 || len > 0xffff)
		return -1;
	len -= 4;
	/* crc0 of the 4 delta bytes (the word as loaded, little-endian) */
	for (i = 0; i < 32; i++)
		c = (c >> 1) ^ (CRC32C_POLY & -(c & 1));
	/* times x^(8 len) */
	for (i = 0; i < 16; i++) {
		__u32 m = -((len >> i) & 1);
		c = (crc32c_mulmod(crc32c_x8pow2[i & 15], c) & m) | (c & ~m);
	}
	if (bpf_skb_load_bytes(skb, l4_off + 8, &sum, 4) < 0)
		return -1;
	sum ^= c;
	return bpf_skb_store_bytes(skb, l4_off + 8, &sum, 4, 0) < 0 ? -1 : 0;
}

/* NAT of the destination (dst = 1) or source address and port of the
 * parsed TCP/UDP/SCTP packet, IPv4 or IPv6 in one path: the address change
 * is one checksum difference that goes into the TCP/UDP checksum (pseudo
 * header) and, for IPv4, the header checksum; the port change into the
 * TCP/UDP checksum, or SCTP's CRC32c (corral_sctp_ports_csum). 0 or -1. */
static __attribute__((noinline)) int nat_rewrite(struct __sk_buff *skb, struct pkt *p, int dst,
						 const __u8 *naddr, __u16 nport)
{
	int sctp = p->proto == IPPROTO_SCTP;
	__u32 coff = p->l4_off + (p->proto == IPPROTO_TCP ? 16 : 6);
	__u64 mflag = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__u8 *oaddr = dst ? p->daddr : p->saddr;
	__u32 aoff = p->l3_off + (p->is_v6 ? (dst ? 24 : 8) : (dst ? 16 : 12));
	__u16 oport = bpf_htons(dst ? p->dport : p->sport);
	__u16 np = bpf_htons(nport);
	__s64 d;

	/* naddr: caller stack or map value; oaddr: the caller's pkt */
	if (p->is_v6)
		d = bpf_csum_diff((__be32 *)oaddr, 16, (__be32 *)naddr, 16, 0);
	else
		d = bpf_csum_diff((__be32 *)(oaddr + 12), 4, (__be32 *)(naddr + 12), 4, 0);
	if (d < 0)
		return -1;
	if (!sctp && bpf_l4_csum_replace(skb, coff, 0, d, BPF_F_PSEUDO_HDR | mflag) < 0)
		return -1;
	if (!p->is_v6 && bpf_l3_csum_replace(skb, p->l3_off + 10, 0, d, 0) < 0)
		return -1;
	if (p->is_v6) {
		if (bpf_skb_store_bytes(skb, aoff, naddr, 16, 0) < 0)
			return -1;
	} else if (bpf_skb_store_bytes(skb, aoff, naddr + 12, 4, 0) < 0) {
		return -1;
	}
	if (oport != np) {
		__u32 oports = ((__u32)bpf_htons(p->dport) << 16) | bpf_htons(p->sport);
		__u32 nports = dst ? (((__u32)np << 16) | bpf_htons(p->sport))
				   : (((__u32)bpf_htons(p->dport) << 16) | np);
		if (sctp) {
			if (corral_sctp_ports_csum(skb, p->l3_off, p->l4_off, p->is_v6,
						   oports ^ nports) < 0)
				return -1;
		} else if (bpf_l4_csum_replace(skb, coff, oport, np, mflag | 2) < 0) {
			return -1;
		}
		if (bpf_skb_store_bytes(skb, p->l4_off + (dst ? 2 : 0), &np, 2, 0) < 0)
			return -1;
	}
	__builtin_memcpy(oaddr, naddr, 16);
	if (dst)
		p->dport = nport;
	else
		p->sport = nport;
	return 0;
}

static __always_inline int lb_proto(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

static __always_inline __u64 lb_timeout(__u8 proto)
{
	return proto == IPPROTO_UDP ? CT_TIMEOUT_UDP_NS : CT_TIMEOUT_EST_NS;
}

/* A new flow's backend index among the first n of the frontend (random;
 * sessionAffinity ClientIP: the client's last index within the timeout). */
static __attribute__((noinline)) __u32 lb_pick(struct corral_lb_svc *svc, __u32 n, const __u8 *client,
				     __u64 now)
{
	__u32 index = bpf_get_prandom_u32() % n;

	if (svc->affinity_s) {
		struct lb_aff_key ak = {.svc_id = svc->svc_id};
		struct lb_aff_value av = {};
		struct lb_aff_value *a;
		__builtin_memcpy(ak.client, client, 16);
		a = bpf_map_lookup_elem(&corral_lb_aff, &ak);
		/* the same index after an endpoint change may be another
		 * backend: affinity is re-balanced then (as kube-proxy's is) */
		if (a && a->index < n && now - a->seen_ns < (__u64)svc->affinity_s * 1000000000ULL)
			index = a->index;
		av.index = index;
		av.seen_ns = now;
		bpf_map_update_elem(&corral_lb_aff, &ak, &av, BPF_ANY);
	}
	return index;
}

static __always_inline void nat_key(struct lb_nat_key *k, const __u8 *saddr, const __u8 *daddr,
				    __u16 sport, __u16 dport, __u8 proto)
{
	__builtin_memcpy(k->saddr, saddr, 16);
	__builtin_memcpy(k->daddr, daddr, 16);
	k->sport = sport;
	k->dport = dport;
	k->proto = proto;
}

/* Hairpin: a pod whose flow to a Service was translated to itself. The
 * flow gets the hairpin address as its source (after the pod's egress
 * verdict, decided on itself as the backend) and is handed straight back
 * into the pod (bpf_redirect_peer); the pod's answer to the hairpin
 * address comes out of its veth, gets its own address back as the
 * destination (before its egress verdict, so conntrack sees the reply of
 * the admitted flow) and the frontend as its source, and goes back in the
 * same way. Without it the answer would go over the pod's loopback from
 * the backend address, which the client's socket does not know.
 * 169.254.42.1 / fd00:c0:ffee:42::1 (as Cilium's hairpin address: not
 * on-link in the pod, so its answers leave through its default route). */
static __always_inline void hairpin_addr(__u8 *a, int v6)
{
	if (v6) {
		__builtin_memset(a, 0, 16);
		a[0] = 0xfd;
		a[3] = 0xc0;
		a[4] = 0xff;
		a[5] = 0xee;
		a[7] = 0x42;
		a[15] = 1;
	} else {
		map_v4(a, bpf_htonl(0xa9fe2a01));
	}
}

static __always_inline int addr_eq(const __u8 *a, const __u8 *b)
{
	__u64 a0, a1, b0, b1;

	__builtin_memcpy(&a0, a, 8);
	__builtin_memcpy(&a1, a + 8, 8);
	__builtin_memcpy(&b0, b, 8);
	__builtin_memcpy(&b1, b + 8, 8);
	return a0 == b0 && a1 == b1;
}

/* The pod's answer to the hairpin address, before its egress verdict:
 * its own address as the destination again. 1 translated, 0 not to the
 * hairpin address or not a hairpin flow, -1 error. */
static __attribute__((noinline)) int hairpin_reply(struct __sk_buff *skb, struct pkt *p)
{
	struct lb_nat_key rk = {};
	__u8 self[16];

	hairpin_addr(self, p->is_v6);
	if (!addr_eq(p->daddr, self))
		return 0;
	nat_key(&rk, p->saddr, p->daddr, p->sport, p->dport, p->proto);
	if (!bpf_map_lookup_elem(&corral_lb_rev, &rk))
		return 0;
	__builtin_memcpy(self, p->saddr, 16);
	return nat_rewrite(skb, p, 1, self, p->dport) < 0 ? -1 : 1;
}

/* After the pod's egress verdict: the flow to itself (hp 1) gets the
 * hairpin address as its source, the answer (hp 2) the frontend. 0 or -1. */
static __attribute__((noinline)) int hairpin_src(struct __sk_buff *skb, struct pkt *p, int hp)
{
	struct lb_nat_key rk = {};
	struct lb_nat_value *rv;
	__u8 a[16];
	__u16 port = p->sport;

	hairpin_addr(a, p->is_v6);
	if (hp == 2) {
		nat_key(&rk, p->saddr, a, p->sport, p->dport, p->proto);
		rv = bpf_map_lookup_elem(&corral_lb_rev, &rk);
		if (!rv)
			return -1;
		__builtin_memcpy(a, rv->addr, 16);
		port = rv->port;
	}
	return nat_rewrite(skb, p, 0, a, port);
}

/* Back into the pod behind this veth (host ingress -> the pod's eth0):
 * MAC addresses swapped. */
static __always_inline int hairpin_redirect(struct __sk_buff *skb)
{
	__u8 mac[12], sw[12];

	if (bpf_skb_load_bytes(skb, 0, mac, 12) < 0)
		return TC_ACT_SHOT;
	__builtin_memcpy(sw, mac + 6, 6);
	__builtin_memcpy(sw + 6, mac, 6);
	if (bpf_skb_store_bytes(skb, 0, sw, 12, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect_peer(skb->ifindex, 0);
}

/* Client side, before policy: 0 not a frontend, 1 translated, 2
 * translated to the client itself (hairpin), -1 error. */
static __attribute__((noinline)) int lb_dnat(struct __sk_buff *skb, struct pkt *p, __u64 *nowp)
{
	/* the frontend key is done with before the NAT keys are needed */
	union {
		struct corral_svc_key sk;
		struct lb_nat_key k;
	} u = {};
	struct lb_nat_key *kp = &u.k;
	struct lb_nat_value v = {};
	struct lb_nat_value *fv;
	struct corral_lb_svc *svc;
	struct corral_lb_be_key bk = {};
	struct corral_lb_be *be;
	__u64 now;
	int hair;

	if (!lb_proto(p->proto))
		return 0;
	__builtin_memcpy(u.sk.addr, p->daddr, 16);
	u.sk.port = p->dport;
	u.sk.proto = p->proto;
	svc = bpf_map_lookup_elem(&corral_lb_svc, &u.sk);
	if (!svc)
		return 0;
	__builtin_memset(kp, 0, sizeof(*kp));
	nat_key(kp, p->saddr, p->daddr, p->sport, p->dport, p->proto);
	now = clock_ns(nowp);
	fv = bpf_map_lookup_elem(&corral_lb_fwd, kp);
	if (fv && now - fv->seen_ns < lb_timeout(p->proto)) {
		if (now - fv->seen_ns >= CT_REFRESH_NS)
			fv->seen_ns = now;
		hair = addr_eq(fv->addr, p->saddr);
		return nat_rewrite(skb, p, 1, fv->addr, fv->port) < 0 ? -1 : 1 + hair;
	}
	if (!svc->count)
		return 0;
	bk.svc_id = svc->svc_id;
	bk.index = lb_pick(svc, svc->count, p->saddr, now);
	be = bpf_map_lookup_elem(&corral_lb_be, &bk);
	if (!be)
		return 0;
	/* map values are 8-byte aligned: word copies, not byte by byte */
	be = __builtin_assume_aligned(be, 8);
	/* the reverse entry: the backend's answer -> the frontend; to the
	 * client itself (hairpin) the answer goes to the hairpin address */
	hair = addr_eq(be->addr, p->saddr);
	if (hair) {
		hairpin_addr(v.addr, p->is_v6);
		nat_key(kp, be->addr, v.addr, be->port, p->sport, p->proto);
	} else {
		nat_key(kp, be->addr, p->saddr, be->port, p->sport, p->proto);
	}
	__builtin_memcpy(v.addr, p->daddr, 16);
	v.port = p->dport;
	v.seen_ns = now;
	if (bpf_map_update_elem(&corral_lb_rev, kp, &v, BPF_ANY))
		return -1;
	/* the forward entry: the client's flow -> the backend */
	nat_key(kp, p->saddr, p->daddr, p->sport, p->dport, p->proto);
	__builtin_memcpy(v.addr, be->addr, 16);
	v.port = be->port;
	if (bpf_map_update_elem(&corral_lb_fwd, kp, &v, BPF_ANY))
		return -1;
	return nat_rewrite(skb, p, 1, be->addr, be->port) < 0 ? -1 : 1 + hair;
}

/* Client side, a reply that passed: the frontend as its source again. */
static __attribute__((noinline)) void lb_reply(struct __sk_buff *skb, struct pkt *p)
{
	struct lb_nat_key rk = {};
	struct lb_nat_value *rv;
	__u8 addr[16];
	__u16 port;

	if (!lb_proto(p->proto))
		return;
	nat_key(&rk, p->saddr, p->daddr, p->sport, p->dport, p->proto);
	rv = bpf_map_lookup_elem(&corral_lb_rev, &rk);
	if (!rv)
		return;
	__builtin_memcpy(addr, rv->addr, 16);
	port = rv->port;
	nat_rewrite(skb, p, 0, addr, port);
}

/* ---- NodePort (--kube-proxy-replacement) --------------------------------
 * A packet from outside to (node address, nodePort) arrives at the node's
 * uplink: corral_node_in translates it there (DNAT to a backend; with
 * externalTrafficPolicy Cluster also SNAT to the node address, so the
 * reply comes back through this node) and sends it on with
 * bpf_redirect_neigh (after a SNAT the source is a local address, which
 * the kernel's input routing would drop as martian). The reply is
 * translated back where it reaches this node — a local backend's veth
 * (corral_from_pod, after the backend's policy verdict) or the uplink
 * (corral_node_in, a backend on another node) — and redirected the same
 * way. Kernel-internal LRU maps, not part of the ABI. */

/* SNAT source ports: above the kernel's default ephemeral range
 * (32768-60999), so the node's own connections do not collide */
#define NP_SNAT_MIN 61000
#define NP_SNAT_SPAN 4536
#define NP_SNAT_TRIES 8

/* the client's flow as it arrives -> backend and SNAT port */
struct np_fwd_value {
	__u8 addr[16];
	__u16 port;
	__u16 snat_port; /* 0: no SNAT (externalTrafficPolicy Local) */
	__u32 pad;
	__u64 seen_ns;
};

/* the reply as it arrives (backend -> node:snat_port or client) -> the
 * frontend to restore as source and the client as destination */
struct np_rev_value {
	__u8 fe_addr[16];
	__u8 cl_addr[16];
	__u16 fe_port;
	__u16 cl_port;
	__u32 pad;
	__u64 seen_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct lb_nat_key);
	__type(value, struct np_fwd_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_np_fwd SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct lb_nat_key);
	__type(value, struct np_rev_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} corral_np_rev SEC(".maps");

#define NP_AF_INET 2
#define NP_AF_INET6 10

/* Sends a NodePort-translated packet on: route lookup on its (new)
 * destination, then out of that device with the neighbour filled in. */
static __always_inline int np_redirect(struct __sk_buff *skb, struct pkt *p)
{
	struct bpf_fib_lookup f = {};
	long rc;

	f.ifindex = skb->ifindex;
	f.l4_protocol = p->proto;
	if (p->is_v6) {
		f.family = NP_AF_INET6;
		__builtin_memcpy(f.ipv6_src, p->saddr, 16);
		__builtin_memcpy(f.ipv6_dst, p->daddr, 16);
	} else {
		f.family = NP_AF_INET;
		__builtin_memcpy(&f.ipv4_src, p->saddr + 12, 4);
		__builtin_memcpy(&f.ipv4_dst, p->daddr + 12, 4);
	}
	rc = bpf_fib_lookup(skb, &f, sizeof(f), BPF_FIB_LOOKUP_SKIP_NEIGH);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return TC_ACT_SHOT;
	return bpf_redirect_neigh(f.ifindex, NULL, 0, 0);
}

/* A reply of a NodePort flow: 1 translated back (to be redirected), 0 not
 * one, -1 error. */
static __attribute__((noinline)) int np_reverse(struct __sk_buff *skb, struct pkt *p, __u64 *nowp)
{
	struct lb_nat_key rk = {};
	struct np_rev_value *rv;
	__u8 fa[16], ca[16];
	__u16 fp, cp;
	__u64 now;

	nat_key(&rk, p->saddr, p->daddr, p->sport, p->dport, p->proto);
	rv = bpf_map_lookup_elem(&corral_np_rev, &rk);
	if (!rv)
		return 0;
	now = clock_ns(nowp);
	if (now - rv->seen_ns >= CT_REFRESH_NS)
		rv->seen_ns = now;
	__builtin_memcpy(fa, rv->fe_addr, 16);
	__builtin_memcpy(ca, rv->cl_addr, 16);
	fp = rv->fe_port;
	cp = rv->cl_port;
	if (nat_rewrite(skb, p, 0, fa, fp) < 0)
		return -1;
	if ((cp != p->dport || !addr_eq(ca, p->daddr)) &&
	    nat_rewrite(skb, p, 1, ca, cp) < 0)
		return -1;
	return 1;
}

/* From outside to a NodePort frontend: 1 translated (to be redirected),
 * 0 not a NodePort, 2 no backend (drop), -1 error. */
static __attribute__((noinline)) int np_forward(struct __sk_buff *skb, struct pkt *p, __u64 *nowp)
{
	/* the frontend key is done with before the NAT keys are needed */
	union {
		struct corral_svc_key sk;
		struct lb_nat_key k;
	} u = {};
	struct lb_nat_key *kp = &u.k;
	struct np_fwd_value nv = {};
	struct np_rev_value rv = {};
	struct np_fwd_value *fv;
	struct corral_lb_svc *svc;
	struct corral_lb_be_key bk = {};
	struct corral_lb_be *be;
	__u32 n;
	__u64 now;
	int i;

	__builtin_memcpy(u.sk.addr, p->daddr, 16);
	u.sk.port = p->dport;
	u.sk.proto = p->proto;
	svc = bpf_map_lookup_elem(&corral_lb_svc, &u.sk);
	if (!svc || !(svc->flags & CORRAL_LB_NODEPORT))
		return 0;
	__builtin_memset(kp, 0, sizeof(*kp));
	/* the frontend (node address), the SNAT source */
	__builtin_memcpy(rv.fe_addr, p->daddr, 16);
	nat_key(kp, p->saddr, p->daddr, p->sport, p->dport, p->proto);
	now = clock_ns(nowp);
	fv = bpf_map_lookup_elem(&corral_np_fwd, kp);
	if (fv && now - fv->seen_ns < lb_timeout(p->proto)) {
		if (now - fv->seen_ns >= CT_REFRESH_NS)
			fv->seen_ns = now;
		__builtin_memcpy(&nv, fv, sizeof(nv));
	} else {
		n = (svc->flags & CORRAL_LB_ETP_LOCAL) ? svc->local_count : svc->count;
		if (!n)
			return 2;
		bk.svc_id = svc->svc_id;
		bk.index = lb_pick(svc, n, p->saddr, now);
		be = bpf_map_lookup_elem(&corral_lb_be, &bk);
		if (!be)
			return 2;
		be = __builtin_assume_aligned(be, 8);
		__builtin_memcpy(nv.addr, be->addr, 16);
		nv.port = be->port;
		nv.seen_ns = now;
		__builtin_memcpy(rv.cl_addr, p->saddr, 16);
		rv.fe_port = p->dport;
		rv.cl_port = p->sport;
		rv.seen_ns = now;
		if (svc->flags & CORRAL_LB_ETP_LOCAL) {
			nat_key(kp, nv.addr, p->saddr, nv.port, p->sport, p->proto);
		} else {
			/* a free SNAT port: no live reverse entry of
			 * another flow on it */
			for (i = 0; i < NP_SNAT_TRIES; i++) {
				struct np_rev_value *o;
				nv.snat_port = NP_SNAT_MIN + bpf_get_prandom_u32() % NP_SNAT_SPAN;
				nat_key(kp, nv.addr, rv.fe_addr, nv.port, nv.snat_port, p->proto);
				o = bpf_map_lookup_elem(&corral_np_rev, kp);
				if (!o || now - o->seen_ns >= lb_timeout(p->proto))
					break;
			}
			if (i == NP_SNAT_TRIES)
				return 2;
		}
		if (bpf_map_update_elem(&corral_np_rev, kp, &rv, BPF_ANY))
			return -1;
		/* the forward entry (with its SNAT port) */
		nat_key(kp, rv.cl_addr, rv.fe_addr, rv.cl_port, rv.fe_port, p->proto);
		if (bpf_map_update_elem(&corral_np_fwd, kp, &nv, BPF_ANY))
			return -1;
	}
	if (nat_rewrite(skb, p, 1, nv.addr, nv.port) < 0)
		return -1;
	if (nv.snat_port && nat_rewrite(skb, p, 0, rv.fe_addr, nv.snat_port) < 0)
		return -1;
	return 1;
}

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
	int lb = 0, redir = 0;
	int hp = 0; /* hairpin: 1 the pod's flow to itself, 2 its answer */

	if (!cfg)
		return TC_ACT_UNSPEC; /* not ours: let other programs decide */
	if (parse(skb, &p) < 0) {
		reason = DROP_MALFORMED;
		goto out;
	}
	if (p.frag)
		frag_ports(ifindex, &p, clock_ns(&now));
	lb = p.has_l3 && !p.frag && lb_on();
	if (dir == CORRAL_DIR_EGRESS && lb && lb_proto(p.proto)) {
		int r = hairpin_reply(skb, &p);
		if (r > 0) {
			hp = 2;
		} else if (!r) {
			r = lb_dnat(skb, &p, &now);
			hp = r == 2;
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
	if (dir == CORRAL_DIR_INGRESS && lb)
		lb_reply(skb, &p);
	if (hp && hairpin_src(skb, &p, hp) < 0) {
		reason = DROP_MALFORMED;
		goto out;
	}
	/* a local backend's reply to a NodePort client */
	if (dir == CORRAL_DIR_EGRESS && lb && !hp && lb_proto(p.proto)) {
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
 * of flows to backends on other nodes. Touches nothing else. */
SEC("classifier")
int corral_node_out(struct __sk_buff *skb)
{
	return deferred_verdict(skb);
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

	if (!lb_on() || parse(skb, &p) < 0 || !p.has_l3 || p.frag || !lb_proto(p.proto))
		return TC_ACT_UNSPEC;
	r = np_reverse(skb, &p, &now);
	if (!r)
		r = np_forward(skb, &p, &now);
	if (r == 1)
		return np_redirect(skb, &p);
	return r ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}
