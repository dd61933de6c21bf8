//! PreFilter (count maps per topology pair), its incremental updates and Filter.

use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use super::{
    ERR_REASON_AFFINITY, ERR_REASON_ANTI_AFFINITY, ERR_REASON_EXISTING_ANTI_AFFINITY,
    InterPodAffinity, NAME, PRE_FILTER_STATE_KEY, TopologyMap, incoming_term_matches,
    matches_all_incoming,
};
use crate::framework::{
    CycleState, FilterPlugin, PreFilterExtensions, PreFilterPlugin, PreFilterResult, Status,
};
use crate::pod_index::TermKind;
use crate::snapshot::{AffinityTerm, LABEL_HOSTNAME, NodeInfo, PodInfo, Snapshot};

/// PreFilter state.
#[derive(Debug, Clone, Default)]
pub(super) struct PreFilterState {
    pub(super) existing_anti: TopologyMap,
    pub(super) affinity: TopologyMap,
    pub(super) anti: TopologyMap,
    /// The incoming pod matches all of its own required affinity terms.
    pub(super) self_match: bool,
    /// Filter's verdict on every node of the node set `.0` (`nodes_version`), bit per
    /// position ([`super::mask::filter_mask`]), computed on the first Filter call and
    /// dropped by AddPod/RemovePod; `None` inside: not available for this state.
    verdicts: OnceLock<Option<(u64, Vec<u64>)>>,
}

impl PreFilterState {
    /// The verdict bits for `snap`'s node set, computed once per state version.
    fn verdicts(&self, pod: &PodInfo, snap: &Snapshot) -> Option<&[u64]> {
        let v = self.verdicts.get_or_init(|| {
            let mut out = vec![0u64; snap.num_nodes().div_ceil(64)];
            super::mask::filter_mask(self, pod, snap, &mut out).then(|| (snap.nodes_version(), out))
        });
        match v {
            Some((version, bits)) if *version == snap.nodes_version() => Some(bits),
            _ => None,
        }
    }

    /// True when Filter can't reject anything (PreFilter's Skip condition).
    fn skippable(&self, pod: &PodInfo) -> bool {
        self.existing_anti.is_empty()
            && pod.required_affinity_terms.is_empty()
            && pod.required_anti_affinity_terms.is_empty()
    }

    /// `updateWithPod`: accounts for `other` (placed on `node`) with multiplier `m`
    /// (+1 add, -1 remove).
    fn update_with_pod(
        &mut self,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
        m: i64,
    ) -> bool {
        let mut local = true;
        for t in &other.required_anti_affinity_terms {
            if !t.selector.matches(&pod.labels) {
                continue;
            }
            local &= hostname_term(t);
            if namespace_matches(t, pod, snap) {
                self.existing_anti.add(node, snap, &t.topology_key, m, true);
            }
        }
        if matches_all_incoming(&pod.required_affinity_terms, other, snap) {
            for t in &pod.required_affinity_terms {
                self.affinity.add(node, snap, &t.topology_key, m, true);
            }
        }
        for t in &pod.required_anti_affinity_terms {
            if incoming_term_matches(t, other, snap) {
                self.anti.add(node, snap, &t.topology_key, m, true);
            }
        }
        local
    }
}

/// The namespace half of `AffinityTerm::matches` (an existing pod's term against the
/// incoming pod; callers check the label selector first, which usually fails), with
/// the namespace labels looked up only when a namespace selector needs them.
#[inline]
fn namespace_matches(t: &AffinityTerm, pod: &PodInfo, snap: &Snapshot) -> bool {
    t.namespaces.contains(&pod.namespace)
        || (!t.namespace_selector.is_nothing()
            && t.namespace_selector
                .matches_opt(snap.namespace_labels(&pod.namespace)))
}

/// A required anti-affinity term whose effect on Filter is confined to the node the
/// matching pod is on, given unique hostnames: its topology key is the hostname, and
/// whether it matches a pod cannot change with namespace labels (no namespace
/// selector, or `{}`).
fn hostname_term(t: &AffinityTerm) -> bool {
    t.topology_key == LABEL_HOSTNAME
        && (t.namespace_selector.is_nothing() || t.namespace_selector.is_everything())
}

