//! InterPodAffinity: required pod affinity / anti-affinity (Filter) and preferred
//! terms (Score), with kube-scheduler's semantics.
//!
//! PreFilter builds three count maps keyed by topology pair `(key, value)`:
//! - `existing_anti`: existing pods whose required anti-affinity terms match the
//!   incoming pod, counted at their node's topology value for each matching term;
//! - `affinity`: existing pods matching *all* of the incoming pod's required affinity
//!   terms, counted for every term;
//! - `anti`: existing pods matching each of the incoming pod's required anti-affinity
//!   terms.
//!
//! Filter then needs a couple of label lookups and hash probes per node (no
//! allocation). PreScore sums preferred weights (and existing pods' required affinity
//! terms times `hardPodAffinityWeight`) per topology pair; Score sums the node's pairs
//! and NormalizeScore rescales min..max to 0..100.
//!
//! Namespace semantics: the incoming pod's terms are matched as kube does after
//! merging the namespace selector into the namespace list (a non-empty selector only
//! selects namespaces known to the snapshot, `{}` selects all namespaces); existing
//! pods' terms are matched against the incoming pod's namespace labels (empty when the
//! namespace is unknown).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use rayon::prelude::*;
use serde::Deserialize;

use crate::framework::{
    CycleState, FilterPlugin, MAX_NODE_SCORE, NodeScore, NormalizeScorePlugin, Plugin,
    PreFilterExtensions, PreFilterPlugin, PreFilterResult, PreScorePlugin, ScorePlugin, Status,
};
use crate::labels::Labels;
use crate::snapshot::{AffinityTerm, NodeInfo, PodInfo, Snapshot, WeightedAffinityTerm};

pub const NAME: &str = "InterPodAffinity";

/// kube-scheduler's reason strings.
pub const ERR_REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
pub const ERR_REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";

const PRE_FILTER_STATE_KEY: &str = "PreFilterInterPodAffinity";
const PRE_SCORE_STATE_KEY: &str = "PreScoreInterPodAffinity";

/// Default `hardPodAffinityWeight`.
pub const DEFAULT_HARD_POD_AFFINITY_WEIGHT: i32 = 1;
const MAX_HARD_POD_AFFINITY_WEIGHT: i32 = 100;

/// `InterPodAffinityArgs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Args {
    /// Accepted (the config file may carry the typed args header) and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    api_version: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    kind: Option<String>,
    hard_pod_affinity_weight: Option<i32>,
    ignore_preferred_terms_of_existing_pods: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterPodAffinity {
    /// Weight of existing pods' required affinity terms in scoring (0..=100).
    pub hard_pod_affinity_weight: i32,
    /// Skip scoring entirely when the incoming pod has no preferred terms.
    pub ignore_preferred_terms_of_existing_pods: bool,
}

impl Default for InterPodAffinity {
    fn default() -> Self {
        InterPodAffinity {
            hard_pod_affinity_weight: DEFAULT_HARD_POD_AFFINITY_WEIGHT,
            ignore_preferred_terms_of_existing_pods: false,
        }
    }
}

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let a: Args = super::decode_args(args).map_err(|e| format!("{NAME} args: {e}"))?;
    let w = a
        .hard_pod_affinity_weight
        .unwrap_or(DEFAULT_HARD_POD_AFFINITY_WEIGHT);
    if !(0..=MAX_HARD_POD_AFFINITY_WEIGHT).contains(&w) {
        return Err(format!(
            "{NAME} args: hardPodAffinityWeight: Invalid value: {w}: not in valid range [0-{MAX_HARD_POD_AFFINITY_WEIGHT}]"
        ));
    }
    Ok(Arc::new(InterPodAffinity {
        hard_pod_affinity_weight: w,
        ignore_preferred_terms_of_existing_pods: a
            .ignore_preferred_terms_of_existing_pods
            .unwrap_or(false),
    }))
}

