//! A minimal rtnetlink client (NETLINK_ROUTE over a rustix socket, no
//! `unsafe`) for the standalone ADD path: veth with its peer created in the
//! pod netns, link up, addresses, routes, link lookups. Requests of one
//! step go out in a single `send` and their ACKs are read together, so the
//! whole host side is two round trips and no process exec (iproute2 used
//! to cost two fork+execs per ADD).
//!
//! The socket talks to the network namespace of the thread that opened it
//! (corral-cni's `sys::in_netns`). It lives below both corral-cni (links,
//! addresses, routes) and corral-agent (tc qdisc/filter dumps for attach
//! placement); errors are `NlError`, which corral-cni maps to CNI codes.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType, recv, send, socket};

/// Which side failed: the socket itself, or the kernel refusing a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NlErrorKind {
    /// socket/send/recv/truncation (CNI code 5, I/O)
    Io,
    /// the kernel answered with an error (CNI code 100, link operation)
    Link,
}

/// A netlink failure with its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NlError {
    pub kind: NlErrorKind,
    pub msg: String,
}

impl NlError {
    fn io(msg: impl Into<String>) -> Self {
        NlError {
            kind: NlErrorKind::Io,
            msg: msg.into(),
        }
    }
}

impl std::fmt::Display for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for NlError {}

pub type NlResult<T> = Result<T, NlError>;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFF_UP: u32 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const RTNH_F_ONLINK: u32 = 4;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

fn family(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() { AF_INET } else { AF_INET6 }
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// One netlink message under construction (header filled in by `finish`).
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(ty: u16, flags: u16) -> Msg {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // len
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // seq
        buf.extend_from_slice(&0u32.to_ne_bytes()); // pid
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// struct ifinfomsg
    fn ifinfo(&mut self, index: i32, flags: u32, change: u32) -> &mut Self {
        self.bytes(&[0, 0, 0, 0])
            .bytes(&index.to_ne_bytes())
            .bytes(&flags.to_ne_bytes())
            .bytes(&change.to_ne_bytes())
    }

    fn align(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        self.align();
        let len = (4 + payload.len()) as u16;
        self.bytes(&len.to_ne_bytes())
            .bytes(&ty.to_ne_bytes())
            .bytes(payload);
        self.align();
        self
    }

    fn attr_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    fn attr_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.attr(ty, &b)
    }

    fn nest(&mut self, ty: u16) -> &mut Self {
        self.align();
        self.nests.push(self.buf.len());
        self.bytes(&0u16.to_ne_bytes()).bytes(&ty.to_ne_bytes())
    }

    fn end(&mut self) -> &mut Self {
        self.align();
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        self.align();
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// A request with the text used in its error message.
pub struct Req {
    msg: Msg,
    what: String,
}

/// Creates `host` (here) with its veth peer `peer` directly inside the
/// network namespace `peer_ns` (no temporary name, no window in this netns).
pub fn veth(host: &str, peer: &str, mtu: u32, peer_ns: BorrowedFd<'_>) -> Req {
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
    m.ifinfo(0, 0, 0)
        .attr_str(IFLA_IFNAME, host)
        .attr_u32(IFLA_MTU, mtu)
        .nest(IFLA_LINKINFO)
        .attr_str(IFLA_INFO_KIND, "veth")
        .nest(IFLA_INFO_DATA)
        .nest(VETH_INFO_PEER)
        .ifinfo(0, 0, 0)
        .attr_str(IFLA_IFNAME, peer)
        .attr_u32(IFLA_MTU, mtu)
        .attr_u32(IFLA_NET_NS_FD, peer_ns.as_raw_fd() as u32)
        .end()
        .end()
        .end();
    Req {
        msg: m,
        what: format!("link add {host} type veth peer name {peer}"),
    }
}

pub fn link_up(name: &str) -> Req {
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK);
    m.ifinfo(0, IFF_UP, IFF_UP).attr_str(IFLA_IFNAME, name);
    Req {
        msg: m,
        what: format!("link set {name} up"),
    }
}

pub fn link_del(name: &str) -> Req {
    let mut m = Msg::new(RTM_DELLINK, NLM_F_ACK);
    m.ifinfo(0, 0, 0).attr_str(IFLA_IFNAME, name);
    Req {
        msg: m,
        what: format!("link del {name}"),
    }
}

/// `ip addr add <ip>/<prefix> dev <index> [scope] [nodad]`
pub fn addr(ifindex: u32, ip: IpAddr, prefix: u8, scope: u8, nodad: bool) -> Req {
    let mut m = Msg::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
    m.bytes(&[family(&ip), prefix, 0, scope])
        .bytes(&ifindex.to_ne_bytes())
        .attr(IFA_LOCAL, &ip_bytes(&ip))
        .attr(IFA_ADDRESS, &ip_bytes(&ip));
    if nodad {
        m.attr_u32(IFA_FLAGS, IFA_F_NODAD);
    }
    Req {
        msg: m,
        what: format!("addr add {ip}/{prefix} dev #{ifindex}"),
    }
}

/// `ip route replace <dst>/<len> [via <gw> [onlink]] dev <oif> [scope]`
pub fn route(dst: IpAddr, len: u8, gw: Option<IpAddr>, oif: u32, scope: u8, onlink: bool) -> Req {
    let mut m = Msg::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
    let flags = if onlink { RTNH_F_ONLINK } else { 0 };
    m.bytes(&[
        family(&dst),
        len,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_BOOT,
        scope,
        RTN_UNICAST,
    ])
    .bytes(&flags.to_ne_bytes());
    if len > 0 {
        m.attr(RTA_DST, &ip_bytes(&dst));
    }
    if let Some(g) = gw {
        m.attr(RTA_GATEWAY, &ip_bytes(&g));
    }
    m.attr_u32(RTA_OIF, oif);
    Req {
        msg: m,
        what: match gw {
            Some(g) => format!("route replace {dst}/{len} via {g} dev #{oif}"),
            None => format!("route replace {dst}/{len} dev #{oif}"),
        },
    }
}

const RTM_GETQDISC: u16 = 38;
const RTM_NEWQDISC: u16 = 36;
const RTM_NEWTFILTER: u16 = 44;
const RTM_GETTFILTER: u16 = 46;
const NLM_F_DUMP: u16 = 0x300;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;

/// One tc object (qdisc or classifier) from a dump.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcObject {
    pub ifindex: u32,
    /// tcm_parent
    pub parent: u32,
    /// tcm_handle (qdisc handle, or the filter handle)
    pub handle: u32,
    /// filters: the priority ("pref")
    pub prio: u16,
    /// filters: the protocol (network byte order value, e.g. 0x0003 = all)
    pub protocol: u16,
    pub kind: String,
    /// cls_bpf: the program name
    pub bpf_name: String,
}

