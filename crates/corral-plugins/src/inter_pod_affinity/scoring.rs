//! PreScore (weights per topology pair), Score and NormalizeScore.

use super::{InterPodAffinity, PRE_SCORE_STATE_KEY, TopologyMap, incoming_term_matches};
use crate::domains::DOMAIN_MISSING;
use crate::framework::{
    CycleState, MAX_NODE_SCORE, NodeScore, NormalizeScorePlugin, PreScorePlugin, ScorePlugin,
    Status,
};
use crate::pod_index::TermKind;
#[cfg(test)]
use crate::snapshot::WeightedAffinityTerm;
use crate::snapshot::{AffinityTerm, NodeInfo, PodInfo, Snapshot};

/// PreScore state: score per topology pair (zero entries kept, like kube's map).
#[derive(Debug, Clone, Default)]
struct PreScoreState {
    scores: TopologyMap,
    /// Per key of `scores`, for keys with few values whose domain index describes
    /// `nodes_version`: the scores per value id, so Score reads a node's value id by
    /// position and then a table; `None`: the per-key id map.
    by_domain: Vec<Option<Vec<i64>>>,
    /// The snapshot `nodes_version` every key's domain index describes, if they all
    /// describe the same one (then Score looks nodes up by position).
    nodes_version: Option<u64>,
}

/// Keys with more values than this (e.g. hostnames) keep the id map.
const MAX_DOMAIN_VALUES: usize = 512;

impl InterPodAffinity {
    /// `processExistingPod`: contributions of one existing pod on `node` (the
    /// per-pod reference the indexed PreScore is tested against).
    #[cfg(test)]
    pub(super) fn process_existing_pod(
        &self,
        pod: &PodInfo,
        existing: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
        out: &mut TopologyMap,
    ) {
        if node.labels.is_empty() {
            return;
        }
        let process_incoming =
            |terms: &[WeightedAffinityTerm], sign: i64, out: &mut TopologyMap| {
                for t in terms {
                    if incoming_term_matches(&t.term, existing, snap) {
                        out.add(
                            node,
                            snap,
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
                        node,
                        snap,
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
                        node,
                        snap,
                        &t.term.topology_key,
                        sign * i64::from(t.weight),
                        false,
                    );
                }
            }
        }
    }
}

impl InterPodAffinity {
    /// `processExistingPod` summed over every existing pod, split in its two halves
    /// so each visits only the pods that can contribute (pod index): the incoming
    /// pod's preferred terms against the pods their selectors can match (all pods for
    /// a selector without an `In` requirement), and the existing pods' terms that can
    /// match the incoming pod. The sums equal the per-pod loop's.
    pub(super) fn pre_score_indexed(
        &self,
        pod: &PodInfo,
        snap: &Snapshot,
        incoming: bool,
    ) -> TopologyMap {
        let idx = snap.pod_index();
        let mut acc = TopologyMap::default();
        if incoming {
            for (terms, sign) in [
                (&pod.preferred_affinity_terms, 1i64),
                (&pod.preferred_anti_affinity_terms, -1),
            ] {
                for t in terms {
                    let visit = |existing: &PodInfo, node: &NodeInfo, acc: &mut TopologyMap| {
                        if !node.labels.is_empty() && incoming_term_matches(&t.term, existing, snap)
                        {
                            acc.add(
                                node,
                                snap,
                                &t.term.topology_key,
                                sign * i64::from(t.weight),
                                false,
                            );
                        }
                    };
                    match idx.candidates(&t.term.selector) {
                        Some(cands) => {
                            for e in cands {
                                if let Some(node) = snap.node(&e.node) {
                                    visit(&e.pod, node, &mut acc);
                                }
                            }
                        }
                        None => {
                            for node in snap.nodes() {
                                for existing in &node.pods {
                                    visit(existing, node, &mut acc);
                                }
                            }
                        }
                    }
                }
            }
        }
        let ns_labels = snap.namespace_labels(&pod.namespace);
        let kinds = [
            (
                TermKind::RequiredAffinity,
                i64::from(self.hard_pod_affinity_weight),
            ),
            (TermKind::PreferredAffinity, 1),
            (TermKind::PreferredAntiAffinity, -1),
        ];
        for (kind, sign) in kinds {
            if kind == TermKind::RequiredAffinity && self.hard_pod_affinity_weight <= 0 {
                continue;
            }
            for e in idx.terms_matching(kind, &pod.labels) {
                let Some(node) = snap.node(&e.node) else {
                    continue;
                };
                if node.labels.is_empty() {
                    continue;
                }
                let add = |acc: &mut TopologyMap, t: &AffinityTerm, w: i64| {
                    if t.matches(pod, ns_labels) {
                        acc.add(node, snap, &t.topology_key, w, false);
                    }
                };
                match kind {
                    TermKind::RequiredAffinity => {
                        for t in &e.pod.required_affinity_terms {
                            add(&mut acc, t, sign);
                        }
                    }
                    TermKind::PreferredAffinity => {
                        for t in &e.pod.preferred_affinity_terms {
                            add(&mut acc, &t.term, sign * i64::from(t.weight));
                        }
                    }
                    TermKind::PreferredAntiAffinity => {
                        for t in &e.pod.preferred_anti_affinity_terms {
                            add(&mut acc, &t.term, sign * i64::from(t.weight));
                        }
                    }
                    TermKind::RequiredAntiAffinity => {}
                }
            }
        }
        acc
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
        let scores = self.pre_score_indexed(pod, snap, has_constraints);
        // kube skips when no topology key got an entry (entries summing to 0 count).
        if scores.keys.is_empty() {
            return Status::skip();
        }
        let version = snap.nodes_version();
        let current = scores
            .keys
            .iter()
            .all(|k| k.domains.nodes_version() == version);
        let by_domain = scores
            .keys
            .iter()
            .map(|k| {
                (current && k.domains.len() <= MAX_DOMAIN_VALUES).then(|| {
                    (0..k.domains.len())
                        .map(|id| k.by_id.get(&id).copied().unwrap_or(0))
                        .collect()
                })
            })
            .collect();
        state.write(
            PRE_SCORE_STATE_KEY,
            PreScoreState {
                scores,
                by_domain,
                nodes_version: current.then_some(version),
            },
        );
        Status::success()
    }
}

