//! TaintToleration (kube-scheduler semantics).
//!
//! - Filter: a node with a NoSchedule/NoExecute taint the pod does not tolerate is
//!   rejected (UnschedulableAndUnresolvable) naming the first such taint.
//! - PreScore: collects the pod's tolerations whose effect is PreferNoSchedule or empty.
//! - Score: number of PreferNoSchedule taints on the node those tolerations don't
//!   tolerate; NormalizeScore is the default normalization, reversed (fewer intolerable
//!   taints = higher score).
//!
//! Cordoned nodes (`spec.unschedulable`) are handled by NodeUnschedulable.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Toleration;

use crate::framework::{
    CycleState, FilterPlugin, NodeScore, NormalizeScorePlugin, Plugin, PreScorePlugin, ScorePlugin,
    Status,
};
use crate::helpers::{
    find_untolerated_taint, is_do_not_schedule_taint, normalize_to_max, tolerates_taint,
};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "TaintToleration";
const PRE_SCORE_KEY: &str = "PreScoreTaintToleration";
const PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";

#[derive(Debug, Default)]
pub struct TaintToleration;

/// PreScore state: the pod's tolerations that can tolerate PreferNoSchedule taints.
#[derive(Debug, Clone)]
struct PreScoreState {
    tolerations: Arc<[Toleration]>,
}

fn prefer_no_schedule_toleration(t: &Toleration) -> bool {
    matches!(
        t.effect.as_deref(),
        None | Some("") | Some(PREFER_NO_SCHEDULE)
    )
}

/// Number of PreferNoSchedule taints on `node` that `tolerations` don't tolerate.
fn count_intolerable(node: &NodeInfo, tolerations: &[Toleration]) -> i64 {
    node.taints
        .iter()
        .filter(|t| t.effect == PREFER_NO_SCHEDULE && !tolerates_taint(tolerations, t))
        .count() as i64
}

crate::impl_plugin!(TaintToleration, NAME, filter, pre_score, score);

impl FilterPlugin for TaintToleration {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Status {
        match find_untolerated_taint(&node.taints, &pod.tolerations, is_do_not_schedule_taint) {
            None => Status::success(),
            Some(t) => Status::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            )),
        }
    }
}

impl PreScorePlugin for TaintToleration {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
        nodes: &[&NodeInfo],
    ) -> Status {
        if nodes.is_empty() {
            return Status::success();
        }
        let tolerations: Arc<[Toleration]> = pod
            .tolerations
            .iter()
            .filter(|t| prefer_no_schedule_toleration(t))
            .cloned()
            .collect();
        state.write(PRE_SCORE_KEY, PreScoreState { tolerations });
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    /// Raw score depends only on the pod's tolerations/preferred terms and the node's
    /// own taints/labels (normalization happens separately).
    fn node_local(&self) -> bool {
        true
    }

    fn score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot,
    ) -> Result<i64, Status> {
        match state.read::<PreScoreState>(PRE_SCORE_KEY) {
            Some(s) => Ok(count_intolerable(node, &s.tolerations)),
            // PreScore disabled: the PreferNoSchedule filter on tolerations is
            // redundant for counting (a NoSchedule-only toleration never tolerates a
            // PreferNoSchedule taint), so use the pod's tolerations directly.
            None => Ok(count_intolerable(node, &pod.tolerations)),
        }
    }

    fn normalize(&self) -> Option<&dyn NormalizeScorePlugin> {
        Some(self)
    }
}

impl NormalizeScorePlugin for TaintToleration {
    fn normalize_score(&self, _: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) -> Status {
        normalize_to_max(true, scores);
        Status::success()
    }

