//! Cluster-wide policy tiers of `policy.networking.k8s.io`:
//! ClusterNetworkPolicy (v1alpha2, tiers Admin and Baseline) and its
//! predecessors AdminNetworkPolicy / BaselineAdminNetworkPolicy (v1alpha1).
//!
//! Precedence for a new connection of an endpoint in one direction:
//! Admin tier (policies by ascending priority, then name; rules in written
//! order; Accept/Allow and Deny are final, Pass hands over) → namespaced
//! NetworkPolicy (when it isolates the pod in that direction it decides) →
//! Baseline tier (Baseline ClusterNetworkPolicies by priority, then the
//! BaselineAdminNetworkPolicy `default`) → default allow.
//!
//! Like NetworkPolicy this compiles to data: for every endpoint and
//! direction that some tier policy selects, an LPM entry per relevant peer
//! prefix holding the final verdict per disjoint (protocol, port range) and
//! a default verdict. The kernel does one lookup and a bounded scan,
//! whatever the number of rules.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

use super::{Compiled, LocalEndpoint, PodInfo, PortSpec, Prefix, Selector, proto_num, range};
use crate::abi::{
    DIR_EGRESS, DIR_INGRESS, EP_POLICY_EGRESS, EP_POLICY_INGRESS, EP_TIER_EGRESS, EP_TIER_INGRESS,
    MAX_TIER_RANGES, POLICY_KEY_HEADER_BITS, PROTO_SCTP, PROTO_TCP, PROTO_UDP, PV_ALL_PORTS,
    PolicyKey, PolicyValue, PortRange, TierRange, TierValue, VERDICT_ALLOW, VERDICT_DENY,
};
use crate::api::NamedPort;

pub const GROUP: &str = "policy.networking.k8s.io";

// ------------------------------------------------------------ API objects

/// `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicy {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: CnpSpec,
    /// written by implementations, not read
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpSpec {
    pub tier: String,
    pub priority: i32,
    pub subject: Subject,
    #[serde(default)]
    pub ingress: Vec<CnpIngressRule>,
    #[serde(default)]
    pub egress: Vec<CnpEgressRule>,
}

/// Subject of both API versions (v1alpha1 and v1alpha2 share the shape):
/// exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacedPod {
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    pub pod_selector: LabelSelector,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpIngressRule {
    #[serde(default)]
    pub name: String,
    pub action: String,
    pub from: Vec<IngressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<CnpProtocol>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpEgressRule {
    #[serde(default)]
    pub name: String,
    pub action: String,
    pub to: Vec<EgressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<CnpProtocol>>,
}

/// Ingress peer (both versions): exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// Egress peer (both versions): exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    /// v1alpha2 only; not supported by Corral (reported, policy skipped)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_names: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpProtocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<CnpProtoPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<CnpProtoPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<CnpProtoPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_named_port: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpProtoPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<CnpPort>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<CnpPortRange>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CnpPortRange {
    pub start: i32,
    pub end: i32,
}

/// `policy.networking.k8s.io/v1alpha1` AdminNetworkPolicy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicy {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: AnpSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnpSpec {
    pub priority: i32,
    pub subject: Subject,
    #[serde(default)]
    pub ingress: Vec<AnpIngressRule>,
    #[serde(default)]
    pub egress: Vec<AnpEgressRule>,
}

/// `policy.networking.k8s.io/v1alpha1` BaselineAdminNetworkPolicy (a
/// singleton named `default`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaselineAdminNetworkPolicy {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: BanpSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BanpSpec {
    pub subject: Subject,
    #[serde(default)]
    pub ingress: Vec<AnpIngressRule>,
    #[serde(default)]
    pub egress: Vec<AnpEgressRule>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnpIngressRule {
    #[serde(default)]
    pub name: String,
    pub action: String,
    pub from: Vec<IngressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<AnpPort>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnpEgressRule {
    #[serde(default)]
    pub name: String,
    pub action: String,
    pub to: Vec<EgressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<AnpPort>>,
}

/// Exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnpPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<AnpPortNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<AnpPortRange>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnpPortNumber {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    pub port: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnpPortRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    pub start: i32,
    pub end: i32,
}

/// Any tier object, as read from manifests or the API server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TierObject {
    Cnp(ClusterNetworkPolicy),
    Anp(AdminNetworkPolicy),
    Banp(BaselineAdminNetworkPolicy),
}

impl TierObject {
    /// `clusternetworkpolicy NAME` etc. (how problems and status name it)
    pub fn id(&self) -> String {
        let (kind, m) = match self {
            TierObject::Cnp(p) => ("clusternetworkpolicy", &p.metadata),
            TierObject::Anp(p) => ("adminnetworkpolicy", &p.metadata),
            TierObject::Banp(p) => ("baselineadminnetworkpolicy", &p.metadata),
        };
        format!("{kind} {}", m.name.as_deref().unwrap_or("<unnamed>"))
    }
}