fn tcmsg(m: &mut Msg, ifindex: u32, handle: u32, parent: u32) {
    m.bytes(&[0, 0, 0, 0])
        .bytes(&(ifindex as i32).to_ne_bytes())
        .bytes(&handle.to_ne_bytes())
        .bytes(&parent.to_ne_bytes())
        .bytes(&0u32.to_ne_bytes());
}

fn parse_tc(p: &[u8]) -> Option<TcObject> {
    if p.len() < 20 {
        return None;
    }
    let u = |o: usize| u32::from_ne_bytes(p[o..o + 4].try_into().unwrap_or([0; 4]));
    let info = u(16);
    let mut t = TcObject {
        ifindex: u(4),
        handle: u(8),
        parent: u(12),
        prio: (info >> 16) as u16,
        protocol: u16::from_be((info & 0xffff) as u16),
        ..Default::default()
    };
    for (ty, v) in attrs(&p[20..]) {
        match ty {
            TCA_KIND => t.kind = cstr(v),
            TCA_OPTIONS => {
                for (o, ov) in attrs(v) {
                    if o == TCA_BPF_NAME {
                        t.bpf_name = cstr(ov);
                    }
                }
            }
            _ => {}
        }
    }
    Some(t)
}

/// What RTM_GETLINK tells about one interface.
#[derive(Clone, Debug, Default)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mac: String,
    /// IFLA_LINK: the peer's ifindex for a veth
    pub link: Option<u32>,
    pub kind: String,
}

pub struct Nl {
    fd: OwnedFd,
    seq: u32,
}

fn link_err(what: &str, errno: i32) -> NlError {
    NlError {
        kind: NlErrorKind::Link,
        msg: format!(
            "netlink {what}: {}",
            std::io::Error::from_raw_os_error(errno)
        ),
    }
}

impl Nl {
    /// A NETLINK_ROUTE socket in the calling thread's network namespace.
    pub fn open() -> NlResult<Nl> {
        // protocol 0 = NETLINK_ROUTE
        let fd = socket(AddressFamily::NETLINK, SocketType::RAW, None)
            .map_err(|e| NlError::io(format!("netlink socket: {e}")))?;
        Ok(Nl { fd, seq: 1 })
    }