/// Values per topology pair: one small map per distinct topology key (there are
/// usually one to three keys, so finding the key is a short linear scan and looking up
/// a node's value needs no allocation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TopologyMap {
    keys: Vec<String>,
    values: Vec<HashMap<String, i64>>,
}

impl TopologyMap {
    #[inline]
    fn key_id(&self, key: &str) -> Option<usize> {
        self.keys.iter().position(|k| k == key)
    }

    fn key_id_or_insert(&mut self, key: &str) -> usize {
        match self.key_id(key) {
            Some(i) => i,
            None => {
                self.keys.push(key.to_string());
                self.values.push(HashMap::new());
                self.keys.len() - 1
            }
        }
    }

    /// Adds `delta` at `(key, node's value for key)` when the node has the label.
    /// With `drop_zero`, an entry that reaches zero is removed (count semantics).
    fn add(&mut self, node_labels: &Labels, key: &str, delta: i64, drop_zero: bool) {
        let Some(value) = node_labels.get(key) else {
            return;
        };
        let id = self.key_id_or_insert(key);
        let map = &mut self.values[id];
        match map.get_mut(value.as_str()) {
            Some(c) => {
                *c += delta;
                if drop_zero && *c == 0 {
                    map.remove(value.as_str());
                }
            }
            None => {
                if !(drop_zero && delta == 0) {
                    map.insert(value.clone(), delta);
                }
            }
        }
    }

    /// Value at `(key, node's value for key)`; `None` when the node lacks the label.
    #[inline]
    fn get_for_node(&self, node_labels: &Labels, key: &str) -> Option<i64> {
        let value = node_labels.get(key)?;
        Some(
            self.key_id(key)
                .and_then(|i| self.values[i].get(value.as_str()).copied())
                .unwrap_or(0),
        )
    }

    /// True when no pair has an entry.
    fn is_empty(&self) -> bool {
        self.values.iter().all(HashMap::is_empty)
    }

    fn merge(mut self, other: TopologyMap, drop_zero: bool) -> TopologyMap {
        if self.keys.is_empty() {
            return other;
        }
        for (key, values) in other.keys.into_iter().zip(other.values) {
            let id = self.key_id_or_insert(&key);
            let map = &mut self.values[id];
            for (v, d) in values {
                match map.entry(v) {
                    Entry::Occupied(mut o) => {
                        *o.get_mut() += d;
                        if drop_zero && *o.get() == 0 {
                            o.remove();
                        }
                    }
                    Entry::Vacant(e) => {
                        if !(drop_zero && d == 0) {
                            e.insert(d);
                        }
                    }
                }
            }
        }
        self
    }
}

/// Matches one of the incoming pod's terms against another pod, with kube's merged
/// namespace semantics (`mergeAffinityTermNamespacesIfNotEmpty`).
fn incoming_term_matches(term: &AffinityTerm, target: &PodInfo, snap: &Snapshot) -> bool {
    if !term.selector.matches(&target.labels) {
        return false;
    }
    if term.namespaces.contains(&target.namespace) {
        return true;
    }
    let sel = &term.namespace_selector;
    if sel.is_nothing() {
        return false;
    }
    if sel.is_everything() {
        return true;
    }
    snap.namespace_labels(&target.namespace)
        .is_some_and(|l| sel.matches(l))
}

/// `podMatchesAllAffinityTerms` for the incoming pod's terms (false when empty).
fn matches_all_incoming(terms: &[AffinityTerm], target: &PodInfo, snap: &Snapshot) -> bool {
    !terms.is_empty() && terms.iter().all(|t| incoming_term_matches(t, target, snap))
}

/// PreFilter state.
#[derive(Debug, Clone, Default)]
struct PreFilterState {
    existing_anti: TopologyMap,
    affinity: TopologyMap,
    anti: TopologyMap,
    /// The incoming pod matches all of its own required affinity terms.
    self_match: bool,
}

impl PreFilterState {
    /// True when Filter can't reject anything (PreFilter's Skip condition).
    fn skippable(&self, pod: &PodInfo) -> bool {
        self.existing_anti.is_empty()
            && pod.required_affinity_terms.is_empty()
            && pod.required_anti_affinity_terms.is_empty()
    }

