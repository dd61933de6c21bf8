//! NUMA topology of nodes (`topology.node.k8s.io` NodeResourceTopology, "NRT") and
//! the NUMA view of pods, shared by `simulate` (input files) and `run` (watch).
//!
//! - [`parse_nrt`] decodes and strictly validates one NRT object: zones of type
//!   `Node` (NUMA nodes; at most [`MAX_NUMA_ZONES`], kubelet's Topology Manager
//!   limit) with per-resource `allocatable`/`available`, and the kubelet Topology
//!   Manager policy/scope from `attributes` (`topologyManagerPolicy`,
//!   `topologyManagerScope`), falling back to the deprecated `topologyPolicies`.
//!   Errors name the field.
//! - [`NumaRequest`] is what a pod asks to be aligned (precomputed once per pod in
//!   `PodInfo::numa`): only Guaranteed pods are aligned; a container's CPUs only when
//!   its CPU request is an integer (exclusive CPUs); memory, `hugepages-*` and
//!   extended resources (devices) always. Non-Guaranteed pods carry their extended
//!   resources only, for the accounting below.
//! - [`NodeNuma`] is a node's NUMA state in the snapshot: the NRT as last observed
//!   plus the pods placed on the node since then ("assumed"). NRT `available` is
//!   published by a node agent after kubelet admitted a pod, so pods placed in the
//!   same cycle (or before the agent caught up) are not in it. Pessimistic model:
//!   each assumed pod's aligned request is subtracted from **every zone it could have
//!   landed in** (every zone that fits the whole request; all zones when none does),
//!   floored at 0, until a newer NRT for the node is observed (which clears the
//!   assumed list). This can only under-estimate availability, so a node is never
//!   over-committed by placements the agent has not yet reported.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::Value;

use crate::quantity::parse_resource;
use crate::resources::{CPU, EPHEMERAL_STORAGE, MEMORY, PODS, ResourceName, is_hugepages};

/// kubelet's Topology Manager refuses machines with more NUMA nodes than this.
pub const MAX_NUMA_ZONES: usize = 8;
/// Distinct per-zone resources an NRT may report.
const MAX_RESOURCES: usize = 64;

pub const API_GROUP: &str = "topology.node.k8s.io";
pub const KIND: &str = "NodeResourceTopology";

/// kubelet `--topology-manager-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    None,
    BestEffort,
    Restricted,
    SingleNumaNode,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::BestEffort => "best-effort",
            Policy::Restricted => "restricted",
            Policy::SingleNumaNode => "single-numa-node",
        }
    }
}

/// kubelet `--topology-manager-scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Container,
    Pod,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Container => "container",
            Scope::Pod => "pod",
        }
    }
}

/// One NUMA zone: values per [`NodeTopology::resources`] index (cpu in millicores,
/// 0 when the zone does not report the resource).
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub name: String,
    pub allocatable: Vec<i64>,
    pub available: Vec<i64>,
}

/// A node's NUMA topology as reported by its NRT object.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTopology {
    pub policy: Policy,
    pub scope: Scope,
    /// Every resource reported by some zone, sorted by name.
    pub resources: Vec<ResourceName>,
    /// NUMA zones in NUMA id order.
    pub zones: Vec<Zone>,
}

impl NodeTopology {
    /// Index of resource `name` in [`NodeTopology::resources`].
    pub fn resource_index(&self, name: &str) -> Option<usize> {
        self.resources.binary_search_by(|r| (**r).cmp(name)).ok()
    }
}

fn quantity(v: &Value, rname: &str, field: &str) -> Result<i64, String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Null => return Err(format!("{field}: must be set")),
        _ => return Err(format!("{field}: must be a quantity")),
    };
    let q = parse_resource(rname, &s).map_err(|e| format!("{field}: {e}"))?;
    if q < 0 {
        return Err(format!("{field}: quantity {s:?} must not be negative"));
    }
    Ok(q)
}

fn str_field<'a>(v: &'a Value, field: &str) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("{field}: must be a string"))
}