/// A node as a policy peer (`nodes` egress peers): labels and addresses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub labels: super::Labels,
    pub ips: Vec<std::net::IpAddr>,
}

// ------------------------------------------------------- normalized model

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Allow,
    Deny,
    Pass,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    Admin,
    Baseline,
}

#[derive(Clone, Debug)]
enum SubjectSel {
    Namespaces(Selector),
    Pods { ns: Selector, pods: Selector },
}

#[derive(Clone, Debug)]
enum TPeer {
    Namespaces(Selector),
    Pods { ns: Selector, pods: Selector },
    Nodes(Selector),
    Networks(Vec<Prefix>),
}

#[derive(Clone, Debug)]
struct TRule {
    /// index into `Compiled::tier_rules`
    id: u16,
    action: Action,
    peers: Vec<TPeer>,
    /// None = all protocols and ports
    ports: Option<Vec<PortSpec>>,
    named: bool,
    /// peer prefixes, resolved once
    prefixes: Vec<Prefix>,
}

#[derive(Clone, Debug)]
struct TPolicy {
    id: String,
    tier: Tier,
    /// (priority, kind order, name): Baseline CNPs before the BANP
    order: (i32, u8, String),
    subject: SubjectSel,
    ingress: Vec<TRule>,
    egress: Vec<TRule>,
}

/// Rule ids 0-2 are fixed (see `Compiled::tier_rules`).
pub const RULE_DEFAULT_ALLOW: u16 = 0;
pub const RULE_NP_ALLOW: u16 = 1;
pub const RULE_NP_DENY: u16 = 2;

fn sel(s: &LabelSelector, field: &str) -> Result<Selector, String> {
    Selector::parse(s, field)
}

fn one_of(n: usize, field: &str, what: &str) -> Result<(), String> {
    match n {
        1 => Ok(()),
        0 => Err(format!(
            "{field}: exactly one of {what} must be set (none is)"
        )),
        _ => Err(format!(
            "{field}: exactly one of {what} must be set ({n} are)"
        )),
    }
}

/// `namespaces` or `pods` (exactly one): subjects and ingress peers of both
/// API versions, and the same two fields of egress peers.
fn ns_or_pods(
    namespaces: &Option<LabelSelector>,
    pods: &Option<NamespacedPod>,
    field: &str,
) -> Result<SubjectSel, String> {
    one_of(
        namespaces.is_some() as usize + pods.is_some() as usize,
        field,
        "namespaces, pods",
    )?;
    if let Some(n) = namespaces {
        return Ok(SubjectSel::Namespaces(sel(
            n,
            &format!("{field}.namespaces"),
        )?));
    }
    let p = pods.as_ref().expect("checked");
    Ok(SubjectSel::Pods {
        ns: sel(
            &p.namespace_selector,
            &format!("{field}.pods.namespaceSelector"),
        )?,
        pods: sel(&p.pod_selector, &format!("{field}.pods.podSelector"))?,
    })
}

fn parse_subject(s: &Subject, field: &str) -> Result<SubjectSel, String> {
    ns_or_pods(&s.namespaces, &s.pods, field)
}

fn ingress_peer(p: &IngressPeer, field: &str) -> Result<TPeer, String> {
    Ok(ns_or_pods(&p.namespaces, &p.pods, field)?.into())
}

impl From<SubjectSel> for TPeer {
    fn from(s: SubjectSel) -> TPeer {
        match s {
            SubjectSel::Namespaces(n) => TPeer::Namespaces(n),
            SubjectSel::Pods { ns, pods } => TPeer::Pods { ns, pods },
        }
    }
}

fn egress_peer(p: &EgressPeer, field: &str) -> Result<TPeer, String> {
    if p.domain_names.is_some() {
        return Err(format!(
            "{field}.domainNames: not supported by Corral (no DNS-aware data path)"
        ));
    }
    one_of(
        p.namespaces.is_some() as usize
            + p.pods.is_some() as usize
            + p.nodes.is_some() as usize
            + p.networks.is_some() as usize,
        field,
        "namespaces, pods, nodes, networks",
    )?;
    if let Some(n) = &p.nodes {
        return Ok(TPeer::Nodes(sel(n, &format!("{field}.nodes"))?));
    }
    if let Some(nets) = &p.networks {
        if nets.is_empty() {
            return Err(format!("{field}.networks: needs at least one CIDR"));
        }
        let v = nets
            .iter()
            .enumerate()
            .map(|(i, c)| Prefix::parse(c).map_err(|e| format!("{field}.networks[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(TPeer::Networks(v));
    }
    Ok(ns_or_pods(&p.namespaces, &p.pods, field)?.into())
}

fn port_num(n: i32, field: &str) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("{field}: {n} is not a port (1-65535)"))
}

fn named_port(name: &str, proto: u8, field: &str) -> Result<PortSpec, String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{field}: {name:?} is not a valid port name"));
    }
    Ok(PortSpec::Named {
        proto,
        name: name.to_string(),
    })
}

