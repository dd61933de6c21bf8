//! HAReserve: a reserved share of capacity that pods below a priority may not
//! consume, so that the higher-priority workloads of a failed node can restart
//! (users' "HA reserve": refuse new placements when free capacity falls below a
//! reserved share).
//!
//! Configured by the `corral.haReserve` section of the configuration file (the
//! engine adds this plugin to every profile's PreFilter and Filter; see
//! [`HaReserveConfig`]). A *pool* is a set of nodes (a label selector; none = the
//! whole cluster) with reserved amounts per resource, each a percentage of the
//! pool's allocatable or an absolute quantity. A pod whose priority is below
//! `minPriority` fits a node of a pool only when, after placing it, the pool's free
//! amount (allocatable − requested over its schedulable nodes) of every reserved
//! resource the pod requests stays at or above the reserve. Pods at or above
//! `minPriority` may use the reserve. A node in several pools must satisfy each.
//!
//! PreFilter sums each pool once per pod (class): O(nodes × pools). Its state is
//! updated incrementally (PreFilter extensions) when pods are committed before the
//! pod in a batch or removed in preemption what-ifs, so the Filter is cross-node
//! and re-run at commit: one batch cannot eat into the reserve twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

use crate::framework::{
    CycleState, FilterPlugin, PreFilterExtensions, PreFilterPlugin, PreFilterResult, Status,
};
use crate::labels::Selector;
use crate::quantity::parse_resource;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "HAReserve";
/// Where the configuration lives (prefix of configuration errors).
pub const SECTION: &str = "corral.haReserve";
const STATE_KEY: &str = "HAReserve/state";

/// `corral.haReserve` in the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HaReserveConfig {
    /// Pods with at least this priority may use the reserve; pods below it may not.
    pub min_priority: Option<i32>,
    /// Reserved pools (at least one).
    #[serde(default)]
    pub pools: Vec<serde_json::Value>,
}

/// One pool of `corral.haReserve.pools[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PoolConfig {
    name: String,
    node_selector: Option<LabelSelector>,
    reserve: BTreeMap<String, serde_json::Value>,
}

/// A reserved amount: a share of the pool's allocatable or a fixed amount (in the
/// resource's unit: millicores for cpu).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Percent(f64),
    Absolute(i64),
}

/// A configured pool.
#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    /// `None`: every node.
    pub selector: Option<Selector>,
    /// Reserved resources with their amounts, by name.
    pub reserve: Vec<(String, Amount)>,
}

impl Pool {
    pub fn contains(&self, node: &NodeInfo) -> bool {
        self.selector
            .as_ref()
            .is_none_or(|s| s.matches(&node.labels))
    }
}

/// The plugin.
#[derive(Debug, Clone)]
pub struct HaReserve {
    pub min_priority: i32,
    pub pools: Vec<Pool>,
}

crate::impl_plugin!(HaReserve, NAME, pre_filter, filter);

fn resource_name_ok(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage")
        || crate::resources::is_hugepages(name)
        || crate::resources::is_extended_resource(name)
}

fn parse_amount(res: &str, v: &serde_json::Value, at: &str) -> Result<Amount, String> {
    let s = match v {
        serde_json::Value::String(s) => s.trim().to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        other => {
            return Err(format!(
                "{at}: must be a quantity or a percentage, got {other}"
            ));
        }
    };
    if let Some(p) = s.strip_suffix('%') {
        let f: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("{at}: {s:?} is not a percentage"))?;
        if !(f.is_finite() && (0.0..=100.0).contains(&f)) {
            return Err(format!("{at}: {s:?} must be between 0% and 100%"));
        }
        return Ok(Amount::Percent(f));
    }
    let v = parse_resource(res, &s).map_err(|e| format!("{at}: {s:?}: {e}"))?;
    if v < 0 {
        return Err(format!("{at}: {s:?} must not be negative"));
    }
    Ok(Amount::Absolute(v))
}

