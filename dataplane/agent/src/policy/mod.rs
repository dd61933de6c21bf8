//! NetworkPolicy (networking.k8s.io/v1) compiler: pure Rust, no kernel.
//!
//! Output is data for the maps, never code: per endpoint the isolation
//! flags and, per (endpoint, direction), longest-prefix-match entries
//! `peer prefix -> allowed (protocol, port range)s`. Overlapping CIDRs,
//! `except` holes and pod IPs are resolved here so that the longest
//! matching entry alone gives the answer for any peer address.

pub mod cache;
pub mod source;
pub mod tiers;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::abi::{
    self, DIR_EGRESS, DIR_INGRESS, EP_POLICY_EGRESS, EP_POLICY_INGRESS, MAX_PORT_RANGES,
    POLICY_KEY_HEADER_BITS, PV_ALL_PORTS, PolicyKey, PolicyValue, PortRange,
};
use crate::api::NamedPort;

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    pub ports: Vec<NamedPort>,
}

#[derive(Clone, Debug)]
pub struct LocalEndpoint {
    pub ifindex: u32,
    pub pod: PodInfo,
}

#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub endpoints: Vec<LocalEndpoint>,
    /// other pods (e.g. on other nodes) that policies may select as peers
    pub pods: Vec<PodInfo>,
    pub namespaces: BTreeMap<String, Labels>,
    pub policies: Vec<NetworkPolicy>,
    /// ClusterNetworkPolicy / AdminNetworkPolicy / BaselineAdminNetworkPolicy
    pub tiers: Vec<tiers::TierObject>,
    /// nodes (for `nodes` egress peers of tier policies)
    pub nodes: Vec<tiers::NodeInfo>,
}

#[derive(Clone, Debug, Default)]
pub struct Compiled {
    /// ifindex -> EP_POLICY_* flags
    pub flags: BTreeMap<u32, u32>,
    pub entries: BTreeMap<PolicyKey, PolicyValue>,
    /// problems, each naming the object and field; bad policies are skipped
    pub errors: Vec<String>,
    /// ifindex -> the policies selecting the endpoint, e.g.
    /// `networkpolicy x/deny-all (ingress, egress)` (for `status`)
    pub selected_by: BTreeMap<u32, Vec<String>>,
    /// tier map entries (endpoint directions selected by a tier policy)
    pub tier_entries: BTreeMap<PolicyKey, abi::TierValue>,
    /// rule id (in tier entries) -> description
    pub tier_rules: Vec<String>,
}

// ---------------------------------------------------------------- selectors

#[derive(Clone, Debug)]
enum Op {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, Default)]
struct Selector {
    labels: Vec<(String, String)>,
    exprs: Vec<(String, Op)>,
}

impl Selector {
    fn parse(s: &LabelSelector, field: &str) -> Result<Self, String> {
        let mut out = Selector::default();
        for (k, v) in s.match_labels.iter().flatten() {
            out.labels.push((k.clone(), v.clone()));
        }
        for (i, e) in s.match_expressions.iter().flatten().enumerate() {
            let vals: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            let f = format!("{field}.matchExpressions[{i}]");
            let op = match e.operator.as_str() {
                "In" | "NotIn" if vals.is_empty() => {
                    return Err(format!("{f}: operator {} needs values", e.operator));
                }
                "In" => Op::In(vals),
                "NotIn" => Op::NotIn(vals),
                "Exists" | "DoesNotExist" if !vals.is_empty() => {
                    return Err(format!("{f}: operator {} takes no values", e.operator));
                }
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => return Err(format!("{f}: unknown operator {other:?}")),
            };
            out.exprs.push((e.key.clone(), op));
        }
        Ok(out)
    }