    fn send_all(&mut self, bufs: &[u8]) -> NlResult<()> {
        let n = send(self.fd.as_fd(), bufs, SendFlags::empty())
            .map_err(|e| NlError::io(format!("netlink send: {e}")))?;
        if n != bufs.len() {
            return Err(NlError::io("netlink send: short write"));
        }
        Ok(())
    }

    /// Reads messages until `f` has seen what it waits for (returns true).
    fn read(&mut self, mut f: impl FnMut(u16, u32, &[u8]) -> NlResult<bool>) -> NlResult<()> {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let (n, _) = recv(self.fd.as_fd(), &mut buf[..], RecvFlags::empty())
                .map_err(|e| NlError::io(format!("netlink recv: {e}")))?;
            let mut off = 0;
            while off + 16 <= n {
                let len =
                    u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or([0; 4])) as usize;
                if len < 16 || off + len > n {
                    return Err(NlError::io("netlink: truncated message"));
                }
                let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap_or([0; 4]));
                if f(ty, seq, &buf[off + 16..off + len])? {
                    return Ok(());
                }
                off += len.div_ceil(4) * 4;
            }
        }
    }

    /// Sends `reqs` in one write and waits for every ACK; the first
    /// failure (in request order) is returned, naming its request.
    pub fn run(&mut self, reqs: Vec<Req>) -> NlResult<()> {
        if reqs.is_empty() {
            return Ok(());
        }
        let first = self.seq;
        let mut out = Vec::new();
        let mut what = Vec::new();
        for r in reqs {
            out.extend(r.msg.finish(self.seq));
            what.push(r.what);
            self.seq += 1;
        }
        self.send_all(&out)?;
        let mut pending = what.len();
        let mut errs: Vec<Option<i32>> = vec![None; what.len()];
        self.read(|ty, seq, payload| {
            if ty == NLMSG_ERROR && seq >= first && ((seq - first) as usize) < errs.len() {
                let e = i32::from_ne_bytes(payload[..4].try_into().unwrap_or([0; 4]));
                errs[(seq - first) as usize] = Some(-e);
                pending -= 1;
            }
            Ok(pending == 0)
        })?;
        for (e, w) in errs.iter().zip(&what) {
            if let Some(code) = e
                && *code != 0
            {
                return Err(link_err(w, *code));
            }
        }
        Ok(())
    }

    /// RTM_GETLINK by name (or by index when `name` is empty); None when
    /// there is no such interface.
    pub fn link(&mut self, name: &str, index: u32) -> NlResult<Option<LinkInfo>> {
        let mut m = Msg::new(RTM_GETLINK, 0);
        m.ifinfo(index as i32, 0, 0);
        if !name.is_empty() {
            m.attr_str(IFLA_IFNAME, name);
        }
        let seq = self.seq;
        self.seq += 1;
        self.send_all(&m.finish(seq))?;
        let mut res: NlResult<Option<LinkInfo>> = Ok(None);
        let what = if name.is_empty() {
            format!("link show #{index}")
        } else {
            format!("link show {name}")
        };
        self.read(|ty, s, payload| {
            if s != seq {
                return Ok(false);
            }
            match ty {
                NLMSG_ERROR => {
                    let e = -i32::from_ne_bytes(payload[..4].try_into().unwrap_or([0; 4]));
                    res = match e {
                        0 => Ok(None),
                        19 => Ok(None), // ENODEV
                        e => Err(link_err(&what, e)),
                    };
                    Ok(true)
                }
                NLMSG_DONE => Ok(true),
                RTM_NEWLINK => {
                    res = Ok(Some(parse_link(payload)));
                    Ok(true)
                }
                _ => Ok(false),
            }
        })?;
        res
    }
}

impl Nl {
    fn dump_tc(
        &mut self,
        ty: u16,
        reply: u16,
        ifindex: u32,
        parent: u32,
    ) -> NlResult<Vec<TcObject>> {
        let mut m = Msg::new(ty, NLM_F_DUMP);
        tcmsg(&mut m, ifindex, 0, parent);
        let seq = self.seq;
        self.seq += 1;
        self.send_all(&m.finish(seq))?;
        let mut out = Vec::new();
        let mut res = Ok(());
        self.read(|t, s, payload| {
            if s != seq {
                return Ok(false);
            }
            match t {
                NLMSG_ERROR => {
                    let e = -i32::from_ne_bytes(payload[..4].try_into().unwrap_or([0; 4]));
                    // EINVAL/ENOENT: no such qdisc/block → nothing attached
                    if e != 0 && e != 22 && e != 2 {
                        res = Err(link_err(&format!("tc dump on #{ifindex}"), e));
                    }
                    Ok(true)
                }
                NLMSG_DONE => Ok(true),
                t if t == reply => {
                    if let Some(o) = parse_tc(payload) {
                        out.push(o);
                    }
                    Ok(false)
                }
                _ => Ok(false),
            }
        })?;
        res.map(|()| out)
    }

