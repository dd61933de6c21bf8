//! NodeAffinity (kube-scheduler semantics).
//!
//! - PreFilter: compiles `spec.nodeSelector` and the required node affinity once into
//!   the cycle state; when every required term pins node names through
//!   `matchFields metadata.name In`, returns those names as a [`PreFilterResult`].
//!   Skips pods with neither nodeSelector nor required node affinity (unless the
//!   profile has a required `addedAffinity`).
//! - Filter: the node must match the profile's `addedAffinity` (reason
//!   [`ERR_REASON_ENFORCED`]) and the pod's selector/affinity ([`ERR_REASON_POD`]).
//! - PreScore/Score: sum of the weights of matching preferred terms (the pod's and
//!   `addedAffinity`'s); NormalizeScore is the default normalization.
//!
//! Semantics: terms are ORed, expressions within a term ANDed, an empty term matches
//! nothing; operators In, NotIn, Exists, DoesNotExist, Gt, Lt.
//!
//! Deviation: kube-scheduler silently treats an unparsable required term as "matches
//! nothing" (such pods are rejected by API validation anyway). Corral rejects the pod in
//! PreFilter with UnschedulableAndUnresolvable and a message naming the bad field, so the
//! cause is visible instead of a misleading "didn't match" on every node.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{NodeAffinity as K8sNodeAffinity, PreferredSchedulingTerm};
use serde::Deserialize;

use crate::framework::{
    CycleState, FilterPlugin, NodeScore, NormalizeScorePlugin, Plugin, PreFilterPlugin,
    PreFilterResult, PreScorePlugin, ScorePlugin, StateKey, Status,
};
use crate::helpers::normalize_to_max;
use crate::labels::{NodeSelectorMatcher, NodeTerm, Selector};
use crate::node_affinity_index::IndexedRequired;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "NodeAffinity";
/// kube-scheduler's reason when the pod's own selector/affinity doesn't match.
pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";
/// kube-scheduler's reason when the profile's `addedAffinity` doesn't match.
pub const ERR_REASON_ENFORCED: &str = "node(s) didn't match scheduler-enforced node affinity";
/// kube-scheduler's reason when required terms pin disjoint node names.
pub const ERR_REASON_CONFLICT: &str = "pod affinity terms conflict";

static PRE_FILTER_KEY: StateKey = StateKey::new("PreFilterNodeAffinity");
static PRE_SCORE_KEY: StateKey = StateKey::new("PreScoreNodeAffinity");
const REQUIRED_FIELD: &str =
    "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution";
const PREFERRED_FIELD: &str =
    "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution";

/// `nodeaffinity.RequiredNodeAffinity`: `spec.nodeSelector` AND the required node
/// affinity of a pod.
#[derive(Debug, Clone, Default)]
pub struct RequiredNodeAffinity {
    /// From a non-empty `spec.nodeSelector`.
    selector: Option<Selector>,
    /// From `requiredDuringSchedulingIgnoredDuringExecution`.
    affinity: Option<NodeSelectorMatcher>,
}

impl RequiredNodeAffinity {
    /// Compiles the pod's nodeSelector and required node affinity; errors name the
    /// offending field.
    pub fn from_pod(pod: &PodInfo) -> Result<Self, String> {
        let Some(spec) = pod.spec() else {
            return Ok(Self::default());
        };
        let selector = spec
            .node_selector
            .as_ref()
            .filter(|m| !m.is_empty())
            .map(Selector::from_map);
        let affinity = required_selector(pod)
            .map(|ns| NodeSelectorMatcher::compile(ns).map_err(|e| format!("{REQUIRED_FIELD}.{e}")))
            .transpose()?;
        Ok(RequiredNodeAffinity { selector, affinity })
    }

    /// This affinity compiled against `snap`'s topology-domain index (see
    /// [`crate::node_affinity_index`]); `None` when it cannot be indexed.
    pub fn indexed(&self, snap: &Snapshot) -> Option<IndexedRequired> {
        IndexedRequired::build(
            self.selector.as_ref(),
            self.affinity.as_ref().map(|a| a.terms.as_slice()),
            snap,
        )
    }