/// v1alpha2 `protocols`.
fn cnp_protocols(
    ps: &Option<Vec<CnpProtocol>>,
    field: &str,
) -> Result<Option<Vec<PortSpec>>, String> {
    let Some(ps) = ps else { return Ok(None) };
    if ps.is_empty() {
        return Err(format!("{field}.protocols: must not be empty when set"));
    }
    let mut out = Vec::new();
    for (i, p) in ps.iter().enumerate() {
        let f = format!("{field}.protocols[{i}]");
        one_of(
            p.tcp.is_some() as usize
                + p.udp.is_some() as usize
                + p.sctp.is_some() as usize
                + p.destination_named_port.is_some() as usize,
            &f,
            "tcp, udp, sctp, destinationNamedPort",
        )?;
        if let Some(n) = &p.destination_named_port {
            // a named port names its protocol in the pod spec; TCP, UDP
            // and SCTP container ports of that name all match
            for proto in [PROTO_TCP, PROTO_UDP, PROTO_SCTP] {
                out.push(named_port(n, proto, &format!("{f}.destinationNamedPort"))?);
            }
            continue;
        }
        let (proto, pp, pname) = if let Some(t) = &p.tcp {
            (PROTO_TCP, t, "tcp")
        } else if let Some(u) = &p.udp {
            (PROTO_UDP, u, "udp")
        } else {
            (PROTO_SCTP, p.sctp.as_ref().expect("checked"), "sctp")
        };
        let f = format!("{f}.{pname}");
        let Some(dp) = &pp.destination_port else {
            return Err(format!("{f}.destinationPort: required"));
        };
        one_of(
            dp.number.is_some() as usize + dp.range.is_some() as usize,
            &format!("{f}.destinationPort"),
            "number, range",
        )?;
        if let Some(n) = dp.number {
            let v = port_num(n, &format!("{f}.destinationPort.number"))?;
            out.push(PortSpec::Range(range(proto, v, v)));
        } else {
            let r = dp.range.as_ref().expect("checked");
            let lo = port_num(r.start, &format!("{f}.destinationPort.range.start"))?;
            let hi = port_num(r.end, &format!("{f}.destinationPort.range.end"))?;
            if lo >= hi {
                return Err(format!(
                    "{f}.destinationPort.range: start {lo} must be less than end {hi}"
                ));
            }
            out.push(PortSpec::Range(range(proto, lo, hi)));
        }
    }
    Ok(Some(out))
}

/// v1alpha1 `ports`.
fn anp_ports(ps: &Option<Vec<AnpPort>>, field: &str) -> Result<Option<Vec<PortSpec>>, String> {
    let Some(ps) = ps else { return Ok(None) };
    if ps.is_empty() {
        return Err(format!("{field}.ports: must not be empty when set"));
    }
    let mut out = Vec::new();
    for (i, p) in ps.iter().enumerate() {
        let f = format!("{field}.ports[{i}]");
        one_of(
            p.port_number.is_some() as usize
                + p.named_port.is_some() as usize
                + p.port_range.is_some() as usize,
            &f,
            "portNumber, namedPort, portRange",
        )?;
        if let Some(n) = &p.named_port {
            for proto in [PROTO_TCP, PROTO_UDP, PROTO_SCTP] {
                out.push(named_port(n, proto, &format!("{f}.namedPort"))?);
            }
        } else if let Some(n) = &p.port_number {
            let proto = proto_num(n.protocol.as_ref(), &format!("{f}.portNumber"))?;
            let v = port_num(n.port, &format!("{f}.portNumber.port"))?;
            out.push(PortSpec::Range(range(proto, v, v)));
        } else {
            let r = p.port_range.as_ref().expect("checked");
            let proto = proto_num(r.protocol.as_ref(), &format!("{f}.portRange"))?;
            let lo = port_num(r.start, &format!("{f}.portRange.start"))?;
            let hi = port_num(r.end, &format!("{f}.portRange.end"))?;
            if lo >= hi {
                return Err(format!(
                    "{f}.portRange: start {lo} must be less than end {hi}"
                ));
            }
            out.push(PortSpec::Range(range(proto, lo, hi)));
        }
    }
    Ok(Some(out))
}

fn action(a: &str, allowed: &[&str], field: &str) -> Result<Action, String> {
    if !allowed.contains(&a) {
        return Err(format!(
            "{field}.action: {a:?} is not one of {}",
            allowed.join(", ")
        ));
    }
    Ok(match a {
        "Accept" | "Allow" => Action::Allow,
        "Deny" => Action::Deny,
        _ => Action::Pass,
    })
}

