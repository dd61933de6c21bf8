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
mod mask;
mod scoring;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use crate::domains::{DOMAIN_MISSING, KeyDomains};
use crate::framework::Plugin;
use crate::helpers::FxHasher;
use crate::snapshot::{AffinityTerm, NodeInfo, PodInfo, Snapshot};

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
/// Keyed by domain id as `usize`, which [`FxHasher`] hashes with one multiply.
type IdMap = HashMap<usize, i64, BuildHasherDefault<FxHasher>>;

/// Counts (or weights) per topology pair `(key, value)`, kube's `topologyToMatchedTermCount`.
///
/// A value is held by its domain id in the snapshot's topology-domain index for the
/// key ([`KeyDomains`], taken when the key is first added), so adding a pod or
/// checking a node is an array read by node position and an integer-keyed probe: no
/// label-map lookup, string hash or string copy. A node that is not the snapshot's
/// own (a copy) or a snapshot whose node set changed since is looked up by its label
/// value, which the index maps to the same id; a value no node of the index carries
/// is kept by string.
#[derive(Debug, Clone, Default)]
struct TopologyMap {
    keys: Vec<KeyCounts>,
}

#[derive(Debug, Clone)]
struct KeyCounts {
    key: String,
    domains: Arc<KeyDomains>,
    by_id: IdMap,
    /// Values no node of `domains` carries.
    other: ValueMap,
}

/// A node's value of a key, as [`KeyCounts`] holds it.
enum Val<'a> {
    Id(u32),
    Other(&'a str),
}

impl KeyCounts {
    fn new(key: &str, snap: &Snapshot) -> KeyCounts {
        KeyCounts {
            key: key.to_string(),
            domains: snap.topology_domains(key),
            by_id: IdMap::default(),
            other: ValueMap::default(),
        }
    }

    /// The node's value of the key; `None` when the node lacks the label.
    #[inline]
    fn value_of<'a>(&self, node: &'a NodeInfo, snap: &Snapshot) -> Option<Val<'a>> {
        if self.domains.nodes_version() == snap.nodes_version()
            && let Some(pos) = snap.position(node)
        {
            return match self.domains.id_at(pos) {
                DOMAIN_MISSING => None,
                id => Some(Val::Id(id)),
            };
        }
        let v = node.labels.get(&self.key)?;
        Some(match self.domains.id_of(v) {
            Some(id) => Val::Id(id),
            None => Val::Other(v.as_str()),
        })
    }

    #[inline]
    fn get(&self, v: &Val<'_>) -> i64 {
        match v {
            Val::Id(id) => self.by_id.get(&(*id as usize)).copied().unwrap_or(0),
            Val::Other(v) => self.other.get(*v).copied().unwrap_or(0),
        }
    }

    fn add(&mut self, v: Val<'_>, delta: i64, drop_zero: bool) {
        match v {
            Val::Id(id) => bump(&mut self.by_id, id as usize, delta, drop_zero),
            Val::Other(v) => match self.other.get_mut(v) {
                Some(c) => {
                    *c += delta;
                    if drop_zero && *c == 0 {
                        self.other.remove(v);
                    }
                }
                None => {
                    if !(drop_zero && delta == 0) {
                        self.other.insert(v.to_string(), delta);
                    }
                }
            },
        }
    }

    fn is_empty(&self) -> bool {
        self.by_id.is_empty() && self.other.is_empty()
    }

    /// `(value, count)` pairs.
    #[cfg(test)]
    fn entries(&self) -> impl Iterator<Item = (&str, i64)> {
        self.by_id
            .iter()
            .map(|(&id, &c)| (self.domains.value(id as u32), c))
            .chain(self.other.iter().map(|(v, &c)| (v.as_str(), c)))
    }
}

fn bump<K: std::hash::Hash + Eq>(
    m: &mut HashMap<K, i64, BuildHasherDefault<FxHasher>>,
    k: K,
    delta: i64,
    drop_zero: bool,
) {
    match m.entry(k) {
        Entry::Occupied(mut o) => {
            *o.get_mut() += delta;
            if drop_zero && *o.get() == 0 {
                o.remove();
            }
        }
        Entry::Vacant(e) => {
            if !(drop_zero && delta == 0) {
                e.insert(delta);
            }
        }
    }
}

impl TopologyMap {
    #[inline]
    fn key_id(&self, key: &str) -> Option<usize> {
        self.keys.iter().position(|k| k.key == key)
    }

    /// Adds `delta` at `(key, node's value for key)` when the node has the label.
    /// With `drop_zero`, an entry that reaches zero is removed (count semantics).
    fn add(&mut self, node: &NodeInfo, snap: &Snapshot, key: &str, delta: i64, drop_zero: bool) {
        let i = match self.key_id(key) {
            Some(i) => i,
            None => {
                // The key is registered only for a node that has the label.
                if !node.labels.contains_key(key) {
                    return;
                }
                self.keys.push(KeyCounts::new(key, snap));
                self.keys.len() - 1
            }
        };
        let kc = &mut self.keys[i];
        if let Some(v) = kc.value_of(node, snap) {
            kc.add(v, delta, drop_zero);
        }
    }

    /// Value at `(key, node's value for key)`; `None` when the node lacks the label.
    #[inline]
    fn get_for_node(&self, node: &NodeInfo, snap: &Snapshot, key: &str) -> Option<i64> {
        match self.key_id(key) {
            Some(i) => {
                let kc = &self.keys[i];
                kc.value_of(node, snap).map(|v| kc.get(&v))
            }
            None => node.labels.contains_key(key).then_some(0),
        }
    }

    /// True when no pair has an entry.
    fn is_empty(&self) -> bool {
        self.keys.iter().all(KeyCounts::is_empty)
    }

    fn merge(mut self, other: TopologyMap, drop_zero: bool) -> TopologyMap {
        if self.keys.is_empty() {
            return other;
        }
        for o in other.keys {
            let i = match self.key_id(&o.key) {
                Some(i) => i,
                None => {
                    self.keys.push(KeyCounts {
                        key: o.key.clone(),
                        domains: o.domains.clone(),
                        by_id: IdMap::default(),
                        other: ValueMap::default(),
                    });
                    self.keys.len() - 1
                }
            };
            let kc = &mut self.keys[i];
            if Arc::ptr_eq(&kc.domains, &o.domains) {
                for (id, d) in o.by_id {
                    bump(&mut kc.by_id, id, d, drop_zero);
                }
            } else {
                for (id, d) in &o.by_id {
                    let v = o.domains.value(*id as u32);
                    let v = match kc.domains.id_of(v) {
                        Some(id) => Val::Id(id),
                        None => Val::Other(v),
                    };
                    kc.add(v, *d, drop_zero);
                }
            }
            for (v, d) in &o.other {
                let v = match kc.domains.id_of(v) {
                    Some(id) => Val::Id(id),
                    None => Val::Other(v.as_str()),
                };
                kc.add(v, *d, drop_zero);
            }
        }
        self
    }

    /// Every `(key, value, count)`, sorted (for comparisons in tests).
    #[cfg(test)]
    fn sorted(&self) -> Vec<(String, String, i64)> {
        let mut v: Vec<(String, String, i64)> = self
            .keys
            .iter()
            .flat_map(|k| {
                k.entries()
                    .map(move |(v, c)| (k.key.clone(), v.to_string(), c))
            })
            .collect();
        v.sort();
        v
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