    /// True when nothing is required (every node matches).
    pub fn is_empty(&self) -> bool {
        self.selector.is_none() && self.affinity.is_none()
    }

    /// `RequiredNodeAffinity.Match`.
    #[inline]
    pub fn matches(&self, node: &NodeInfo) -> bool {
        if let Some(s) = &self.selector
            && !s.matches(&node.labels)
        {
            return false;
        }
        match &self.affinity {
            Some(a) => a.matches(&node.name, &node.labels),
            None => true,
        }
    }
}

fn required_selector(pod: &PodInfo) -> Option<&k8s_openapi::api::core::v1::NodeSelector> {
    pod.spec()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()
}

/// Compiled preferred scheduling terms (`nodeaffinity.PreferredSchedulingTerms`).
#[derive(Debug, Clone, Default)]
pub struct PreferredTerms {
    terms: Vec<(i64, NodeTerm)>,
}

impl PreferredTerms {
    /// Compiles terms; terms with weight 0 or no requirements are dropped (they can't
    /// contribute). Errors are prefixed with `field`.
    pub fn compile(terms: &[PreferredSchedulingTerm], field: &str) -> Result<Self, String> {
        let mut out = Vec::with_capacity(terms.len());
        for (i, t) in terms.iter().enumerate() {
            let p = &t.preference;
            let empty = p.match_expressions.as_ref().is_none_or(Vec::is_empty)
                && p.match_fields.as_ref().is_none_or(Vec::is_empty);
            if t.weight == 0 || empty {
                continue;
            }
            let term = NodeTerm::compile(p).map_err(|e| format!("{field}[{i}].preference: {e}"))?;
            out.push((i64::from(t.weight), term));
        }
        Ok(PreferredTerms { terms: out })
    }

    /// Sum of the weights of the terms `node` matches.
    #[inline]
    pub fn score(&self, node: &NodeInfo) -> i64 {
        self.terms
            .iter()
            .filter(|(_, t)| t.matches(&node.name, &node.labels))
            .map(|(w, _)| *w)
            .sum()
    }
}

/// `NodeAffinityArgs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeAffinityArgs {
    /// Node affinity applied to every pod of the profile.
    #[serde(default)]
    pub added_affinity: Option<K8sNodeAffinity>,
}

#[derive(Debug, Default)]
pub struct NodeAffinity {
    /// Required part of `addedAffinity`.
    added_required: Option<NodeSelectorMatcher>,
    /// Preferred part of `addedAffinity` (`Some` when it has terms).
    added_preferred: Option<PreferredTerms>,
}

#[derive(Debug, Clone)]
struct PreFilterState {
    required: Arc<RequiredNodeAffinity>,
    /// `required` compiled against the PreFilter's snapshot (Filter falls back to
    /// `required` for another node set or a node of another snapshot).
    indexed: Option<Arc<IndexedRequired>>,
}

#[derive(Debug, Clone)]
struct PreScoreState {
    preferred: Option<Arc<PreferredTerms>>,
}

fn pod_preferred(pod: &PodInfo) -> Result<Option<PreferredTerms>, String> {
    let terms = pod
        .spec()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        });
    terms
        .map(|t| PreferredTerms::compile(t, PREFERRED_FIELD))
        .transpose()
}

fn invalid(e: String) -> Status {
    Status::unresolvable(format!("invalid node affinity: {e}"))
}