/// Whether Filter, for this pod, depends only on the pods on the node it checks (so
/// the engine may cache its per-node result with the node-local Filters, stamped with
/// the node's generation): hostnames are unique, the pod has no required affinity
/// terms (their first-pod rule looks at every node), its required anti-affinity terms
/// are hostname terms, and so is every existing term that can match it (`existing`:
/// computed with the existing anti-affinity counts). Checked at PreFilter and
/// withdrawn by `add_pod` when a committed pod brings a non-hostname term matching
/// the pod; a removal never makes a constraint less local.
fn filter_is_node_local(pod: &PodInfo, snap: &Snapshot, existing: bool) -> bool {
    existing
        && pod.required_affinity_terms.is_empty()
        && pod.required_anti_affinity_terms.iter().all(hostname_term)
        && snap.hostnames_unique()
}

/// Existing pods' required anti-affinity terms matching the incoming pod. Only the
/// pods whose terms can match the incoming pod's labels are visited (pod index).
#[cfg(test)]
pub(super) fn existing_anti_affinity_counts(pod: &PodInfo, snap: &Snapshot) -> TopologyMap {
    existing_anti_affinity(pod, snap).0
}

/// Entries of the PreFilter state kept by value string (values the domain index the
/// state was built with lacks).
#[cfg(test)]
pub(super) fn values_kept_by_string(state: &CycleState) -> usize {
    state
        .read::<PreFilterState>(PRE_FILTER_STATE_KEY)
        .map_or(0, |s| {
            [&s.existing_anti, &s.affinity, &s.anti]
                .iter()
                .flat_map(|m| &m.keys)
                .map(|k| k.other.len())
                .sum()
        })
}

/// [`existing_anti_affinity_counts`], and whether every existing term whose label
/// selector matches the pod is a [`hostname_term`] (for [`filter_is_node_local`]).
fn existing_anti_affinity(pod: &PodInfo, snap: &Snapshot) -> (TopologyMap, bool) {
    let mut m = TopologyMap::default();
    let mut local = true;
    for e in snap
        .pod_index()
        .terms_matching(TermKind::RequiredAntiAffinity, &pod.labels)
    {
        let Some(node) = snap.node(&e.node) else {
            continue;
        };
        for t in &e.pod.required_anti_affinity_terms {
            if !t.selector.matches(&pod.labels) {
                continue;
            }
            local &= hostname_term(t);
            if namespace_matches(t, pod, snap) {
                m.add(node, snap, &t.topology_key, 1, true);
            }
        }
    }
    (m, local)
}