fn parse_policy(v: &str, field: &str) -> Result<Policy, String> {
    Ok(match v {
        "none" => Policy::None,
        "best-effort" => Policy::BestEffort,
        "restricted" => Policy::Restricted,
        "single-numa-node" => Policy::SingleNumaNode,
        _ => {
            return Err(format!(
                "{field}: unknown topology manager policy {v:?} (none, best-effort, restricted, single-numa-node)"
            ));
        }
    })
}

/// Deprecated `topologyPolicies[]` values (v1alpha1/v1alpha2).
fn parse_legacy_policy(v: &str, field: &str) -> Result<(Policy, Scope), String> {
    Ok(match v {
        "None" => (Policy::None, Scope::Container),
        "BestEffort" | "BestEffortContainerLevel" => (Policy::BestEffort, Scope::Container),
        "BestEffortPodLevel" => (Policy::BestEffort, Scope::Pod),
        "Restricted" | "RestrictedContainerLevel" => (Policy::Restricted, Scope::Container),
        "RestrictedPodLevel" => (Policy::Restricted, Scope::Pod),
        "SingleNUMANodeContainerLevel" => (Policy::SingleNumaNode, Scope::Container),
        "SingleNUMANodePodLevel" => (Policy::SingleNumaNode, Scope::Pod),
        _ => return Err(format!("{field}: unknown topology policy {v:?}")),
    })
}

/// Decodes a NodeResourceTopology object (v1alpha1 or v1alpha2) into the node name
/// (`metadata.name`, which is the node's name by convention) and its topology.
/// Errors name the field; the caller adds the object.
pub fn parse_nrt(v: &Value) -> Result<(String, NodeTopology), String> {
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("metadata.name: must be set")?
        .to_string();
    // Policy and scope: attributes first, then the deprecated list.
    let mut policy = None;
    let mut scope = None;
    match v.get("attributes") {
        None | Some(Value::Null) => {}
        Some(Value::Array(attrs)) => {
            for (i, a) in attrs.iter().enumerate() {
                let an = str_field(&a["name"], &format!("attributes[{i}].name"))?;
                let field = format!("attributes[{i}].value");
                match an {
                    "topologyManagerPolicy" => {
                        policy = Some(parse_policy(str_field(&a["value"], &field)?, &field)?)
                    }
                    "topologyManagerScope" => {
                        scope = Some(match str_field(&a["value"], &field)? {
                            "container" => Scope::Container,
                            "pod" => Scope::Pod,
                            s => {
                                return Err(format!(
                                    "{field}: unknown topology manager scope {s:?} (container, pod)"
                                ));
                            }
                        })
                    }
                    _ => {}
                }
            }
        }
        Some(_) => return Err("attributes: must be a list".into()),
    }
    if policy.is_none() {
        match v.get("topologyPolicies") {
            None | Some(Value::Null) => {}
            Some(Value::Array(ps)) => {
                if let Some(p) = ps.first() {
                    let (p, s) = parse_legacy_policy(
                        str_field(p, "topologyPolicies[0]")?,
                        "topologyPolicies[0]",
                    )?;
                    policy = Some(p);
                    scope = scope.or(Some(s));
                }
            }
            Some(_) => return Err("topologyPolicies: must be a list".into()),
        }
    }
    let policy = policy.ok_or(
        "attributes: no topologyManagerPolicy attribute (and no deprecated topologyPolicies)",
    )?;
    let scope = scope.unwrap_or(Scope::Container);

    let zones = match v.get("zones") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(z)) => z,
        Some(_) => return Err("zones: must be a list".into()),
    };
    // (name, id, [(resource, allocatable, available)])
    type RawZone = (String, Option<u32>, Vec<(String, i64, i64)>);
    let mut raw: Vec<RawZone> = Vec::new();
    for (i, z) in zones.iter().enumerate() {
        if !z.is_object() {
            return Err(format!("zones[{i}]: must be an object"));
        }
        let zname = str_field(&z["name"], &format!("zones[{i}].name"))?.to_string();
        let ztype = str_field(&z["type"], &format!("zones[{i}].type"))?;
        if ztype != "Node" {
            // Other zone types (e.g. caches, sockets) are not NUMA nodes.
            continue;
        }
        if raw.iter().any(|r| r.0 == zname) {
            return Err(format!("zones[{i}].name: duplicate zone {zname:?}"));
        }
        let mut res = Vec::new();
        match z.get("resources") {
            None | Some(Value::Null) => {}
            Some(Value::Array(rs)) => {
                for (j, r) in rs.iter().enumerate() {
                    let f = format!("zones[{i}].resources[{j}]");
                    let rname = str_field(&r["name"], &format!("{f}.name"))?;
                    if rname.is_empty() {
                        return Err(format!("{f}.name: must not be empty"));
                    }
                    if res.iter().any(|(n, _, _)| n == rname) {
                        return Err(format!("{f}.name: duplicate resource {rname:?}"));
                    }
                    let alloc = quantity(&r["allocatable"], rname, &format!("{f}.allocatable"))?;
                    let avail = quantity(&r["available"], rname, &format!("{f}.available"))?;
                    if !r["capacity"].is_null() {
                        quantity(&r["capacity"], rname, &format!("{f}.capacity"))?;
                    }
                    res.push((rname.to_string(), alloc, avail));
                }
            }
            Some(_) => return Err(format!("zones[{i}].resources: must be a list")),
        }
        // NUMA id from the conventional `node-<id>` name; zones are sorted by it.
        let id = zname.rsplit('-').next().and_then(|s| s.parse::<u32>().ok());
        raw.push((zname, id, res));
    }
    if raw.len() > MAX_NUMA_ZONES {
        return Err(format!(
            "zones: {} NUMA zones; kubelet's Topology Manager supports at most {MAX_NUMA_ZONES}",
            raw.len()
        ));
    }
    raw.sort_by_key(|z| z.1.unwrap_or(u32::MAX));
    let mut resources: Vec<ResourceName> = Vec::new();
    for (_, _, rs) in &raw {
        for (n, _, _) in rs {
            if let Err(p) = resources.binary_search_by(|r| (**r).cmp(n.as_str())) {
                resources.insert(p, Arc::from(n.as_str()));
            }
        }
    }
    if resources.len() > MAX_RESOURCES {
        return Err(format!(
            "zones: more than {MAX_RESOURCES} distinct resources"
        ));
    }
    let mut topo = NodeTopology {
        policy,
        scope,
        resources,
        zones: Vec::with_capacity(raw.len()),
    };
    for (zname, _, rs) in raw {
        let mut allocatable = vec![0; topo.resources.len()];
        let mut available = vec![0; topo.resources.len()];
        for (n, a, v) in rs {
            if let Some(k) = topo.resource_index(&n) {
                allocatable[k] = a;
                available[k] = v;
            }
        }
        topo.zones.push(Zone {
            name: zname,
            allocatable,
            available,
        });
    }
    Ok((name, topo))
}

