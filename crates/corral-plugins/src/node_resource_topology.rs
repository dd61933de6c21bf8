//! NodeResourceTopologyMatch: NUMA-aware placement (Filter + Score), named after
//! scheduler-plugins' plugin, modelled on kubelet's Topology Manager.
//!
//! Reads each node's NUMA state from the snapshot (`NodeInfo::numa`: the node's
//! NodeResourceTopology as last observed, minus the pods assumed on the node since;
//! see [`crate::topology`]) and the pod's precomputed `PodInfo::numa`.
//!
//! Only Guaranteed pods are aligned (integer CPUs exclusive, memory, hugepages,
//! devices/extended resources that the zones report). Other pods, nodes without
//! NRT and nodes with policy `none` pass the Filter.
//!
//! - `single-numa-node`: scope `container` — each init container must fit one zone
//!   (its resources are reused afterwards), each sidecar and app container must fit
//!   one zone, first fit in NUMA id order, and is subtracted from it (kubelet
//!   allocates containers one by one); scope `pod` — the pod's aligned total must
//!   fit one zone.
//! - `restricted`: kubelet admits only a *preferred* affinity: the narrowest width
//!   that could hold the request by zone **allocatable**. The request must fit (by
//!   **available**) in some set of exactly that many zones; per container (subtracted
//!   as above) or for the whole pod.
//! - `best-effort`: never filtered; scored.
//!
//! Score (node-local, 0..=100): the pod's aligned total is placed in the narrowest
//! zone set it fits (`k` zones), choosing among sets of that width the best by the
//! scoring strategy `s` (0..=100): `(100 + s) / 2^k`, so a 1-zone fit scores 50..100,
//! 2 zones 25..50, and so on; no fit scores 0. Strategies (`scoringStrategy.type`):
//! `LeastAllocated` (default; free share after placement, weighted over
//! `scoringStrategy.resources`, default cpu and memory weight 1), `MostAllocated`
//! (used share after placement) and `LeastNUMANodes` (`s` = 100: only the width
//! counts). PreScore skips pods that are not aligned and snapshots without any NRT,
//! so the plugin is a no-op (no score column) in clusters without NRT objects.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::node_resources_fit::{decode_at, decode_resource_specs};
use crate::framework::{CycleState, FilterPlugin, Plugin, PreScorePlugin, ScorePlugin, Status};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};
use crate::topology::{
    NodeNuma, NumaRequest, Policy, Scope, fits_mask, fits_zone, map_req, masks_of_size,
    min_width_by_allocatable, take_from_mask,
};

pub const NAME: &str = "NodeResourceTopologyMatch";

/// Scoring strategy (`scoringStrategy.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    LeastAllocated,
    MostAllocated,
    LeastNumaNodes,
}

#[derive(Debug)]
pub struct NodeResourceTopologyMatch {
    pub strategy: Strategy,
    /// Scored resources with weights.
    pub resources: Vec<(String, i64)>,
}

impl Default for NodeResourceTopologyMatch {
    fn default() -> Self {
        NodeResourceTopologyMatch {
            strategy: Strategy::LeastAllocated,
            resources: vec![("cpu".into(), 1), ("memory".into(), 1)],
        }
    }
}

crate::impl_plugin!(NodeResourceTopologyMatch, NAME, filter, pre_score, score);

/// The pod's request when it is aligned at all.
#[inline]
fn aligned(pod: &PodInfo) -> Option<&NumaRequest> {
    pod.numa.as_deref().filter(|r| r.guaranteed)
}

/// The node's NUMA state when its policy aligns anything.
#[inline]
fn numa(node: &NodeInfo) -> Option<&NodeNuma> {
    node.numa
        .as_deref()
        .filter(|n| n.topo.policy != Policy::None && !n.topo.zones.is_empty())
}

/// Restricted: a set of exactly the preferred width that fits by available.
fn restricted_mask(n: &NodeNuma, avail: &[Vec<i64>], r: &[(usize, i64)]) -> Option<u32> {
    let width = min_width_by_allocatable(&n.topo, r)?;
    masks_of_size(avail.len(), width).find(|&m| fits_mask(avail, m, r))
}