fn priority(p: i32) -> Result<i32, String> {
    if (0..=1000).contains(&p) {
        Ok(p)
    } else {
        Err(format!("spec.priority: {p} is not between 0 and 1000"))
    }
}

/// Checks the rule's peers/ports combination and builds it.
fn rule(
    id: u16,
    action: Action,
    peers: Vec<TPeer>,
    ports: Option<Vec<PortSpec>>,
    field: &str,
) -> Result<TRule, String> {
    let named = ports
        .iter()
        .flatten()
        .any(|p| matches!(p, PortSpec::Named { .. }));
    if named
        && peers
            .iter()
            .any(|p| matches!(p, TPeer::Nodes(_) | TPeer::Networks(_)))
    {
        return Err(format!(
            "{field}: named ports cannot be used with nodes/networks peers (they have no named ports)"
        ));
    }
    Ok(TRule {
        id,
        action,
        peers,
        ports,
        named,
        prefixes: Vec::new(),
    })
}

struct RuleTable<'a> {
    names: &'a mut Vec<String>,
}

impl RuleTable<'_> {
    fn add(&mut self, s: String) -> u16 {
        let id = u16::try_from(self.names.len()).unwrap_or(u16::MAX);
        if id < u16::MAX {
            self.names.push(s);
        }
        id
    }
}

fn rule_label(pol: &str, dir: &str, i: usize, name: &str, action: &str) -> String {
    if name.is_empty() {
        format!("{pol} {dir}[{i}] ({action})")
    } else {
        format!("{pol} {dir}[{i}] {name:?} ({action})")
    }
}

fn parse_object(o: &TierObject, rules: &mut RuleTable) -> Result<TPolicy, String> {
    let id = o.id();
    let start = rules.names.len();
    let r = parse_object_inner(o, &id, rules);
    if r.is_err() {
        rules.names.truncate(start);
    }
    r
}

fn parse_object_inner(o: &TierObject, id: &str, rules: &mut RuleTable) -> Result<TPolicy, String> {
    match o {
        TierObject::Cnp(p) => {
            let s = &p.spec;
            let tier = match s.tier.as_str() {
                "Admin" => Tier::Admin,
                "Baseline" => Tier::Baseline,
                other => return Err(format!("spec.tier: {other:?} is not Admin or Baseline")),
            };
            let prio = priority(s.priority)?;
            let subject = parse_subject(&s.subject, "spec.subject")?;
            let acts = ["Accept", "Deny", "Pass"];
            let ingress = decode_rules(id, "ingress", &s.ingress, &acts, rules)?;
            let egress = decode_rules(id, "egress", &s.egress, &acts, rules)?;
            Ok(TPolicy {
                id: format!("{id} ({} {prio})", s.tier),
                tier,
                order: (prio, 0, p.metadata.name.clone().unwrap_or_default()),
                subject,
                ingress,
                egress,
            })
        }
        TierObject::Anp(p) => {
            let s = &p.spec;
            let prio = priority(s.priority)?;
            let subject = parse_subject(&s.subject, "spec.subject")?;
            let (ingress, egress) =
                anp_rules(id, &s.ingress, &s.egress, &["Allow", "Deny", "Pass"], rules)?;
            Ok(TPolicy {
                id: format!("{id} (Admin {prio})"),
                tier: Tier::Admin,
                order: (prio, 0, p.metadata.name.clone().unwrap_or_default()),
                subject,
                ingress,
                egress,
            })
        }
        TierObject::Banp(p) => {
            let name = p.metadata.name.clone().unwrap_or_default();
            if name != "default" {
                return Err(format!(
                    "metadata.name: {name:?}; a BaselineAdminNetworkPolicy must be named \"default\""
                ));
            }
            let s = &p.spec;
            let subject = parse_subject(&s.subject, "spec.subject")?;
            let (ingress, egress) =
                anp_rules(id, &s.ingress, &s.egress, &["Allow", "Deny"], rules)?;
            Ok(TPolicy {
                id: format!("{id} (Baseline)"),
                tier: Tier::Baseline,
                // after every Baseline ClusterNetworkPolicy
                order: (i32::MAX, 1, name),
                subject,
                ingress,
                egress,
            })
        }
    }
}

type Rules = (Vec<TRule>, Vec<TRule>);

/// One rule of either API version (v1alpha2 `protocols`, v1alpha1 `ports`;
/// ingress `from`, egress `to`), as the one rule decoder reads it.
trait RuleSrc {
    type Peer;
    /// "from" or "to"
    const PEERS: &'static str;
    fn name(&self) -> &str;
    fn action(&self) -> &str;
    fn peers(&self) -> &[Self::Peer];
    fn peer(p: &Self::Peer, field: &str) -> Result<TPeer, String>;
    fn ports(&self, field: &str) -> Result<Option<Vec<PortSpec>>, String>;
}