/// Aligned resource amounts, sorted by name (cpu in millicores).
pub type AlignedReq = Vec<(ResourceName, i64)>;

/// One container's aligned request.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerReq {
    pub name: String,
    /// Non-restartable init container (runs to completion before the next one).
    pub init: bool,
    pub req: AlignedReq,
}

/// What a pod asks the Topology Manager to align.
#[derive(Debug, Clone, PartialEq)]
pub struct NumaRequest {
    /// Guaranteed QoS: only these pods are aligned (filtered/scored).
    pub guaranteed: bool,
    /// Init containers (in order) then app containers.
    pub containers: Vec<ContainerReq>,
    /// Pod-level request (pod scope): max(Σ app + sidecars, each init container +
    /// sidecars started before it).
    pub pod: AlignedReq,
}

fn container_list(
    c: &Container,
) -> (
    std::collections::BTreeMap<String, String>,
    std::collections::BTreeMap<String, String>,
) {
    let r = c.resources.as_ref();
    let get = |m: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >| {
        m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
            .unwrap_or_default()
    };
    let limits: std::collections::BTreeMap<String, String> = get(r.and_then(|r| r.limits.as_ref()));
    let mut requests: std::collections::BTreeMap<String, String> =
        get(r.and_then(|r| r.requests.as_ref()));
    // API defaulting: a limit without a request sets the request.
    for (k, v) in &limits {
        requests.entry(k.clone()).or_insert_with(|| v.clone());
    }
    (requests, limits)
}