    /// `updateWithPod`: accounts for `other` (placed on a node with `labels`) with
    /// multiplier `m` (+1 add, -1 remove).
    fn update_with_pod(
        &mut self,
        pod: &PodInfo,
        other: &PodInfo,
        labels: &Labels,
        snap: &Snapshot,
        m: i64,
    ) {
        let pod_ns_labels = snap.namespace_labels(&pod.namespace);
        for t in &other.required_anti_affinity_terms {
            if t.matches(pod, pod_ns_labels) {
                self.existing_anti.add(labels, &t.topology_key, m, true);
            }
        }
        if matches_all_incoming(&pod.required_affinity_terms, other, snap) {
            for t in &pod.required_affinity_terms {
                self.affinity.add(labels, &t.topology_key, m, true);
            }
        }
        for t in &pod.required_anti_affinity_terms {
            if incoming_term_matches(t, other, snap) {
                self.anti.add(labels, &t.topology_key, m, true);
            }
        }
    }
}

/// Existing pods' required anti-affinity terms matching the incoming pod.
fn existing_anti_affinity_counts(pod: &PodInfo, snap: &Snapshot) -> TopologyMap {
    let ns_labels = snap.namespace_labels(&pod.namespace);
    let mut m = TopologyMap::default();
    let nodes = snap.nodes();
    for &i in snap.nodes_with_required_anti_affinity_pods() {
        let Some(node) = nodes.get(i) else { continue };
        for existing in &node.pods_with_required_anti_affinity {
            for t in &existing.required_anti_affinity_terms {
                if t.matches(pod, ns_labels) {
                    m.add(&node.labels, &t.topology_key, 1, true);
                }
            }
        }
    }
    m
}

/// Existing pods matching the incoming pod's required affinity (all terms) and
/// anti-affinity (each term) terms, over all nodes.
fn incoming_counts(pod: &PodInfo, snap: &Snapshot) -> (TopologyMap, TopologyMap) {
    if pod.required_affinity_terms.is_empty() && pod.required_anti_affinity_terms.is_empty() {
        return Default::default();
    }
    let per_node = |node: &Arc<NodeInfo>, acc: &mut (TopologyMap, TopologyMap)| {
        for existing in &node.pods {
            if matches_all_incoming(&pod.required_affinity_terms, existing, snap) {
                for t in &pod.required_affinity_terms {
                    acc.0.add(&node.labels, &t.topology_key, 1, true);
                }
            }
            for t in &pod.required_anti_affinity_terms {
                if incoming_term_matches(t, existing, snap) {
                    acc.1.add(&node.labels, &t.topology_key, 1, true);
                }
            }
        }
    };
    snap.nodes()
        .par_iter()
        .with_min_len(256)
        .fold(<(TopologyMap, TopologyMap)>::default, |mut acc, node| {
            per_node(node, &mut acc);
            acc
        })
        .reduce(<(TopologyMap, TopologyMap)>::default, |a, b| {
            (a.0.merge(b.0, true), a.1.merge(b.1, true))
        })
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(self: Arc<Self>) -> Option<Arc<dyn PreFilterPlugin>> {
        Some(self)
    }
    fn as_filter(self: Arc<Self>) -> Option<Arc<dyn FilterPlugin>> {
        Some(self)
    }
    fn as_pre_score(self: Arc<Self>) -> Option<Arc<dyn PreScorePlugin>> {
        Some(self)
    }
    fn as_score(self: Arc<Self>) -> Option<Arc<dyn ScorePlugin>> {
        Some(self)
    }
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        let existing_anti = existing_anti_affinity_counts(pod, snap);
        let (affinity, anti) = incoming_counts(pod, snap);
        let s = PreFilterState {
            existing_anti,
            affinity,
            anti,
            self_match: matches_all_incoming(&pod.required_affinity_terms, pod, snap),
        };
        let skip = s.skippable(pod);
        // Written even on Skip so that AddPod can turn Filter back on when a pod whose
        // anti-affinity matches this one is committed after PreFilter ran.
        state.write(PRE_FILTER_STATE_KEY, s);
        if skip {
            (None, Status::skip())
        } else {
            (None, Status::success())
        }
    }

    fn extensions(&self) -> Option<&dyn PreFilterExtensions> {
        Some(self)
    }
}

