//! Per-class cache of node-local scores and the weighted score totals of a pod.
//!
//! A pod's total on a node is `Σ weight × normalized score` over its active Score
//! plugins. For a node-local plugin without normalization ([`ScorePlugin::rescorable`])
//! the normalized score is the raw score, a pure function of (class, node), so the
//! cache keeps their weighted **sum** per node: one probe per node instead of one per
//! plugin. Node-local plugins with a normalization (TaintToleration, NodeAffinity)
//! depend on the set of scored nodes through it, so their raw scores are kept in the
//! same cell and normalized per pod over its own feasible nodes, exactly as
//! kube-scheduler does; cross-node plugins are scored live.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::*;
use crate::snapshot::{PodInfo, Snapshot};

/// Generation of an empty cell (node generations never reach it).
const EMPTY_CELL: u64 = u64::MAX;

/// Cache of one equivalence class's node-local scores: per node one cell, valid for
/// the node generation it was computed at, holding the weighted sum of the active
/// rescorable plugins' scores (column 0) and the raw score of each node-local plugin
/// with a normalization (one column each). Cells are filled concurrently by the
/// pods of a batch: every filler of a cell computes the same values (same class,
/// same node generation; the snapshot is immutable during evaluation), the values
/// are stored before the generation (release) and read after it (acquire).
pub struct LocalScoreCache {
    /// Per score plugin: the column (minus one) of its raw score, for node-local
    /// plugins with a normalization.
    raw_col: Vec<Option<usize>>,
    /// Values per node: 1 + the number of normalized node-local plugins.
    width: usize,
    gens: Vec<AtomicU64>,
    vals: Vec<AtomicI64>,
    /// The active node-local Score plugins (bit per position in `Framework::score`)
    /// the cells are computed for; `EMPTY_CELL` until the first pod claims it. A
    /// pod of the class whose PreScore skipped a different set is scored uncached.
    key: AtomicU64,
    num_nodes: usize,
}

impl LocalScoreCache {
    /// A cache for `fw`'s node-local score plugins over `num_nodes` nodes.
    pub fn new(fw: &Framework, num_nodes: usize) -> Self {
        let mut n = 0;
        let raw_col: Vec<Option<usize>> = fw
            .score
            .iter()
            .map(|s| {
                (s.plugin.node_local() && s.plugin.normalize().is_some()).then(|| {
                    n += 1;
                    n - 1
                })
            })
            .collect();
        let width = 1 + n;
        LocalScoreCache {
            raw_col,
            width,
            gens: (0..num_nodes).map(|_| AtomicU64::new(EMPTY_CELL)).collect(),
            vals: (0..num_nodes * width).map(|_| AtomicI64::new(0)).collect(),
            key: AtomicU64::new(EMPTY_CELL),
            num_nodes,
        }
    }

    /// Drops cached scores of nodes changed since they were computed.
    pub fn invalidate_stale(&mut self, snap: &Snapshot) {
        let nodes = snap.nodes();
        if self.num_nodes != nodes.len() {
            *self = LocalScoreCache {
                raw_col: std::mem::take(&mut self.raw_col),
                width: self.width,
                gens: (0..nodes.len())
                    .map(|_| AtomicU64::new(EMPTY_CELL))
                    .collect(),
                vals: (0..nodes.len() * self.width)
                    .map(|_| AtomicI64::new(0))
                    .collect(),
                key: AtomicU64::new(EMPTY_CELL),
                num_nodes: nodes.len(),
            };
            return;
        }
        for (g, node) in self.gens.iter_mut().zip(nodes) {
            let g = g.get_mut();
            if *g != EMPTY_CELL && *g != node.generation {
                *g = EMPTY_CELL;
            }
        }
    }

    /// Nodes with a filled cell (for tests and diagnostics).
    pub fn filled(&self) -> usize {
        self.gens
            .iter()
            .filter(|g| g.load(Ordering::Relaxed) != EMPTY_CELL)
            .count()
    }

