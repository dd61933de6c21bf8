//! Per-snapshot index of placed pods by label and of their pod (anti-)affinity terms,
//! so InterPodAffinity and PodTopologySpread touch only the pods a selector can match
//! instead of every pod in the cluster (kube-scheduler scans them all per pod).
//!
//! - [`PodIndex::candidates`]: for a selector with an `In` requirement (every
//!   `matchLabels` entry is one), the pods carrying one of its values for its key.
//!   Every pod the selector matches is among them; the caller still evaluates the whole
//!   selector (and namespaces). `None` for selectors without an `In` requirement
//!   (`Exists`, `NotIn`, `{}`): the caller scans all pods, as before.
//! - [`PodIndex::terms_matching`]: existing pods having a term of a kind whose
//!   selector could match a label set (the term's first `In` requirement is satisfied
//!   by it, or the term has none). The caller evaluates the terms.
//!
//! The index is maintained by [`crate::snapshot::Snapshot`] on every pod add/remove
//! (O(labels + terms) per pod) and records each pod's node by name, so it never needs
//! rebuilding when the node order changes; pods whose node is not in the snapshot
//! (orphans) are returned too and skipped by callers looking the node up.
//!
//! Invariant: a pod is in the index exactly while it is placed in the snapshot (on a
//! node or as an orphan). Results are sets: iteration order is unspecified, so callers
//! only sum or count over them.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use crate::labels::{Labels, Selector};
use crate::snapshot::{AffinityTerm, PodInfo};

/// Deterministic hasher (no per-process random keys).
type Fixed = BuildHasherDefault<DefaultHasher>;
/// Pods by `PodInfo` address (unique while the pod is in the index).
type Bucket = HashMap<usize, Placed, Fixed>;
/// key → value → pods.
type ByLabel = HashMap<String, HashMap<String, Bucket, Fixed>, Fixed>;

/// A placed pod and the name of its node.
#[derive(Debug, Clone)]
pub struct Placed {
    pub pod: Arc<PodInfo>,
    pub node: Arc<str>,
}

/// The four kinds of pod (anti-)affinity terms an existing pod can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermKind {
    RequiredAffinity = 0,
    RequiredAntiAffinity = 1,
    PreferredAffinity = 2,
    PreferredAntiAffinity = 3,
}

impl TermKind {
    /// The pod's terms of this kind.
    pub fn terms(self, p: &PodInfo) -> Vec<&AffinityTerm> {
        match self {
            TermKind::RequiredAffinity => p.required_affinity_terms.iter().collect(),
            TermKind::RequiredAntiAffinity => p.required_anti_affinity_terms.iter().collect(),
            TermKind::PreferredAffinity => {
                p.preferred_affinity_terms.iter().map(|t| &t.term).collect()
            }
            TermKind::PreferredAntiAffinity => p
                .preferred_anti_affinity_terms
                .iter()
                .map(|t| &t.term)
                .collect(),
        }
    }

    const ALL: [TermKind; 4] = [
        TermKind::RequiredAffinity,
        TermKind::RequiredAntiAffinity,
        TermKind::PreferredAffinity,
        TermKind::PreferredAntiAffinity,
    ];
}

#[derive(Debug, Clone, Default)]
struct TermIndex {
    /// Terms by their selector's first `In` requirement (key → each value).
    keyed: ByLabel,
    /// Pods with a term of this kind that has no `In` requirement.
    unkeyed: Bucket,
}

/// See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct PodIndex {
    labels: ByLabel,
    terms: [TermIndex; 4],
    len: usize,
}

#[inline]
fn addr(p: &Arc<PodInfo>) -> usize {
    Arc::as_ptr(p) as usize
}

fn insert(m: &mut ByLabel, k: &str, v: &str, placed: &Placed) {
    m.entry(k.to_string())
        .or_default()
        .entry(v.to_string())
        .or_default()
        .insert(addr(&placed.pod), placed.clone());
}

fn remove(m: &mut ByLabel, k: &str, v: &str, a: usize) {
    if let Some(by_value) = m.get_mut(k) {
        if let Some(b) = by_value.get_mut(v) {
            b.remove(&a);
            if b.is_empty() {
                by_value.remove(v);
            }
        }
        if by_value.is_empty() {
            m.remove(k);
        }
    }
}

impl PodIndex {
    /// Number of pods indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Indexes a pod placed on `node` (by name).
    pub fn add(&mut self, pod: &Arc<PodInfo>, node: &Arc<str>) {
        let placed = Placed {
            pod: pod.clone(),
            node: node.clone(),
        };
        let a = addr(pod);
        for (k, v) in &pod.labels {
            insert(&mut self.labels, k, v, &placed);
        }
        for kind in TermKind::ALL {
            let ti = &mut self.terms[kind as usize];
            for t in kind.terms(pod) {
                match t.selector.index_requirement() {
                    Some((k, values)) => {
                        for v in values {
                            insert(&mut ti.keyed, k, v, &placed);
                        }
                    }
                    None => {
                        ti.unkeyed.insert(a, placed.clone());
                    }
                }
            }
        }
        self.len += 1;
    }

    /// Removes a pod added with [`PodIndex::add`] (the same `Arc`).
    pub fn remove(&mut self, pod: &Arc<PodInfo>) {
        let a = addr(pod);
        for (k, v) in &pod.labels {
            remove(&mut self.labels, k, v, a);
        }
        for kind in TermKind::ALL {
            let ti = &mut self.terms[kind as usize];
            for t in kind.terms(pod) {
                match t.selector.index_requirement() {
                    Some((k, values)) => {
                        for v in values {
                            remove(&mut ti.keyed, k, v, a);
                        }
                    }
                    None => {
                        ti.unkeyed.remove(&a);
                    }
                }
            }
        }
        self.len = self.len.saturating_sub(1);
    }

