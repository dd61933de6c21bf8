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

use std::borrow::Cow;
use std::hash::Hasher;
use std::sync::{Arc, LazyLock, RwLock};

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::framework::{
    CycleState, FilterPlugin, NodeScore, NormalizeScorePlugin, Plugin, PreScorePlugin, ScorePlugin,
    StateKey, Status,
};
use crate::helpers::{
    find_untolerated_taint, is_do_not_schedule_taint, normalize_to_max, tolerates_taint,
};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};
use corral_core::fxhash::{FxHashMap, FxHasher};

pub const NAME: &str = "TaintToleration";
static PRE_SCORE_KEY: StateKey = StateKey::new("PreScoreTaintToleration");
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

/// Distinct taints whose rejection reason is kept ([`untolerated_reason`]).
const MAX_REASONS: usize = 4096;

/// A kept reason: the taint's key and value, and the reason's text.
type Kept = (Box<str>, Box<str>, &'static str);

/// Reasons of the taints seen so far, by a hash of (key, value).
static REASONS: LazyLock<RwLock<FxHashMap<u64, Vec<Kept>>>> = LazyLock::new(Default::default);

fn taint_hash(key: &str, value: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(key.as_bytes());
    h.write_u8(0xff);
    h.write(value.as_bytes());
    h.finish()
}

fn format_reason(key: &str, value: &str) -> String {
    format!("node(s) had untolerated taint {{{key}: {value}}}")
}

/// kube-scheduler's Filter reason for an untolerated taint, `node(s) had untolerated
/// taint {key: value}`. The text is a function of the taint's key and value, and a
/// cluster has a handful of distinct taints, so each distinct one is formatted once
/// and kept for the life of the process (at most [`MAX_REASONS`] of them, a few
/// hundred kilobytes; beyond that the text is formatted per call): rejecting a node
/// formats and allocates nothing, and the rejections of one taint share one
/// address, which the failure diagnosis compares before the bytes.
fn untolerated_reason(t: &Taint) -> Cow<'static, str> {
    let key = t.key.as_str();
    let value = t.value.as_deref().unwrap_or("");
    let h = taint_hash(key, value);
    let find = |m: &FxHashMap<u64, Vec<Kept>>| {
        m.get(&h)?
            .iter()
            .find(|(k, v, _)| **k == *key && **v == *value)
            .map(|e| e.2)
    };
    if let Some(r) = find(&REASONS.read().unwrap_or_else(|e| e.into_inner())) {
        return Cow::Borrowed(r);
    }
    let mut m = REASONS.write().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = find(&m) {
        return Cow::Borrowed(r);
    }
    if m.values().map(Vec::len).sum::<usize>() >= MAX_REASONS {
        return Cow::Owned(format_reason(key, value));
    }
    let text: &'static str = Box::leak(format_reason(key, value).into_boxed_str());
    m.entry(h)
        .or_default()
        .push((key.into(), value.into(), text));
    Cow::Borrowed(text)
}

crate::impl_plugin!(TaintToleration, NAME, filter, pre_score, score);

impl FilterPlugin for TaintToleration {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Status {
        match find_untolerated_taint(&node.taints, &pod.tolerations, is_do_not_schedule_taint) {
            None => Status::success(),
            Some(t) => Status::unresolvable(untolerated_reason(t)),
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
        state.put(&PRE_SCORE_KEY, PreScoreState { tolerations });
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
        match state.get::<PreScoreState>(&PRE_SCORE_KEY) {
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

    /// A rejection's reason is kube's text, formatted once per distinct taint: the
    /// rejections of one taint on many nodes share one borrowed text (no
    /// allocation per rejected node); other taints get their own.
    #[test]
    fn rejections_of_one_taint_share_one_text() {
        let p = pod("p").info();
        let texts: Vec<Status> = (0..3)
            .map(|i| {
                let n = node(&format!("n{i}"))
                    .taint("pool-test", "ai", "NoSchedule")
                    .info();
                filter(&p, &n)
            })
            .collect();
        for s in &texts {
            assert_eq!(s.reasons, ["node(s) had untolerated taint {pool-test: ai}"]);
            assert!(matches!(s.reasons[0], Cow::Borrowed(_)));
            assert!(std::ptr::eq(
                s.reasons[0].as_ptr(),
                texts[0].reasons[0].as_ptr()
            ));
        }
        let other = filter(&p, &node("m").taint("pool-test", "db", "NoExecute").info());
        assert_eq!(
            other.reasons,
            ["node(s) had untolerated taint {pool-test: db}"]
        );
        let empty = filter(&p, &node("e").taint("pool-test", "", "NoSchedule").info());
        assert_eq!(
            empty.reasons,
            ["node(s) had untolerated taint {pool-test: }"]
        );
        // Key and value are kept apart: the same text from another split is still
        // the same text.
        let a = filter(&p, &node("x").taint("k", "v", "NoSchedule").info());
        let b = untolerated_reason(&Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        });
        assert_eq!(a.reasons[0], b);
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