impl NodeAffinity {
    /// Builds the plugin from decoded args; errors name the offending field.
    pub fn new(args: NodeAffinityArgs) -> Result<Self, String> {
        let Some(a) = args.added_affinity else {
            return Ok(NodeAffinity::default());
        };
        let added_required = a
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .map(|ns| {
                NodeSelectorMatcher::compile(ns).map_err(|e| {
                    format!("addedAffinity.requiredDuringSchedulingIgnoredDuringExecution.{e}")
                })
            })
            .transpose()?;
        let preferred = a
            .preferred_during_scheduling_ignored_during_execution
            .unwrap_or_default();
        for (i, t) in preferred.iter().enumerate() {
            if !(1..=100).contains(&t.weight) {
                return Err(format!(
                    "addedAffinity.preferredDuringSchedulingIgnoredDuringExecution[{i}].weight: must be in the range 1-100, got {}",
                    t.weight
                ));
            }
        }
        // Like kube, an empty preferred list leaves no added preferred terms (pods
        // without preferences then skip scoring).
        let added_preferred = if preferred.is_empty() {
            None
        } else {
            Some(PreferredTerms::compile(
                &preferred,
                "addedAffinity.preferredDuringSchedulingIgnoredDuringExecution",
            )?)
        };
        Ok(NodeAffinity {
            added_required,
            added_preferred,
        })
    }

    fn filter_with(&self, req: &RequiredNodeAffinity, node: &NodeInfo) -> Status {
        if let Some(a) = &self.added_required
            && !a.matches(&node.name, &node.labels)
        {
            return Status::unresolvable(ERR_REASON_ENFORCED);
        }
        if req.matches(node) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON_POD)
        }
    }
}

crate::impl_plugin!(NodeAffinity, NAME, pre_filter, filter, pre_score, score);

/// Node names pinned by the required terms (`matchFields metadata.name In`), like
/// kube: names are intersected within a term and unioned across terms; `None` when
/// some term doesn't pin names (all nodes remain eligible).
fn pinned_node_names(pod: &PodInfo) -> Option<BTreeSet<String>> {
    let terms = &required_selector(pod)?.node_selector_terms;
    if terms.is_empty() {
        return None;
    }
    let mut all: BTreeSet<String> = BTreeSet::new();
    for t in terms {
        let mut term_names: Option<BTreeSet<String>> = None;
        for r in t.match_fields.iter().flatten() {
            if r.key == "metadata.name" && r.operator == "In" {
                let s: BTreeSet<String> = r.values.iter().flatten().cloned().collect();
                term_names = Some(match term_names {
                    None => s,
                    Some(prev) => prev.intersection(&s).cloned().collect(),
                });
            }
        }
        all.extend(term_names?);
    }
    Some(all)
}

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        let has_selector = pod.spec().is_some_and(|s| s.node_selector.is_some());
        let has_required = required_selector(pod).is_some();
        if !has_required && !has_selector && self.added_required.is_none() {
            return (None, Status::skip());
        }
        let required = match RequiredNodeAffinity::from_pod(pod) {
            Ok(r) => r,
            Err(e) => return (None, invalid(e)),
        };
        let indexed = required.indexed(snap).map(Arc::new);
        state.put(
            &PRE_FILTER_KEY,
            PreFilterState {
                required: Arc::new(required),
                indexed,
            },
        );
        match pinned_node_names(pod) {
            None => (None, Status::success()),
            Some(names) if names.is_empty() => (None, Status::unresolvable(ERR_REASON_CONFLICT)),
            Some(names) => (
                Some(PreFilterResult {
                    node_names: Some(names),
                }),
                Status::success(),
            ),
        }
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Status {
        match state.get::<PreFilterState>(&PRE_FILTER_KEY) {
            Some(s) => match (&s.indexed, snap.position(node)) {
                (Some(ix), Some(pos)) if ix.valid_for(snap) => {
                    if let Some(a) = &self.added_required
                        && !a.matches(&node.name, &node.labels)
                    {
                        return Status::unresolvable(ERR_REASON_ENFORCED);
                    }
                    if ix.matches_at(snap, pos) {
                        Status::success()
                    } else {
                        Status::unresolvable(ERR_REASON_POD)
                    }
                }
                _ => self.filter_with(&s.required, node),
            },
            // PreFilter disabled: compile on the fly.
            None => match RequiredNodeAffinity::from_pod(pod) {
                Ok(r) => self.filter_with(&r, node),
                Err(e) => invalid(e),
            },
        }
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
        _: &[&NodeInfo],
    ) -> Status {
        let preferred = match pod_preferred(pod) {
            Ok(p) => p,
            Err(e) => return Status::error(format!("invalid node affinity: {e}")),
        };
        if preferred.is_none() && self.added_preferred.is_none() {
            return Status::skip();
        }
        state.put(
            &PRE_SCORE_KEY,
            PreScoreState {
                preferred: preferred.map(Arc::new),
            },
        );
        Status::success()
    }
}