    /// Whether the cells hold (or may now hold) scores for the active node-local
    /// plugins `key`; the first caller fixes it.
    fn claim(&self, key: u64) -> bool {
        match self
            .key
            .compare_exchange(EMPTY_CELL, key, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(k) => k == key,
        }
    }
}

/// A pod's weighted score per scored node (same order as the nodes passed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreTotals {
    /// `Σ weight × normalized score` over the active Score plugins.
    pub totals: Vec<i64>,
    /// The part of `totals` from rescorable plugins (node-local, no normalization),
    /// which the batch committer recomputes against the latest node state.
    pub locals: Vec<i64>,
}

impl Framework {
    /// Scores `nodes` (snapshot indices) and returns each node's weighted total:
    /// the same as weighting and summing [`Framework::run_score`]'s per-plugin
    /// scores, reading node-local scores through `cache` (shared by the pods of one
    /// equivalence class) when given. Any error is the one `run_score` returns.
    pub fn run_score_totals(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        nodes: &[usize],
        cache: Option<&LocalScoreCache>,
    ) -> Result<ScoreTotals, Status> {
        // Timed cycles take the per-plugin path, which times each plugin call.
        if let Some(c) = cache.filter(|_| self.plugin_observer(state).is_none()) {
            let key = self.active_node_local_scores(state);
            if c.claim(key)
                && let Some(t) = self.totals_cached(state, pod, snap, nodes, c, key)
            {
                return Ok(t);
            }
        }
        self.totals_uncached(state, pod, snap, nodes)
    }

    /// Bit i set: the i-th Score plugin is node-local and not skipped for this pod.
    fn active_node_local_scores(&self, state: &CycleState) -> u64 {
        let mut m = 0;
        for (i, ws) in self.score.iter().enumerate() {
            let bit = 1u64 << (i & 63);
            if ws.plugin.node_local() && state.score_skip_mask & bit == 0 {
                m |= bit;
            }
        }
        m
    }

    /// Per-plugin scores ([`Framework::run_score`]) weighted and summed.
    fn totals_uncached(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        nodes: &[usize],
    ) -> Result<ScoreTotals, Status> {
        let scores = self.run_score(state, pod, snap, nodes)?;
        // Not `vec![0; n]`: that asks the allocator for zeroed memory, whose aligned
        // path costs ~4k instructions per call with mimalloc (callgrind, basic).
        let mut totals: Vec<i64> = nodes.iter().map(|_| 0).collect();
        let mut locals = totals.clone();
        for (ws, s) in self.score.iter().zip(&scores) {
            let Some(s) = s else { continue };
            let w = ws.weight;
            for (t, v) in totals.iter_mut().zip(s) {
                *t += v * w;
            }
            if ws.plugin.rescorable() {
                for (l, v) in locals.iter_mut().zip(s) {
                    *l += v * w;
                }
            }
        }
        Ok(ScoreTotals { totals, locals })
    }

