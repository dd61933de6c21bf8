//! Multi-node pod networking: routes to the other nodes' pod CIDRs, from
//! Node objects (`spec.podCIDRs`, `status.addresses` InternalIP), and this
//! node's CNI config written with its own pod CIDRs.
//!
//! Modes (`corral-agent --routing`):
//! - `native`: one route per remote pod CIDR via that node's InternalIP
//!   (nodes on one L2 segment).
//! - `vxlan`: a kernel VXLAN device (`corral.vx`, no learning); per remote
//!   node a permanent FDB entry (its VTEP MAC → its InternalIP), a
//!   permanent neighbour (the network address of each of its pod CIDRs →
//!   its VTEP MAC) and a route `CIDR via <network address> dev corral.vx
//!   onlink`. A node's VTEP MAC is derived from its InternalIP, so no
//!   annotation exchange is needed; this node's VTEP answers on the
//!   network address of each of its own pod CIDRs. The device MTU (and the
//!   pods', via the CNI config) is the underlay MTU minus 50 (IPv4
//!   underlay) or 70 (IPv6).
//!
//! Routes carry protocol [`RT_PROTO`], so a sync compares against exactly
//! the routes Corral made: only the difference is added or removed, local
//! pod routes and established local traffic are never touched. Kernel
//! state stays when the agent exits (like the pinned maps).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Node;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

/// rtnetlink protocol of Corral's routes (`ip route show proto 203`).
pub const RT_PROTO: u8 = 203;
pub const VXLAN_DEV: &str = "corral.vx";
/// IANA VXLAN port
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
pub const DEFAULT_VNI: u32 = 7331;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    /// no routes to other nodes (single node, or another plugin routes)
    None,
    /// routes via each node's InternalIP (nodes on one L2)
    Native,
    /// VXLAN overlay between the nodes' InternalIPs
    Vxlan,
}

/// What Corral needs of a Node object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub internal_ips: Vec<IpAddr>,
    pub pod_cidrs: Vec<(IpAddr, u8)>,
}

/// "198.18.1.0/24" → network address and prefix (host bits must be 0).
pub fn parse_net(s: &str) -> Result<(IpAddr, u8)> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("{s:?} is not a CIDR"))?;
    let ip: IpAddr = a.parse().map_err(|_| anyhow!("{s:?} is not a CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let p: u8 = p
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| anyhow!("{s:?}: prefix is not in 0..={max}"))?;
    if network(ip, p) != ip {
        bail!(
            "{s:?} has host bits set (network is {}/{p})",
            network(ip, p)
        );
    }
    Ok((ip, p))
}

pub fn network(ip: IpAddr, p: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

fn cidr_str((a, p): &(IpAddr, u8)) -> String {
    format!("{a}/{p}")
}

impl NodeInfo {
    /// From a Node object: `spec.podCIDRs` (or `spec.podCIDR`) and the
    /// InternalIP addresses. Errors name the node and the field.
    pub fn from_node(n: &Node) -> Result<NodeInfo, String> {
        let name = n.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err("Node without metadata.name".into());
        }
        let spec = n.spec.clone().unwrap_or_default();
        let mut raw: Vec<String> = spec.pod_cidrs.unwrap_or_default();
        if raw.is_empty()
            && let Some(c) = spec.pod_cidr
        {
            raw.push(c);
        }
        let mut pod_cidrs = Vec::new();
        for (i, c) in raw.iter().enumerate() {
            let v = parse_net(c).map_err(|e| format!("Node {name}: spec.podCIDRs[{i}]: {e:#}"))?;
            pod_cidrs.push(v);
        }
        let mut internal_ips = Vec::new();
        for (i, a) in n
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .enumerate()
        {
            if a.type_ == "InternalIP" {
                let ip = a.address.parse().map_err(|_| {
                    format!(
                        "Node {name}: status.addresses[{i}].address {:?} is not an IP address",
                        a.address
                    )
                })?;
                internal_ips.push(ip);
            }
        }
        Ok(NodeInfo {
            name,
            internal_ips,
            pod_cidrs,
        })
    }

    fn ip_of(&self, v4: bool) -> Option<IpAddr> {
        self.internal_ips
            .iter()
            .find(|a| a.is_ipv4() == v4)
            .copied()
    }

    /// The underlay address: the first InternalIP (IPv4 preferred).
    pub fn underlay(&self) -> Option<IpAddr> {
        self.ip_of(true).or_else(|| self.ip_of(false))
    }
}