macro_rules! rule_src {
    ($t:ty, $peer:ty, $peers:ident, $decode:ident, $ports:ident, $portfn:ident) => {
        impl RuleSrc for $t {
            type Peer = $peer;
            const PEERS: &'static str = stringify!($peers);
            fn name(&self) -> &str {
                &self.name
            }
            fn action(&self) -> &str {
                &self.action
            }
            fn peers(&self) -> &[$peer] {
                &self.$peers
            }
            fn peer(p: &$peer, field: &str) -> Result<TPeer, String> {
                $decode(p, field)
            }
            fn ports(&self, field: &str) -> Result<Option<Vec<PortSpec>>, String> {
                $portfn(&self.$ports, field)
            }
        }
    };
}
rule_src!(
    CnpIngressRule,
    IngressPeer,
    from,
    ingress_peer,
    protocols,
    cnp_protocols
);
rule_src!(
    CnpEgressRule,
    EgressPeer,
    to,
    egress_peer,
    protocols,
    cnp_protocols
);
rule_src!(
    AnpIngressRule,
    IngressPeer,
    from,
    ingress_peer,
    ports,
    anp_ports
);
rule_src!(AnpEgressRule, EgressPeer, to, egress_peer, ports, anp_ports);

/// `spec.ingress` or `spec.egress` of any tier object.
fn decode_rules<R: RuleSrc>(
    id: &str,
    dir: &str,
    rs: &[R],
    acts: &[&str],
    rules: &mut RuleTable,
) -> Result<Vec<TRule>, String> {
    let mut out = Vec::with_capacity(rs.len());
    for (i, r) in rs.iter().enumerate() {
        let f = format!("spec.{dir}[{i}]");
        let a = action(r.action(), acts, &f)?;
        if r.peers().is_empty() {
            return Err(format!("{f}.{}: needs at least one peer", R::PEERS));
        }
        let peers = r
            .peers()
            .iter()
            .enumerate()
            .map(|(j, p)| R::peer(p, &format!("{f}.{}[{j}]", R::PEERS)))
            .collect::<Result<Vec<_>, _>>()?;
        let ports = r.ports(&f)?;
        let rid = rules.add(rule_label(id, dir, i, r.name(), r.action()));
        out.push(rule(rid, a, peers, ports, &f)?);
    }
    Ok(out)
}

fn anp_rules(
    id: &str,
    ing: &[AnpIngressRule],
    eg: &[AnpEgressRule],
    acts: &[&str],
    rules: &mut RuleTable,
) -> Result<Rules, String> {
    Ok((
        decode_rules(id, "ingress", ing, acts, rules)?,
        decode_rules(id, "egress", eg, acts, rules)?,
    ))
}

// ------------------------------------------------------------- compiling

/// What the tier compiler needs from the NetworkPolicy pass.
pub(super) struct World<'a> {
    pub endpoints: &'a [LocalEndpoint],
    pub all_pods: &'a [&'a PodInfo],
    pub ns_labels: &'a HashMap<&'a str, super::Labels>,
    pub nodes: &'a [NodeInfo],
    pub host_pods: &'a HashMap<Prefix, &'a PodInfo>,
}

impl World<'_> {
    fn ns_matches(&self, ns: &str, s: &Selector) -> bool {
        match self.ns_labels.get(ns) {
            Some(l) => s.matches(l),
            None => {
                let mut l = super::Labels::new();
                l.insert("kubernetes.io/metadata.name".into(), ns.into());
                s.matches(&l)
            }
        }
    }

    fn subject(&self, s: &SubjectSel, pod: &PodInfo) -> bool {
        match s {
            SubjectSel::Namespaces(n) => self.ns_matches(&pod.namespace, n),
            SubjectSel::Pods { ns, pods } => {
                self.ns_matches(&pod.namespace, ns) && pods.matches(&pod.labels)
            }
        }
    }

    fn peer_prefixes(&self, p: &TPeer, out: &mut Vec<Prefix>) {
        match p {
            TPeer::Networks(v) => out.extend(v.iter().copied()),
            TPeer::Nodes(s) => {
                for n in self.nodes.iter().filter(|n| s.matches(&n.labels)) {
                    out.extend(n.ips.iter().map(|ip| Prefix::host(*ip)));
                }
            }
            TPeer::Namespaces(s) => {
                for pod in self.all_pods {
                    if self.ns_matches(&pod.namespace, s) {
                        out.extend(pod.ips.iter().map(|ip| Prefix::host(*ip)));
                    }
                }
            }
            TPeer::Pods { ns, pods } => {
                for pod in self.all_pods {
                    if self.ns_matches(&pod.namespace, ns) && pods.matches(&pod.labels) {
                        out.extend(pod.ips.iter().map(|ip| Prefix::host(*ip)));
                    }
                }
            }
        }
    }
}