    /// Pods that may match `sel` (see the module documentation); `None` when the
    /// selector has no `In` requirement and every pod must be checked.
    pub fn candidates<'a>(
        &'a self,
        sel: &'a Selector,
    ) -> Option<impl Iterator<Item = &'a Placed> + 'a> {
        let (by_value, values) = if sel.is_nothing() {
            (None, &[][..])
        } else {
            let (k, values) = sel.index_requirement()?;
            (self.labels.get(k), values)
        };
        Some(
            values
                .iter()
                .filter_map(move |v| by_value.and_then(|m| m.get(v.as_str())))
                .flat_map(|b| b.values()),
        )
    }

    /// Existing pods with a term of `kind` that may match a pod with `labels`, each
    /// once.
    pub fn terms_matching(&self, kind: TermKind, labels: &Labels) -> Vec<&Placed> {
        let ti = &self.terms[kind as usize];
        let mut out: Vec<&Placed> = ti.unkeyed.values().collect();
        if !ti.keyed.is_empty() {
            for (k, v) in labels {
                if let Some(b) = ti.keyed.get(k.as_str()).and_then(|m| m.get(v.as_str())) {
                    out.extend(b.values());
                }
            }
        }
        if out.len() > 1 {
            out.sort_unstable_by_key(|p| addr(&p.pod));
            out.dedup_by_key(|p| addr(&p.pod));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{NodeInfo, Snapshot};
    use crate::testutil::{node, pod};
    use serde_json::json;

    fn snap() -> Snapshot {
        let mut s = Snapshot::new();
        for n in ["n1", "n2"] {
            let info: NodeInfo = node(n).zone("z").info();
            s.upsert_node(info);
        }
        s
    }

    fn keys<'a>(it: impl Iterator<Item = &'a Placed>) -> Vec<String> {
        let mut v: Vec<String> = it.map(|p| format!("{}@{}", p.pod.key, p.node)).collect();
        v.sort();
        v
    }

    #[test]
    fn follows_adds_moves_and_removals() {
        let mut s = snap();
        let web = |n: &str| Arc::new(pod(n).label("app", "web").info());
        s.add_pod(web("w1"), "n1");
        s.add_pod(web("w2"), "n2");
        s.add_pod(Arc::new(pod("d").label("app", "db").info()), "n1");
        let sel =
            crate::labels::Selector::from_map(&[("app".to_string(), "web".to_string())].into());
        let got = keys(s.pod_index().candidates(&sel).unwrap());
        assert_eq!(got, ["default/w1@n1", "default/w2@n2"]);
        // Moving a pod re-indexes it on the new node; removing it forgets it.
        s.add_pod(web("w1"), "n2");
        let got = keys(s.pod_index().candidates(&sel).unwrap());
        assert_eq!(got, ["default/w1@n2", "default/w2@n2"]);
        s.remove_pod("default/w2");
        assert_eq!(
            keys(s.pod_index().candidates(&sel).unwrap()),
            ["default/w1@n2"]
        );
        assert_eq!(s.pod_index().len(), 2);
        // Selectors without an `In` requirement are not indexable; nil selects nothing.
        let exists = crate::labels::Selector::from_label_selector(Some(
            &serde_json::from_value(
                json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}),
            )
            .unwrap(),
        ))
        .unwrap();
        assert!(s.pod_index().candidates(&exists).is_none());
        let nothing = crate::labels::Selector::nothing();
        assert_eq!(s.pod_index().candidates(&nothing).unwrap().count(), 0);
    }

    #[test]
    fn terms_are_found_by_the_labels_they_can_match() {
        let mut s = snap();
        let anti = pod("a")
            .label("app", "web")
            .affinity(json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"},
                {"labelSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]},
                 "topologyKey": "kubernetes.io/hostname"}]}}))
            .info();
        let exists = pod("b")
            .affinity(json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "podAffinityTerm": {"labelSelector": {"matchExpressions": [
                    {"key": "app", "operator": "Exists"}]}, "topologyKey": "kubernetes.io/hostname"}}]}}))
            .info();
        s.add_pod(Arc::new(anti), "n1");
        s.add_pod(Arc::new(exists), "n2");
        let idx = s.pod_index();
        let l = |pairs: &[(&str, &str)]| -> Labels {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let k = TermKind::RequiredAntiAffinity;
        assert_eq!(
            keys(idx.terms_matching(k, &l(&[("app", "web")])).into_iter()),
            ["default/a@n1"]
        );
        // Reached through both terms: returned once.
        assert_eq!(
            keys(
                idx.terms_matching(k, &l(&[("app", "web"), ("tier", "be")]))
                    .into_iter()
            ),
            ["default/a@n1"]
        );
        assert!(idx.terms_matching(k, &l(&[("app", "db")])).is_empty());
        // Unkeyed terms are candidates for every label set.
        let p = TermKind::PreferredAffinity;
        assert_eq!(
            keys(idx.terms_matching(p, &l(&[])).into_iter()),
            ["default/b@n2"]
        );
        s.remove_pod("default/a");
        assert!(
            s.pod_index()
                .terms_matching(k, &l(&[("app", "web")]))
                .is_empty()
        );
    }
}