    /// The qdiscs of interface `ifindex`.
    pub fn qdiscs(&mut self, ifindex: u32) -> NlResult<Vec<TcObject>> {
        let v = self.dump_tc(RTM_GETQDISC, RTM_NEWQDISC, ifindex, 0)?;
        // the kernel may dump every interface's qdiscs; keep this one's
        Ok(v.into_iter().filter(|q| q.ifindex == ifindex).collect())
    }

    /// The classifiers attached under `parent` (e.g. ffff:fff2 = the
    /// clsact/ingress hook) of interface `ifindex`.
    pub fn filters(&mut self, ifindex: u32, parent: u32) -> NlResult<Vec<TcObject>> {
        self.dump_tc(RTM_GETTFILTER, RTM_NEWTFILTER, ifindex, parent)
    }
}

fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut v = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        v.push((ty, &b[4..len]));
        let next = len.div_ceil(4) * 4;
        if next >= b.len() {
            break;
        }
        b = &b[next..];
    }
    v
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn parse_link(p: &[u8]) -> LinkInfo {
    let mut li = LinkInfo::default();
    if p.len() < 16 {
        return li;
    }
    li.index = i32::from_ne_bytes(p[4..8].try_into().unwrap_or([0; 4])) as u32;
    for (ty, v) in attrs(&p[16..]) {
        match ty {
            IFLA_IFNAME => li.name = cstr(v),
            IFLA_ADDRESS => {
                li.mac = v
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            }
            IFLA_LINK if v.len() >= 4 => {
                li.link = Some(u32::from_ne_bytes(v[..4].try_into().unwrap_or([0; 4])))
            }
            IFLA_LINKINFO => {
                for (t, iv) in attrs(v) {
                    if t == IFLA_INFO_KIND {
                        li.kind = cstr(iv);
                    }
                }
            }
            _ => {}
        }
    }
    li
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_aligned_and_nested_lengths_cover_their_attributes() {
        let r = route(
            "0.0.0.0".parse().unwrap(),
            0,
            Some("169.254.1.1".parse().unwrap()),
            7,
            RT_SCOPE_UNIVERSE,
            true,
        );
        let b = r.msg.finish(9);
        assert_eq!(b.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 9);
        // rtmsg (12) then RTA_GATEWAY (8) and RTA_OIF (8): no RTA_DST for /0
        let a = attrs(&b[16 + 12..]);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0], (RTA_GATEWAY, &[169u8, 254, 1, 1][..]));
        assert_eq!(a[1].0, RTA_OIF);

        let mut m = Msg::new(RTM_NEWLINK, 0);
        m.ifinfo(0, 0, 0)
            .attr_str(IFLA_IFNAME, "crl0")
            .nest(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .end();
        let b = m.finish(1);
        let top = attrs(&b[32..]);
        assert_eq!(top[0], (IFLA_IFNAME, &b"crl0\0"[..]));
        assert_eq!(top[1].0, IFLA_LINKINFO);
        assert_eq!(attrs(top[1].1), vec![(IFLA_INFO_KIND, &b"veth\0"[..])]);
    }

    #[test]
    fn parse_link_reads_name_mac_peer_and_kind() {
        let mut m = Msg::new(RTM_NEWLINK, 0);
        m.ifinfo(42, 0, 0)
            .attr_str(IFLA_IFNAME, "eth0")
            .attr(IFLA_ADDRESS, &[0x02, 0, 0, 0, 0, 0xab])
            .attr_u32(IFLA_LINK, 17)
            .nest(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .end();
        let b = m.finish(1);
        let li = parse_link(&b[16..]);
        assert_eq!(li.index, 42);
        assert_eq!(li.name, "eth0");
        assert_eq!(li.mac, "02:00:00:00:00:ab");
        assert_eq!(li.link, Some(17));
        assert_eq!(li.kind, "veth");
        // garbage never panics
        let _ = parse_link(&[1, 2, 3]);
        let _ = attrs(&[255, 255, 1, 0, 9]);
    }
}