fn add_req(a: &mut AlignedReq, b: &AlignedReq) {
    for (n, v) in b {
        match a.binary_search_by(|(x, _)| x.cmp(n)) {
            Ok(i) => a[i].1 = a[i].1.saturating_add(*v),
            Err(i) => a.insert(i, (n.clone(), *v)),
        }
    }
}

fn max_req(a: &mut AlignedReq, b: &AlignedReq) {
    for (n, v) in b {
        match a.binary_search_by(|(x, _)| x.cmp(n)) {
            Ok(i) => a[i].1 = a[i].1.max(*v),
            Err(i) => a.insert(i, (n.clone(), *v)),
        }
    }
}

/// The pod's NUMA request; `None` when it asks nothing to be aligned. Quantities
/// were validated by `pod_requests` before; an unparsable one here is skipped.
pub fn numa_request(pod: &Pod) -> Option<NumaRequest> {
    let spec = pod.spec.as_ref()?;
    // Fast path (every pod of a relist comes here): without any limit the pod is
    // not Guaranteed, and without a request beyond cpu/memory/ephemeral-storage it
    // has no device to account.
    let interesting = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .any(|c| {
            c.resources.as_ref().is_some_and(|r| {
                r.limits.as_ref().is_some_and(|l| !l.is_empty())
                    || r.requests.as_ref().is_some_and(|q| {
                        q.keys()
                            .any(|k| !matches!(k.as_str(), CPU | MEMORY | EPHEMERAL_STORAGE))
                    })
            })
        });
    if !interesting {
        return None;
    }
    let inits = spec.init_containers.iter().flatten();
    let all: Vec<(&Container, bool)> = inits
        .map(|c| (c, c.restart_policy.as_deref() != Some("Always")))
        .chain(spec.containers.iter().map(|c| (c, false)))
        .collect();
    // QoS Guaranteed: every container has cpu and memory limits equal to requests.
    let lists: Vec<_> = all.iter().map(|(c, _)| container_list(c)).collect();
    let same = |req: &std::collections::BTreeMap<String, String>,
                lim: &std::collections::BTreeMap<String, String>,
                k: &str| {
        match (req.get(k), lim.get(k)) {
            (Some(r), Some(l)) => parse_resource(k, r).ok() == parse_resource(k, l).ok(),
            _ => false,
        }
    };
    let guaranteed = !lists.is_empty()
        && lists
            .iter()
            .all(|(req, lim)| same(req, lim, CPU) && same(req, lim, MEMORY));
    let mut containers = Vec::with_capacity(all.len());
    for ((c, init), (req, _)) in all.iter().zip(&lists) {
        let mut out: AlignedReq = Vec::new();
        for (k, q) in req {
            let Ok(v) = parse_resource(k, q) else {
                continue;
            };
            if v <= 0 || k == EPHEMERAL_STORAGE || k == PODS {
                continue;
            }
            let keep = if k == CPU {
                guaranteed && v % 1000 == 0
            } else if k == MEMORY || is_hugepages(k) {
                guaranteed
            } else {
                // Devices / extended resources.
                true
            };
            if keep {
                out.push((Arc::from(k.as_str()), v));
            }
        }
        containers.push(ContainerReq {
            name: c.name.clone(),
            init: *init,
            req: out,
        });
    }
    let n_init = spec.init_containers.as_ref().map_or(0, Vec::len);
    let mut apps: AlignedReq = Vec::new();
    let mut init_peak: AlignedReq = Vec::new();
    let mut sidecars: AlignedReq = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        if i >= n_init {
            add_req(&mut apps, &c.req);
        } else if c.init {
            let mut x = sidecars.clone();
            add_req(&mut x, &c.req);
            max_req(&mut init_peak, &x);
        } else {
            add_req(&mut sidecars, &c.req);
        }
    }
    add_req(&mut apps, &sidecars);
    let mut pod_req = apps;
    max_req(&mut pod_req, &init_peak);
    if containers.iter().all(|c| c.req.is_empty()) {
        return None;
    }
    Some(NumaRequest {
        guaranteed,
        containers,
        pod: pod_req,
    })
}