    /// `DefaultNormalizeScore`.
    fn by_max_only(&self) -> bool {
        true
    }
}

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    match args {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(m)) if m.is_empty() => {}
        Some(_) => return Err("TaintToleration takes no args".into()),
    }
    Ok(Arc::new(TaintToleration))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testutil::{node, pod};
    use serde_json::json;

    fn filter(p: &PodInfo, n: &NodeInfo) -> Status {
        TaintToleration.filter(&CycleState::new(), p, n, &Snapshot::new())
    }

    #[test]
    fn filter_rejects_first_untolerated_hard_taint() {
        let n = node("n1")
            .taint("soft", "x", "PreferNoSchedule")
            .taint("gpu", "true", "NoSchedule")
            .taint("evict", "", "NoExecute")
            .info();
        let p = pod("p").info();
        let s = filter(&p, &n);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(s.reasons, vec!["node(s) had untolerated taint {gpu: true}"]);

        let p = pod("p")
            .toleration(
                json!({"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}),
            )
            .info();
        let s = filter(&p, &n);
        assert_eq!(s.reasons, vec!["node(s) had untolerated taint {evict: }"]);

        let p = pod("p")
            .toleration(json!({"key": "gpu", "operator": "Exists"}))
            .toleration(json!({"key": "evict", "operator": "Exists", "effect": "NoExecute"}))
            .info();
        assert!(filter(&p, &n).is_success());
        // Wrong value does not tolerate.
        let p = pod("p")
            .toleration(json!({"key": "gpu", "value": "false", "effect": "NoSchedule"}))
            .toleration(json!({"operator": "Exists", "effect": "NoExecute"}))
            .info();
        assert_eq!(
            filter(&p, &n).reasons,
            vec!["node(s) had untolerated taint {gpu: true}"]
        );
    }

    #[test]
    fn prefer_no_schedule_never_filters() {
        let n = node("n1").taint("soft", "x", "PreferNoSchedule").info();
        assert!(filter(&pod("p").info(), &n).is_success());
        assert!(filter(&pod("p").info(), &node("n2").info()).is_success());
    }

    fn scores(p: &PodInfo, nodes: &[NodeInfo]) -> Vec<i64> {
        let mut st = CycleState::new();
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let snap = Snapshot::new();
        assert!(
            TaintToleration
                .pre_score(&mut st, p, &snap, &refs)
                .is_success()
        );
        let mut out: Vec<NodeScore> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeScore {
                node: i,
                score: TaintToleration.score(&st, p, n, &snap).unwrap(),
            })
            .collect();
        TaintToleration
            .normalize()
            .unwrap()
            .normalize_score(&st, p, &mut out);
        out.iter().map(|s| s.score).collect()
    }

    #[test]
    fn score_counts_intolerable_prefer_no_schedule_reversed() {
        let nodes = vec![
            node("n0").info(),
            node("n1").taint("a", "1", "PreferNoSchedule").info(),
            node("n2")
                .taint("a", "1", "PreferNoSchedule")
                .taint("b", "", "PreferNoSchedule")
                .taint("c", "", "NoSchedule")
                .info(),
            node("n3")
                .taint("a", "1", "PreferNoSchedule")
                .taint("b", "", "PreferNoSchedule")
                .taint("d", "", "PreferNoSchedule")
                .info(),
        ];
        let p = pod("p").info();
        // raw counts 0,1,2,3 → 100 - 100*c/3
        assert_eq!(scores(&p, &nodes), vec![100, 67, 34, 0]);
        // Raw counts before normalization.
        let mut st = CycleState::new();
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        TaintToleration.pre_score(&mut st, &p, &Snapshot::new(), &refs);
        assert_eq!(
            TaintToleration
                .score(&st, &p, &nodes[2], &Snapshot::new())
                .unwrap(),
            2
        );

        // Tolerating `a` (empty effect) and `b` (PreferNoSchedule); a NoSchedule
        // toleration for `d` does not count.
        let p = pod("p")
            .toleration(json!({"key": "a", "operator": "Exists"}))
            .toleration(json!({"key": "b", "operator": "Exists", "effect": "PreferNoSchedule"}))
            .toleration(json!({"key": "d", "operator": "Exists", "effect": "NoSchedule"}))
            .info();
        // counts 0,0,0,1
        assert_eq!(scores(&p, &nodes), vec![100, 100, 100, 0]);
    }

    #[test]
    fn all_zero_scores_normalize_to_max() {
        let nodes = vec![
            node("n0").info(),
            node("n1").taint("c", "", "NoSchedule").info(),
        ];
        assert_eq!(scores(&pod("p").info(), &nodes), vec![100, 100]);
    }

    #[test]
    fn factory_rejects_args() {
        assert!(factory(None).is_ok());
        assert!(factory(Some(&json!({}))).is_ok());
        assert!(factory(Some(&json!({"x": 1}))).is_err());
    }
}