    fn matches(&self, l: &Labels) -> bool {
        self.labels.iter().all(|(k, v)| l.get(k) == Some(v))
            && self.exprs.iter().all(|(k, op)| match op {
                Op::In(vs) => l.get(k).is_some_and(|v| vs.contains(v)),
                Op::NotIn(vs) => l.get(k).is_none_or(|v| !vs.contains(v)),
                Op::Exists => l.contains_key(k),
                Op::DoesNotExist => !l.contains_key(k),
            })
    }
}

// -------------------------------------------------------------------- CIDRs

/// A prefix in the 128-bit space (IPv4 as IPv4-mapped IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub addr: u128,
    pub len: u8,
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl Prefix {
    pub fn new(ip: IpAddr, len: u8) -> Self {
        let l = abi::prefix128(ip, len) as u8;
        let addr = u128::from_be_bytes(abi::addr16(ip)) & mask(l);
        Prefix { addr, len: l }
    }
    pub fn host(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Prefix::new(ip, 32),
            IpAddr::V6(_) => Prefix::new(ip, 128),
        }
    }
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (missing /len)"))?;
        let ip: IpAddr = a.parse().map_err(|_| format!("{s:?}: bad address {a:?}"))?;
        let len: u8 = l.parse().map_err(|_| format!("{s:?}: bad length"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("{s:?}: prefix length {len} > {max}"));
        }
        Ok(Prefix::new(ip, len))
    }
    /// self is inside (or equal to) other
    pub fn within(&self, other: &Prefix) -> bool {
        other.len <= self.len && (self.addr & mask(other.len)) == other.addr
    }
    fn truncate(&self, len: u8) -> Prefix {
        Prefix {
            addr: self.addr & mask(len),
            len,
        }
    }
}

// -------------------------------------------------------------------- ports

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PortSpec {
    Range(PortRange),
    Named { proto: u8, name: String },
}

fn proto_num(p: Option<&String>, field: &str) -> Result<u8, String> {
    match p.map(|s| s.as_str()).unwrap_or("TCP") {
        "TCP" => Ok(abi::PROTO_TCP),
        "UDP" => Ok(abi::PROTO_UDP),
        "SCTP" => Ok(abi::PROTO_SCTP),
        other => Err(format!(
            "{field}.protocol: {other:?} is not TCP, UDP or SCTP"
        )),
    }
}

fn range(proto: u8, lo: u16, hi: u16) -> PortRange {
    PortRange {
        proto,
        pad: 0,
        port_lo: lo,
        port_hi: hi,
    }
}

fn parse_port(p: &NetworkPolicyPort, field: &str) -> Result<PortSpec, String> {
    let proto = proto_num(p.protocol.as_ref(), field)?;
    let port_ok = |n: i32, f: &str| -> Result<u16, String> {
        u16::try_from(n)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("{field}.{f}: {n} is not a port (1-65535)"))
    };
    match (&p.port, p.end_port) {
        (None, None) => Ok(PortSpec::Range(range(proto, 0, u16::MAX))),
        (None, Some(_)) => Err(format!("{field}.endPort: set without port")),
        (Some(IntOrString::Int(n)), end) => {
            let lo = port_ok(*n, "port")?;
            let hi = match end {
                None => lo,
                Some(e) => {
                    let e = port_ok(e, "endPort")?;
                    if e < lo {
                        return Err(format!("{field}.endPort: {e} < port {lo}"));
                    }
                    e
                }
            };
            Ok(PortSpec::Range(range(proto, lo, hi)))
        }
        (Some(IntOrString::String(s)), None) => {
            if let Ok(n) = s.parse::<i32>() {
                let v = port_ok(n, "port")?;
                return Ok(PortSpec::Range(range(proto, v, v)));
            }
            if s.is_empty() || s.len() > 15 {
                return Err(format!("{field}.port: {s:?} is not a valid port name"));
            }
            Ok(PortSpec::Named {
                proto,
                name: s.clone(),
            })
        }
        (Some(IntOrString::String(_)), Some(_)) => {
            Err(format!("{field}.endPort: not allowed with a named port"))
        }
    }
}