/// A request mapped onto a node's resource indices; resources the node does not
/// report per zone are dropped (not aligned).
pub fn map_req(topo: &NodeTopology, req: &AlignedReq) -> Vec<(usize, i64)> {
    req.iter()
        .filter_map(|(n, v)| topo.resource_index(n).map(|i| (i, *v)))
        .collect()
}

/// Whether `req` fits in zone `z` of `avail`.
#[inline]
pub fn fits_zone(avail: &[Vec<i64>], z: usize, req: &[(usize, i64)]) -> bool {
    req.iter().all(|&(k, v)| avail[z][k] >= v)
}

/// Whether `req` fits in the union of the zones of `mask`.
pub fn fits_mask(avail: &[Vec<i64>], mask: u32, req: &[(usize, i64)]) -> bool {
    req.iter().all(|&(k, v)| {
        let mut s = 0i64;
        for (z, a) in avail.iter().enumerate() {
            if mask & (1 << z) != 0 {
                s = s.saturating_add(a[k]);
            }
        }
        s >= v
    })
}

/// Masks of `n` zones with `k` zones set, ascending.
pub fn masks_of_size(n: usize, k: u32) -> impl Iterator<Item = u32> {
    (1u32..(1u32 << n)).filter(move |m| m.count_ones() == k)
}

/// Smallest number of zones whose allocatable could hold `req` (kubelet's
/// "preferred" hint width); `None` when all zones together cannot.
pub fn min_width_by_allocatable(topo: &NodeTopology, req: &[(usize, i64)]) -> Option<u32> {
    let mut width = 1;
    for &(k, v) in req {
        if v <= 0 {
            continue;
        }
        let mut alloc: Vec<i64> = topo.zones.iter().map(|z| z.allocatable[k]).collect();
        alloc.sort_unstable_by(|a, b| b.cmp(a));
        let mut s = 0i64;
        let mut w = None;
        for (i, a) in alloc.iter().enumerate() {
            s = s.saturating_add(*a);
            if s >= v {
                w = Some(i as u32 + 1);
                break;
            }
        }
        width = width.max(w?);
    }
    Some(width)
}

/// Subtracts `req` from the zones of `mask`, taking from zones in order (floored at
/// 0).
pub fn take_from_mask(avail: &mut [Vec<i64>], mask: u32, req: &[(usize, i64)]) {
    for &(k, v) in req {
        let mut left = v;
        for (z, a) in avail.iter_mut().enumerate() {
            if left <= 0 {
                break;
            }
            if mask & (1 << z) != 0 {
                let t = a[k].min(left);
                a[k] -= t;
                left -= t;
            }
        }
    }
}

/// A node's NUMA state in the snapshot: the last observed NRT plus the pods placed
/// since (see the module docs for the pessimistic model).
#[derive(Debug, Clone)]
pub struct NodeNuma {
    pub topo: Arc<NodeTopology>,
    /// Effective available per zone and resource index (observed minus assumed).
    pub available: Vec<Vec<i64>>,
    /// Pods placed since the NRT was observed, with their request.
    pub assumed: Vec<(String, Arc<NumaRequest>)>,
}

impl NodeNuma {
    pub fn new(topo: Arc<NodeTopology>) -> NodeNuma {
        let available = topo.zones.iter().map(|z| z.available.clone()).collect();
        NodeNuma {
            topo,
            available,
            assumed: Vec::new(),
        }
    }

    fn charge(&mut self, req: &NumaRequest) {
        let r = map_req(&self.topo, &req.pod);
        if r.is_empty() {
            return;
        }
        let n = self.available.len();
        let fitting: Vec<usize> = (0..n)
            .filter(|&z| fits_zone(&self.available, z, &r))
            .collect();
        let zones: Vec<usize> = if fitting.is_empty() {
            (0..n).collect()
        } else {
            fitting
        };
        for z in zones {
            for &(k, v) in &r {
                self.available[z][k] = (self.available[z][k] - v).max(0);
            }
        }
    }