/// Resolved ports of one rule for one destination: None = all.
fn rule_ports(r: &TRule, dest: Option<&[NamedPort]>) -> Option<BTreeSet<PortRange>> {
    super::resolve_ports(&r.ports, dest)
}

fn port_in(set: &Option<BTreeSet<PortRange>>, pp: Option<(u8, u16)>) -> bool {
    match set {
        None => true,
        Some(s) => pp.is_some_and(|(proto, port)| {
            s.iter()
                .any(|r| r.proto == proto && port >= r.port_lo && port <= r.port_hi)
        }),
    }
}

fn np_allows(v: Option<&PolicyValue>, pp: Option<(u8, u16)>) -> bool {
    let Some(v) = v else { return false };
    if v.flags & PV_ALL_PORTS != 0 {
        return true;
    }
    pp.is_some_and(|(proto, port)| {
        v.ranges[..v.nranges as usize]
            .iter()
            .any(|r| r.proto == proto && port >= r.port_lo && port <= r.port_hi)
    })
}

/// One peer prefix's inputs: matched rules in precedence order (admin
/// ones first) with their resolved ports, and the NetworkPolicy entry.
struct Cell<'a> {
    admin: Vec<(&'a TRule, Option<BTreeSet<PortRange>>)>,
    baseline: Vec<(&'a TRule, Option<BTreeSet<PortRange>>)>,
    np_isolated: bool,
    np: Option<&'a PolicyValue>,
}

impl Cell<'_> {
    /// The verdict and deciding rule for (protocol, port) or a packet
    /// without ports (`None`).
    fn decide(&self, pp: Option<(u8, u16)>) -> (u8, u16) {
        for (r, ports) in &self.admin {
            if port_in(ports, pp) {
                match r.action {
                    Action::Allow => return (VERDICT_ALLOW, r.id),
                    Action::Deny => return (VERDICT_DENY, r.id),
                    Action::Pass => break,
                }
            }
        }
        if self.np_isolated {
            return if np_allows(self.np, pp) {
                (VERDICT_ALLOW, RULE_NP_ALLOW)
            } else {
                (VERDICT_DENY, RULE_NP_DENY)
            };
        }
        for (r, ports) in &self.baseline {
            if port_in(ports, pp) {
                match r.action {
                    Action::Allow => return (VERDICT_ALLOW, r.id),
                    Action::Deny => return (VERDICT_DENY, r.id),
                    Action::Pass => break,
                }
            }
        }
        (VERDICT_ALLOW, RULE_DEFAULT_ALLOW)
    }

    /// Disjoint ranges that differ from the default, merged.
    fn value(&self) -> (TierValue, bool) {
        let (dv, dr) = self.decide(None);
        let mut v = TierValue {
            default_verdict: dv,
            default_rule: dr,
            ..Default::default()
        };
        let mut ranges: Vec<TierRange> = Vec::new();
        for proto in [PROTO_TCP, PROTO_UDP, PROTO_SCTP] {
            let mut cuts: BTreeSet<u32> = BTreeSet::from([0]);
            let mut add = |r: &PortRange| {
                if r.proto == proto {
                    cuts.insert(u32::from(r.port_lo));
                    cuts.insert(u32::from(r.port_hi) + 1);
                }
            };
            for (_, ports) in self.admin.iter().chain(self.baseline.iter()) {
                ports.iter().flatten().for_each(&mut add);
            }
            if let Some(np) = self.np
                && np.flags & PV_ALL_PORTS == 0
            {
                np.ranges[..np.nranges as usize].iter().for_each(&mut add);
            }
            let cuts: Vec<u32> = cuts.into_iter().filter(|c| *c <= 65535).collect();
            for (i, lo) in cuts.iter().enumerate() {
                let hi = cuts.get(i + 1).map(|n| n - 1).unwrap_or(65535);
                let (verdict, rule) = self.decide(Some((proto, *lo as u16)));
                if let Some(last) = ranges.last_mut()
                    && last.proto == proto
                    && last.verdict == verdict
                    && last.rule == rule
                    && u32::from(last.port_hi) + 1 == *lo
                {
                    last.port_hi = hi as u16;
                    continue;
                }
                ranges.push(TierRange {
                    proto,
                    verdict,
                    port_lo: *lo as u16,
                    port_hi: hi as u16,
                    rule,
                });
            }
        }
        ranges.retain(|r| !(r.verdict == dv && r.rule == dr));
        let mut overflow = false;
        if ranges.len() > MAX_TIER_RANGES {
            // fail closed: keep what can be kept of the allowed ranges,
            // deny everything else
            overflow = true;
            ranges.retain(|r| r.verdict == VERDICT_ALLOW);
            ranges.truncate(MAX_TIER_RANGES);
            v.default_verdict = VERDICT_DENY;
        }
        v.nranges = ranges.len() as u32;
        for (i, r) in ranges.into_iter().enumerate() {
            v.ranges[i] = r;
        }
        (v, overflow)
    }
}