/// The VTEP MAC of the node with underlay address `ip`: locally
/// administered, unicast, from the address' last 4 bytes.
pub fn vtep_mac(ip: IpAddr) -> String {
    let b = match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    format!("0e:c5:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

#[derive(Clone, Debug)]
pub struct Options {
    pub mode: RoutingMode,
    pub node_name: String,
    pub vni: u32,
    pub vxlan_port: u16,
    /// CNI config to write (`--cni-conf`) and the template it is made from
    pub cni_conf: Option<PathBuf>,
    pub cni_conf_template: Option<PathBuf>,
}

/// One route Corral wants: dst, via, dev (vxlan: onlink).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Want {
    dst: String,
    via: IpAddr,
    dev: Option<String>,
}

/// What a sync did (for logs, status and tests); part of the socket
/// protocol (`status`), so defined there.
pub use crate::api::RoutingStatus;

pub struct Router {
    opts: Options,
    last: Option<Vec<NodeInfo>>,
    underlay_dev: Option<String>,
    pub status: RoutingStatus,
}

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json_list(s: &str) -> Vec<Value> {
    serde_json::from_str::<Vec<Value>>(s.trim()).unwrap_or_default()
}

/// Name of the interface that holds `addr` (the underlay).
fn underlay_dev(addr: IpAddr) -> Result<String> {
    let out = ip(&["-j", "addr", "show"])?;
    for l in json_list(&out) {
        let has = l["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["local"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) == Some(addr));
        if has && let Some(n) = l["ifname"].as_str() {
            return Ok(n.to_string());
        }
    }
    bail!("no interface holds this node's InternalIP {addr}")
}

/// MTU of the interface that holds `addr` (the underlay).
fn underlay_mtu(addr: IpAddr) -> Result<u32> {
    let out = ip(&["-j", "addr", "show"])?;
    for l in json_list(&out) {
        let has = l["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["local"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) == Some(addr));
        if has {
            return l["mtu"]
                .as_u64()
                .map(|m| m as u32)
                .ok_or_else(|| anyhow!("no MTU for the interface holding {addr}"));
        }
    }
    bail!("no interface holds this node's InternalIP {addr}")
}

impl Router {
    pub fn new(opts: Options) -> Router {
        Router {
            status: RoutingStatus {
                mode: format!("{:?}", opts.mode).to_lowercase(),
                ..Default::default()
            },
            opts,
            last: None,
            underlay_dev: None,
        }
    }

    /// Brings routes (and the VXLAN device, FDB, neighbours) and the CNI
    /// config in line with `nodes`. Unchanged input: nothing is done.
    pub fn sync(&mut self, nodes: &[NodeInfo]) -> Result<()> {
        if self.last.as_deref() == Some(nodes) {
            return Ok(());
        }
        let mut problems = Vec::new();
        let me = nodes.iter().find(|n| n.name == self.opts.node_name);
        if me.is_none() {
            problems.push(format!(
                "no Node object named {:?} (this node): its pod CIDRs are unknown",
                self.opts.node_name
            ));
        }
        let mut mtu = None;
        match self.opts.mode {
            RoutingMode::None => {}
            RoutingMode::Native => self.sync_native(nodes, &mut problems)?,
            RoutingMode::Vxlan => mtu = self.sync_vxlan(me, nodes, &mut problems)?,
        }
        if let Some(a) = me.and_then(|m| m.underlay()) {
            self.underlay_dev = underlay_dev(a).ok();
        }
        if let Some(me) = me {
            self.write_cni_conf(me, mtu)?;
            self.status.local_cidrs = me.pod_cidrs.iter().map(cidr_str).collect();
        }
        self.status.mtu = mtu;
        for p in &problems {
            warn!(problem = %p, "routing");
        }
        self.status.problems = problems;
        self.last = Some(nodes.to_vec());
        Ok(())
    }

    /// The devices traffic to other nodes leaves through: the underlay
    /// device holding this node's InternalIP, and the VXLAN device.
    pub fn node_devices(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.opts.mode == RoutingMode::None {
            return v;
        }
        if let Some(d) = &self.underlay_dev {
            v.push(d.clone());
        }
        if self.opts.mode == RoutingMode::Vxlan && self.status.mtu.is_some() {
            v.push(VXLAN_DEV.to_string());
        }
        v
    }

    fn remote<'a>(&self, nodes: &'a [NodeInfo]) -> impl Iterator<Item = &'a NodeInfo> {
        let me = self.opts.node_name.clone();
        nodes.iter().filter(move |n| n.name != me)
    }

    fn sync_native(&mut self, nodes: &[NodeInfo], problems: &mut Vec<String>) -> Result<()> {
        let mut want = BTreeSet::new();
        let mut routes = BTreeMap::new();
        for n in self.remote(nodes) {
            for c in &n.pod_cidrs {
                match n.ip_of(c.0.is_ipv4()) {
                    Some(gw) => {
                        want.insert(Want {
                            dst: cidr_str(c),
                            via: gw,
                            dev: None,
                        });
                        routes
                            .entry(n.name.clone())
                            .or_insert_with(Vec::new)
                            .push(cidr_str(c));
                    }
                    None => problems.push(format!(
                        "Node {}: no InternalIP of the family of pod CIDR {} (native routing needs one)",
                        n.name,
                        cidr_str(c)
                    )),
                }
            }
        }
        self.apply_routes(&want)?;
        self.status.routes = routes;
        Ok(())
    }

    /// Current Corral routes: dst → (via, dev).
    fn current_routes() -> Result<BTreeMap<String, (Option<IpAddr>, String)>> {
        let mut m = BTreeMap::new();
        let proto = RT_PROTO.to_string();
        for fam in ["-4", "-6"] {
            for r in json_list(&ip(&["-j", fam, "route", "show", "proto", &proto])?) {
                let Some(dst) = r["dst"].as_str() else {
                    continue;
                };
                // iproute2 prints a host route without "/32"
                let dst = if dst.contains('/') {
                    dst.to_string()
                } else if fam == "-4" {
                    format!("{dst}/32")
                } else {
                    format!("{dst}/128")
                };
                let gw = r["gateway"].as_str().and_then(|s| s.parse().ok());
                m.insert(dst, (gw, r["dev"].as_str().unwrap_or("").to_string()));
            }
        }
        Ok(m)
    }

    fn apply_routes(&self, want: &BTreeSet<Want>) -> Result<()> {
        let cur = Self::current_routes()?;
        let proto = RT_PROTO.to_string();
        for w in want {
            let same = cur.get(&w.dst).is_some_and(|(gw, dev)| {
                *gw == Some(w.via) && w.dev.as_deref().is_none_or(|d| d == dev)
            });
            if same {
                continue;
            }
            let via = w.via.to_string();
            let mut a = vec!["route", "replace", &w.dst, "via", &via, "proto", &proto];
            if let Some(d) = &w.dev {
                a.extend(["dev", d, "onlink"]);
            }
            ip(&a)?;
            info!(dst = %w.dst, via = %w.via, "route to remote pods");
        }
        for dst in cur.keys() {
            if !want.iter().any(|w| &w.dst == dst) {
                ip(&["route", "del", dst, "proto", &proto])?;
                info!(dst = %dst, "route to a removed node's pods deleted");
            }
        }
        Ok(())
    }

    fn sync_vxlan(
        &mut self,
        me: Option<&NodeInfo>,
        nodes: &[NodeInfo],
        problems: &mut Vec<String>,
    ) -> Result<Option<u32>> {
        let Some(me) = me else {
            return Ok(None);
        };
        let Some(local) = me.underlay() else {
            problems.push(format!(
                "Node {}: no InternalIP in status.addresses (VXLAN needs the underlay address)",
                me.name
            ));
            return Ok(None);
        };
        let overhead = if local.is_ipv4() { 50 } else { 70 };
        let mtu = underlay_mtu(local)?.saturating_sub(overhead);
        self.ensure_vxlan(local, mtu)?;
        // own VTEP addresses: the network address of each own pod CIDR
        let have = ip(&["-j", "addr", "show", "dev", VXLAN_DEV])?;
        let have: BTreeSet<IpAddr> = json_list(&have)
            .iter()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["local"].as_str().and_then(|s| s.parse().ok()))
            .collect();
        for (net, _) in &me.pod_cidrs {
            if !have.contains(net) {
                let a = if net.is_ipv4() {
                    format!("{net}/32")
                } else {
                    format!("{net}/128")
                };
                let mut args = vec!["addr", "add", &a, "dev", VXLAN_DEV];
                if net.is_ipv6() {
                    args.push("nodad");
                }
                ip(&args)?;
            }
        }
        let mut want = BTreeSet::new();
        let mut routes = BTreeMap::new();
        let mut fdb_want = BTreeMap::new(); // mac → underlay ip
        let mut neigh_want = BTreeMap::new(); // vtep addr → mac
        for n in self.remote(nodes) {
            let Some(peer) = n.ip_of(local.is_ipv4()) else {
                if !n.pod_cidrs.is_empty() {
                    problems.push(format!(
                        "Node {}: no InternalIP of the underlay's family ({})",
                        n.name,
                        if local.is_ipv4() { "IPv4" } else { "IPv6" }
                    ));
                }
                continue;
            };
            let mac = vtep_mac(peer);
            fdb_want.insert(mac.clone(), peer);
            for c in &n.pod_cidrs {
                neigh_want.insert(c.0, mac.clone());
                want.insert(Want {
                    dst: cidr_str(c),
                    via: c.0,
                    dev: Some(VXLAN_DEV.into()),
                });
                routes
                    .entry(n.name.clone())
                    .or_insert_with(Vec::new)
                    .push(cidr_str(c));
            }
        }
        // FDB and neighbours before the routes that use them
        for (mac, peer) in &fdb_want {
            ip_bridge(&[
                "fdb",
                "replace",
                mac,
                "dev",
                VXLAN_DEV,
                "dst",
                &peer.to_string(),
                "self",
                "permanent",
            ])?;
        }
        for (addr, mac) in &neigh_want {
            ip(&[
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                mac,
                "dev",
                VXLAN_DEV,
                "nud",
                "permanent",
            ])?;
        }
        self.apply_routes(&want)?;
        // stale FDB entries and neighbours (removed nodes)
        let fdb = ip_bridge(&["-j", "fdb", "show", "dev", VXLAN_DEV])?;
        for e in json_list(&fdb) {
            let (Some(mac), Some(_dst)) = (e["mac"].as_str(), e["dst"].as_str()) else {
                continue;
            };
            if mac != "00:00:00:00:00:00" && !fdb_want.contains_key(mac) {
                let _ = ip_bridge(&["fdb", "del", mac, "dev", VXLAN_DEV, "self"]);
            }
        }
        for fam in ["-4", "-6"] {
            let ns = ip(&["-j", fam, "neigh", "show", "dev", VXLAN_DEV])?;
            for e in json_list(&ns) {
                let Some(a) = e["dst"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) else {
                    continue;
                };
                if !neigh_want.contains_key(&a) {
                    let _ = ip(&["neigh", "del", &a.to_string(), "dev", VXLAN_DEV]);
                }
            }
        }
        self.status.routes = routes;
        Ok(Some(mtu))
    }

    /// Creates (or re-creates, when VNI/port/local differ) the VXLAN device.
    fn ensure_vxlan(&self, local: IpAddr, mtu: u32) -> Result<()> {
        let mac = vtep_mac(local);
        let cur = ip(&["-d", "-j", "link", "show", "dev", VXLAN_DEV]).ok();
        let fits = cur
            .as_deref()
            .map(json_list)
            .and_then(|l| l.first().cloned())
            .is_some_and(|l| {
                let d = &l["linkinfo"]["info_data"];
                d["id"].as_u64() == Some(self.opts.vni as u64)
                    && d["port"].as_u64() == Some(self.opts.vxlan_port as u64)
                    && (d["local"].as_str() == Some(&local.to_string())
                        || d["local6"].as_str() == Some(&local.to_string()))
                    && l["address"].as_str() == Some(mac.as_str())
            });
        if !fits {
            if cur.is_some() {
                ip(&["link", "del", VXLAN_DEV])?;
            }
            ip(&[
                "link",
                "add",
                VXLAN_DEV,
                "address",
                &mac,
                "type",
                "vxlan",
                "id",
                &self.opts.vni.to_string(),
                "dstport",
                &self.opts.vxlan_port.to_string(),
                "local",
                &local.to_string(),
                "nolearning",
            ])?;
            info!(dev = VXLAN_DEV, %local, vni = self.opts.vni, "VXLAN device created");
        }
        ip(&["link", "set", VXLAN_DEV, "mtu", &mtu.to_string(), "up"])?;
        Ok(())
    }

    /// Writes this node's pod CIDRs (and the overlay MTU) into the
    /// corral-cni entry of the CNI config, from the template; only when
    /// the content changes (atomic rename).
    fn write_cni_conf(&self, me: &NodeInfo, mtu: Option<u32>) -> Result<()> {
        let Some(out) = &self.opts.cni_conf else {
            return Ok(());
        };
        if me.pod_cidrs.is_empty() {
            bail!(
                "Node {}: spec.podCIDRs is empty; cannot write {}",
                me.name,
                out.display()
            );
        }
        let tpl = self.opts.cni_conf_template.as_ref().unwrap_or(out);
        let text = std::fs::read_to_string(tpl)
            .with_context(|| format!("reading CNI config template {}", tpl.display()))?;
        let conf = render_cni_conf(&text, me, mtu)
            .with_context(|| format!("CNI config template {}", tpl.display()))?;
        if std::fs::read_to_string(out).ok().as_deref() == Some(conf.as_str()) {
            return Ok(());
        }
        let tmp = out.with_extension("corral-tmp");
        std::fs::write(&tmp, &conf).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
        info!(path = %out.display(), cidrs = ?me.pod_cidrs.iter().map(cidr_str).collect::<Vec<_>>(), "CNI config written");
        Ok(())
    }
}

