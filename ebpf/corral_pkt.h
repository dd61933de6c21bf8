// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Packet parsing shared by Corral's programs (corral.bpf.c: policy,
 * conntrack, limits; corral_lb.h: Service translation): the parsed view
 * of a packet (struct pkt), the parser, and what is derived from it in
 * more than one place (the fragment key of a datagram, the L4 checksum
 * offset, the L4 length). One parser: the translation code rewrites the
 * packet through the offsets and lengths recorded here and never reads
 * the IP headers again.
 */
#ifndef CORRAL_PKT_H
#define CORRAL_PKT_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

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

/* IPv6 extension headers walked before the L4 header */
#define MAX_EXT_HDRS 8

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
	__u16 l4_len; /* bytes from l4_off to the end of the IP packet (0: unknown) */
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
	__u32 l3_end; /* offset of the end of the IP packet */

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
		l3_end = sizeof(*eth) + bpf_ntohs(ip->tot_len);
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
		l3_end = l4_off + bpf_ntohs(ip6->payload_len);
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
	if (l3_end > l4_off && l3_end - l4_off <= 0xffff)
		p->l4_len = l3_end - l4_off;
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

/* The datagram a (first or later) fragment belongs to, on interface
 * ifindex: the key of corral_frag. */
static __always_inline void frag_key(struct corral_frag_key *k, __u32 ifindex, const struct pkt *p)
{
	k->ifindex = ifindex;
	k->id = p->frag_id;
	k->proto = p->proto;
	__builtin_memcpy(k->saddr, p->saddr, 16);
	__builtin_memcpy(k->daddr, p->daddr, 16);
}

/* Offset of the TCP or UDP checksum of the parsed packet */
static __always_inline __u32 l4_csum_off(const struct pkt *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP ? 16 : 6);
}

#endif /* CORRAL_PKT_H */
