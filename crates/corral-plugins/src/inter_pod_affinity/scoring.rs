//! PreScore (weights per topology pair), Score and NormalizeScore.

use std::sync::Arc;

use super::{InterPodAffinity, PRE_SCORE_STATE_KEY, TopologyMap, ValueMap, incoming_term_matches};
use crate::domains::{DOMAIN_MISSING, KeyDomains};
use crate::framework::{
    CycleState, MAX_NODE_SCORE, NodeScore, NormalizeScorePlugin, PreScorePlugin, ScorePlugin,
    Status,
};
#[cfg(test)]
use crate::labels::Labels;
use crate::pod_index::TermKind;
#[cfg(test)]
use crate::snapshot::WeightedAffinityTerm;
use crate::snapshot::{AffinityTerm, LABEL_HOSTNAME, NodeInfo, PodInfo, Snapshot};

/// PreScore state: score per topology pair (zero entries kept, like kube's map).
#[derive(Debug, Clone, Default)]
struct PreScoreState {
    scores: TopologyMap,
    /// Index of the hostname key in `scores` when its values can be looked up by node
    /// name (see [`host_values_are_node_names`]).
    host_by_name: Option<usize>,
    /// With `host_by_name`: the hostname key's scores by node position (sorted by
    /// position; the node named by each value), for `nodes_version`.
    host_by_pos: Vec<(usize, i64)>,
    /// Per key of `scores`: its scores per value id of the snapshot's topology-domain
    /// index for that key (keys with few values), so Score reads a node's value id
    /// by position instead of looking its label up; `None`: the label path.
    by_domain: Vec<Option<DomainScores>>,
    /// The snapshot `nodes_version` `by_domain` was built for.
    nodes_version: u64,
}

/// A key's scores per value id ([`KeyDomains`]); nodes lacking the key score 0.
#[derive(Debug, Clone)]
struct DomainScores {
    domains: Arc<KeyDomains>,
    per_id: Vec<i64>,
}

/// Keys with more values than this (e.g. hostnames) keep the label (or name) path.
const MAX_DOMAIN_VALUES: usize = 512;

fn domain_scores(key: &str, values: &ValueMap, snap: &Snapshot) -> Option<DomainScores> {
    let domains = snap.topology_domains(key);
    if domains.len() > MAX_DOMAIN_VALUES {
        return None;
    }
    let per_id = domains
        .values()
        .iter()
        .map(|v| values.get(v.as_str()).copied().unwrap_or(0))
        .collect();
    Some(DomainScores { domains, per_id })
}

/// True when, for the hostname key's values in `m`, looking a node's score up by its
/// name gives what looking it up by its hostname label gives: hostnames are unique
/// and each value is the hostname of the node of that name. Then the node of name
/// `v` is the only node whose hostname is `v`, and a node without the label has no
/// entry under its name (its name would be some `v`, whose node has the label).
fn host_values_are_node_names(m: &ValueMap, snap: &Snapshot) -> bool {
    snap.hostnames_unique()
        && m.keys().all(|v| {
            snap.node(v)
                .is_some_and(|n| n.labels.get(LABEL_HOSTNAME) == Some(v))
        })
}

impl InterPodAffinity {
    /// `processExistingPod`: contributions of one existing pod on a node with
    /// `labels` (the per-pod reference the indexed PreScore is tested against).
    #[cfg(test)]
    pub(super) fn process_existing_pod(
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
                                &node.labels,
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
                        acc.add(&node.labels, &t.topology_key, w, false);
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
        let host_by_name = scores
            .key_id(LABEL_HOSTNAME)
            .filter(|&i| host_values_are_node_names(&scores.values[i], snap));
        let host_by_pos = host_by_name.map_or_else(Vec::new, |i| {
            let mut v: Vec<(usize, i64)> = scores.values[i]
                .iter()
                .filter_map(|(name, &w)| Some((snap.position(snap.node(name)?)?, w)))
                .collect();
            v.sort_unstable_by_key(|&(p, _)| p);
            v
        });
        let by_domain = scores
            .keys
            .iter()
            .zip(&scores.values)
            .enumerate()
            .map(|(i, (k, values))| {
                if host_by_name == Some(i) {
                    None
                } else {
                    domain_scores(k, values, snap)
                }
            })
            .collect();
        state.write(
            PRE_SCORE_STATE_KEY,
            PreScoreState {
                scores,
                host_by_name,
                host_by_pos,
                by_domain,
                nodes_version: snap.nodes_version(),
            },
        );
        Status::success()
    }
}

impl PreScoreState {
    /// The node's score; `pos`: its position, when this state's position tables
    /// describe the snapshot (same `nodes_version` and the snapshot's own node).
    #[inline]
    fn node_score(&self, node: &NodeInfo, pos: Option<usize>) -> i64 {
        let mut score = 0i64;
        for (i, (k, values)) in self.scores.keys.iter().zip(&self.scores.values).enumerate() {
            if let (Some(pos), Some(Some(d))) = (pos, self.by_domain.get(i)) {
                // A value id by position and a table read.
                score += match d.domains.id_at(pos) {
                    DOMAIN_MISSING => 0,
                    id => d.per_id.get(id as usize).copied().unwrap_or(0),
                };
            } else if self.host_by_name == Some(i) {
                // No label lookup (string compares) per node.
                score += match pos {
                    Some(pos) => self
                        .host_by_pos
                        .binary_search_by_key(&pos, |&(p, _)| p)
                        .map_or(0, |j| self.host_by_pos[j].1),
                    None => values.get(&*node.name).copied().unwrap_or(0),
                };
            } else if let Some(v) = node.labels.get(k) {
                score += values.get(v.as_str()).copied().unwrap_or(0);
            }
        }
        score
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
        let pos = if s.nodes_version == snap.nodes_version() {
            snap.position(node)
        } else {
            None
        };
        Ok(s.node_score(node, pos))
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
        let current = s.nodes_version == snap.nodes_version();
        out.reserve(positions.len());
        for &i in positions {
            let node = &all[i];
            let score = s.node_score(node, Some(i).filter(|_| current));
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