/// Existing pods matching the incoming pod's required affinity (all terms) and
/// anti-affinity (each term) terms. Through the pod index when every term's selector
/// has an `In` requirement (the pods matching all affinity terms are among the first
/// term's candidates), else over all nodes.
pub(super) fn incoming_counts(pod: &PodInfo, snap: &Snapshot) -> (TopologyMap, TopologyMap) {
    if pod.required_affinity_terms.is_empty() && pod.required_anti_affinity_terms.is_empty() {
        return Default::default();
    }
    let idx = snap.pod_index();
    let indexable = pod
        .required_affinity_terms
        .first()
        .is_none_or(|t| idx.candidates(&t.selector).is_some())
        && pod
            .required_anti_affinity_terms
            .iter()
            .all(|t| idx.candidates(&t.selector).is_some());
    if indexable {
        let mut acc = <(TopologyMap, TopologyMap)>::default();
        if let Some(cands) = pod
            .required_affinity_terms
            .first()
            .and_then(|t| idx.candidates(&t.selector))
        {
            for e in cands {
                let Some(node) = snap.node(&e.node) else {
                    continue;
                };
                if matches_all_incoming(&pod.required_affinity_terms, &e.pod, snap) {
                    for t in &pod.required_affinity_terms {
                        acc.0.add(node, snap, &t.topology_key, 1, true);
                    }
                }
            }
        }
        for t in &pod.required_anti_affinity_terms {
            for e in idx.candidates(&t.selector).into_iter().flatten() {
                let Some(node) = snap.node(&e.node) else {
                    continue;
                };
                if incoming_term_matches(t, &e.pod, snap) {
                    acc.1.add(node, snap, &t.topology_key, 1, true);
                }
            }
        }
        return acc;
    }
    let per_node = |node: &Arc<NodeInfo>, acc: &mut (TopologyMap, TopologyMap)| {
        for existing in &node.pods {
            if matches_all_incoming(&pod.required_affinity_terms, existing, snap) {
                for t in &pod.required_affinity_terms {
                    acc.0.add(node, snap, &t.topology_key, 1, true);
                }
            }
            for t in &pod.required_anti_affinity_terms {
                if incoming_term_matches(t, existing, snap) {
                    acc.1.add(node, snap, &t.topology_key, 1, true);
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

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        let (existing_anti, existing_local) = existing_anti_affinity(pod, snap);
        let (affinity, anti) = incoming_counts(pod, snap);

        let s = PreFilterState {
            existing_anti,
            affinity,
            anti,
            self_match: matches_all_incoming(&pod.required_affinity_terms, pod, snap),
            verdicts: OnceLock::new(),
        };
        let skip = s.skippable(pod);
        // Not on Skip: the engine's per-node cache cells computed while this plugin
        // was skipped hold no result of it, and must not be taken for its results
        // when a later PreFilter of the class applies and declares node-locality.
        if !skip && filter_is_node_local(pod, snap, existing_local) {
            state.mark_filter_node_local(NAME);
        } else {
            state.unmark_filter_node_local(NAME);
        }
        // Written even on Skip: AddPod/RemovePod keep it exact, so Filter stays correct
        // if the caller runs it after a committed pod made this plugin apply.
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
        let local = s.update_with_pod(pod, other, node, snap, m);
        s.verdicts.take();
        if m > 0 && !local {
            state.unmark_filter_node_local(NAME);
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
fn satisfies_affinity(s: &PreFilterState, pod: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> bool {
    let mut pods_exist = true;
    for t in &pod.required_affinity_terms {
        match s.affinity.get_for_node(node, snap, &t.topology_key) {
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
fn satisfies_anti_affinity(
    s: &PreFilterState,
    pod: &PodInfo,
    node: &NodeInfo,
    snap: &Snapshot,
) -> bool {
    if s.anti.is_empty() {
        return true;
    }
    !pod.required_anti_affinity_terms.iter().any(|t| {
        s.anti
            .get_for_node(node, snap, &t.topology_key)
            .unwrap_or(0)
            > 0
    })
}

/// `satisfyExistingPodsAntiAffinity`: no pair of the node's labels has a count.
fn satisfies_existing_anti_affinity(s: &PreFilterState, node: &NodeInfo, snap: &Snapshot) -> bool {
    s.existing_anti
        .keys
        .iter()
        .all(|k| k.value_of(node, snap).is_none_or(|v| k.get(&v) <= 0))
}

impl FilterPlugin for InterPodAffinity {
    fn filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Status {
        let Some(s) = state.read::<PreFilterState>(PRE_FILTER_STATE_KEY) else {
            return missing_state(PRE_FILTER_STATE_KEY);
        };
        // A node of the snapshot: one bit of the state's verdicts (computed once, in
        // O(words + nodes of the counted domains)); the per-node checks below run for
        // other nodes and to name a rejection's reason.
        if let Some(pos) = snap.position(node)
            && let Some(bits) = s.verdicts(pod, snap)
            && bits[pos / 64] >> (pos % 64) & 1 == 1
        {
            return Status::success();
        }
        if !satisfies_affinity(s, pod, node, snap) {
            return Status::unresolvable(ERR_REASON_AFFINITY);
        }
        if !satisfies_anti_affinity(s, pod, node, snap) {
            return Status::unschedulable(ERR_REASON_ANTI_AFFINITY);
        }
        if !satisfies_existing_anti_affinity(s, node, snap) {
            return Status::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY);
        }
        Status::success()
    }

    fn filter_mask(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        out: &mut [u64],
    ) -> bool {
        state
            .read::<PreFilterState>(PRE_FILTER_STATE_KEY)
            .is_some_and(|s| super::mask::filter_mask(s, pod, snap, out))
    }
}