impl ScorePlugin for NodeAffinity {
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
        let mut count = self.added_preferred.as_ref().map_or(0, |p| p.score(node));
        match state.get::<PreScoreState>(&PRE_SCORE_KEY) {
            Some(s) => {
                if let Some(p) = &s.preferred {
                    count += p.score(node);
                }
            }
            None => {
                let p = pod_preferred(pod)
                    .map_err(|e| Status::error(format!("invalid node affinity: {e}")))?;
                if let Some(p) = p {
                    count += p.score(node);
                }
            }
        }
        Ok(count)
    }

    fn normalize(&self) -> Option<&dyn NormalizeScorePlugin> {
        Some(self)
    }
}

impl NormalizeScorePlugin for NodeAffinity {
    fn normalize_score(&self, _: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) -> Status {
        normalize_to_max(false, scores);
        Status::success()
    }

    /// `DefaultNormalizeScore`.
    fn by_max_only(&self) -> bool {
        true
    }
}

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let args: NodeAffinityArgs = super::decode_args(args)?;
    Ok(Arc::new(NodeAffinity::new(args)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testutil::{node, pod};
    use serde_json::{Value, json};

    fn required(terms: Value) -> Value {
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}})
    }

    fn plugin(args: Value) -> NodeAffinity {
        NodeAffinity::new(serde_json::from_value(args).unwrap()).unwrap()
    }

    /// Runs PreFilter + Filter; returns (prefilter result, prefilter status, per-node
    /// filter statuses).
    fn run(
        pl: &NodeAffinity,
        p: &PodInfo,
        nodes: &[NodeInfo],
    ) -> (Option<PreFilterResult>, Status, Vec<Status>) {
        let mut st = CycleState::new();
        let snap = Snapshot::new();
        let (r, s) = pl.pre_filter(&mut st, p, &snap);
        let f = if s.is_success() {
            nodes.iter().map(|n| pl.filter(&st, p, n, &snap)).collect()
        } else {
            vec![]
        };
        (r, s, f)
    }

    fn ok(statuses: &[Status]) -> Vec<bool> {
        statuses.iter().map(Status::is_success).collect()
    }

    #[test]
    fn skip_without_selector_or_affinity() {
        let pl = NodeAffinity::default();
        let (_, s, _) = run(&pl, &pod("p").info(), &[]);
        assert!(s.is_skip());
        // Only preferred affinity: still Skip for filtering.
        let p = pod("p")
            .affinity(json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}]}}))
            .info();
        assert!(run(&pl, &p, &[]).1.is_skip());
        // addedAffinity required: never Skip.
        let pl = plugin(json!({"addedAffinity": required(json!([
            {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["x"]}]}]))["nodeAffinity"]}));
        assert!(run(&pl, &pod("p").info(), &[]).1.is_success());
    }

    #[test]
    fn node_selector_and_required_terms() {
        let nodes = vec![
            node("n0").label("disk", "ssd").label("cores", "16").info(),
            node("n1").label("disk", "ssd").label("cores", "4").info(),
            node("n2").label("disk", "hdd").label("gpu", "a100").info(),
            node("n3").info(),
        ];
        let pl = NodeAffinity::default();
        let p = pod("p").node_selector("disk", "ssd").info();
        let (r, s, f) = run(&pl, &p, &nodes);
        assert!(r.is_none() && s.is_success());
        assert_eq!(ok(&f), [true, true, false, false]);
        assert_eq!(f[2].code, Code::UnschedulableAndUnresolvable);
        assert_eq!(f[2].reasons, vec![ERR_REASON_POD]);

        // Terms ORed, expressions ANDed; Gt and DoesNotExist; AND with nodeSelector.
        let p = pod("p")
            .affinity(required(json!([
                {"matchExpressions": [
                    {"key": "cores", "operator": "Gt", "values": ["8"]},
                    {"key": "gpu", "operator": "DoesNotExist"}]},
                {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}
            ])))
            .info();
        assert_eq!(ok(&run(&pl, &p, &nodes).2), [true, false, true, false]);
        let p2 = pod("p")
            .node_selector("disk", "ssd")
            .affinity(required(json!([
                {"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["8"]}]}])))
            .info();
        assert_eq!(ok(&run(&pl, &p2, &nodes).2), [false, true, false, false]);

        // NotIn matches nodes without the label.
        let p = pod("p")
            .affinity(required(json!([
                {"matchExpressions": [{"key": "disk", "operator": "NotIn", "values": ["ssd"]}]}])))
            .info();
        assert_eq!(ok(&run(&pl, &p, &nodes).2), [false, false, true, true]);

        // Empty term matches nothing; empty term list matches nothing.
        let p = pod("p").affinity(required(json!([{}]))).info();
        assert_eq!(ok(&run(&pl, &p, &nodes).2), [false; 4]);
        let p = pod("p").affinity(required(json!([]))).info();
        assert_eq!(ok(&run(&pl, &p, &nodes).2), [false; 4]);
    }

    #[test]
    fn match_fields_pin_node_names() {
        let nodes = vec![node("n0").info(), node("n1").info(), node("n2").info()];
        let pl = NodeAffinity::default();
        let name_term = |n: &str| json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [n]}]});
        let p = pod("p")
            .affinity(required(json!([name_term("n0"), name_term("n2")])))
            .info();
        let (r, s, f) = run(&pl, &p, &nodes);
        assert!(s.is_success());
        assert_eq!(
            r.unwrap().node_names.unwrap(),
            BTreeSet::from(["n0".to_string(), "n2".to_string()])
        );
        assert_eq!(ok(&f), [true, false, true]);

        // A term without names makes every node eligible.
        let p = pod("p")
            .affinity(required(json!([name_term("n0"),
                {"matchExpressions": [{"key": "x", "operator": "Exists"}]}])))
            .info();
        assert!(run(&pl, &p, &nodes).0.is_none());

        // Conflicting names within a term.
        let p = pod("p")
            .affinity(required(json!([{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": ["n0"]},
                {"key": "metadata.name", "operator": "In", "values": ["n1"]}]}])))
            .info();
        let (_, s, _) = run(&pl, &p, &nodes);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(s.reasons, vec![ERR_REASON_CONFLICT]);

        // NotIn on names filters but doesn't pin.
        let p = pod("p")
            .affinity(required(json!([{"matchFields": [
                {"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}])))
            .info();
        let (r, _, f) = run(&pl, &p, &nodes);
        assert!(r.is_none());
        assert_eq!(ok(&f), [true, false, true]);
    }

    #[test]
    fn invalid_selectors_are_clear_statuses() {
        let pl = NodeAffinity::default();
        let nodes = vec![node("n0").label("cores", "4").info()];
        for (terms, needle) in [
            (
                json!([{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["many"]}]}]),
                "integer",
            ),
            (
                json!([{"matchExpressions": [{"key": "cores", "operator": "Near", "values": ["1"]}]}]),
                "unknown operator",
            ),
            (
                json!([{"matchExpressions": [{"key": "cores", "operator": "In"}]}]),
                "at least one value",
            ),
        ] {
            let p = pod("p").affinity(required(terms)).info();
            let (_, s, _) = run(&pl, &p, &nodes);
            assert_eq!(s.code, Code::UnschedulableAndUnresolvable, "{s}");
            assert!(s.message().contains(needle), "{s}");
            assert!(s.message().contains("nodeSelectorTerms[0]"), "{s}");
            // Filter without PreFilter state gives the same clear status.
            let f = pl.filter(&CycleState::new(), &p, &nodes[0], &Snapshot::new());
            assert_eq!(f.code, Code::UnschedulableAndUnresolvable);
        }
        // Invalid preferred term: PreScore error naming the field.
        let p = pod("p")
            .affinity(json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 3, "preference": {"matchExpressions": [{"key": "a", "operator": "Lt", "values": ["x"]}]}}]}}))
            .info();
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let s = pl.pre_score(&mut CycleState::new(), &p, &Snapshot::new(), &refs);
        assert_eq!(s.code, Code::Error);
        assert!(
            s.message()
                .contains("preferredDuringSchedulingIgnoredDuringExecution[0]")
        );
    }

    fn scores(pl: &NodeAffinity, p: &PodInfo, nodes: &[NodeInfo]) -> (Status, Vec<i64>, Vec<i64>) {
        let mut st = CycleState::new();
        let snap = Snapshot::new();
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let s = pl.pre_score(&mut st, p, &snap, &refs);
        if !s.is_success() {
            return (s, vec![], vec![]);
        }
        let mut out: Vec<NodeScore> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeScore {
                node: i,
                score: pl.score(&st, p, n, &snap).unwrap(),
            })
            .collect();
        let raw = out.iter().map(|s| s.score).collect();
        pl.normalize().unwrap().normalize_score(&st, p, &mut out);
        (s, raw, out.iter().map(|s| s.score).collect())
    }

    #[test]
    fn preferred_terms_score_and_normalize() {
        let nodes = vec![
            node("n0").label("zone", "a").label("disk", "ssd").info(),
            node("n1").label("zone", "a").info(),
            node("n2").label("zone", "b").info(),
        ];
        let pl = NodeAffinity::default();
        assert!(scores(&pl, &pod("p").info(), &nodes).0.is_skip());
        let p = pod("p")
            .affinity(json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 3, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
                {"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}},
                {"weight": 0, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}},
                {"weight": 7, "preference": {}}
            ]}}))
            .info();
        let (s, raw, norm) = scores(&pl, &p, &nodes);
        assert!(s.is_success());
        assert_eq!(raw, [8, 3, 0]);
        assert_eq!(norm, [100, 37, 0]);

        // addedAffinity preferred terms add to the pod's.
        let pl = plugin(
            json!({"addedAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 2, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}}]}}),
        );
        let (_, raw, _) = scores(&pl, &p, &nodes);
        assert_eq!(raw, [8, 3, 2]);
        // With addedAffinity, a pod without preferences is scored (not skipped).
        let (s, raw, norm) = scores(&pl, &pod("q").info(), &nodes);
        assert!(s.is_success());
        assert_eq!(raw, [0, 0, 2]);
        assert_eq!(norm, [0, 0, 100]);
        // addedAffinity with only required terms: pods without preferences skip.
        let pl = plugin(
            json!({"addedAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]}}}),
        );
        assert!(scores(&pl, &pod("q").info(), &nodes).0.is_skip());
    }

    #[test]
    fn added_affinity_is_anded_with_its_own_reason() {
        let pl = plugin(
            json!({"addedAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["batch"]}]}]}}}),
        );
        let nodes = vec![
            node("n0")
                .label("pool", "batch")
                .label("disk", "ssd")
                .info(),
            node("n1").label("pool", "batch").info(),
            node("n2").label("disk", "ssd").info(),
        ];
        let p = pod("p").node_selector("disk", "ssd").info();
        let (_, s, f) = run(&pl, &p, &nodes);
        assert!(s.is_success());
        assert_eq!(ok(&f), [true, false, false]);
        assert_eq!(f[1].reasons, vec![ERR_REASON_POD]);
        assert_eq!(f[2].reasons, vec![ERR_REASON_ENFORCED]);
        assert_eq!(f[2].code, Code::UnschedulableAndUnresolvable);
    }

    #[test]
    fn args_are_strict() {
        assert!(factory(None).is_ok());
        assert!(factory(Some(&json!({}))).is_ok());
        assert!(factory(Some(&json!({"addedAffinty": {}}))).is_err());
        let e = factory(Some(&json!({"addedAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["x"]}]}]}}})))
        .err()
        .unwrap();
        assert!(e.contains("addedAffinity"), "{e}");
        let e = factory(Some(&json!({"addedAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 0, "preference": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}]}})))
        .err()
        .unwrap();
        assert!(e.contains("weight"), "{e}");
    }
}
