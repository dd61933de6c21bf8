//! NodeHealth: health-weighted placement (Filter + Score).
//!
//! Reads the per-cycle [`HealthView`](crate::health::HealthView) attached to the
//! snapshot (`Snapshot::health`), never mutable tracker state, so every pod of a
//! cycle sees the same health (snapshot immutability). Nodes absent from the view
//! have no health evidence and count as healthy (score 100, feasible).
//!
//! - Filter: a node with a critical signal (a rule with `criticalSignal: true` in
//!   its critical state, e.g. `gpu_missing`, `heartbeat_age`) is infeasible with
//!   `node(s) unhealthy: <signal>` (UnschedulableAndUnresolvable: preemption does
//!   not fix a sick node). Off when `filterCritical: false`.
//! - Score: the node's slew-limited health weight (0–100) as an **additive score
//!   with its own profile weight**, not a multiplier on the other plugins' total.
//!   Why: the framework's contract is a weighted sum of independently normalized
//!   plugin scores; an additive score keeps that contract (explain output shows
//!   it as one more column, the batch committer can re-score it as a node-local
//!   score, and a multiplier would need a framework change and would also scale
//!   away affinity/spread preferences that express hard-won user intent). The
//!   profile weight sets how strongly health competes with those preferences: at
//!   weight `w` a drop of `d` health points costs `w·d` total points, so with the
//!   default plugins (max total ≈ 1,200) weight 5 lets a node at 50 % health lose
//!   to equal nodes until it is ~250 points emptier.
//!
//! Args (`pluginConfig`, `NodeHealthArgs`) are the health model's
//! [`HealthConfig`]: EWMA half-life, hysteresis, slew limits, rules per signal,
//! `filterCritical`. The plugin is not in the default profile; enable it with
//! `multiPoint: {enabled: [{name: NodeHealth, weight: 5}]}` (see
//! examples/health/config.yaml).

use std::sync::Arc;

use crate::framework::{CycleState, FilterPlugin, Plugin, ScorePlugin, Status};
use crate::health::HealthConfig;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "NodeHealth";
/// Reason prefix of the Filter.
pub const ERR_REASON_PREFIX: &str = "node(s) unhealthy: ";

#[derive(Debug, Default)]
pub struct NodeHealth {
    pub args: HealthConfig,
}

crate::impl_plugin!(NodeHealth, NAME, filter, score);

impl FilterPlugin for NodeHealth {
    #[inline]
    fn filter(&self, _: &CycleState, _: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> Status {
        if let Some(view) = snap.health()
            && view.any_critical()
            && view.score_of(&node.name).1
            && let Some(sig) = view.get(&node.name).and_then(|h| h.critical.as_ref())
        {
            return Status::unresolvable(format!("{ERR_REASON_PREFIX}{sig}"));
        }
        Status::success()
    }
}

impl ScorePlugin for NodeHealth {
    #[inline]
    fn score(
        &self,
        _: &CycleState,
        _: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Result<i64, Status> {
        Ok(snap.health().map_or(100, |v| v.score_of(&node.name).0))
    }

    fn node_local(&self) -> bool {
        true
    }
}

/// Builds the plugin from `NodeHealthArgs` (validated like the tracker does).
pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let mut v = args.cloned();
    // Accept apiVersion/kind in args like the other plugins.
    if let Some(serde_json::Value::Object(m)) = v.as_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    let args: HealthConfig = match &v {
        None | Some(serde_json::Value::Null) => HealthConfig::default(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| e.to_string())?,
    };
    args.resolve()?;
    Ok(Arc::new(NodeHealth { args }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::health::{HealthTracker, HealthView};
    use crate::testutil::{node, pod};

    fn snap_with(view: HealthView) -> Snapshot {
        let mut s = Snapshot::new();
        s.set_health(Some(Arc::new(view)));
        s
    }

    #[test]
    fn filter_rejects_critical_nodes_with_reason() {
        let mut t = HealthTracker::new(HealthConfig::default()).unwrap();
        t.observe(0.0, "sick", "gpu_missing", 1.0);
        t.observe(0.0, "ok", "cpu", 10.0);
        t.advance(0.0);
        let snap = snap_with(t.view());
        let p = pod("p").info();
        let pl = NodeHealth::default();
        let st = pl.filter(&CycleState::new(), &p, &node("sick").info(), &snap);
        assert_eq!(st.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(st.reasons, vec!["node(s) unhealthy: gpu_missing"]);
        assert!(
            pl.filter(&CycleState::new(), &p, &node("ok").info(), &snap)
                .is_success()
        );
        assert!(
            pl.filter(&CycleState::new(), &p, &node("unknown").info(), &snap)
                .is_success()
        );
        assert!(
            pl.filter(
                &CycleState::new(),
                &p,
                &node("sick").info(),
                &Snapshot::new()
            )
            .is_success()
        );
    }

    #[test]
    fn score_is_the_health_weight() {
        let mut t = HealthTracker::new(HealthConfig::default()).unwrap();
        t.observe(0.0, "hot", "cpu", 90.0);
        t.observe(0.0, "cool", "cpu", 10.0);
        t.advance(0.0);
        let snap = snap_with(t.view());
        let p = pod("p").info();
        let pl = NodeHealth::default();
        let s = |n: &str| {
            pl.score(&CycleState::new(), &p, &node(n).info(), &snap)
                .unwrap()
        };
        assert_eq!(s("cool"), 100);
        assert_eq!(s("nobody"), 100);
        assert!(s("hot") < 50, "{}", s("hot"));
    }

    #[test]
    fn bound_index_agrees_with_name_lookup() {
        let mut t = HealthTracker::new(HealthConfig::default()).unwrap();
        t.observe(0.0, "a", "cpu", 90.0);
        t.observe(0.0, "b", "gpu_missing", 1.0);
        t.advance(0.0);
        let mut bound = Snapshot::new();
        for n in ["a", "b", "c"] {
            bound.upsert_node(node(n).cpu("4").info());
        }
        let mut plain = bound.clone();
        crate::health::attach(&mut bound, t.view());
        plain.set_health(Some(Arc::new(t.view())));
        let p = pod("p").info();
        let pl = NodeHealth::default();
        for ni in bound.nodes() {
            let st = CycleState::new();
            assert_eq!(
                pl.score(&st, &p, ni, &bound).unwrap(),
                pl.score(&st, &p, ni, &plain).unwrap()
            );
            assert_eq!(
                pl.filter(&st, &p, ni, &bound),
                pl.filter(&st, &p, ni, &plain)
            );
        }
        let b = bound.node("b").unwrap();
        assert!(!pl.filter(&CycleState::new(), &p, b, &bound).is_success());
    }
}