/// The rules of `p` for one direction when it is in tier `t`.
fn pick(p: &TPolicy, t: Tier, dir: u32) -> &[TRule] {
    if p.tier != t {
        &[]
    } else if dir == DIR_INGRESS {
        &p.ingress
    } else {
        &p.egress
    }
}

/// Compiles the tier policies into `out` (after the NetworkPolicy pass,
/// whose flags and entries give the NetworkPolicy tier).
pub(super) fn compile(objects: &[TierObject], w: &World, out: &mut Compiled) {
    out.tier_rules = vec![
        "default allow (no policy decided)".to_string(),
        "allowed by NetworkPolicy".to_string(),
        "NetworkPolicy isolation (no NetworkPolicy rule allows)".to_string(),
    ];
    let mut table = RuleTable {
        names: &mut out.tier_rules,
    };
    let mut policies: Vec<TPolicy> = Vec::new();
    for o in objects {
        match parse_object(o, &mut table) {
            Ok(p) => policies.push(p),
            Err(e) => out.errors.push(format!("{}: {e} (policy skipped)", o.id())),
        }
    }
    if policies.is_empty() {
        return;
    }
    policies.sort_by(|a, b| (a.tier, &a.order).cmp(&(b.tier, &b.order)));
    if w.nodes.is_empty() {
        for p in &policies {
            let uses_nodes = p
                .egress
                .iter()
                .any(|r| r.peers.iter().any(|x| matches!(x, TPeer::Nodes(_))));
            if uses_nodes {
                out.errors.push(format!(
                    "{}: nodes peers select no node: no Node objects known (Kubernetes: start corral-agent with --node-peers; manifests: add the Node objects)",
                    p.id
                ));
            }
        }
    }
    for p in policies.iter_mut() {
        for r in p.ingress.iter_mut().chain(p.egress.iter_mut()) {
            let mut v = Vec::new();
            for peer in &r.peers {
                w.peer_prefixes(peer, &mut v);
            }
            v.sort();
            v.dedup();
            r.prefixes = v;
        }
    }
    // NetworkPolicy entries by (ifindex, dir)
    let mut np_by: HashMap<(u32, u32), HashMap<Prefix, &PolicyValue>> = HashMap::new();
    for (k, v) in &out.entries {
        let len = (k.prefixlen - POLICY_KEY_HEADER_BITS) as u8;
        np_by.entry((k.ifindex, k.dir)).or_default().insert(
            Prefix {
                addr: u128::from_be_bytes(k.addr),
                len,
            },
            v,
        );
    }
    let empty = HashMap::new();
    let mut tier_entries = BTreeMap::new();
    let mut extra_flags: Vec<(u32, u32)> = Vec::new();
    let mut errors = Vec::new();
    let mut ambiguous: BTreeSet<String> = BTreeSet::new();
    for ep in w.endpoints {
        let selecting: Vec<&TPolicy> = policies
            .iter()
            .filter(|p| w.subject(&p.subject, &ep.pod))
            .collect();
        if selecting.is_empty() {
            continue;
        }
        for (a, b) in selecting.iter().zip(selecting.iter().skip(1)) {
            if a.tier == b.tier && a.order.1 == 0 && b.order.1 == 0 && a.order.0 == b.order.0 {
                ambiguous.insert(format!(
                    "{} and {} share priority {} and both select pod {}/{}: their order is by name (ambiguous by the API)",
                    a.id, b.id, a.order.0, ep.pod.namespace, ep.pod.name
                ));
            }
        }
        let names = out.selected_by.entry(ep.ifindex).or_default();
        for p in &selecting {
            let dirs: Vec<&str> = [
                (!p.ingress.is_empty()).then_some("ingress"),
                (!p.egress.is_empty()).then_some("egress"),
            ]
            .into_iter()
            .flatten()
            .collect();
            names.push(format!("{} ({})", p.id, dirs.join(", ")));
        }
        let np_flags = out.flags.get(&ep.ifindex).copied().unwrap_or(0);
        for (dir, pflag, tflag) in [
            (DIR_INGRESS, EP_POLICY_INGRESS, EP_TIER_INGRESS),
            (DIR_EGRESS, EP_POLICY_EGRESS, EP_TIER_EGRESS),
        ] {
            let admin: Vec<&TRule> = selecting
                .iter()
                .flat_map(|p| pick(p, Tier::Admin, dir))
                .collect();
            let base: Vec<&TRule> = selecting
                .iter()
                .flat_map(|p| pick(p, Tier::Baseline, dir))
                .collect();
            if admin.is_empty() && base.is_empty() {
                continue;
            }
            extra_flags.push((ep.ifindex, pflag | tflag));
            let np_isolated = np_flags & pflag != 0;
            let np = if np_isolated {
                np_by.get(&(ep.ifindex, dir)).unwrap_or(&empty)
            } else {
                &empty
            };
            // rule positions by peer prefix
            let mut by_prefix: HashMap<Prefix, Vec<(bool, usize)>> = HashMap::new();
            let mut prefixes: BTreeSet<Prefix> = BTreeSet::from([Prefix { addr: 0, len: 0 }]);
            for (is_admin, list) in [(true, &admin), (false, &base)] {
                for (i, r) in list.iter().enumerate() {
                    for q in &r.prefixes {
                        by_prefix.entry(*q).or_default().push((is_admin, i));
                        prefixes.insert(*q);
                    }
                }
            }
            prefixes.extend(np.keys().copied());
            let named = admin.iter().chain(base.iter()).any(|r| r.named);
            if named && dir == DIR_EGRESS {
                for hp in w.host_pods.keys() {
                    if prefixes.iter().any(|q| hp.within(q)) {
                        prefixes.insert(*hp);
                    }
                }
            }
            for p in &prefixes {
                let mut hit_a: Vec<usize> = Vec::new();
                let mut hit_b: Vec<usize> = Vec::new();
                let mut np_val: Option<&PolicyValue> = None;
                for len in 0..=p.len {
                    let q = p.truncate(len);
                    if let Some(v) = by_prefix.get(&q) {
                        for (a, i) in v {
                            if *a { hit_a.push(*i) } else { hit_b.push(*i) }
                        }
                    }
                    if let Some(v) = np.get(&q) {
                        np_val = Some(v);
                    }
                }
                hit_a.sort_unstable();
                hit_a.dedup();
                hit_b.sort_unstable();
                hit_b.dedup();
                let dest: Option<&[NamedPort]> = if dir == DIR_INGRESS {
                    Some(&ep.pod.ports)
                } else {
                    w.host_pods.get(p).map(|pod| pod.ports.as_slice())
                };
                let cell = Cell {
                    admin: hit_a
                        .iter()
                        .map(|i| (admin[*i], rule_ports(admin[*i], dest)))
                        .collect(),
                    baseline: hit_b
                        .iter()
                        .map(|i| (base[*i], rule_ports(base[*i], dest)))
                        .collect(),
                    np_isolated,
                    np: np_val,
                };
                let (v, overflow) = cell.value();
                if overflow {
                    errors.push(format!(
                        "pod {}/{}: more than {MAX_TIER_RANGES} port ranges for peer prefix {:032x}/{}; only allowed ranges kept, the rest denied",
                        ep.pod.namespace, ep.pod.name, p.addr, p.len
                    ));
                }
                tier_entries.insert(
                    PolicyKey {
                        prefixlen: POLICY_KEY_HEADER_BITS + u32::from(p.len),
                        ifindex: ep.ifindex,
                        dir,
                        addr: p.addr.to_be_bytes(),
                    },
                    v,
                );
            }
        }
    }
    for (ifindex, f) in extra_flags {
        *out.flags.entry(ifindex).or_default() |= f;
    }
    out.tier_entries = tier_entries;
    out.errors.extend(errors);
    // one line per pair of policies (the first pod named)
    let mut seen = BTreeSet::new();
    for a in ambiguous {
        let pair = a.split(" share ").next().unwrap_or("").to_string();
        if seen.insert(pair) {
            out.errors.push(a);
        }
    }
}