impl PreScoreState {
    /// The node's score; `pos`: its position, when this state's domain indexes
    /// describe the snapshot (same `nodes_version` and the snapshot's own node).
    #[inline]
    fn node_score(&self, node: &NodeInfo, pos: Option<usize>, snap: &Snapshot) -> i64 {
        let mut score = 0i64;
        for (k, dense) in self.scores.keys.iter().zip(&self.by_domain) {
            score += match pos {
                // A value id by position and a table read or an integer probe.
                Some(pos) => match (k.domains.id_at(pos), dense) {
                    (DOMAIN_MISSING, _) => 0,
                    (id, Some(d)) => d.get(id as usize).copied().unwrap_or(0),
                    (id, None) => k.by_id.get(&(id as usize)).copied().unwrap_or(0),
                },
                None => k.value_of(node, snap).map_or(0, |v| k.get(&v)),
            };
        }
        score
    }

    /// The position tables describe `snap`.
    #[inline]
    fn current(&self, snap: &Snapshot) -> bool {
        self.nodes_version == Some(snap.nodes_version())
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(
        &self,
        state: &CycleState,
        _pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Result<i64, Status> {
        // No state: PreScore skipped, nothing contributes.
        let Some(s) = state.read::<PreScoreState>(PRE_SCORE_STATE_KEY) else {
            return Ok(0);
        };
        // The node's position, when the position tables describe this snapshot.
        let pos = if s.current(snap) {
            snap.position(node)
        } else {
            None
        };
        Ok(s.node_score(node, pos, snap))
    }

    /// The state is read once per pod, and nodes are looked up by position.
    fn score_positions(
        &self,
        state: &CycleState,
        _pod: &PodInfo,
        snap: &Snapshot,
        positions: &[usize],
        out: &mut Vec<NodeScore>,
    ) -> Result<(), Status> {
        let all = snap.nodes();
        let Some(s) = state.read::<PreScoreState>(PRE_SCORE_STATE_KEY) else {
            out.extend(positions.iter().map(|&i| NodeScore { node: i, score: 0 }));
            return Ok(());
        };
        let current = s.current(snap);
        out.reserve(positions.len());
        for &i in positions {
            let node = &all[i];
            let score = s.node_score(node, Some(i).filter(|_| current), snap);
            out.push(NodeScore { node: i, score });
        }
        Ok(())
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
