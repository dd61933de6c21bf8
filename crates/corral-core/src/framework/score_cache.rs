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

/// Cache of one equivalence class's node-local scores, dense by node position: per
/// node one generation stamp (the node generation the node's values were computed
/// at), the weighted sum of the active rescorable plugins' scores (`sums`) and the
/// raw score of each node-local plugin with a normalization (`raws`, one column
/// each). Cells are filled concurrently by the pods of a batch: every filler of a
/// cell computes the same values (same class, same node generation; the snapshot is
/// immutable during evaluation), the values are stored before the generation
/// (release) and read after it (acquire).
///
/// Freshness: [`LocalScoreCache::invalidate_stale`] (run between batches) empties
/// the cells of changed nodes and records the snapshot's (generation,
/// nodes_version). While the snapshot still has that stamp (the parallel phase of a
/// batch: no node changed since), a filled cell is current without reading its
/// node's generation, so the gather of a pod's totals is a read of the dense
/// arrays; after a commit (the committer's re-evaluations) every cell is checked
/// against its node's generation as before.
pub struct LocalScoreCache {
    /// Per score plugin: the column of its raw score in `raws`, for node-local
    /// plugins with a normalization.
    raw_col: Vec<Option<usize>>,
    gens: Vec<AtomicU64>,
    /// Per node: the weighted sum of the rescorable plugins' scores.
    sums: Vec<AtomicI64>,
    /// Per normalized node-local plugin (column), per node: its raw score.
    raws: Vec<Vec<AtomicI64>>,
    /// The active node-local Score plugins (bit per position in `Framework::score`)
    /// the cells are computed for; `EMPTY_CELL` until the first pod claims it. A
    /// pod of the class whose PreScore skipped a different set is scored uncached.
    key: AtomicU64,
    num_nodes: usize,
    /// The snapshot's (generation, nodes_version) when stale cells were last
    /// emptied (`(EMPTY_CELL, EMPTY_CELL)`: never, so not known fresh).
    fresh_at: (u64, u64),
}

fn empty_cells(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(EMPTY_CELL)).collect()
}

fn zeros(n: usize) -> Vec<AtomicI64> {
    (0..n).map(|_| AtomicI64::new(0)).collect()
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
        LocalScoreCache {
            raw_col,
            gens: empty_cells(num_nodes),
            sums: zeros(num_nodes),
            raws: (0..n).map(|_| zeros(num_nodes)).collect(),
            key: AtomicU64::new(EMPTY_CELL),
            num_nodes,
            fresh_at: (EMPTY_CELL, EMPTY_CELL),
        }
    }

    /// A cache for `snap`'s nodes, fresh for `snap` as it is now.
    pub fn for_snapshot(fw: &Framework, snap: &Snapshot) -> Self {
        let mut c = Self::new(fw, snap.num_nodes());
        c.fresh_at = (snap.generation(), snap.nodes_version());
        c
    }

    /// Drops cached scores of nodes changed since they were computed.
    pub fn invalidate_stale(&mut self, snap: &Snapshot) {
        self.invalidate_stale_with(snap, |_, _| {});
    }

    /// [`LocalScoreCache::invalidate_stale`], also calling `each(i, generation)` for
    /// every node (one read of each node for the caller's per-node cells too).
    pub fn invalidate_stale_with(&mut self, snap: &Snapshot, mut each: impl FnMut(usize, u64)) {
        let nodes = snap.nodes();
        if self.num_nodes != nodes.len() {
            let n = nodes.len();
            self.gens = empty_cells(n);
            self.sums = zeros(n);
            for r in &mut self.raws {
                *r = zeros(n);
            }
            self.key = AtomicU64::new(EMPTY_CELL);
            self.num_nodes = n;
            for (i, node) in nodes.iter().enumerate() {
                each(i, node.generation);
            }
        } else {
            for (i, (g, node)) in self.gens.iter_mut().zip(nodes).enumerate() {
                let g = g.get_mut();
                let ng = node.generation;
                if *g != EMPTY_CELL && *g != ng {
                    *g = EMPTY_CELL;
                }
                each(i, ng);
            }
        }
        self.fresh_at = (snap.generation(), snap.nodes_version());
    }

    /// True while no node of `snap` changed since the last
    /// [`LocalScoreCache::invalidate_stale`] (or [`LocalScoreCache::for_snapshot`]):
    /// every filled cell is then current.
    #[inline]
    pub fn fresh_for(&self, snap: &Snapshot) -> bool {
        self.fresh_at == (snap.generation(), snap.nodes_version())
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

    /// Computes node `i`'s cell of `c` (scores of the active node-local plugins
    /// `key`); `None` on a Score error or an out-of-range rescorable score.
    fn fill_cell(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        c: &LocalScoreCache,
        key: u64,
        i: usize,
    ) -> Option<()> {
        let node = &snap.nodes()[i];
        let mut sum = 0;
        for (pi, ws) in self.score.iter().enumerate() {
            if key & (1u64 << (pi & 63)) == 0 {
                continue;
            }
            let s = ws.plugin.score(state, pod, node, snap).ok()?;
            match c.raw_col[pi] {
                Some(col) => c.raws[col][i].store(s, Ordering::Relaxed),
                None if (MIN_NODE_SCORE..=MAX_NODE_SCORE).contains(&s) => sum += s * ws.weight,
                None => return None,
            }
        }
        c.sums[i].store(sum, Ordering::Relaxed);
        c.gens[i].store(node.generation, Ordering::Release);
        Some(())
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
        // Fresh (no node changed since stale cells were emptied): a filled cell is
        // current, no node is read. Else each cell is checked against its node.
        let fresh = c.fresh_for(snap);
        let mut locals = Vec::with_capacity(nodes.len());
        for &i in nodes {
            let g = c.gens[i].load(Ordering::Acquire);
            let current = if fresh {
                g != EMPTY_CELL
            } else {
                g == all[i].generation
            };
            if !current {
                self.fill_cell(state, pod, snap, c, key, i)?;
            }
            locals.push(c.sums[i].load(Ordering::Relaxed));
        }
        // Per active normalized plugin: the first node's raw score, and whether
        // every node had it.
        let first: Vec<i64> = normalized
            .iter()
            .map(|&(_, col)| c.raws[col][nodes[0]].load(Ordering::Relaxed))
            .collect();
        let uniform: Vec<bool> = normalized
            .iter()
            .zip(&first)
            .map(|(&(_, col), &f)| {
                let raw = &c.raws[col];
                nodes.iter().all(|&i| raw[i].load(Ordering::Relaxed) == f)
            })
            .collect();
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
                    score: c.raws[col][i].load(Ordering::Relaxed),
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
        // A copy of the sums plus the constant (and the per-node part): plain
        // slice loops.
        let mut totals = locals.clone();
        match &extra {
            Some(e) => {
                for (t, x) in totals.iter_mut().zip(e) {
                    *t += constant + x;
                }
            }
            None if constant != 0 => {
                for t in totals.iter_mut() {
                    *t += constant;
                }
            }
            None => {}
        }
        Some(ScoreTotals { totals, locals })
    }
}