fn reject(policy: Policy, scope: Scope, what: &str) -> Status {
    let how = match policy {
        Policy::Restricted => "in its narrowest possible set of NUMA zones",
        _ => "in a single NUMA zone",
    };
    Status::unschedulable(format!(
        "node(s) cannot align {what} {how} (topology manager policy {}, scope {})",
        policy.as_str(),
        scope.as_str()
    ))
}

/// The Filter decision for an aligned pod on a node with topology.
pub fn check(n: &NodeNuma, req: &NumaRequest) -> Status {
    let topo = &n.topo;
    let policy = topo.policy;
    if !matches!(policy, Policy::SingleNumaNode | Policy::Restricted) {
        return Status::success();
    }
    let nz = n.available.len();
    match topo.scope {
        Scope::Pod => {
            let r = map_req(topo, &req.pod);
            if r.is_empty() {
                return Status::success();
            }
            let ok = match policy {
                Policy::SingleNumaNode => (0..nz).any(|z| fits_zone(&n.available, z, &r)),
                _ => restricted_mask(n, &n.available, &r).is_some(),
            };
            if ok {
                Status::success()
            } else {
                reject(policy, topo.scope, "pod")
            }
        }
        Scope::Container => {
            let mut avail = n.available.clone();
            for c in &req.containers {
                let r = map_req(topo, &c.req);
                if r.is_empty() {
                    continue;
                }
                let mask = match policy {
                    Policy::SingleNumaNode => (0..nz)
                        .find(|&z| fits_zone(&avail, z, &r))
                        .map(|z| 1u32 << z),
                    _ => restricted_mask(n, &avail, &r),
                };
                match mask {
                    None => {
                        return reject(policy, topo.scope, &format!("container {}", c.name));
                    }
                    Some(m) if !c.init => take_from_mask(&mut avail, m, &r),
                    Some(_) => {}
                }
            }
            Status::success()
        }
    }
}

impl FilterPlugin for NodeResourceTopologyMatch {
    #[inline]
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Status {
        match (aligned(pod), numa(node)) {
            (Some(req), Some(n)) => check(n, req),
            _ => Status::success(),
        }
    }
}

impl PreScorePlugin for NodeResourceTopologyMatch {
    fn pre_score(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        _: &[&NodeInfo],
    ) -> Status {
        if !snap.has_topology() || aligned(pod).is_none() {
            return Status::skip();
        }
        Status::success()
    }
}

impl NodeResourceTopologyMatch {
    /// Strategy score (0..=100) of placing `r` in the zones of `mask`.
    fn strategy_score(&self, n: &NodeNuma, mask: u32, r: &[(usize, i64)]) -> i64 {
        if self.strategy == Strategy::LeastNumaNodes {
            return 100;
        }
        let mut sum = 0i64;
        let mut weights = 0i64;
        for (name, w) in &self.resources {
            let Some(k) = n.topo.resource_index(name) else {
                continue;
            };
            let (mut alloc, mut avail) = (0i64, 0i64);
            for (z, zone) in n.topo.zones.iter().enumerate() {
                if mask & (1 << z) != 0 {
                    alloc = alloc.saturating_add(zone.allocatable[k]);
                    avail = avail.saturating_add(n.available[z][k]);
                }
            }
            if alloc <= 0 {
                continue;
            }
            let req = r.iter().find(|(i, _)| *i == k).map_or(0, |x| x.1);
            let free = (avail - req).clamp(0, alloc);
            let share = match self.strategy {
                Strategy::MostAllocated => (alloc - free) as i128 * 100 / alloc as i128,
                _ => free as i128 * 100 / alloc as i128,
            } as i64;
            sum += share * w;
            weights += w;
        }
        if weights == 0 { 0 } else { sum / weights }
    }

