//! PreScore, Score and NormalizeScore.

use super::*;
use crate::framework::StateKey;

/// PreScore's state, read by slot (Score reads it once per pod, or per node).
static PRE_SCORE: StateKey = StateKey::new(PRE_SCORE_KEY);

#[derive(Debug, Clone)]
pub(super) struct PreScoreState {
    pub(super) constraints: Vec<Constraint>,
    /// Per constraint (hostname constraints: empty, counted per node in Score).
    pub(super) counts: Vec<FxMap<i64>>,
    pub(super) weights: Vec<f64>,
    /// Snapshot indices of scored nodes missing a topology key, sorted.
    pub(super) ignored: Vec<usize>,
    /// The snapshot's domain index per constraint key, at `nodes_version`.
    pub(super) keys: Vec<Arc<KeyDomains>>,
    pub(super) nodes_version: u64,
    /// Per constraint: Score's term for the snapshot's own nodes.
    pub(super) terms: Vec<Term>,
}

/// One constraint's Score term for a node of the snapshot, read by position: a few
/// array reads per node.
#[derive(Debug, Clone)]
pub(super) enum Term {
    /// Not the hostname: `count × weight + (maxSkew − 1)` per domain id of the key
    /// (empty: every count is 0).
    Domain(Vec<f64>),
    /// Hostname: the nodes holding matching pods (one bit per position) and their
    /// counts by position, sorted (from the pod index): no per-node array to clear.
    Host {
        any: Vec<u64>,
        counts: Vec<(usize, u32)>,
    },
    /// Hostname with a selector the pod index cannot serve: counted on the node.
    HostOnNode,
}

/// How [`PodTopologySpread`]'s `score_positions` scores a pod's nodes.
enum Bulk {
    /// One non-hostname constraint: the rounded score per domain id.
    ByDomain(Vec<i64>),
    /// Hostname constraints only, every snapshot node has the key and none is
    /// ignored: the score of a node holding no matching pod.
    HostOnly(i64),
    /// [`PreScoreState::score_at`] per node.
    PerNode,
}

/// `math.Round` of a raw score, exact: round half away from zero. Scores are
/// non-negative; the cheap path (no libm call) covers them, anything else takes
/// `f64::round`.
#[inline]
pub(super) fn round_score(x: f64) -> i64 {
    if (0.0..4.0e15).contains(&x) {
        // `x - trunc(x)` is exact for every finite `x`.
        let t = x as i64;
        if x - t as f64 >= 0.5 { t + 1 } else { t }
    } else {
        x.round() as i64
    }
}

impl PreScoreState {
    #[inline]
    pub(super) fn is_ignored(&self, idx: usize) -> bool {
        !self.ignored.is_empty() && self.ignored.binary_search(&idx).is_ok()
    }

    /// How `score_positions` scores `n` nodes of the snapshot PreScore saw; every
    /// shortcut gives exactly [`Self::score_at`]'s value (same additions in the same
    /// order: `0 × w + base` is `base`).
    fn bulk_plan(&self, n: usize) -> Bulk {
        if let ([c], [k], [Term::Domain(t)]) =
            (&self.constraints[..], &self.keys[..], &self.terms[..])
            && k.len() <= n
        {
            let base = (c.max_skew - 1) as f64;
            return Bulk::ByDomain(
                (0..k.len())
                    .map(|id| round_score(0.0 + t.get(id).copied().unwrap_or(base)))
                    .collect(),
            );
        }
        let host_only = self.terms.iter().all(|t| matches!(t, Term::Host { .. }))
            && self.ignored.is_empty()
            && self.keys.iter().all(|k| k.missing() == 0);
        if host_only {
            let mut empty = 0.0;
            for c in &self.constraints {
                empty += (c.max_skew - 1) as f64;
            }
            return Bulk::HostOnly(round_score(empty));
        }
        Bulk::PerNode
    }