impl InterPodAffinity {
    fn update(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
        m: i64,
    ) -> Status {
        let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_STATE_KEY) else {
            return missing_state(PRE_FILTER_STATE_KEY);
        };
        s.update_with_pod(pod, other, &node.labels, snap, m);
        let skippable = s.skippable(pod);
        if !skippable {
            // A Skip recorded by PreFilter no longer holds: Filter must run.
            state.skip_filter.retain(|p| *p != NAME);
        }
        Status::success()
    }
}

impl PreFilterExtensions for InterPodAffinity {
    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        added: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Status {
        self.update(state, pod, added, node, snap, 1)
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Status {
        self.update(state, pod, removed, node, snap, -1)
    }
}

fn missing_state(key: &str) -> Status {
    Status::error(format!("reading {key:?} from cycleState: not found")).with_plugin(NAME)
}

/// `satisfyPodAffinity`.
fn satisfies_affinity(s: &PreFilterState, pod: &PodInfo, labels: &Labels) -> bool {
    let mut pods_exist = true;
    for t in &pod.required_affinity_terms {
        match s.affinity.get_for_node(labels, &t.topology_key) {
            // All topology labels must exist on the node.
            None => return false,
            Some(c) if c <= 0 => pods_exist = false,
            Some(_) => {}
        }
    }
    // First pod of a self-affine group: nothing matches anywhere and the pod matches
    // its own terms.
    pods_exist || (s.affinity.is_empty() && s.self_match)
}

/// `satisfyPodAntiAffinity`.
fn satisfies_anti_affinity(s: &PreFilterState, pod: &PodInfo, labels: &Labels) -> bool {
    if s.anti.is_empty() {
        return true;
    }
    !pod.required_anti_affinity_terms
        .iter()
        .any(|t| s.anti.get_for_node(labels, &t.topology_key).unwrap_or(0) > 0)
}

/// `satisfyExistingPodsAntiAffinity`: no pair of the node's labels has a count.
fn satisfies_existing_anti_affinity(s: &PreFilterState, labels: &Labels) -> bool {
    s.existing_anti
        .keys
        .iter()
        .zip(&s.existing_anti.values)
        .all(|(k, values)| match labels.get(k) {
            Some(v) => values.get(v.as_str()).copied().unwrap_or(0) <= 0,
            None => true,
        })
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Status {
        let Some(s) = state.read::<PreFilterState>(PRE_FILTER_STATE_KEY) else {
            return missing_state(PRE_FILTER_STATE_KEY);
        };
        let labels = &node.labels;
        if !satisfies_affinity(s, pod, labels) {
            return Status::unresolvable(ERR_REASON_AFFINITY);
        }
        if !satisfies_anti_affinity(s, pod, labels) {
            return Status::unschedulable(ERR_REASON_ANTI_AFFINITY);
        }
        if !satisfies_existing_anti_affinity(s, labels) {
            return Status::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY);
        }
        Status::success()
    }
}

/// PreScore state: score per topology pair (zero entries kept, like kube's map).
#[derive(Debug, Clone, Default)]
struct PreScoreState {
    scores: TopologyMap,
}