    /// The cached path; `None` on any error or out-of-range score (the caller then
    /// takes the uncached path, which reports it exactly as `run_score` does).
    ///
    /// A normalized node-local plugin whose raw scores are equal on every scored
    /// node and whose normalization depends only on a node's own score and the
    /// set's maximum ([`NormalizeScorePlugin::by_max_only`], kube's
    /// `DefaultNormalizeScore`) gives every node the value a one-node set gets: it
    /// is normalized once, not per node (TaintToleration for pods without
    /// PreferNoSchedule tolerations on untainted nodes).
    fn totals_cached(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        nodes: &[usize],
        c: &LocalScoreCache,
        key: u64,
    ) -> Option<ScoreTotals> {
        let all = snap.nodes();
        if c.num_nodes != all.len() || nodes.is_empty() {
            return None;
        }
        let w = c.width;
        // Active normalized node-local plugins: (plugin index, column).
        let normalized: Vec<(usize, usize)> = c
            .raw_col
            .iter()
            .enumerate()
            .filter_map(|(pi, col)| {
                col.filter(|_| key & (1u64 << (pi & 63)) != 0)
                    .map(|k| (pi, k))
            })
            .collect();
        let mut locals = Vec::with_capacity(nodes.len());
        // Per active normalized plugin: the first node's raw score, and whether
        // every node had it.
        let mut first: Vec<i64> = Vec::with_capacity(normalized.len());
        let mut uniform: Vec<bool> = vec![true; normalized.len()];
        for &i in nodes {
            let node = &all[i];
            let cell = &c.vals[i * w..(i + 1) * w];
            if c.gens[i].load(Ordering::Acquire) != node.generation {
                let mut sum = 0;
                for (pi, ws) in self.score.iter().enumerate() {
                    if key & (1u64 << (pi & 63)) == 0 {
                        continue;
                    }
                    let s = ws.plugin.score(state, pod, node, snap).ok()?;
                    match c.raw_col[pi] {
                        Some(col) => cell[1 + col].store(s, Ordering::Relaxed),
                        None if (MIN_NODE_SCORE..=MAX_NODE_SCORE).contains(&s) => {
                            sum += s * ws.weight
                        }
                        None => return None,
                    }
                }
                cell[0].store(sum, Ordering::Relaxed);
                c.gens[i].store(node.generation, Ordering::Release);
            }
            locals.push(cell[0].load(Ordering::Relaxed));
            for (k, &(_, col)) in normalized.iter().enumerate() {
                let r = cell[1 + col].load(Ordering::Relaxed);
                match first.get(k) {
                    None => first.push(r),
                    Some(&f) => uniform[k] &= f == r,
                }
            }
        }
        // Added to every node (uniform normalized plugins) / per node (the others).
        let mut constant = 0i64;
        let mut extra: Option<Vec<i64>> = None;
        let add =
            |extra: &mut Option<Vec<i64>>, pi: usize, scores: &mut [NodeScore]| -> Option<()> {
                let ws = &self.score[pi];
                if let Some(n) = ws.plugin.normalize()
                    && !n.normalize_score(state, pod, scores).is_success()
                {
                    return None;
                }
                let e = extra.get_or_insert_with(|| nodes.iter().map(|_| 0).collect());
                for (t, s) in e.iter_mut().zip(scores.iter()) {
                    if !(MIN_NODE_SCORE..=MAX_NODE_SCORE).contains(&s.score) {
                        return None;
                    }
                    *t += s.score * ws.weight;
                }
                Some(())
            };
        for (k, &(pi, col)) in normalized.iter().enumerate() {
            let ws = &self.score[pi];
            if uniform[k]
                && let Some(n) = ws.plugin.normalize()
                && n.by_max_only()
            {
                let mut one = [NodeScore {
                    node: nodes[0],
                    score: first[k],
                }];
                if !n.normalize_score(state, pod, &mut one).is_success()
                    || !(MIN_NODE_SCORE..=MAX_NODE_SCORE).contains(&one[0].score)
                {
                    return None;
                }
                constant += one[0].score * ws.weight;
                continue;
            }
            let mut raw: Vec<NodeScore> = nodes
                .iter()
                .map(|&i| NodeScore {
                    node: i,
                    score: c.vals[i * w + 1 + col].load(Ordering::Relaxed),
                })
                .collect();
            add(&mut extra, pi, &mut raw)?;
        }
        // Cross-node plugins, live.
        let mut scores: Vec<NodeScore> = Vec::new();
        for (pi, ws) in self.score.iter().enumerate() {
            let bit = 1u64 << (pi & 63);
            if ws.plugin.node_local() || state.score_skip_mask & bit != 0 {
                continue;
            }
            scores.clear();
            ws.plugin
                .score_positions(state, pod, snap, nodes, &mut scores)
                .ok()?;
            add(&mut extra, pi, &mut scores)?;
        }
        let totals = match &extra {
            Some(e) => locals
                .iter()
                .zip(e)
                .map(|(l, x)| l + constant + x)
                .collect(),
            None => locals.iter().map(|l| l + constant).collect(),
        };
        Some(ScoreTotals { totals, locals })
    }
}