impl HaReserve {
    /// Builds the plugin from the `corral.haReserve` section; errors name the field
    /// (`corral.haReserve.pools[1].reserve.cpu: ...`).
    pub fn from_config(v: &serde_json::Value) -> Result<HaReserve, String> {
        let cfg: HaReserveConfig =
            serde_json::from_value(v.clone()).map_err(|e| format!("{SECTION}: {e}"))?;
        let min_priority = cfg
            .min_priority
            .ok_or_else(|| format!("{SECTION}.minPriority: must be set (pods with at least this priority may use the reserve)"))?;
        if cfg.pools.is_empty() {
            return Err(format!("{SECTION}.pools: at least one pool must be given"));
        }
        let mut pools: Vec<Pool> = Vec::new();
        for (i, raw) in cfg.pools.iter().enumerate() {
            let at = format!("{SECTION}.pools[{i}]");
            let pc: PoolConfig =
                serde_json::from_value(raw.clone()).map_err(|e| format!("{at}: {e}"))?;
            if pc.name.is_empty() {
                return Err(format!("{at}.name: must not be empty"));
            }
            if let Some(j) = pools.iter().position(|p| p.name == pc.name) {
                return Err(format!(
                    "{at}.name: {:?} duplicates {SECTION}.pools[{j}]",
                    pc.name
                ));
            }
            let selector = match &pc.node_selector {
                None => None,
                Some(ls) => Some(
                    Selector::from_label_selector(Some(ls))
                        .map_err(|e| format!("{at}.nodeSelector: {e}"))?,
                ),
            };
            if pc.reserve.is_empty() {
                return Err(format!(
                    "{at}.reserve: at least one resource must be reserved"
                ));
            }
            let mut reserve = Vec::new();
            for (res, amount) in &pc.reserve {
                let field = format!("{at}.reserve.{res}");
                if !resource_name_ok(res) {
                    return Err(format!(
                        "{field}: {res:?} cannot be reserved (cpu, memory, ephemeral-storage, hugepages-* or an extended resource such as nvidia.com/gpu)"
                    ));
                }
                reserve.push((res.clone(), parse_amount(res, amount, &field)?));
            }
            pools.push(Pool {
                name: pc.name,
                selector,
                reserve,
            });
        }
        Ok(HaReserve {
            min_priority,
            pools,
        })
    }

    /// Whether `pod` is held out of the reserve (its priority is below
    /// `minPriority`).
    pub fn restricts(&self, pod: &PodInfo) -> bool {
        pod.priority < self.min_priority
    }
}

/// Per pool, per reserved resource the pod requests: (resource, pool allocatable,
/// free, reserved amount, pod request).
#[derive(Debug, Clone)]
struct PoolState {
    pool: usize,
    res: Vec<ResState>,
}

#[derive(Debug, Clone)]
struct ResState {
    name: String,
    alloc: i64,
    free: i64,
    reserved: i64,
    request: i64,
}

#[derive(Debug, Clone)]
struct State {
    pools: Vec<PoolState>,
}

fn reserved_amount(a: Amount, alloc: i64) -> i64 {
    match a {
        Amount::Absolute(v) => v,
        Amount::Percent(p) => ((alloc as f64) * p / 100.0).ceil() as i64,
    }
}

/// A resource amount for messages: cpu in cores, memory-like in binary units when
/// exact, else the plain number.
pub fn format_amount(res: &str, v: i64) -> String {
    if res == "cpu" {
        return if v % 1000 == 0 {
            format!("{}", v / 1000)
        } else {
            format!("{v}m")
        };
    }
    if matches!(res, "memory" | "ephemeral-storage") || crate::resources::is_hugepages(res) {
        for (unit, size) in [("Gi", 1i64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if v != 0 && v % size == 0 {
                return format!("{}{unit}", v / size);
            }
        }
    }
    v.to_string()
}

impl HaReserve {
    fn update(&self, state: &mut CycleState, other: &PodInfo, node: &NodeInfo, add: bool) {
        let Some(st) = state.read_mut::<State>(STATE_KEY) else {
            return;
        };
        if node.unschedulable {
            return;
        }
        for ps in &mut st.pools {
            if !self.pools[ps.pool].contains(node) {
                continue;
            }
            for r in &mut ps.res {
                let q = other.requests.requests.get(&r.name);
                if add {
                    r.free -= q;
                } else {
                    r.free += q;
                }
            }
        }
    }
}

impl PreFilterPlugin for HaReserve {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        if !self.restricts(pod) {
            return (None, Status::skip());
        }
        let req = &pod.requests.requests;
        let mut pools = Vec::new();
        for (pi, pool) in self.pools.iter().enumerate() {
            let asked: Vec<(&String, Amount, i64)> = pool
                .reserve
                .iter()
                .filter_map(|(r, a)| {
                    let q = req.get(r);
                    (q > 0).then_some((r, *a, q))
                })
                .collect();
            if asked.is_empty() {
                continue;
            }
            let mut alloc = vec![0i64; asked.len()];
            let mut used = vec![0i64; asked.len()];
            for n in snap.nodes() {
                if n.unschedulable || !pool.contains(n) {
                    continue;
                }
                for (k, (r, _, _)) in asked.iter().enumerate() {
                    alloc[k] = alloc[k].saturating_add(n.allocatable.get(r));
                    used[k] = used[k].saturating_add(n.requested.get(r));
                }
            }
            pools.push(PoolState {
                pool: pi,
                res: asked
                    .iter()
                    .enumerate()
                    .map(|(k, (r, a, q))| ResState {
                        name: (*r).clone(),
                        alloc: alloc[k],
                        free: alloc[k].saturating_sub(used[k]),
                        reserved: reserved_amount(*a, alloc[k]),
                        request: *q,
                    })
                    .collect(),
            });
        }
        if pools.is_empty() {
            return (None, Status::skip());
        }
        state.write(STATE_KEY, State { pools });
        (None, Status::success())
    }

    fn extensions(&self) -> Option<&dyn PreFilterExtensions> {
        Some(self)
    }

    /// Skips by the pod alone (see `PreFilterPlugin::skip_depends_on_pods`).
    fn skip_depends_on_pods(&self) -> bool {
        false
    }
}