/// None = all protocols and ports.
type PortSet = Option<BTreeSet<PortRange>>;

fn resolve_ports(specs: &Option<Vec<PortSpec>>, dest_ports: Option<&[NamedPort]>) -> PortSet {
    let specs = specs.as_ref()?;
    let mut out = BTreeSet::new();
    for s in specs {
        match s {
            PortSpec::Range(r) => {
                out.insert(*r);
            }
            PortSpec::Named { proto, name } => {
                for np in dest_ports.into_iter().flatten() {
                    let p = proto_num(Some(&np.protocol), "").unwrap_or(0);
                    if &np.name == name && p == *proto {
                        out.insert(range(p, np.port, np.port));
                    }
                }
            }
        }
    }
    Some(out)
}

/// Merges overlapping/adjacent ranges of the same protocol.
fn merge(set: &BTreeSet<PortRange>) -> Vec<PortRange> {
    let mut out: Vec<PortRange> = Vec::new();
    for r in set {
        if let Some(last) = out.last_mut()
            && last.proto == r.proto
            && u32::from(r.port_lo) <= u32::from(last.port_hi) + 1
        {
            last.port_hi = last.port_hi.max(r.port_hi);
            continue;
        }
        out.push(*r);
    }
    out
}

// ----------------------------------------------------------------- policies

#[derive(Clone, Debug)]
enum Peer {
    Pods {
        ns: Option<Selector>,
        pods: Option<Selector>,
    },
    Block {
        cidr: Prefix,
        except: Vec<Prefix>,
    },
}

#[derive(Clone, Debug)]
struct Rule {
    /// None = every peer
    peers: Option<Vec<Peer>>,
    /// None = every port
    ports: Option<Vec<PortSpec>>,
}

#[derive(Clone, Debug)]
struct Policy {
    /// `networkpolicy <ns>/<name>`
    id: String,
    namespace: String,
    selector: Selector,
    ingress: Option<Vec<Rule>>,
    egress: Option<Vec<Rule>>,
}

fn parse_peer(p: &NetworkPolicyPeer, field: &str) -> Result<Peer, String> {
    if let Some(b) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            return Err(format!(
                "{field}: ipBlock cannot be combined with podSelector/namespaceSelector"
            ));
        }
        let cidr = Prefix::parse(&b.cidr).map_err(|e| format!("{field}.ipBlock.cidr: {e}"))?;
        let mut except = Vec::new();
        for (i, e) in b.except.iter().flatten().enumerate() {
            let x = Prefix::parse(e).map_err(|e| format!("{field}.ipBlock.except[{i}]: {e}"))?;
            if !x.within(&cidr) || x == cidr {
                return Err(format!(
                    "{field}.ipBlock.except[{i}]: {e:?} is not strictly inside cidr {:?}",
                    b.cidr
                ));
            }
            except.push(x);
        }
        return Ok(Peer::Block { cidr, except });
    }
    let ns = p
        .namespace_selector
        .as_ref()
        .map(|s| Selector::parse(s, &format!("{field}.namespaceSelector")))
        .transpose()?;
    let pods = p
        .pod_selector
        .as_ref()
        .map(|s| Selector::parse(s, &format!("{field}.podSelector")))
        .transpose()?;
    if ns.is_none() && pods.is_none() {
        return Err(format!("{field}: peer has no selector and no ipBlock"));
    }
    Ok(Peer::Pods { ns, pods })
}