    /// The raw score of the snapshot's node at `pos` (`node`), the snapshot being
    /// the one PreScore saw (`nodes_version`): domains by position, hostname counts
    /// from PreScore's per-node table.
    #[inline]
    pub(super) fn score_at(&self, pod: &PodInfo, node: &NodeInfo, pos: usize) -> i64 {
        if self.is_ignored(pos) {
            return 0;
        }
        let mut score = 0.0;
        for (ci, (c, w)) in self.constraints.iter().zip(self.weights.iter()).enumerate() {
            let id = self.keys[ci].id_at(pos);
            if id == DOMAIN_MISSING {
                continue;
            }
            let base = (c.max_skew - 1) as f64;
            score += match &self.terms[ci] {
                Term::Domain(t) => t.get(id as usize).copied().unwrap_or(base),
                Term::Host { any, counts } => {
                    let n = if any.get(pos / 64).is_some_and(|b| b >> (pos % 64) & 1 == 1) {
                        counts
                            .binary_search_by_key(&pos, |e| e.0)
                            .map_or(0, |i| counts[i].1)
                    } else {
                        0
                    };
                    n as f64 * w + base
                }
                Term::HostOnNode => c.count_on(node, &pod.namespace) as f64 * w + base,
            };
        }
        round_score(score)
    }
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        nodes: &[&NodeInfo],
    ) -> Status {
        if nodes.is_empty() || snap.num_nodes() == 0 {
            return Status::skip();
        }
        let constraints = match self.constraints(pod) {
            Ok((_, soft)) => soft,
            Err(e) => return Status::error(format!("invalid topology spread constraints: {e}")),
        };
        if constraints.is_empty() {
            return Status::skip();
        }
        // Only require all topology labels with non-system-default rules, so nodes
        // without a zone label still get hostname spreading.
        let has_own = pod
            .spec()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .is_some_and(|c| !c.is_empty());
        let require_all = has_own || !self.system_defaulted;
        let mut counts: Vec<FxMap<i64>> = vec![FxMap::default(); constraints.len()];
        let mut ignored = Vec::new();
        let keys: Vec<Arc<KeyDomains>> = constraints
            .iter()
            .map(|c| snap.topology_domains(&c.topology_key))
            .collect();
        let is_host: Vec<bool> = constraints
            .iter()
            .map(|c| c.topology_key == LABEL_HOSTNAME)
            .collect();
        // Domains present among the scored nodes, by id (the last slot: key missing,
        // value ""), for the snapshot's own nodes; other nodes by label lookup.
        let mut present: Vec<Vec<bool>> = keys
            .iter()
            .zip(&is_host)
            .map(|(k, &h)| {
                if h {
                    Vec::new()
                } else {
                    vec![false; k.len() + 1]
                }
            })
            .collect();
        // Hostname constraints only (no domain to mark), and no snapshot node can be
        // ignored (missing keys are not required, or no snapshot node lacks one): a
        // snapshot node adds nothing here, only other nodes are read.
        let trivial_positions =
            is_host.iter().all(|&h| h) && (!require_all || keys.iter().all(|k| k.missing() == 0));
        for n in nodes {
            if let Some(pos) = snap.position(n) {
                if trivial_positions {
                    continue;
                }
                if require_all && keys.iter().any(|k| k.id_at(pos) == DOMAIN_MISSING) {
                    ignored.push(pos);
                    continue;
                }
                for (k, p) in keys.iter().zip(present.iter_mut()) {
                    if !p.is_empty() {
                        let id = k.id_at(pos);
                        let slot = if id == DOMAIN_MISSING {
                            k.len()
                        } else {
                            id as usize
                        };
                        p[slot] = true;
                    }
                }
                continue;
            }
            if require_all && !has_all_keys(&n.labels, &constraints) {
                if let Some(i) = snap.node_index(&n.name) {
                    ignored.push(i);
                }
                continue;
            }
            for (c, m) in constraints.iter().zip(counts.iter_mut()) {
                if c.topology_key == LABEL_HOSTNAME {
                    continue;
                }
                let v = n.labels.get(&c.topology_key).map_or("", String::as_str);
                if !m.contains_key(v) {
                    m.insert(v.to_string(), 0);
                }
            }
        }
        for ((k, p), m) in keys.iter().zip(&present).zip(counts.iter_mut()) {
            for (slot, _) in p.iter().enumerate().filter(|(_, on)| **on) {
                let v = if slot == k.len() {
                    ""
                } else {
                    k.value(slot as u32)
                };
                if !m.contains_key(v) {
                    m.insert(v.to_string(), 0);
                }
            }
        }
        ignored.sort_unstable();
        ignored.dedup();
        let weights: Vec<f64> = constraints
            .iter()
            .zip(counts.iter())
            .map(|(c, m)| {
                let size = if c.topology_key == LABEL_HOSTNAME {
                    nodes.len().saturating_sub(ignored.len())
                } else {
                    m.len()
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        let required = match RequiredNodeAffinity::from_pod(pod) {
            Ok(r) => r,
            Err(e) => return Status::error(format!("invalid node affinity: {e}")),
        };
        // Like PreFilter: eligible nodes are marked, matching pods counted through
        // the pod index when possible; no node is visited for a constraint whose
        // inclusion policies admit every node when every node has the keys (or
        // missing keys don't exclude nodes).
        // Hostname constraints count per node in Score (their map stays empty).
        let el = Eligibility::plan(
            &constraints,
            &keys,
            &required,
            snap,
            pod,
            require_all,
            |ci| !counts[ci].is_empty(),
        );
        let idx = snap.pod_index();
        // A node's value of key `ci` ("" when missing, like the label lookup).
        let value_at = |ci: usize, ni: usize| -> &str {
            let k = &keys[ci];
            match k.id_at(ni) {
                DOMAIN_MISSING => "",
                id => k.value(id),
            }
        };
        el.for_each_included(&keys, snap.nodes(), |ci, ni, node| {
            if let Some(cnt) = counts[ci].get_mut(value_at(ci, ni)) {
                *cnt += constraints[ci].count_on(node, &pod.namespace);
            }
        });
        for (ci, c) in constraints.iter().enumerate() {
            if counts[ci].is_empty() || !el.indexed[ci] {
                continue;
            }
            for e in idx.candidates(&c.selector).into_iter().flatten() {
                if !c.counts(&e.pod, &pod.namespace) {
                    continue;
                }
                let Some(ni) = snap.node_index(&e.node) else {
                    continue;
                };
                if !el.admits(&keys, ci, ni) {
                    continue;
                }
                if let Some(cnt) = counts[ci].get_mut(value_at(ci, ni)) {
                    *cnt += 1;
                }
            }
        }
        // Score's term per constraint by domain id (other keys) or node position
        // (hostname: each node's matching pods, through the pod index).
        let terms = constraints
            .iter()
            .zip(&keys)
            .zip(&counts)
            .zip(&is_host)
            .zip(&weights)
            .map(|((((c, k), m), &h), &w)| {
                let base = (c.max_skew - 1) as f64;
                if !h {
                    if m.is_empty() {
                        return Term::Domain(Vec::new());
                    }
                    return Term::Domain(
                        k.values()
                            .iter()
                            .map(|v| m.get(v.as_str()).copied().unwrap_or(0) as f64 * w + base)
                            .collect(),
                    );
                }
                let Some(cands) = idx.candidates(&c.selector) else {
                    return Term::HostOnNode;
                };
                let mut any = vec![0u64; snap.num_nodes().div_ceil(64)];
                let mut counts: Vec<(usize, u32)> = Vec::new();
                if !(c.selector.is_everything() || c.selector.is_nothing()) {
                    for e in cands {
                        if c.counts(&e.pod, &pod.namespace)
                            && let Some(ni) = snap.node_index(&e.node)
                        {
                            any[ni / 64] |= 1 << (ni % 64);
                            counts.push((ni, 1));
                        }
                    }
                }
                counts.sort_unstable();
                counts.dedup_by(|b, a| {
                    let same = a.0 == b.0;
                    if same {
                        a.1 += b.1;
                    }
                    same
                });
                Term::Host { any, counts }
            })
            .collect();
        state.put(
            &PRE_SCORE,
            Arc::new(PreScoreState {
                constraints,
                counts,
                weights,
                ignored,
                nodes_version: snap.nodes_version(),
                keys,
                terms,
            }),
        );
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Result<i64, Status> {
        let Some(s) = state.get::<Arc<PreScoreState>>(&PRE_SCORE) else {
            return Err(Status::error("PodTopologySpread: PreScore state not found"));
        };
        if s.nodes_version == snap.nodes_version()
            && let Some(pos) = snap.position(node)
        {
            return Ok(s.score_at(pod, node, pos));
        }
        if !s.ignored.is_empty() && snap.node_index(&node.name).is_some_and(|i| s.is_ignored(i)) {
            return Ok(0);
        }
        let mut score = 0.0;
        for ((c, m), w) in s
            .constraints
            .iter()
            .zip(s.counts.iter())
            .zip(s.weights.iter())
        {
            let Some(v) = node.labels.get(&c.topology_key) else {
                continue;
            };
            let cnt = if c.topology_key == LABEL_HOSTNAME {
                c.count_on(node, &pod.namespace)
            } else {
                m.get(v.as_str()).copied().unwrap_or(0)
            };
            score += cnt as f64 * w + (c.max_skew - 1) as f64;
        }
        Ok(round_score(score))
    }

    /// One state read per pod; each node's score from its position (the same
    /// [`PreScoreState::score_at`] as [`Self::score`]).
    fn score_positions(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        positions: &[usize],
        out: &mut Vec<NodeScore>,
    ) -> Result<(), Status> {
        let Some(s) = state.get::<Arc<PreScoreState>>(&PRE_SCORE) else {
            return Err(Status::error("PodTopologySpread: PreScore state not found"));
        };
        let all = snap.nodes();
        out.reserve(positions.len());
        if s.nodes_version != snap.nodes_version() {
            for &i in positions {
                let score = self.score(state, pod, &all[i], snap)?;
                out.push(NodeScore { node: i, score });
            }
            return Ok(());
        }
        match s.bulk_plan(positions.len()) {
            // Per domain id, the rounded score (a single non-hostname constraint).
            Bulk::ByDomain(table) => {
                let key = &s.keys[0];
                for &i in positions {
                    let score = match key.id_at(i) {
                        _ if s.is_ignored(i) => 0,
                        DOMAIN_MISSING => 0,
                        id => table[id as usize],
                    };
                    out.push(NodeScore { node: i, score });
                }
            }
            // Hostname constraints only: a node holding no matching pod scores the
            // sum of the `maxSkew - 1` terms.
            Bulk::HostOnly(empty) => {
                for &i in positions {
                    let hit = s.terms.iter().any(|t| match t {
                        Term::Host { any, .. } => {
                            any.get(i / 64).is_some_and(|b| b >> (i % 64) & 1 == 1)
                        }
                        _ => true,
                    });
                    let score = if hit {
                        s.score_at(pod, &all[i], i)
                    } else {
                        empty
                    };
                    out.push(NodeScore { node: i, score });
                }
            }
            Bulk::PerNode => {
                for &i in positions {
                    out.push(NodeScore {
                        node: i,
                        score: s.score_at(pod, &all[i], i),
                    });
                }
            }
        }
        Ok(())
    }

    fn normalize(&self) -> Option<&dyn NormalizeScorePlugin> {
        Some(self)
    }
}

impl NormalizeScorePlugin for PodTopologySpread {
    fn normalize_score(&self, state: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) -> Status {
        let Some(s) = state.get::<Arc<PreScoreState>>(&PRE_SCORE) else {
            return Status::success();
        };
        let mut min = i64::MAX;
        let mut max = 0;
        for ns in scores.iter() {
            if s.is_ignored(ns.node) {
                continue;
            }
            min = min.min(ns.score);
            max = max.max(ns.score);
        }
        for ns in scores.iter_mut() {
            ns.score = if s.is_ignored(ns.node) {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - ns.score) / max
            };
        }
        Status::success()
    }
}
