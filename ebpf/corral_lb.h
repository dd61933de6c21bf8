// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Corral's Service translation (corral-agent --kube-proxy-replacement):
 * ClusterIP/NodePort DNAT at the client pod's veth, NodePort from outside
 * at the node's uplink (corral_node_in), replies translated back, hairpin,
 * SCTP's CRC32c. Part of corral.bpf.c (included once, after the
 * conntrack and deferred-egress sections it uses); not a separate object.
 * Packets are parsed once, by corral_pkt.h's parse(), shared with
 * corral.bpf.c.
 */
#ifndef CORRAL_LB_H
#define CORRAL_LB_H

#include "corral_pkt.h"

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

/* struct lb_nat_key / lb_nat_value: corral_abi.h (the agent reads
 * corral_lb_fwd to drop UDP flows to removed endpoints) */

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

/* corral_lb_cfg[0]: 0 off, else CORRAL_LB_ON | CORRAL_LB_HAS_NODEPORTS */
static __always_inline __u32 lb_on(void)
{
	__u32 zero = 0;
	__u32 *on = bpf_map_lookup_elem(&corral_lb_cfg, &zero);

	return on ? *on : 0;
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
__attribute__((noinline)) int corral_sctp_ports_csum(struct __sk_buff *skb, __u32 l4_off,
						     __u32 l4_len, __u32 delta)
{
	__u32 len = l4_len, c = delta, sum;
	int i;

	if (!skb)
		return -1;
	/* the SCTP packet's length, as parse() found it (IPv4 total length
	 * after the header; IPv6 payload after the extension headers) */
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

/* NAT of the destination (dst = 1) or source address of the parsed
 * TCP/UDP/SCTP packet, IPv4 or IPv6 in one path: the change is one checksum
 * difference that goes into the TCP/UDP checksum (pseudo header; SCTP's
 * CRC32c has none) and, for IPv4, the header checksum. 0 or -1. */
static __attribute__((noinline)) int nat_addr(struct __sk_buff *skb, struct pkt *p, int dst,
					      const __u8 *naddr)
{
	__u8 *oaddr = dst ? p->daddr : p->saddr;
	__u32 aoff = p->l3_off + (p->is_v6 ? (dst ? 24 : 8) : (dst ? 16 : 12));
	__s64 d;

	/* naddr: caller stack or map value; oaddr: the caller's pkt */
	if (p->is_v6)
		d = bpf_csum_diff((__be32 *)oaddr, 16, (__be32 *)naddr, 16, 0);
	else
		d = bpf_csum_diff((__be32 *)(oaddr + 12), 4, (__be32 *)(naddr + 12), 4, 0);
	if (d < 0)
		return -1;
	/* a later fragment has no L4 header (the first one's checksum
	 * covers the pseudo-header of the whole datagram) */
	if (p->proto != IPPROTO_SCTP && p->frag != 2 &&
	    bpf_l4_csum_replace(skb, l4_csum_off(p), 0, d,
				BPF_F_PSEUDO_HDR |
					(p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0)) < 0)
		return -1;
	if (!p->is_v6 && bpf_l3_csum_replace(skb, p->l3_off + 10, 0, d, 0) < 0)
		return -1;
	if (p->is_v6) {
		if (bpf_skb_store_bytes(skb, aoff, naddr, 16, 0) < 0)
			return -1;
	} else if (bpf_skb_store_bytes(skb, aoff, naddr + 12, 4, 0) < 0) {
		return -1;
	}
	__builtin_memcpy(oaddr, naddr, 16);
	return 0;
}

/* The destination (dst = 1) or source port: into the TCP/UDP checksum,
 * or SCTP's CRC32c (corral_sctp_ports_csum). 0 or -1. A subprogram of its
 * own (not part of nat_addr): the CRC function's frame then stacks on a
 * small one (the 512-byte stack limit is for the whole call chain). */
static __attribute__((noinline)) int nat_port(struct __sk_buff *skb, struct pkt *p, int dst,
					      __u16 nport)
{
	__u16 oport = bpf_htons(dst ? p->dport : p->sport);
	__u16 np = bpf_htons(nport);

	if (oport == np)
		return 0;
	if (p->proto == IPPROTO_SCTP) {
		__u32 oports = ((__u32)bpf_htons(p->dport) << 16) | bpf_htons(p->sport);
		__u32 nports = dst ? (((__u32)np << 16) | bpf_htons(p->sport))
				   : (((__u32)bpf_htons(p->dport) << 16) | np);
		if (corral_sctp_ports_csum(skb, p->l4_off, p->l4_len, oports ^ nports) < 0)
			return -1;
	} else if (bpf_l4_csum_replace(skb, l4_csum_off(p), oport,
				       np,
				       (p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0) | 2) < 0) {
		return -1;
	}
	if (bpf_skb_store_bytes(skb, p->l4_off + (dst ? 2 : 0), &np, 2, 0) < 0)
		return -1;
	if (dst)
		p->dport = nport;
	else
		p->sport = nport;
	return 0;
}

/* NAT of one side (dst = 1: destination) of the packet: address, port. */
static __always_inline int nat_rewrite(struct __sk_buff *skb, struct pkt *p, int dst,
				       const __u8 *naddr, __u16 nport)
{
	if (nat_addr(skb, p, dst, naddr) < 0)
		return -1;
	return nat_port(skb, p, dst, nport);
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

/* a == the hairpin address, word compares (no stack buffer) */
static __always_inline int is_hairpin_addr(const __u8 *a, int v6)
{
	__u32 w[4];

	__builtin_memcpy(w, a, 16);
	if (v6)
		return w[0] == bpf_htonl(0xfd0000c0) && w[1] == bpf_htonl(0xffee0042) && !w[2] &&
		       w[3] == bpf_htonl(1);
	return !w[0] && !w[1] && w[2] == bpf_htonl(0xffff) && w[3] == bpf_htonl(0xa9fe2a01);
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

/* The reverse entry of the client's flow to backend (baddr, bport): the
 * backend's answer -> the frontend; to the client itself (hairpin) the
 * answer goes to the hairpin address. Not inlined: its key and value stay
 * off lb_dnat's frame. */
static __attribute__((noinline)) int lb_rev_put(struct pkt *p, const __u8 *baddr, __u16 bport,
						int hair, __u64 now)
{
	struct lb_nat_key k = {};
	struct lb_nat_value v = {};

	if (hair) {
		hairpin_addr(v.addr, p->is_v6);
		nat_key(&k, baddr, v.addr, bport, p->sport, p->proto);
	} else {
		nat_key(&k, baddr, p->saddr, bport, p->sport, p->proto);
	}
	__builtin_memcpy(v.addr, p->daddr, 16);
	v.port = p->dport;
	v.seen_ns = now;
	return bpf_map_update_elem(&corral_lb_rev, &k, &v, BPF_ANY) ? -1 : 0;
}

/* Client side, before policy: 0 not a frontend, 1 translated, 2
 * translated to the client itself (hairpin), -1 error. */
/* The first fragment of a datagram being translated (before its rewrite:
 * p holds the tuple the later fragments carry): its corral_frag entry
 * (written by frag_ports) records the translation, kind FRAG_NAT_DST or
 * FRAG_NAT_SRC, for the later fragments (lb_frag). */
static __attribute__((noinline)) void frag_nat_put(struct __sk_buff *skb, struct pkt *p, __u8 kind,
						   const __u8 *naddr, __u16 nport)
{
	struct corral_frag_key k = {};
	struct corral_frag_value *v;

	frag_key(&k, skb->ifindex, p);
	v = bpf_map_lookup_elem(&corral_frag, &k);
	if (!v)
		return;
	__builtin_memcpy(v->nat_addr, naddr, 16);
	v->nat_port = nport;
	v->nat = kind;
}

/* A later fragment (no L4 header) of a translated datagram: the address
 * its first fragment got (dst = 1: the destination, before policy; 0: the
 * reply's source, after the verdict), and the translated port for policy
 * and conntrack. 1 translated, 0 not a translated datagram, -1 error. */
static __attribute__((noinline)) int lb_frag(struct __sk_buff *skb, struct pkt *p, int dst)
{
	struct corral_frag_key k = {};
	struct corral_frag_value *v;
	__u8 addr[16];
	__u16 port;

	frag_key(&k, skb->ifindex, p);
	v = bpf_map_lookup_elem(&corral_frag, &k);
	if (!v || v->nat != (dst ? FRAG_NAT_DST : FRAG_NAT_SRC))
		return 0;
	__builtin_memcpy(addr, v->nat_addr, 16);
	port = v->nat_port;
	if (nat_addr(skb, p, dst, addr) < 0)
		return -1;
	if (dst)
		p->dport = port;
	else
		p->sport = port;
	return 1;
}

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
		/* a SYN (the client re-used the tuple for a new connection)
		 * or the first packet after a second: the reverse entry is
		 * written again, another flow to the same backend from the
		 * same client port may have taken it over meanwhile */
		int again = (p->tcp_flags & 2) || now - fv->seen_ns >= CT_REFRESH_NS;
		if (now - fv->seen_ns >= CT_REFRESH_NS)
			fv->seen_ns = now;
		hair = addr_eq(fv->addr, p->saddr);
		if (again && lb_rev_put(p, fv->addr, fv->port, hair, now) < 0)
			return -1;
		if (p->frag)
			frag_nat_put(skb, p, FRAG_NAT_DST, fv->addr, fv->port);
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
	hair = addr_eq(be->addr, p->saddr);
	if (lb_rev_put(p, be->addr, be->port, hair, now) < 0)
		return -1;
	/* the forward entry: the client's flow -> the backend */
	nat_key(kp, p->saddr, p->daddr, p->sport, p->dport, p->proto);
	__builtin_memcpy(v.addr, be->addr, 16);
	v.port = be->port;
	v.seen_ns = now;
	if (bpf_map_update_elem(&corral_lb_fwd, kp, &v, BPF_ANY))
		return -1;
	if (p->frag)
		frag_nat_put(skb, p, FRAG_NAT_DST, be->addr, be->port);
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
	if (p->frag)
		frag_nat_put(skb, p, FRAG_NAT_SRC, addr, port);
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
	__u32 local; /* the backend is this node (host network) */
	__u64 seen_ns;
	/* the SNAT source: the frontend (a node address) or, for an
	 * external frontend, the node's source address towards the backend */
	__u8 snat_addr[16];
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

/* Where a NodePort flow's backend daddr is: 1 this node itself (a
 * host-network backend: delivered locally, never SNATed — a local source
 * arriving on the uplink is martian), 0 elsewhere (with want_src, out
 * gets the node's source address on the route to it, as MASQUERADE picks
 * it: the SNAT source of an external frontend's Cluster flows), -1 no
 * route. */
static __attribute__((noinline)) int np_backend_route(struct __sk_buff *skb, int v6,
						      const __u8 *daddr, __u8 *out, int want_src)
{
	struct bpf_fib_lookup f = {};
	long rc;

	f.ifindex = skb->ifindex;
	if (v6) {
		f.family = NP_AF_INET6;
		__builtin_memcpy(f.ipv6_dst, daddr, 16);
	} else {
		f.family = NP_AF_INET;
		__builtin_memcpy(&f.ipv4_dst, daddr + 12, 4);
	}
	rc = bpf_fib_lookup(skb, &f, sizeof(f),
			    BPF_FIB_LOOKUP_SKIP_NEIGH | (want_src ? BPF_FIB_LOOKUP_SRC : 0));
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED)
		return 1;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return -1;
	if (!want_src)
		return 0;
	if (v6)
		__builtin_memcpy(out, f.ipv6_src, 16);
	else
		map_v4(out, f.ipv4_src);
	return 0;
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
 * 3 translated to this node itself (a host-network backend: up the
 * stack), 0 not a NodePort, 2 no backend (drop), -1 error. */
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
	int i, again = 0;

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
		/* as in lb_dnat: a SYN or the first packet after a second
		 * writes the reverse entry again */
		again = (p->tcp_flags & 2) || now - fv->seen_ns >= CT_REFRESH_NS;
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
		i = np_backend_route(skb, p->is_v6, nv.addr, nv.snat_addr,
				     (svc->flags & (CORRAL_LB_EXTERNAL | CORRAL_LB_ETP_LOCAL)) ==
					     CORRAL_LB_EXTERNAL);
		if (i < 0)
			return 2;
		nv.local = i;
		if (!(svc->flags & CORRAL_LB_ETP_LOCAL) && !nv.local) {
			if (!(svc->flags & CORRAL_LB_EXTERNAL))
				__builtin_memcpy(nv.snat_addr, rv.fe_addr, 16);
			/* a free SNAT port: no live reverse entry of
			 * another flow on it */
			for (i = 0; i < NP_SNAT_TRIES; i++) {
				struct np_rev_value *o;
				nv.snat_port = NP_SNAT_MIN + bpf_get_prandom_u32() % NP_SNAT_SPAN;
				nat_key(kp, nv.addr, nv.snat_addr, nv.port, nv.snat_port, p->proto);
				o = bpf_map_lookup_elem(&corral_np_rev, kp);
				if (!o || now - o->seen_ns >= lb_timeout(p->proto))
					break;
			}
			if (i == NP_SNAT_TRIES)
				return 2;
		}
		/* the forward entry (with its SNAT port) */
		nat_key(kp, p->saddr, p->daddr, p->sport, p->dport, p->proto);
		if (bpf_map_update_elem(&corral_np_fwd, kp, &nv, BPF_ANY))
			return -1;
		again = 1;
	}
	if (again) {
		/* the reverse entry: the reply as it arrives -> the frontend
		 * and the client */
		__builtin_memcpy(rv.cl_addr, p->saddr, 16);
		rv.fe_port = p->dport;
		rv.cl_port = p->sport;
		rv.seen_ns = now;
		if (nv.snat_port)
			nat_key(kp, nv.addr, nv.snat_addr, nv.port, nv.snat_port, p->proto);
		else
			nat_key(kp, nv.addr, p->saddr, nv.port, p->sport, p->proto);
		if (bpf_map_update_elem(&corral_np_rev, kp, &rv, BPF_ANY))
			return -1;
	}
	if (nat_rewrite(skb, p, 1, nv.addr, nv.port) < 0)
		return -1;
	if (nv.snat_port && nat_rewrite(skb, p, 0, nv.snat_addr, nv.snat_port) < 0)
		return -1;
	return nv.local ? 3 : 1;
}

#endif /* CORRAL_LB_H */