fn ip_bridge(args: &[&str]) -> Result<String> {
    let out = Command::new("bridge")
        .args(args)
        .output()
        .with_context(|| format!("running bridge {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "bridge {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The CNI config (conflist or single config) with the corral-cni entry's
/// `ipam.ranges` = one range set per pod CIDR of `me`, and `mtu` set when
/// given (VXLAN).
pub fn render_cni_conf(text: &str, me: &NodeInfo, mtu: Option<u32>) -> Result<String> {
    let mut v: Value = serde_json::from_str(text).context("not valid JSON")?;
    let entry = if v.get("plugins").is_some() {
        let Some(list) = v["plugins"].as_array_mut() else {
            bail!("field \"plugins\" must be a list");
        };
        list.iter_mut()
            .find(|p| p["type"] == "corral-cni")
            .ok_or_else(|| anyhow!("no plugin of type \"corral-cni\" in \"plugins\""))?
    } else if v["type"] == "corral-cni" {
        &mut v
    } else {
        bail!("neither a conflist with a corral-cni plugin nor a corral-cni config");
    };
    if entry.get("prevResult").is_some() {
        bail!("the corral-cni entry must be standalone (no prevResult)");
    }
    let ipam = entry
        .get_mut("ipam")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| anyhow!("the corral-cni entry has no \"ipam\" object"))?;
    if ipam.get("type").and_then(Value::as_str) != Some("host-local") {
        bail!(
            "the corral-cni entry's ipam.type must be \"host-local\" to take the node's pod CIDRs"
        );
    }
    ipam.remove("subnet");
    ipam.insert(
        "ranges".into(),
        Value::Array(
            me.pod_cidrs
                .iter()
                .map(|c| serde_json::json!([{ "subnet": cidr_str(c) }]))
                .collect(),
        ),
    );
    if let Some(m) = mtu {
        entry["mtu"] = Value::from(m);
    }
    Ok(serde_json::to_string_pretty(&v)? + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: serde_json::Value) -> Result<NodeInfo, String> {
        NodeInfo::from_node(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn node_info_from_node_objects() {
        let n = node(serde_json::json!({"metadata":{"name":"n1"},
            "spec":{"podCIDRs":["198.18.1.0/24","2001:db8:1::/64"]},
            "status":{"addresses":[{"type":"Hostname","address":"n1"},{"type":"InternalIP","address":"192.0.2.1"}]}}))
        .unwrap();
        assert_eq!(n.pod_cidrs.len(), 2);
        assert_eq!(n.underlay(), Some("192.0.2.1".parse().unwrap()));
        let legacy =
            node(serde_json::json!({"metadata":{"name":"n2"},"spec":{"podCIDR":"198.18.2.0/24"}}))
                .unwrap();
        assert_eq!(legacy.pod_cidrs, vec![("198.18.2.0".parse().unwrap(), 24)]);
        let e = node(
            serde_json::json!({"metadata":{"name":"n3"},"spec":{"podCIDRs":["198.18.3.0/99"]}}),
        )
        .unwrap_err();
        assert!(e.contains("n3") && e.contains("spec.podCIDRs[0]"), "{e}");
        let e = node(
            serde_json::json!({"metadata":{"name":"n4"},"spec":{"podCIDRs":["198.18.3.1/24"]}}),
        )
        .unwrap_err();
        assert!(e.contains("host bits"), "{e}");
        let e = node(serde_json::json!({"metadata":{"name":"n5"},
            "status":{"addresses":[{"type":"InternalIP","address":"nope"}]}}))
        .unwrap_err();
        assert!(e.contains("status.addresses[0].address"), "{e}");
    }

    #[test]
    fn cni_conf_rendering() {
        let me = NodeInfo {
            name: "n1".into(),
            internal_ips: vec![],
            pod_cidrs: vec![
                ("198.18.1.0".parse().unwrap(), 24),
                ("2001:db8:1::".parse().unwrap(), 64),
            ],
        };
        let tpl = r#"{"cniVersion":"1.0.0","name":"corral","plugins":[{"type":"corral-cni","mtu":1500,
            "ipam":{"type":"host-local","ranges":[[{"subnet":"198.18.0.0/24"}]]}},{"type":"loopback"}]}"#;
        let out: Value =
            serde_json::from_str(&render_cni_conf(tpl, &me, Some(1450)).unwrap()).unwrap();
        assert_eq!(
            out["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "198.18.1.0/24"
        );
        assert_eq!(
            out["plugins"][0]["ipam"]["ranges"][1][0]["subnet"],
            "2001:db8:1::/64"
        );
        assert_eq!(out["plugins"][0]["mtu"], 1450);
        assert_eq!(out["plugins"][1]["type"], "loopback");
        let kept: Value = serde_json::from_str(&render_cni_conf(tpl, &me, None).unwrap()).unwrap();
        assert_eq!(kept["plugins"][0]["mtu"], 1500);
        let bad = r#"{"plugins":[{"type":"corral-cni","ipam":{"type":"static"}}]}"#;
        assert!(
            format!("{:#}", render_cni_conf(bad, &me, None).unwrap_err()).contains("host-local")
        );
        assert!(render_cni_conf("{", &me, None).is_err());
    }

    #[test]
    fn vtep_macs_are_unicast_and_distinct() {
        let a = vtep_mac("192.0.2.1".parse().unwrap());
        assert_eq!(a, "0e:c5:c0:00:02:01");
        assert_ne!(a, vtep_mac("192.0.2.2".parse().unwrap()));
        // locally administered (bit 1), unicast (bit 0 clear)
        assert_eq!(u8::from_str_radix(&a[..2], 16).unwrap() & 3, 2);
        assert_eq!(
            network("198.18.1.7".parse().unwrap(), 24),
            "198.18.1.0".parse::<IpAddr>().unwrap()
        );
    }
}