    /// Node-local score (0..=100) of an aligned pod on a node with topology.
    pub fn score_node(&self, n: &NodeNuma, req: &NumaRequest) -> i64 {
        let r = map_req(&n.topo, &req.pod);
        if r.is_empty() {
            return 0;
        }
        let nz = n.available.len();
        for k in 1..=nz as u32 {
            let best = masks_of_size(nz, k)
                .filter(|&m| fits_mask(&n.available, m, &r))
                .map(|m| self.strategy_score(n, m, &r))
                .max();
            if let Some(s) = best {
                return (100 + s) / (1i64 << k);
            }
        }
        0
    }
}

impl ScorePlugin for NodeResourceTopologyMatch {
    #[inline]
    fn score(
        &self,
        _: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot,
    ) -> Result<i64, Status> {
        Ok(match (aligned(pod), numa(node)) {
            (Some(req), Some(n)) => self.score_node(n, req),
            _ => 0,
        })
    }

    fn node_local(&self) -> bool {
        true
    }
}

/// `NodeResourceTopologyMatchArgs` (scheduler-plugins' `config/v1`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Args {
    #[serde(default)]
    api_version: Option<Value>,
    #[serde(default)]
    kind: Option<Value>,
    #[serde(default)]
    scoring_strategy: Option<Value>,
    /// scheduler-plugins' NRT cache resync; Corral's snapshot accounting replaces
    /// the cache, so it is accepted and ignored.
    #[serde(default)]
    cache_resync_period_seconds: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StrategyArgs {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    resources: Option<Vec<Value>>,
}