fn parse_rule(
    peers: &Option<Vec<NetworkPolicyPeer>>,
    ports: &Option<Vec<NetworkPolicyPort>>,
    field: &str,
    peer_field: &str,
) -> Result<Rule, String> {
    let peers = match peers {
        None => None,
        Some(v) if v.is_empty() => None,
        Some(v) => Some(
            v.iter()
                .enumerate()
                .map(|(i, p)| parse_peer(p, &format!("{field}.{peer_field}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let ports = match ports {
        None => None,
        Some(v) if v.is_empty() => None,
        Some(v) => Some(
            v.iter()
                .enumerate()
                .map(|(i, p)| parse_port(p, &format!("{field}.ports[{i}]")))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(Rule { peers, ports })
}

fn parse_policy(np: &NetworkPolicy, id: String) -> Result<Policy, String> {
    let spec = np.spec.as_ref().ok_or("spec: missing")?;
    let namespace = np
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let selector = match &spec.pod_selector {
        Some(s) => Selector::parse(s, "spec.podSelector")?,
        None => Selector::default(),
    };
    let (mut has_in, mut has_eg) = (true, spec.egress.is_some());
    if let Some(types) = &spec.policy_types {
        has_in = false;
        has_eg = false;
        for (i, t) in types.iter().enumerate() {
            match t.as_str() {
                "Ingress" => has_in = true,
                "Egress" => has_eg = true,
                other => {
                    return Err(format!(
                        "spec.policyTypes[{i}]: {other:?} is not Ingress or Egress"
                    ));
                }
            }
        }
    }
    let ingress = if has_in {
        Some(
            spec.ingress
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, r)| parse_rule(&r.from, &r.ports, &format!("spec.ingress[{i}]"), "from"))
                .collect::<Result<Vec<_>, _>>()?,
        )
    } else {
        None
    };
    let egress = if has_eg {
        Some(
            spec.egress
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, r)| parse_rule(&r.to, &r.ports, &format!("spec.egress[{i}]"), "to"))
                .collect::<Result<Vec<_>, _>>()?,
        )
    } else {
        None
    };
    Ok(Policy {
        id,
        namespace,
        selector,
        ingress,
        egress,
    })
}

/// One "allow" contribution for an endpoint+direction.
struct Grant<'a> {
    cidr: Prefix,
    except: &'a [Prefix],
    ports: &'a Option<Vec<PortSpec>>,
}

fn ns_labels(inputs: &Inputs, ns: &str) -> Labels {
    let mut l = inputs.namespaces.get(ns).cloned().unwrap_or_default();
    l.insert("kubernetes.io/metadata.name".into(), ns.into());
    l
}

const NO_EXCEPT: &[Prefix] = &[];

/// Compiles all policies for all local endpoints.
pub fn compile(inputs: &Inputs) -> Compiled {
    let mut out = Compiled::default();
    let mut policies = Vec::new();
    for np in &inputs.policies {
        let id = format!(
            "networkpolicy {}/{}",
            np.metadata.namespace.as_deref().unwrap_or("default"),
            np.metadata.name.as_deref().unwrap_or("<unnamed>")
        );
        match parse_policy(np, id.clone()) {
            Ok(p) => policies.push(p),
            Err(e) => out.errors.push(format!("{id}: {e} (policy skipped)")),
        }
    }
    // A pod object (Kubernetes watch / manifest) of a local endpoint is newer
    // than the snapshot the CNI registered: its labels and named ports win;
    // the IPs stay the registered ones (they are the interface's).
    let by_name: HashMap<(&str, &str), &PodInfo> = inputs
        .pods
        .iter()
        .map(|p| ((p.namespace.as_str(), p.name.as_str()), p))
        .collect();
    let endpoints: Vec<LocalEndpoint> = inputs
        .endpoints
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if let Some(o) = by_name.get(&(e.pod.namespace.as_str(), e.pod.name.as_str())) {
                e.pod.labels = o.labels.clone();
                if !o.ports.is_empty() {
                    e.pod.ports = o.ports.clone();
                }
            }
            e
        })
        .collect();
    // every pod known: local endpoints win over manifest pods of same name
    let mut all_pods: Vec<&PodInfo> = endpoints.iter().map(|e| &e.pod).collect();
    let local: BTreeSet<(&str, &str)> = endpoints
        .iter()
        .map(|e| (e.pod.namespace.as_str(), e.pod.name.as_str()))
        .collect();
    all_pods.extend(
        inputs
            .pods
            .iter()
            .filter(|p| !local.contains(&(p.namespace.as_str(), p.name.as_str()))),
    );
    let mut ns_cache: HashMap<&str, Labels> = HashMap::new();
    for p in &all_pods {
        ns_cache
            .entry(p.namespace.as_str())
            .or_insert_with(|| ns_labels(inputs, &p.namespace));
    }
    let host_pods: HashMap<Prefix, &PodInfo> = all_pods
        .iter()
        .flat_map(|p| p.ips.iter().map(move |ip| (Prefix::host(*ip), *p)))
        .collect();

    for ep in &endpoints {
        let selecting: Vec<&Policy> = policies
            .iter()
            .filter(|p| p.namespace == ep.pod.namespace && p.selector.matches(&ep.pod.labels))
            .collect();
        let names: Vec<String> = selecting
            .iter()
            .map(|p| {
                let dirs: Vec<&str> = [
                    p.ingress.as_ref().map(|_| "ingress"),
                    p.egress.as_ref().map(|_| "egress"),
                ]
                .into_iter()
                .flatten()
                .collect();
                format!("{} ({})", p.id, dirs.join(", "))
            })
            .collect();
        if !names.is_empty() {
            out.selected_by.insert(ep.ifindex, names);
        }
        let mut flags = 0;
        for (dir, flag) in [
            (DIR_INGRESS, EP_POLICY_INGRESS),
            (DIR_EGRESS, EP_POLICY_EGRESS),
        ] {
            let rules: Vec<(&Policy, &Rule)> = selecting
                .iter()
                .filter_map(|p| {
                    if dir == DIR_INGRESS {
                        p.ingress.as_ref()
                    } else {
                        p.egress.as_ref()
                    }
                    .map(|r| (*p, r))
                })
                .flat_map(|(p, rs)| rs.iter().map(move |r| (p, r)))
                .collect();
            let isolated = selecting.iter().any(|p| {
                if dir == DIR_INGRESS {
                    p.ingress.is_some()
                } else {
                    p.egress.is_some()
                }
            });
            if !isolated {
                continue;
            }
            flags |= flag;
            let mut grants: Vec<Grant> = Vec::new();
            for (pol, rule) in &rules {
                match &rule.peers {
                    // every peer, IPv4 (mapped) and IPv6 alike
                    None => grants.push(Grant {
                        cidr: Prefix { addr: 0, len: 0 },
                        except: NO_EXCEPT,
                        ports: &rule.ports,
                    }),
                    Some(peers) => {
                        for peer in peers {
                            match peer {
                                Peer::Block { cidr, except } => grants.push(Grant {
                                    cidr: *cidr,
                                    except,
                                    ports: &rule.ports,
                                }),
                                Peer::Pods { ns, pods } => {
                                    for p in &all_pods {
                                        let ns_ok = match ns {
                                            None => p.namespace == pol.namespace,
                                            Some(sel) => ns_cache
                                                .get(p.namespace.as_str())
                                                .is_some_and(|l| sel.matches(l)),
                                        };
                                        let pod_ok =
                                            pods.as_ref().is_none_or(|s| s.matches(&p.labels));
                                        if ns_ok && pod_ok {
                                            for ip in &p.ips {
                                                grants.push(Grant {
                                                    cidr: Prefix::host(*ip),
                                                    except: NO_EXCEPT,
                                                    ports: &rule.ports,
                                                });
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            emit(&mut out, ep, dir, &grants, &host_pods);
        }
        out.flags.insert(ep.ifindex, flags);
    }
    let world = tiers::World {
        endpoints: &endpoints,
        all_pods: &all_pods,
        ns_labels: &ns_cache,
        nodes: &inputs.nodes,
        host_pods: &host_pods,
    };
    tiers::compile(&inputs.tiers, &world, &mut out);
    out
}

fn emit(
    out: &mut Compiled,
    ep: &LocalEndpoint,
    dir: u32,
    grants: &[Grant],
    host_pods: &HashMap<Prefix, &PodInfo>,
) {
    let mut by_cidr: HashMap<Prefix, Vec<&Grant>> = HashMap::new();
    let mut prefixes: BTreeSet<Prefix> = BTreeSet::new();
    let mut named = false;
    for g in grants {
        by_cidr.entry(g.cidr).or_default().push(g);
        prefixes.insert(g.cidr);
        prefixes.extend(g.except.iter().copied());
        named |= g
            .ports
            .iter()
            .flatten()
            .any(|p| matches!(p, PortSpec::Named { .. }));
    }
    // egress named ports resolve against the destination pod: give every
    // known pod inside a granted range its own entry
    if named && dir == DIR_EGRESS {
        for hp in host_pods.keys() {
            if grants.iter().any(|g| hp.within(&g.cidr)) {
                prefixes.insert(*hp);
            }
        }
    }
    for p in &prefixes {
        let dest_ports: Option<&[NamedPort]> = if dir == DIR_INGRESS {
            Some(&ep.pod.ports)
        } else {
            host_pods.get(p).map(|pod| pod.ports.as_slice())
        };
        let mut all = false;
        let mut set: BTreeSet<PortRange> = BTreeSet::new();
        for len in 0..=p.len {
            let Some(gs) = by_cidr.get(&p.truncate(len)) else {
                continue;
            };
            for g in gs {
                if g.except.iter().any(|x| p.within(x)) {
                    continue;
                }
                match resolve_ports(g.ports, dest_ports) {
                    None => all = true,
                    Some(s) => set.extend(s),
                }
            }
        }
        let mut v = PolicyValue::default();
        if all {
            v.flags = PV_ALL_PORTS;
        } else {
            let ranges = merge(&set);
            if ranges.len() > MAX_PORT_RANGES {
                out.errors.push(format!(
                    "pod {}/{}: {} port ranges for one peer exceed {MAX_PORT_RANGES}; extra ranges denied",
                    ep.pod.namespace,
                    ep.pod.name,
                    ranges.len()
                ));
            }
            for (i, r) in ranges.iter().take(MAX_PORT_RANGES).enumerate() {
                v.ranges[i] = *r;
            }
            v.nranges = ranges.len().min(MAX_PORT_RANGES) as u32;
        }
        let key = PolicyKey {
            prefixlen: POLICY_KEY_HEADER_BITS + u32::from(p.len),
            ifindex: ep.ifindex,
            dir,
            addr: p.addr.to_be_bytes(),
        };
        out.entries.insert(key, v);
    }
}

/// Reference evaluation of compiled output (what the kernel does): used by
/// tests and `corral-agent` diagnostics.
pub fn evaluate(c: &Compiled, ifindex: u32, dir: u32, peer: IpAddr, proto: u8, port: u16) -> bool {
    let flag = if dir == DIR_INGRESS {
        EP_POLICY_INGRESS
    } else {
        EP_POLICY_EGRESS
    };
    if c.flags.get(&ifindex).copied().unwrap_or(0) & flag == 0 {
        return true;
    }
    let host = Prefix::host(peer);
    for len in (0..=host.len).rev() {
        let p = host.truncate(len);
        let key = PolicyKey {
            prefixlen: POLICY_KEY_HEADER_BITS + u32::from(len),
            ifindex,
            dir,
            addr: p.addr.to_be_bytes(),
        };
        if let Some(v) = c.entries.get(&key) {
            if v.flags & PV_ALL_PORTS != 0 {
                return true;
            }
            return v.ranges[..v.nranges as usize]
                .iter()
                .any(|r| r.proto == proto && port >= r.port_lo && port <= r.port_hi);
        }
    }
    false
}

#[cfg(test)]
mod tests;