    /// A pod placed on the node after the NRT was observed.
    pub fn assume(&mut self, key: &str, req: &Arc<NumaRequest>) {
        self.charge(req);
        self.assumed.push((key.to_string(), req.clone()));
    }

    /// A pod removed from the node: when it was assumed, availability is
    /// recomputed from the observed NRT and the remaining assumed pods. (A removed
    /// pod the NRT already counted stays counted until the next NRT: pessimistic.)
    pub fn forget(&mut self, key: &str) {
        let Some(i) = self.assumed.iter().position(|(k, _)| k == key) else {
            return;
        };
        self.assumed.remove(i);
        self.available = self
            .topo
            .zones
            .iter()
            .map(|z| z.available.clone())
            .collect();
        let assumed = std::mem::take(&mut self.assumed);
        for (_, r) in &assumed {
            self.charge(r);
        }
        self.assumed = assumed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub fn nrt(policy: &str, scope: &str) -> Value {
        json!({
            "apiVersion": "topology.node.k8s.io/v1alpha2", "kind": "NodeResourceTopology",
            "metadata": {"name": "n1"},
            "attributes": [{"name": "topologyManagerPolicy", "value": policy},
                           {"name": "topologyManagerScope", "value": scope}],
            "zones": [
                {"name": "node-1", "type": "Node", "resources": [
                    {"name": "cpu", "capacity": "16", "allocatable": "16", "available": "4"},
                    {"name": "nvidia.com/gpu", "capacity": "2", "allocatable": "2", "available": "2"}]},
                {"name": "node-0", "type": "Node", "resources": [
                    {"name": "cpu", "capacity": "16", "allocatable": "16", "available": "12"},
                    {"name": "memory", "capacity": "64Gi", "allocatable": "60Gi", "available": "32Gi"}]},
                {"name": "l3", "type": "Cache"}
            ]
        })
    }

    #[test]
    fn parses_zones_policy_and_scope() {
        let (name, t) = parse_nrt(&nrt("single-numa-node", "pod")).expect("nrt");
        assert_eq!(name, "n1");
        assert_eq!(t.policy, Policy::SingleNumaNode);
        assert_eq!(t.scope, Scope::Pod);
        assert_eq!(t.zones.len(), 2, "cache zone ignored");
        assert_eq!(t.zones[0].name, "node-0", "sorted by NUMA id");
        let cpu = t.resource_index("cpu").unwrap();
        let mem = t.resource_index("memory").unwrap();
        let gpu = t.resource_index("nvidia.com/gpu").unwrap();
        assert_eq!(t.zones[0].available[cpu], 12_000);
        assert_eq!(t.zones[0].allocatable[mem], 60 << 30);
        assert_eq!(t.zones[0].available[gpu], 0, "not reported by zone 0");
        assert_eq!(t.zones[1].available[gpu], 2);
    }

    #[test]
    fn legacy_topology_policies_field() {
        let mut v = nrt("x", "y");
        v.as_object_mut().unwrap().remove("attributes");
        v["topologyPolicies"] = json!(["SingleNUMANodeContainerLevel"]);
        let (_, t) = parse_nrt(&v).unwrap();
        assert_eq!(
            (t.policy, t.scope),
            (Policy::SingleNumaNode, Scope::Container)
        );
        v["topologyPolicies"] = json!(["RestrictedPodLevel"]);
        let (_, t) = parse_nrt(&v).unwrap();
        assert_eq!((t.policy, t.scope), (Policy::Restricted, Scope::Pod));
    }

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(Value, &str)> = vec![
            (
                {
                    let mut v = nrt("single-numa-node", "pod");
                    v["zones"][1]["resources"][0]["available"] = json!("lots");
                    v
                },
                "zones[1].resources[0].available",
            ),
            (
                {
                    let mut v = nrt("single-numa-node", "pod");
                    v["zones"][0]["resources"][0]["allocatable"] = json!(null);
                    v
                },
                "zones[0].resources[0].allocatable: must be set",
            ),
            (
                nrt("sometimes", "pod"),
                "attributes[0].value: unknown topology manager policy",
            ),
            (
                nrt("restricted", "node"),
                "attributes[1].value: unknown topology manager scope",
            ),
            (
                {
                    let mut v = nrt("restricted", "pod");
                    v["zones"] = json!("x");
                    v
                },
                "zones: must be a list",
            ),
            (
                {
                    let mut v = nrt("restricted", "pod");
                    v.as_object_mut().unwrap().remove("attributes");
                    v
                },
                "no topologyManagerPolicy",
            ),
            (
                {
                    let mut v = nrt("restricted", "pod");
                    v["zones"][0]["resources"][1]["available"] = json!("-1");
                    v
                },
                "must not be negative",
            ),
            (
                {
                    let mut v = nrt("restricted", "pod");
                    let z: Vec<Value> = (0..9)
                        .map(|i| json!({"name": format!("node-{i}"), "type": "Node"}))
                        .collect();
                    v["zones"] = json!(z);
                    v
                },
                "at most 8",
            ),
            (
                {
                    let mut v = nrt("restricted", "pod");
                    v["zones"][0]["type"] = json!(3);
                    v
                },
                "zones[0].type: must be a string",
            ),
        ];
        for (v, want) in cases {
            let e = parse_nrt(&v).expect_err(want);
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    fn pod(v: Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": v
        }))
        .unwrap()
    }

    #[test]
    fn guaranteed_integer_cpu_and_init_containers() {
        let g = |cpu: &str, mem: &str| json!({"requests": {"cpu": cpu, "memory": mem}, "limits": {"cpu": cpu, "memory": mem}});
        let p = pod(json!({
            "initContainers": [{"name": "i", "resources": g("6", "1Gi")}],
            "containers": [{"name": "a", "resources": g("2", "1Gi")},
                           {"name": "b", "resources": g("1500m", "1Gi")}]
        }));
        let r = numa_request(&p).unwrap();
        assert!(r.guaranteed);
        assert_eq!(r.containers.len(), 3);
        assert!(r.containers[0].init);
        assert_eq!(
            r.containers[2].req,
            vec![(Arc::from("memory"), 1 << 30)],
            "1500m not aligned"
        );
        // pod: max(init 6 cpu / 1Gi, apps 2 cpu / 2Gi)
        assert_eq!(
            r.pod,
            vec![(Arc::from("cpu"), 6000), (Arc::from("memory"), 2 << 30)]
        );
        // Burstable (limits differ): only devices remain.
        let p = pod(json!({"containers": [{"name": "a", "resources": {
            "requests": {"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": "1"},
            "limits": {"cpu": "4", "memory": "1Gi", "nvidia.com/gpu": "1"}}}]}));
        let r = numa_request(&p).unwrap();
        assert!(!r.guaranteed);
        assert_eq!(r.pod, vec![(Arc::from("nvidia.com/gpu"), 1)]);
        // Limits only default the requests: Guaranteed.
        let p = pod(json!({"containers": [{"name": "a", "resources": {
            "limits": {"cpu": "2", "memory": "1Gi"}}}]}));
        assert!(numa_request(&p).unwrap().guaranteed);
        // Best effort: nothing.
        assert!(numa_request(&pod(json!({"containers": [{"name": "a"}]}))).is_none());
    }

    #[test]
    fn assumed_pods_charge_every_fitting_zone_until_forgotten() {
        let (_, t) = parse_nrt(&nrt("single-numa-node", "container")).unwrap();
        let mut n = NodeNuma::new(Arc::new(t));
        let cpu = n.topo.resource_index("cpu").unwrap();
        let req = Arc::new(NumaRequest {
            guaranteed: true,
            containers: vec![],
            pod: vec![(Arc::from("cpu"), 3000)],
        });
        n.assume("a", &req);
        // 12 and 4 free: both fit 3 → both charged.
        assert_eq!((n.available[0][cpu], n.available[1][cpu]), (9000, 1000));
        n.assume("b", &req);
        // Only zone 0 fits now.
        assert_eq!((n.available[0][cpu], n.available[1][cpu]), (6000, 1000));
        n.forget("a");
        assert_eq!((n.available[0][cpu], n.available[1][cpu]), (9000, 1000));
        assert_eq!(n.assumed.len(), 1);
    }
}