impl PreFilterExtensions for HaReserve {
    fn add_pod(
        &self,
        state: &mut CycleState,
        _pod: &PodInfo,
        added: &PodInfo,
        node: &NodeInfo,
        _snap: &Snapshot,
    ) -> Status {
        self.update(state, added, node, true);
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        _pod: &PodInfo,
        removed: &PodInfo,
        node: &NodeInfo,
        _snap: &Snapshot,
    ) -> Status {
        self.update(state, removed, node, false);
        Status::success()
    }
}

impl FilterPlugin for HaReserve {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Status {
        let Some(st) = state.read::<State>(STATE_KEY) else {
            // PreFilter skipped (the pod may use the reserve or asks for nothing
            // reserved).
            return Status::success();
        };
        for ps in &st.pools {
            let pool = &self.pools[ps.pool];
            if !pool.contains(node) {
                continue;
            }
            for r in &ps.res {
                if r.free.saturating_sub(r.request) < r.reserved {
                    // Pool-wide numbers only: the message is the same on every node of
                    // the pool, so FailedScheduling aggregates it.
                    return Status::unschedulable(format!(
                        "HA reserve {:?}: {} free {} of {}, minus this pod's {}, would fall below the {} reserved for priority >= {}",
                        pool.name,
                        r.name,
                        format_amount(&r.name, r.free.max(0)),
                        format_amount(&r.name, r.alloc),
                        format_amount(&r.name, r.request),
                        format_amount(&r.name, r.reserved),
                        self.min_priority
                    ));
                }
            }
        }
        Status::success()
    }
}