/// Reference evaluation of the compiled tier map (what the kernel does):
/// `None` when the endpoint's direction is not in tier mode.
pub fn evaluate(
    c: &Compiled,
    ifindex: u32,
    dir: u32,
    peer: std::net::IpAddr,
    proto: u8,
    port: u16,
) -> Option<(bool, u16)> {
    let flag = if dir == DIR_INGRESS {
        EP_TIER_INGRESS
    } else {
        EP_TIER_EGRESS
    };
    if c.flags.get(&ifindex).copied().unwrap_or(0) & flag == 0 {
        return None;
    }
    let host = Prefix::host(peer);
    let has_ports = matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP);
    for len in (0..=host.len).rev() {
        let p = host.truncate(len);
        let key = PolicyKey {
            prefixlen: POLICY_KEY_HEADER_BITS + u32::from(len),
            ifindex,
            dir,
            addr: p.addr.to_be_bytes(),
        };
        if let Some(v) = c.tier_entries.get(&key) {
            if has_ports {
                for r in &v.ranges[..v.nranges as usize] {
                    if r.proto == proto && port >= r.port_lo && port <= r.port_hi {
                        return Some((r.verdict == VERDICT_ALLOW, r.rule));
                    }
                }
            }
            return Some((v.default_verdict == VERDICT_ALLOW, v.default_rule));
        }
    }
    Some((false, u16::MAX))
}

#[cfg(test)]
mod tests;