impl InterPodAffinity {
    /// `processExistingPod`: contributions of one existing pod on a node with
    /// `labels`.
    fn process_existing_pod(
        &self,
        pod: &PodInfo,
        existing: &PodInfo,
        labels: &Labels,
        snap: &Snapshot,
        out: &mut TopologyMap,
    ) {
        if labels.is_empty() {
            return;
        }
        let process_incoming =
            |terms: &[WeightedAffinityTerm], sign: i64, out: &mut TopologyMap| {
                for t in terms {
                    if incoming_term_matches(&t.term, existing, snap) {
                        out.add(
                            labels,
                            &t.term.topology_key,
                            sign * i64::from(t.weight),
                            false,
                        );
                    }
                }
            };
        process_incoming(&pod.preferred_affinity_terms, 1, out);
        process_incoming(&pod.preferred_anti_affinity_terms, -1, out);

        let ns_labels = snap.namespace_labels(&pod.namespace);
        if self.hard_pod_affinity_weight > 0 {
            for t in &existing.required_affinity_terms {
                if t.matches(pod, ns_labels) {
                    out.add(
                        labels,
                        &t.topology_key,
                        i64::from(self.hard_pod_affinity_weight),
                        false,
                    );
                }
            }
        }
        for (terms, sign) in [
            (&existing.preferred_affinity_terms, 1),
            (&existing.preferred_anti_affinity_terms, -1),
        ] {
            for t in terms {
                if t.term.matches(pod, ns_labels) {
                    out.add(
                        labels,
                        &t.term.topology_key,
                        sign * i64::from(t.weight),
                        false,
                    );
                }
            }
        }
    }
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        nodes: &[&NodeInfo],
    ) -> Status {
        if nodes.is_empty() {
            return Status::skip();
        }
        let has_constraints = !pod.preferred_affinity_terms.is_empty()
            || !pod.preferred_anti_affinity_terms.is_empty();
        if self.ignore_preferred_terms_of_existing_pods && !has_constraints {
            return Status::skip();
        }
        let all = snap.nodes();
        let process = |node: &Arc<NodeInfo>, acc: &mut TopologyMap| {
            let pods = if has_constraints {
                &node.pods
            } else {
                &node.pods_with_affinity
            };
            for existing in pods {
                self.process_existing_pod(pod, existing, &node.labels, snap, acc);
            }
        };
        let scores = if has_constraints {
            all.par_iter()
                .with_min_len(256)
                .fold(TopologyMap::default, |mut acc, n| {
                    process(n, &mut acc);
                    acc
                })
                .reduce(TopologyMap::default, |a, b| a.merge(b, false))
        } else {
            let mut acc = TopologyMap::default();
            for &i in snap.nodes_with_affinity_pods() {
                if let Some(n) = all.get(i) {
                    process(n, &mut acc);
                }
            }
            acc
        };
        // kube skips when no topology key got an entry (entries summing to 0 count).
        if scores.keys.is_empty() {
            return Status::skip();
        }
        state.write(PRE_SCORE_STATE_KEY, PreScoreState { scores });
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(
        &self,
        state: &CycleState,
        _pod: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot,
    ) -> Result<i64, Status> {
        // No state: PreScore skipped, nothing contributes.
        let Some(s) = state.read::<PreScoreState>(PRE_SCORE_STATE_KEY) else {
            return Ok(0);
        };
        let mut score = 0i64;
        for (k, values) in s.scores.keys.iter().zip(&s.scores.values) {
            if let Some(v) = node.labels.get(k) {
                score += values.get(v.as_str()).copied().unwrap_or(0);
            }
        }
        Ok(score)
    }

    fn normalize(&self) -> Option<&dyn NormalizeScorePlugin> {
        Some(self)
    }
}

impl NormalizeScorePlugin for InterPodAffinity {
    fn normalize_score(&self, state: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) -> Status {
        let Some(s) = state.read::<PreScoreState>(PRE_SCORE_STATE_KEY) else {
            return Status::success();
        };
        if s.scores.keys.is_empty() {
            return Status::success();
        }
        let min = scores.iter().map(|s| s.score).min().unwrap_or(0);
        let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
        let diff = max.saturating_sub(min);
        for sc in scores.iter_mut() {
            let f = if diff > 0 {
                MAX_NODE_SCORE as f64 * ((sc.score - min) as f64 / diff as f64)
            } else {
                0.0
            };
            sc.score = f as i64;
        }
        Status::success()
    }
}