/// The plugin as the engine adds it to a profile.
pub fn from_section(v: &serde_json::Value) -> Result<Arc<HaReserve>, String> {
    HaReserve::from_config(v).map(Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testutil::{node, pod};
    use serde_json::json;

    fn plugin(v: serde_json::Value) -> HaReserve {
        HaReserve::from_config(&v).unwrap()
    }

    fn err(v: serde_json::Value) -> String {
        HaReserve::from_config(&v).unwrap_err()
    }

    /// Two 4-cpu GPU nodes (2 cards each) in pool `gpu`, one 8-cpu CPU node.
    fn snap() -> Snapshot {
        let mut s = Snapshot::new();
        s.add_nodes([
            node("g1")
                .cpu("4")
                .alloc("nvidia.com/gpu", "2")
                .label("pool", "gpu")
                .info(),
            node("g2")
                .cpu("4")
                .alloc("nvidia.com/gpu", "2")
                .label("pool", "gpu")
                .info(),
            node("c1").cpu("8").label("pool", "cpu").info(),
        ]);
        s
    }

    fn run(p: &HaReserve, s: &Snapshot, pod: &PodInfo, node: &str) -> Status {
        let mut st = CycleState::new();
        let (_, pre) = p.pre_filter(&mut st, pod, s);
        if pre.is_skip() {
            return Status::success();
        }
        let n = s.node(node).unwrap();
        p.filter(&st, pod, n, s)
    }

    #[test]
    fn low_priority_pods_may_not_consume_the_reserve() {
        let p = plugin(json!({
            "minPriority": 1000,
            "pools": [
                {"name": "cluster", "reserve": {"cpu": "25%"}},
                {"name": "gpu", "nodeSelector": {"matchLabels": {"pool": "gpu"}},
                 "reserve": {"nvidia.com/gpu": "1"}}
            ]
        }));
        let mut s = snap();
        // 16 cpu in the cluster, 4 reserved, 7 used: 5 more fit, 6 not.
        s.add_pod(Arc::new(pod("r1").cpu("7").info()), "c1");
        let ok = pod("a").cpu("3").priority(10).info();
        assert!(run(&p, &s, &ok, "g1").is_success());
        let big = pod("b").cpu("6").priority(10).info();
        let st = run(&p, &s, &big, "g1");
        assert_eq!(st.code, Code::Unschedulable);
        assert_eq!(
            st.reasons,
            vec![
                "HA reserve \"cluster\": cpu free 9 of 16, minus this pod's 6, would fall below the 4 reserved for priority >= 1000"
            ]
        );
        // The protected priority may use it.
        let hi = pod("c").cpu("4").priority(1000).info();
        assert!(run(&p, &s, &hi, "g1").is_success());
        // GPU pool: 4 cards, 1 reserved: 3 fit, the 4th not, and only in pool gpu.
        s.add_pod(Arc::new(pod("g").req("nvidia.com/gpu", "2").info()), "g1");
        let one = pod("d").req("nvidia.com/gpu", "1").priority(10).info();
        assert!(run(&p, &s, &one, "g2").is_success());
        let two = pod("e").req("nvidia.com/gpu", "2").priority(10).info();
        let st = run(&p, &s, &two, "g2");
        assert!(
            st.message()
                .contains("HA reserve \"gpu\": nvidia.com/gpu free 2 of 4"),
            "{st}"
        );
        // A pod asking nothing reserved is never held back.
        let none = pod("f").mem("1Gi").priority(10).info();
        assert!(run(&p, &s, &none, "c1").is_success());
    }

    #[test]
    fn commits_and_preemption_what_ifs_update_the_pool() {
        let p = plugin(json!({"minPriority": 1, "pools": [
            {"name": "all", "reserve": {"cpu": "4"}}
        ]}));
        let s = snap();
        let pd = pod("x").cpu("6").info();
        let mut st = CycleState::new();
        let (_, pre) = p.pre_filter(&mut st, &pd, &s);
        assert!(pre.is_success());
        let n = s.node("c1").unwrap();
        assert!(p.filter(&st, &pd, n, &s).is_success());
        // A pod committed before it in the batch takes 8 of the 12 free.
        let other = pod("o").cpu("8").info();
        p.add_pod(&mut st, &pd, &other, n, &s);
        assert!(!p.filter(&st, &pd, n, &s).is_success());
        p.remove_pod(&mut st, &pd, &other, n, &s);
        assert!(p.filter(&st, &pd, n, &s).is_success());
        // Cordoned nodes contribute no free capacity.
        let mut s2 = Snapshot::new();
        s2.add_nodes([
            node("a").cpu("8").info(),
            node("b").cpu("8").unschedulable().info(),
        ]);
        let pd = pod("y").cpu("5").info();
        assert!(!run(&p, &s2, &pd, "a").is_success());
    }

    #[test]
    fn configuration_errors_name_the_field() {
        assert!(err(json!({"pools": []})).contains("corral.haReserve.minPriority"));
        assert!(err(json!({"minPriority": 1})).contains("corral.haReserve.pools"));
        let e =
            err(json!({"minPriority": 1, "pools": [{"name": "a", "reserve": {"cpu": "120%"}}]}));
        assert!(
            e.starts_with("corral.haReserve.pools[0].reserve.cpu:"),
            "{e}"
        );
        let e = err(json!({"minPriority": 1, "pools": [{"name": "a", "reserve": {"pods": "1"}}]}));
        assert!(
            e.starts_with("corral.haReserve.pools[0].reserve.pods:"),
            "{e}"
        );
        let e =
            err(json!({"minPriority": 1, "pools": [{"name": "a", "reserve": {"memory": "lots"}}]}));
        assert!(
            e.starts_with("corral.haReserve.pools[0].reserve.memory:"),
            "{e}"
        );
        let e = err(json!({"minPriority": 1, "pools": [{"name": "a", "reserve": {}}]}));
        assert!(e.starts_with("corral.haReserve.pools[0].reserve:"), "{e}");
        let e = err(json!({"minPriority": 1, "pools": [
            {"name": "a", "reserve": {"cpu": "1"}}, {"name": "a", "reserve": {"cpu": "1"}}]}));
        assert!(e.starts_with("corral.haReserve.pools[1].name:"), "{e}");
        let e = err(
            json!({"minPriority": 1, "pools": [{"name": "a", "reserve": {"cpu": "1"}, "selector": {}}]}),
        );
        assert!(
            e.starts_with("corral.haReserve.pools[0]:") && e.contains("selector"),
            "{e}"
        );
        let e = err(
            json!({"minPriority": 1, "pools": [{"name": "a", "reserve": {"cpu": "1"},
            "nodeSelector": {"matchExpressions": [{"key": "k", "operator": "Bogus"}]}}]}),
        );
        assert!(
            e.starts_with("corral.haReserve.pools[0].nodeSelector:"),
            "{e}"
        );
        let e = err(json!({"minPriority": 1, "pool": []}));
        assert!(
            e.starts_with("corral.haReserve:") && e.contains("pool"),
            "{e}"
        );
        let p = plugin(json!({"minPriority": 5, "pools": [{"name": "a", "reserve":
            {"cpu": 2, "memory": "10%", "nvidia.com/gpu": "1"}}]}));
        assert_eq!(p.pools[0].reserve.len(), 3);
        assert_eq!(format_amount("memory", 3 << 30), "3Gi");
        assert_eq!(format_amount("cpu", 2500), "2500m");
    }
}