/// Builds the plugin from `NodeResourceTopologyMatchArgs`.
pub fn factory(args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    let a: Args = super::decode_args(args)?;
    let _ = (a.api_version, a.kind, a.cache_resync_period_seconds);
    let ss: StrategyArgs = decode_at(a.scoring_strategy, "scoringStrategy")?;
    let strategy = match ss.kind.as_deref() {
        None | Some("LeastAllocated") => Strategy::LeastAllocated,
        Some("MostAllocated") => Strategy::MostAllocated,
        Some("LeastNUMANodes") => Strategy::LeastNumaNodes,
        Some(t) => {
            return Err(format!(
                "scoringStrategy.type: unknown strategy {t:?} (LeastAllocated, MostAllocated, LeastNUMANodes)"
            ));
        }
    };
    let mut p = NodeResourceTopologyMatch {
        strategy,
        ..NodeResourceTopologyMatch::default()
    };
    if ss.resources.is_some() {
        let specs = decode_resource_specs(ss.resources, "scoringStrategy.resources")?;
        p.resources = Vec::with_capacity(specs.len());
        for (i, s) in specs.into_iter().enumerate() {
            if s.weight <= 0 || s.weight > 100 {
                return Err(format!(
                    "scoringStrategy.resources[{i}].weight: must be in 1..=100, got {}",
                    s.weight
                ));
            }
            p.resources.push((s.name, s.weight));
        }
    }
    Ok(Arc::new(p))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::framework::Code;
    use crate::testutil::{node, pod};
    use crate::topology::parse_nrt;

    /// An NRT for node `name` with zones of (cpu, memory Gi, gpu) allocatable ==
    /// capacity = (16, 64Gi, 2) and the given available amounts.
    pub(crate) fn nrt(name: &str, policy: &str, scope: &str, zones: &[(i64, i64, i64)]) -> Value {
        let z: Vec<Value> = zones
            .iter()
            .enumerate()
            .map(|(i, (c, m, g))| {
                json!({"name": format!("node-{i}"), "type": "Node", "resources": [
                    {"name": "cpu", "capacity": "16", "allocatable": "16", "available": c.to_string()},
                    {"name": "memory", "capacity": "64Gi", "allocatable": "64Gi", "available": format!("{m}Gi")},
                    {"name": "nvidia.com/gpu", "capacity": "2", "allocatable": "2", "available": g.to_string()}]})
            })
            .collect();
        json!({
            "apiVersion": "topology.node.k8s.io/v1alpha2", "kind": "NodeResourceTopology",
            "metadata": {"name": name},
            "attributes": [{"name": "topologyManagerPolicy", "value": policy},
                           {"name": "topologyManagerScope", "value": scope}],
            "zones": z
        })
    }

    fn snap(nodes: &[(&str, Value)]) -> Snapshot {
        let mut s = Snapshot::new();
        for (n, v) in nodes {
            s.upsert_node(
                node(n)
                    .cpu("64")
                    .mem("256Gi")
                    .alloc("nvidia.com/gpu", "8")
                    .info(),
            );
            let (name, t) = parse_nrt(v).unwrap();
            s.set_topology(&name, Some(Arc::new(t)));
        }
        s
    }

    fn g(cpu: &str, mem: &str) -> Value {
        json!({"cpu": cpu, "memory": mem})
    }

    /// A Guaranteed pod with one container per entry (requests == limits).
    fn gpod(name: &str, containers: &[Value], inits: &[Value]) -> PodInfo {
        let c = |i: usize, prefix: &str, r: &Value| {
            json!({"name": format!("{prefix}{i}"), "image": "img",
                   "resources": {"requests": r, "limits": r}})
        };
        let mut b = pod(name);
        b.0["spec"]["containers"] = json!(
            containers
                .iter()
                .enumerate()
                .map(|(i, r)| c(i, "c", r))
                .collect::<Vec<_>>()
        );
        if !inits.is_empty() {
            b.0["spec"]["initContainers"] = json!(
                inits
                    .iter()
                    .enumerate()
                    .map(|(i, r)| c(i, "init", r))
                    .collect::<Vec<_>>()
            );
        }
        b.info()
    }

    fn filter(s: &Snapshot, p: &PodInfo, n: &str) -> Status {
        NodeResourceTopologyMatch::default().filter(&CycleState::new(), p, s.node(n).unwrap(), s)
    }

    #[test]
    fn single_numa_node_container_scope() {
        let s = snap(&[(
            "n",
            nrt(
                "n",
                "single-numa-node",
                "container",
                &[(6, 32, 0), (6, 32, 2)],
            ),
        )]);
        // 4 + 4 cpus: one container per zone.
        let p = gpod("p", &[g("4", "1Gi"), g("4", "1Gi")], &[]);
        assert!(filter(&s, &p, "n").is_success());
        // 4 + 4 + 4: the third container fits no zone.
        let p = gpod("p", &[g("4", "1Gi"), g("4", "1Gi"), g("4", "1Gi")], &[]);
        let st = filter(&s, &p, "n");
        assert_eq!(st.code, Code::Unschedulable);
        assert_eq!(
            st.reasons,
            vec![
                "node(s) cannot align container c2 in a single NUMA zone (topology manager policy single-numa-node, scope container)"
            ]
        );
        // 8 cpus in one container: no zone has 8.
        let p = gpod("p", &[g("8", "1Gi")], &[]);
        assert!(!filter(&s, &p, "n").is_success());
        // Devices: the GPU is only free on zone 1, and so is memory+cpu there.
        let p = gpod(
            "p",
            &[json!({"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": "1"})],
            &[],
        );
        assert!(filter(&s, &p, "n").is_success());
        let p = gpod(
            "p",
            &[json!({"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": "3"})],
            &[],
        );
        assert!(!filter(&s, &p, "n").is_success());
    }

    #[test]
    fn single_numa_node_pod_scope() {
        let s = snap(&[(
            "n",
            nrt("n", "single-numa-node", "pod", &[(6, 32, 0), (6, 32, 0)]),
        )]);
        // 4 + 4 fits by container, not as one pod.
        let p = gpod("p", &[g("4", "1Gi"), g("4", "1Gi")], &[]);
        let st = filter(&s, &p, "n");
        assert_eq!(
            st.reasons,
            vec![
                "node(s) cannot align pod in a single NUMA zone (topology manager policy single-numa-node, scope pod)"
            ]
        );
        let p = gpod("p", &[g("3", "1Gi"), g("3", "1Gi")], &[]);
        assert!(filter(&s, &p, "n").is_success());
        // Memory counts too.
        let p = gpod("p", &[g("1", "40Gi")], &[]);
        assert!(!filter(&s, &p, "n").is_success());
    }

    #[test]
    fn init_containers_reuse_their_resources() {
        let s = snap(&[(
            "n",
            nrt(
                "n",
                "single-numa-node",
                "container",
                &[(6, 32, 0), (2, 32, 0)],
            ),
        )]);
        // Init 6 fits zone 0; after it the app containers 6 (zone 0) + 2 (zone 1).
        let p = gpod("p", &[g("6", "1Gi"), g("2", "1Gi")], &[g("6", "1Gi")]);
        assert!(filter(&s, &p, "n").is_success());
        // An init container needing 7 fits nowhere.
        let p = gpod("p", &[g("1", "1Gi")], &[g("7", "1Gi")]);
        let st = filter(&s, &p, "n");
        assert!(st.reasons[0].contains("container init0"), "{st:?}");
        // Pod scope: max(init 6, apps 6+2=8) = 8 > 6.
        let s = snap(&[(
            "n",
            nrt("n", "single-numa-node", "pod", &[(6, 32, 0), (2, 32, 0)]),
        )]);
        let p = gpod("p", &[g("6", "1Gi"), g("2", "1Gi")], &[g("6", "1Gi")]);
        assert!(!filter(&s, &p, "n").is_success());
    }

    #[test]
    fn non_guaranteed_and_non_integer_cpu() {
        let s = snap(&[(
            "n",
            nrt(
                "n",
                "single-numa-node",
                "container",
                &[(2, 32, 0), (2, 32, 0)],
            ),
        )]);
        // Burstable pod asking 8 cpus: not aligned, passes.
        let p = pod("p").cpu("8").mem("1Gi").info();
        assert!(filter(&s, &p, "n").is_success());
        // Guaranteed but 3500m: CPUs come from the shared pool, only memory aligned.
        let p = gpod("p", &[g("3500m", "1Gi")], &[]);
        assert!(filter(&s, &p, "n").is_success());
        let p = gpod("p", &[g("4", "1Gi")], &[]);
        assert!(!filter(&s, &p, "n").is_success());
        // Policy none and nodes without NRT pass.
        let s = snap(&[("n", nrt("n", "none", "container", &[(2, 32, 0)]))]);
        assert!(filter(&s, &p, "n").is_success());
        let mut s = Snapshot::new();
        s.upsert_node(node("bare").cpu("64").info());
        assert!(filter(&s, &p, "bare").is_success());
    }

    #[test]
    fn restricted_needs_the_narrowest_width() {
        // Zones allocatable 16 cpu each. 10 cpus could fit one zone (by allocatable)
        // so only a 1-zone placement is preferred: 8 + 8 available is not enough.
        let s = snap(&[(
            "n",
            nrt("n", "restricted", "container", &[(8, 32, 0), (8, 32, 0)]),
        )]);
        let p = gpod("p", &[g("10", "1Gi")], &[]);
        let st = filter(&s, &p, "n");
        assert_eq!(
            st.reasons,
            vec![
                "node(s) cannot align container c0 in its narrowest possible set of NUMA zones (topology manager policy restricted, scope container)"
            ]
        );
        // 20 cpus need 2 zones by allocatable: 12 + 8 available is preferred.
        let s = snap(&[(
            "n",
            nrt("n", "restricted", "pod", &[(12, 32, 0), (8, 32, 0)]),
        )]);
        let p = gpod("p", &[g("20", "1Gi")], &[]);
        assert!(filter(&s, &p, "n").is_success());
        let p = gpod("p", &[g("21", "1Gi")], &[]);
        assert!(!filter(&s, &p, "n").is_success());
        // best-effort never filters.
        let s = snap(&[("n", nrt("n", "best-effort", "pod", &[(1, 1, 0)]))]);
        assert!(filter(&s, &p, "n").is_success());
    }

    #[test]
    fn score_prefers_fewer_zones_then_strategy() {
        let s = snap(&[
            (
                "one",
                nrt("one", "best-effort", "pod", &[(8, 32, 0), (2, 32, 0)]),
            ),
            (
                "two",
                nrt("two", "best-effort", "pod", &[(4, 32, 0), (4, 32, 0)]),
            ),
            (
                "none",
                nrt("none", "best-effort", "pod", &[(1, 32, 0), (1, 32, 0)]),
            ),
            (
                "busy",
                nrt("busy", "best-effort", "pod", &[(6, 16, 0), (2, 32, 0)]),
            ),
        ]);
        let p = gpod("p", &[g("6", "1Gi")], &[]);
        let pl = NodeResourceTopologyMatch::default();
        let st = CycleState::new();
        let sc = |n: &str| pl.score(&st, &p, s.node(n).unwrap(), &s).unwrap();
        assert!(sc("one") >= 50 && sc("one") <= 100, "{}", sc("one"));
        assert!(sc("two") >= 25 && sc("two") <= 50, "{}", sc("two"));
        assert_eq!(sc("none"), 0);
        assert!(
            sc("one") > sc("busy"),
            "least allocated: {} vs {}",
            sc("one"),
            sc("busy")
        );
        let most = NodeResourceTopologyMatch {
            strategy: Strategy::MostAllocated,
            ..Default::default()
        };
        let scm = |n: &str| most.score(&st, &p, s.node(n).unwrap(), &s).unwrap();
        assert!(
            scm("busy") > scm("one"),
            "most allocated: {} vs {}",
            scm("busy"),
            scm("one")
        );
        // Non-aligned pods: PreScore skips.
        let mut cs = CycleState::new();
        assert!(
            pl.pre_score(&mut cs, &pod("b").cpu("1").info(), &s, &[])
                .is_skip()
        );
        assert!(pl.pre_score(&mut cs, &p, &s, &[]).is_success());
        assert!(pl.pre_score(&mut cs, &p, &Snapshot::new(), &[]).is_skip());
    }

    #[test]
    fn same_batch_pods_are_accounted_until_a_new_nrt() {
        // One zone has 10 free cpus, the other 2. Two pods of 8 cpus each: the first
        // fits zone 0; after it is assumed, the second must not.
        let v = nrt(
            "n",
            "single-numa-node",
            "container",
            &[(10, 32, 0), (2, 32, 0)],
        );
        let mut s = snap(&[("n", v.clone())]);
        let a = gpod("a", &[g("8", "1Gi")], &[]);
        let b = gpod("b", &[g("8", "1Gi")], &[]);
        assert!(filter(&s, &a, "n").is_success());
        s.add_pod(Arc::new(a), "n");
        assert!(!filter(&s, &b, "n").is_success());
        // A bind failure forgets the assumption.
        s.remove_pod("default/a");
        assert!(filter(&s, &b, "n").is_success());
        // A node update keeps the assumed pods.
        let a = gpod("a", &[g("8", "1Gi")], &[]);
        s.add_pod(Arc::new(a), "n");
        s.upsert_node(node("n").cpu("64").mem("256Gi").info());
        assert!(!filter(&s, &b, "n").is_success());
        // A newer NRT (which reports the pod) replaces the accounting.
        let (_, t) = parse_nrt(&nrt(
            "n",
            "single-numa-node",
            "container",
            &[(10, 32, 0), (2, 32, 0)],
        ))
        .unwrap();
        s.set_topology("n", Some(Arc::new(t)));
        assert!(filter(&s, &b, "n").is_success());
        s.set_topology("n", None);
        assert!(s.node("n").unwrap().numa.is_none());
        assert!(!s.has_topology());
    }

    #[test]
    fn args_and_default_profile() {
        assert!(factory(None).is_ok());
        let p = factory(Some(&json!({"scoringStrategy": {"type": "MostAllocated",
            "resources": [{"name": "cpu", "weight": 2}]}, "cacheResyncPeriodSeconds": 5})));
        assert!(p.is_ok());
        let e = factory(Some(&json!({"scoringStrategy": {"type": "Random"}})))
            .err()
            .unwrap();
        assert!(e.contains("scoringStrategy.type"), "{e}");
        let e = factory(Some(
            &json!({"scoringStrategy": {"resources": [{"name": "cpu", "weight": 0}]}}),
        ))
        .err()
        .unwrap();
        assert!(e.contains("scoringStrategy.resources[0].weight"), "{e}");
        assert!(factory(Some(&json!({"bogus": 1}))).is_err());
    }
}
