//! Rust mirror of `ebpf/corral_abi.h`, the only kernel/user ABI.
//!
//! Every type is `#[repr(C)]` with the same explicit padding as the header.
//! `layout_matches_c_header` checks sizes, alignments, offsets and constants
//! against assertions that build.rs generates by compiling the header.

use std::net::IpAddr;

pub const DIR_INGRESS: u32 = 0;
pub const DIR_EGRESS: u32 = 1;
pub const NUM_DIRS: usize = 2;
pub const NUM_CLASSES: usize = 3;
pub const EP_POLICY_INGRESS: u32 = 1 << 0;
pub const EP_POLICY_EGRESS: u32 = 1 << 1;
pub const EP_DSCP: u32 = 1 << 2;
pub const MAX_PORT_RANGES: usize = 16;
pub const PV_ALL_PORTS: u32 = 1 << 0;
pub const CT_ESTABLISHED: u32 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;
/// Bits of a policy key before the address: ifindex + dir.
pub const POLICY_KEY_HEADER_BITS: u32 = 64;
/// Largest rate the kernel token bucket computes without overflow.
pub const MAX_RATE_BYTES_PER_SEC: u64 = 4_000_000_000;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    pub rate_bytes_per_sec: u64,
    pub burst_bytes: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCfg {
    pub endpoint_id: u32,
    pub flags: u32,
    pub class_id: u8,
    pub dscp: u8,
    pub pad: [u8; 6],
    pub limits: [Limit; NUM_DIRS],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EpDirKey {
    pub ifindex: u32,
    pub dir: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// `struct bpf_spin_lock`; never touched by user space (the kernel skips
    /// it when copying values).
    pub lock: u32,
    pub pad: u32,
    pub tokens: i64,
    pub last_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub drop_policy: u64,
    pub drop_rate: u64,
    pub drop_class: u64,
    pub drop_malformed: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.drop_policy += o.drop_policy;
        self.drop_rate += o.drop_rate;
        self.drop_class += o.drop_class;
        self.drop_malformed += o.drop_malformed;
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCfg {
    pub rate_bytes_per_sec: u64,
    pub burst_bytes: u64,
    pub min_share_permille: [u16; NUM_CLASSES],
    pub reserve_permille: [u16; NUM_CLASSES],
    pub dscp: [u8; NUM_CLASSES],
    pub pad: [u8; 1],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub prefixlen: u32,
    pub ifindex: u32,
    pub dir: u32,
    pub addr: [u8; 16],
}

/// The data part of [`PolicyKey`] (everything after `prefixlen`), the `K`
/// of aya's `lpm_trie::Key<K>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKeyData {
    pub ifindex: u32,
    pub dir: u32,
    pub addr: [u8; 16],
}

impl PolicyKey {
    pub fn to_lpm(&self) -> aya::maps::lpm_trie::Key<PolicyKeyData> {
        aya::maps::lpm_trie::Key::new(
            self.prefixlen,
            PolicyKeyData {
                ifindex: self.ifindex,
                dir: self.dir,
                addr: self.addr,
            },
        )
    }
    pub fn from_lpm(k: &aya::maps::lpm_trie::Key<PolicyKeyData>) -> Self {
        let d = k.data();
        PolicyKey {
            prefixlen: k.prefix_len(),
            ifindex: d.ifindex,
            dir: d.dir,
            addr: d.addr,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub proto: u8,
    pub pad: u8,
    pub port_lo: u16,
    pub port_hi: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyValue {
    pub flags: u32,
    pub nranges: u32,
    pub ranges: [PortRange; MAX_PORT_RANGES],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub ifindex: u32,
    pub dir: u8,
    pub proto: u8,
    pub pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    pub last_seen_ns: u64,
    pub state: u32,
    pub pad: u32,
}

/// `skb->mark` bit of a packet whose egress verdict is deferred until the
/// DNAT in front (kube-proxy) has picked the backend.
pub const MARK_DEFER: u32 = 0x0010_0000;

/// Key of map `corral_svc`: a Service frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SvcKey {
    pub addr: [u8; 16],
    /// host byte order
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvcValue {
    pub flags: u32,
}

/// Value of map `corral_lb_svc` (key `SvcKey`): a frontend's backends are
/// `corral_lb_be` entries `(svc_id, 0..count)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbSvc {
    pub svc_id: u32,
    pub count: u32,
    /// sessionAffinity ClientIP timeout, seconds (0 = off)
    pub affinity_s: u32,
    /// `LB_NODEPORT` | `LB_ETP_LOCAL`
    pub flags: u16,
    /// backends `0..local_count` are on this node
    pub local_count: u16,
}

/// `LbSvc::flags`: a NodePort frontend (node address, nodePort)
pub const LB_NODEPORT: u16 = 1;
/// `LbSvc::flags`: externalTrafficPolicy Local (node-local backends only,
/// client source kept)
pub const LB_ETP_LOCAL: u16 = 2;
/// `LbSvc::flags` (with `LB_NODEPORT`): an external frontend (externalIP,
/// load-balancer IP) × Service port; Cluster SNAT to the node's source
/// address on the route to the backend
pub const LB_EXTERNAL: u16 = 4;
/// `corral_lb_cfg[0]`: translation on
pub const LB_ON: u32 = 1;
/// `corral_lb_cfg[0]`: NodePort frontends exist (NodePort paths run)
pub const LB_HAS_NODEPORTS: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LbBeKey {
    pub svc_id: u32,
    pub index: u32,
}

/// A backend: address (IPv4-mapped for IPv4) and target port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbBe {
    pub addr: [u8; 16],
    /// host byte order
    pub port: u16,
    pub pad: u16,
}

/// Key of the LRU maps `corral_lb_fwd` (the client's flow as addressed)
/// and `corral_lb_rev` (the backend's reply); kernel-written.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbNatKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// host byte order
    pub sport: u16,
    /// host byte order
    pub dport: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

/// Value of `corral_lb_fwd` / `corral_lb_rev`: the address and port the
/// flow is translated to, and when it was last seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbNatValue {
    pub addr: [u8; 16],
    /// host byte order
    pub port: u16,
    pub pad: u16,
    pub pad2: u32,
    pub seen_ns: u64,
}

/// Key of the LRU map `corral_defer` (kernel-written; read by tests).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeferKey {
    pub saddr: [u8; 16],
    pub sport: u16,
    pub proto: u8,
    pub pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeferValue {
    pub ifindex: u32,
    pub vport: u16,
    pub pad: u16,
    pub vaddr: [u8; 16],
}

// SAFETY (all impls below): aya::Pod requires plain-old-data types that are
// valid for any bit pattern and contain no implicit padding. Every type is
// #[repr(C)] and made only of integers/arrays of integers with explicit
// padding fields; `layout_matches_c_header` checks that the layout equals
// the C header's, where every hole is spelled out as a pad field.
unsafe impl aya::Pod for Limit {}
// SAFETY: see above.
unsafe impl aya::Pod for EndpointCfg {}
// SAFETY: see above.
unsafe impl aya::Pod for EpDirKey {}
// SAFETY: see above.
unsafe impl aya::Pod for Bucket {}
// SAFETY: see above.
unsafe impl aya::Pod for Counters {}
// SAFETY: see above.
unsafe impl aya::Pod for NodeCfg {}
// SAFETY: see above.
unsafe impl aya::Pod for PolicyKey {}
// SAFETY: see above.
unsafe impl aya::Pod for PortRange {}
// SAFETY: see above.
unsafe impl aya::Pod for PolicyKeyData {}
// SAFETY: see above.
unsafe impl aya::Pod for PolicyValue {}
// SAFETY: see above.
unsafe impl aya::Pod for CtKey {}
// SAFETY: see above.
unsafe impl aya::Pod for CtValue {}
// SAFETY: see above.
unsafe impl aya::Pod for SvcKey {}
// SAFETY: see above.
unsafe impl aya::Pod for SvcValue {}
// SAFETY: see above.
unsafe impl aya::Pod for LbSvc {}
// SAFETY: see above.
unsafe impl aya::Pod for LbBeKey {}
// SAFETY: see above.
unsafe impl aya::Pod for LbBe {}
// SAFETY: see above.
unsafe impl aya::Pod for LbNatKey {}
// SAFETY: see above.
unsafe impl aya::Pod for LbNatValue {}
// SAFETY: see above.
unsafe impl aya::Pod for DeferKey {}
// SAFETY: see above.
unsafe impl aya::Pod for DeferValue {}

// ---- Policy tiers (corral_abi.h, appended section)

pub const EP_TIER_INGRESS: u32 = 1 << 3;
pub const EP_TIER_EGRESS: u32 = 1 << 4;
pub const MAX_TIER_RANGES: usize = 32;
pub const VERDICT_DENY: u8 = 0;
pub const VERDICT_ALLOW: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TierRange {
    pub proto: u8,
    pub verdict: u8,
    pub port_lo: u16,
    pub port_hi: u16,
    pub rule: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierValue {
    pub default_verdict: u8,
    pub pad: u8,
    pub default_rule: u16,
    pub nranges: u32,
    pub ranges: [TierRange; MAX_TIER_RANGES],
}

// SAFETY: #[repr(C)] plain integers with no implicit padding (layout
// checked against the C header by `layout_matches_c_header`); any bit
// pattern is valid.
unsafe impl aya::Pod for TierValue {}

// ---- Drop events (corral_abi.h, appended section)

pub const RULE_NP: u16 = 0xfffe;
pub const DROP_POLICY: u8 = 1;
pub const DROP_RATE: u8 = 2;
pub const DROP_CLASS: u8 = 3;
pub const DROP_MALFORMED: u8 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEvent {
    pub time_ns: u64,
    pub ifindex: u32,
    pub len: u32,
    pub dir: u8,
    pub reason: u8,
    pub proto: u8,
    pub pad: u8,
    pub rule: u16,
    pub sport: u16,
    pub dport: u16,
    pub pad2: [u8; 6],
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

impl DropEvent {
    /// Decodes a ring buffer record (`None` if it is too short).
    pub fn from_bytes(b: &[u8]) -> Option<DropEvent> {
        use core::mem::offset_of;
        if b.len() < core::mem::size_of::<DropEvent>() {
            return None;
        }
        let arr = |o: usize| -> [u8; 2] { [b[o], b[o + 1]] };
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut e = DropEvent {
            time_ns: u64::from_ne_bytes(b[..8].try_into().ok()?),
            ifindex: u32_at(offset_of!(DropEvent, ifindex)),
            len: u32_at(offset_of!(DropEvent, len)),
            dir: b[offset_of!(DropEvent, dir)],
            reason: b[offset_of!(DropEvent, reason)],
            proto: b[offset_of!(DropEvent, proto)],
            rule: u16::from_ne_bytes(arr(offset_of!(DropEvent, rule))),
            sport: u16::from_ne_bytes(arr(offset_of!(DropEvent, sport))),
            dport: u16::from_ne_bytes(arr(offset_of!(DropEvent, dport))),
            ..Default::default()
        };
        let (s, d) = (offset_of!(DropEvent, saddr), offset_of!(DropEvent, daddr));
        e.saddr.copy_from_slice(&b[s..s + 16]);
        e.daddr.copy_from_slice(&b[d..d + 16]);
        Some(e)
    }
}

/// The compiled eBPF object (built by build.rs from ebpf/corral.bpf.c).
pub static BPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/corral.bpf.o"));

/// Address as the kernel stores it: IPv6, IPv4 as IPv4-mapped IPv6.
pub fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Prefix length in the 128-bit (mapped) address space.
pub fn prefix128(ip: IpAddr, len: u8) -> u32 {
    match ip {
        IpAddr::V4(_) => 96 + u32::from(len),
        IpAddr::V6(_) => u32::from(len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_c_header() {
        include!(concat!(env!("OUT_DIR"), "/abi_layout.rs"));
        // aya's packed LPM key wraps PolicyKeyData exactly like PolicyKey
        assert_eq!(
            core::mem::size_of::<aya::maps::lpm_trie::Key<PolicyKeyData>>(),
            core::mem::size_of::<PolicyKey>()
        );
        assert_eq!(
            core::mem::offset_of!(PolicyKey, ifindex) - 4,
            core::mem::offset_of!(PolicyKeyData, ifindex)
        );
        assert_eq!(
            core::mem::offset_of!(PolicyKey, addr) - 4,
            core::mem::offset_of!(PolicyKeyData, addr)
        );
    }

    #[test]
    fn object_is_embedded_elf() {
        assert!(BPF_OBJECT.len() > 1000);
        assert_eq!(&BPF_OBJECT[..4], b"\x7fELF");
    }

    #[test]
    fn v4_is_mapped() {
        let a = addr16("198.18.0.1".parse().unwrap());
        assert_eq!(&a[10..], &[0xff, 0xff, 198, 18, 0, 1]);
        assert_eq!(prefix128("198.18.0.0".parse().unwrap(), 15), 111);
    }
}
