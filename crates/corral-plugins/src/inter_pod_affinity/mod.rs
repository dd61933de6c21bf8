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

mod filtering;
mod scoring;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use crate::framework::Plugin;
use crate::helpers::FxHasher;
use crate::labels::Labels;
use crate::snapshot::{AffinityTerm, PodInfo, Snapshot};

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
    Ok(Arc::new(parse_args(args)?))
}

/// Decodes `InterPodAffinityArgs` strictly; errors name the offending field.
fn parse_args(args: Option<&serde_json::Value>) -> Result<InterPodAffinity, String> {
    let m: serde_json::Map<String, serde_json::Value> =
        super::decode_args(args).map_err(|e| format!("{NAME} args: {e}"))?;
    let mut pl = InterPodAffinity::default();
    for (k, v) in &m {
        if v.is_null() {
            continue;
        }
        match k.as_str() {
            // The typed args header is accepted and ignored.
            "apiVersion" | "kind" => {}
            "hardPodAffinityWeight" => {
                let w = v.as_i64().ok_or_else(|| {
                    format!(
                        "{NAME} args: hardPodAffinityWeight: Invalid value: {v}: must be an integer"
                    )
                })?;
                if !(0..=i64::from(MAX_HARD_POD_AFFINITY_WEIGHT)).contains(&w) {
                    return Err(format!(
                        "{NAME} args: hardPodAffinityWeight: Invalid value: {w}: not in valid range [0-{MAX_HARD_POD_AFFINITY_WEIGHT}]"
                    ));
                }
                pl.hard_pod_affinity_weight = w as i32;
            }
            "ignorePreferredTermsOfExistingPods" => {
                pl.ignore_preferred_terms_of_existing_pods = v.as_bool().ok_or_else(|| {
                    format!("{NAME} args: ignorePreferredTermsOfExistingPods: Invalid value: {v}: must be a boolean")
                })?;
            }
            other => return Err(format!("{NAME} args: unknown field `{other}`")),
        }
    }
    Ok(pl)
}

type ValueMap = HashMap<String, i64, BuildHasherDefault<FxHasher>>;

/// Values per topology pair: one small map per distinct topology key (there are
/// usually one to three keys, so finding the key is a short linear scan and looking up
/// a node's value needs no allocation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TopologyMap {
    keys: Vec<String>,
    values: Vec<ValueMap>,
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
                self.values.push(ValueMap::default());
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
        self.values.iter().all(ValueMap::is_empty)
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

crate::impl_plugin!(InterPodAffinity, NAME, pre_filter, filter, pre_score, score);
