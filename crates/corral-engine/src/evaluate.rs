//! The parallel phase of a batch: PreFilter, Filter over nodes in rotated order until
//! enough feasible nodes are found, PreScore, Score, NormalizeScore, weights; the
//! equivalence-class caches ([`ClassCache`]) that let pods of one class share work.
//! Evaluation only reads `&Snapshot`.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::framework::observe::point;
use crate::framework::runtime::{LocalScoreCache, PreFilterOutcome, ScoreTotals};
use crate::framework::{Code, CycleState, Framework, Status};
use crate::scheduler::{NODE_CHUNK, num_feasible_nodes_to_find};
use crate::snapshot::{PodInfo, Snapshot};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub(crate) node: usize,
    pub(crate) total: i64,
    /// Weighted node-local part of `total` (re-scored at commit).
    pub(crate) local: i64,
}

pub(crate) enum Outcome {
    Feasible(Vec<Candidate>),
    /// Not evaluated in the parallel phase: evaluated at commit (see `run_batch`).
    Deferred,
    Unschedulable {
        message: String,
        retryable: bool,
    },
    Error(String),
}

pub(crate) struct Evaluation {
    pub(crate) state: CycleState,
    /// PreFilter's outcome (node restriction), when PreFilter succeeded: a stale
    /// pod's re-evaluation reuses it with the state brought up to date by `add_pod`.
    pub(crate) pre: Option<PreFilterOutcome>,
    pub(crate) outcome: Outcome,
    /// Nodes examined (for the rotating start index).
    pub(crate) processed: usize,
}

/// Per-reason failure counts (`Diagnosis.NodeToStatus` folded).
#[derive(Default)]
pub(crate) struct Diagnosis {
    pub(crate) counts: Vec<(Cow<'static, str>, usize)>,
    pub(crate) plugins: Vec<&'static str>,
}

impl Diagnosis {
    pub(crate) fn add(&mut self, st: &Status) {
        for r in &st.reasons {
            self.count(r, 1);
        }
        if !st.plugin.is_empty() && !self.plugins.contains(&st.plugin) {
            self.plugins.push(st.plugin);
        }
    }

    /// Adds `n` to reason `r` (a constant reason is found by its address first).
    /// Takes the `Cow` itself: a new entry clones it, which for a borrowed reason
    /// copies no text.
    #[allow(clippy::ptr_arg)]
    fn count(&mut self, r: &Cow<'static, str>, n: usize) {
        let same = |k: &Cow<'static, str>| {
            k.len() == r.len() && (std::ptr::eq(k.as_ptr(), r.as_ptr()) || k == r)
        };
        match self.counts.iter_mut().find(|(k, _)| same(k)) {
            Some(e) => e.1 += n,
            None => self.counts.push((r.clone(), n)),
        }
    }

    /// Folds another diagnosis (of other nodes) into this one.
    fn merge(&mut self, o: Diagnosis) {
        for (r, n) in &o.counts {
            self.count(r, *n);
        }
        for p in o.plugins {
            if !self.plugins.contains(&p) {
                self.plugins.push(p);
            }
        }
    }

    pub(crate) fn add_n(&mut self, reason: String, n: usize) {
        if n > 0 {
            self.counts.push((Cow::Owned(reason), n));
        }
    }

    /// `FitError.Error()`.
    pub(crate) fn message(&self, num_all_nodes: usize) -> String {
        let mut parts: Vec<String> = self
            .counts
            .iter()
            .map(|(r, c)| format!("{c} {r}"))
            .collect();
        parts.sort();
        if parts.is_empty() {
            format!("0/{num_all_nodes} nodes are available.")
        } else {
            format!(
                "0/{num_all_nodes} nodes are available: {}.",
                parts.join(", ")
            )
        }
    }

    /// Failures that a later placement can resolve (pod affinity, topology spread).
    pub(crate) fn retryable(&self) -> bool {
        self.plugins
            .iter()
            .any(|p| matches!(*p, "InterPodAffinity" | "PodTopologySpread"))
    }
}

/// splitmix64 finalizer.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn pod_rng(seed: u64, pod: &PodInfo, attempt: u32) -> ChaCha8Rng {
    // splitmix64 of the inputs: independent streams per pod and attempt.
    let mut z = seed
        ^ pod.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(attempt).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

/// Filters nodes in rotated order, stopping once `to_find` feasible nodes were found.
/// `check(node)` runs the Filter plugins; `known(node)` true means the node is known
/// to pass them (a cached verdict), so `check` is not called. Returns (feasible
/// indices, processed, diagnosis).
pub(crate) fn find_feasible(
    has_filters: bool,
    known: impl Fn(usize) -> bool + Sync,
    check: impl Fn(usize) -> Status + Sync,
    order: impl Fn(usize) -> usize + Sync,
    n: usize,
    to_find: usize,
    parallel: bool,
) -> Result<(Vec<usize>, usize, Diagnosis), Status> {
    let mut feasible = Vec::with_capacity(to_find.min(n));
    let mut diag = Diagnosis::default();
    if !has_filters {
        feasible.extend((0..to_find.min(n)).map(&order));
        let processed = feasible.len();
        return Ok((feasible, processed, diag));
    }
    if !parallel || n <= NODE_CHUNK {
        for i in 0..n {
            let idx = order(i);
            if known(idx) {
                feasible.push(idx);
                if feasible.len() >= to_find {
                    return Ok((feasible, i + 1, diag));
                }
                continue;
            }
            let st = check(idx);
            if st.is_success() {
                feasible.push(idx);
                if feasible.len() >= to_find {
                    return Ok((feasible, i + 1, diag));
                }
            } else if st.code == Code::Error {
                return Err(st);
            } else {
                diag.add(&st);
            }
        }
        return Ok((feasible, n, diag));
    }
    let round = NODE_CHUNK * rayon::current_num_threads().max(1) * 2;
    let mut base = 0;
    while base < n {
        let end = (base + round).min(n);
        // Per chunk: the feasible positions, the rejections folded as they come
        // (no status kept per rejected node), and the chunk's first error.
        let chunks: Vec<(Vec<usize>, Diagnosis, Option<Status>)> = (base..end)
            .step_by(NODE_CHUNK)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|c0| {
                let mut ok = Vec::with_capacity(NODE_CHUNK);
                let mut bad = Diagnosis::default();
                for i in c0..(c0 + NODE_CHUNK).min(end) {
                    let idx = order(i);
                    if known(idx) {
                        ok.push(i);
                        continue;
                    }
                    let st = check(idx);
                    if st.is_success() {
                        ok.push(i);
                    } else if st.code == Code::Error {
                        return (ok, bad, Some(st));
                    } else {
                        bad.add(&st);
                    }
                }
                (ok, bad, None)
            })
            .collect();
        for (ok, bad, err) in chunks {
            if let Some(st) = err {
                return Err(st);
            }
            diag.merge(bad);
            for i in ok {
                feasible.push(order(i));
                if feasible.len() >= to_find {
                    return Ok((feasible, i + 1, diag));
                }
            }
        }
        base = end;
    }
    Ok((feasible, n, diag))
}

/// Shared work for pods of one equivalence class: PreFilter once per batch, each
/// node's node-local Filter result and node-local raw scores at most once. Cells are
/// stamped with the node's generation, so they stay valid across commits and batches
/// for unchanged nodes; cross-node Filters (InterPodAffinity, PodTopologySpread, ...)
/// are never cached, they run per pod against its own PreFilter state.
pub(crate) struct ClassCache {
    pub(crate) pre: Result<(CycleState, PreFilterOutcome), Status>,
    /// Per node: (node generation when computed, node-local Filter result).
    pub(crate) filter: Vec<OnceLock<(u64, Status)>>,
    /// Per node: the node generation at which its node-local Filters passed
    /// (`u64::MAX`: not known to pass), a copy of the success cells of `filter`
    /// read with one load in the Filter walk.
    pub(crate) pass: Vec<AtomicU64>,
    pub(crate) scores: LocalScoreCache,
    pub(crate) nodes_version: u64,
    /// The profile's [`Framework::cross_node_filter_mask`].
    pub(crate) cross_mask: u64,
}

impl ClassCache {
    pub(crate) fn pre_filter(
        fw: &Framework,
        snap: &Snapshot,
        pod: &PodInfo,
    ) -> Result<(CycleState, PreFilterOutcome), Status> {
        let mut state = CycleState::new();
        state.record_plugin_metrics = fw.sample_plugin_metrics();
        let t0 = fw.point_start();
        let r = fw.run_pre_filter(&mut state, pod, snap);
        fw.observe_point(point::PRE_FILTER, code_of(&r), t0);
        r.map(|p| (state, p))
    }

    pub(crate) fn new(fw: &Framework, snap: &Snapshot, pod: &PodInfo) -> Self {
        ClassCache {
            pre: Self::pre_filter(fw, snap, pod),
            filter: (0..snap.num_nodes()).map(|_| OnceLock::new()).collect(),
            pass: not_known(snap.num_nodes()),
            scores: LocalScoreCache::new(fw, snap.num_nodes()),
            nodes_version: snap.nodes_version(),
            cross_mask: fw.cross_node_filter_mask(),
        }
    }

    /// Reuses the cache for a new batch when possible, else rebuilds it.
    pub(crate) fn refresh(self, fw: &Framework, snap: &Snapshot, pod: &PodInfo) -> Self {
        let pre = Self::pre_filter(fw, snap, pod);
        let local = !self.cross_mask;
        let same_mask = match (&pre, &self.pre) {
            (Ok((a, _)), Ok((b, _))) => {
                a.filter_skip_mask & local == b.filter_skip_mask & local
                    && a.node_local_filter == b.node_local_filter
            }
            _ => false,
        };
        if !same_mask || self.nodes_version != snap.nodes_version() {
            return ClassCache {
                pre,
                filter: (0..snap.num_nodes()).map(|_| OnceLock::new()).collect(),
                pass: not_known(snap.num_nodes()),
                scores: LocalScoreCache::new(fw, snap.num_nodes()),
                nodes_version: snap.nodes_version(),
                cross_mask: self.cross_mask,
            };
        }
        let mut c = self;
        c.pre = pre;
        let nodes = snap.nodes();
        for (i, cell) in c.filter.iter_mut().enumerate() {
            if cell.get().is_some_and(|(g, _)| *g != nodes[i].generation) {
                cell.take();
            }
        }
        c.scores.invalidate_stale(snap);
        c
    }
}

/// `ClassCache::pass` with no node known to pass.
fn not_known(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(u64::MAX)).collect()
}

/// The `status` of an extension point from its result.
fn code_of<T>(r: &Result<T, Status>) -> Code {
    r.as_ref().map_or_else(|st| st.code, |_| Code::Success)
}

/// Evaluates one pod against the snapshot (kube-scheduler's `schedulePod` up to host
/// selection), keeping the `k` best candidates. With `fresh_pre_filter`, PreFilter is
/// run against `snap` even when the class cache holds a PreFilter state (the cache's
/// node-local cells are still used): for a pod evaluated again after commits.
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate(
    fw: &Framework,
    snap: &Snapshot,
    pod: &PodInfo,
    start: usize,
    rng: &mut ChaCha8Rng,
    k: usize,
    tol: i64,
    parallel: bool,
    cache: Option<&ClassCache>,
    fresh_pre_filter: bool,
    reuse: Option<(CycleState, PreFilterOutcome)>,
) -> Evaluation {
    let num_all = snap.num_nodes();
    let fail = |state, message: String, retryable, processed| Evaluation {
        state,
        pre: None,
        outcome: Outcome::Unschedulable { message, retryable },
        processed,
    };
    if num_all == 0 {
        return fail(
            CycleState::new(),
            "no nodes available to schedule pods".into(),
            false,
            0,
        );
    }
    let (mut state, pre) = match (reuse, cache.filter(|_| !fresh_pre_filter)) {
        (Some((mut st, p)), _) => {
            // PreScore runs again: its skips are decided afresh.
            st.skip_score.clear();
            st.score_skip_mask = 0;
            (st, Ok(p))
        }
        (None, Some(c)) => match &c.pre {
            Ok((st, p)) => (st.clone(), Ok(p.clone())),
            Err(e) => (CycleState::new(), Err(e.clone())),
        },
        (None, None) => {
            let mut st = CycleState::new();
            st.record_plugin_metrics = fw.sample_plugin_metrics();
            let t0 = fw.point_start();
            let p = fw.run_pre_filter(&mut st, pod, snap);
            fw.observe_point(point::PRE_FILTER, code_of(&p), t0);
            (st, p)
        }
    };
    let pre = match pre {
        Ok(p) => p,
        Err(st) if st.code == Code::Error => {
            return Evaluation {
                state,
                pre: None,
                outcome: Outcome::Error(format!(
                    "running PreFilter plugin {:?}: {}",
                    st.plugin,
                    st.message()
                )),
                processed: 0,
            };
        }
        Err(st) => {
            let retry = matches!(st.plugin, "InterPodAffinity" | "PodTopologySpread");
            return fail(
                state,
                format!("0/{num_all} nodes are available: {}.", st.message()),
                retry,
                0,
            );
        }
    };
    let restricted: Option<Vec<usize>> = pre.nodes.as_ref().map(|names| {
        let mut v: Vec<usize> = names.iter().filter_map(|n| snap.node_index(n)).collect();
        v.sort_unstable();
        v
    });
    let (n, to_find) = match &restricted {
        Some(v) => (
            v.len(),
            num_feasible_nodes_to_find(fw.percentage_of_nodes_to_score, v.len()),
        ),
        None => (
            num_all,
            num_feasible_nodes_to_find(fw.percentage_of_nodes_to_score, num_all),
        ),
    };
    let order = |i: usize| match &restricted {
        Some(v) => v[i],
        None => (start + i) % num_all,
    };
    let nodes = snap.nodes();
    let direct = |idx: usize| fw.run_filter(&state, pod, &nodes[idx], snap);
    let cross = match cache {
        Some(c) => fw.cross_filter_mask_with(c.cross_mask, &state),
        None => fw.cross_filter_mask_for(&state),
    };
    // Node-local Filters plus cross-node ones declared node-local for this pod
    // (cached only when the class's PreFilter state declared the same).
    let local_mask = !cross;
    let cache = cache.filter(|c| {
        c.pre
            .as_ref()
            .is_ok_and(|(s, _)| s.node_local_filter == state.node_local_filter)
    });
    let cached = |idx: usize| match cache {
        Some(c) => {
            let node = &nodes[idx];
            let run_local = || fw.run_filter_masked(&state, pod, node, snap, local_mask);
            let (g, st) = c.filter[idx].get_or_init(|| (node.generation, run_local()));
            let local = if *g == node.generation {
                if st.is_success() {
                    c.pass[idx].store(node.generation, Ordering::Relaxed);
                    // No reasons to copy (the common case).
                    Status::success()
                } else {
                    st.clone()
                }
            } else {
                run_local()
            };
            if cross == 0 {
                return local;
            }
            // Cross-node Filters run live; as in `run_filter`, the first failing
            // plugin in profile order is reported.
            let before = if local.is_success() {
                u64::MAX
            } else {
                match fw.filter.iter().position(|p| p.name() == local.plugin) {
                    Some(i) if i < 64 => (1u64 << i) - 1,
                    _ => u64::MAX,
                }
            };
            let x = fw.run_filter_masked(&state, pod, node, snap, cross & before);
            if x.is_success() { local } else { x }
        }
        None => direct(idx),
    };
    let t_filter = fw.point_start();
    // Nodes whose node-local Filters passed at their current generation, for a pod
    // without live cross-node Filters: feasible without running anything.
    let known = |idx: usize| {
        cross == 0
            && cache.is_some_and(|c| c.pass[idx].load(Ordering::Relaxed) == nodes[idx].generation)
    };
    let found = find_feasible(
        !fw.filter.is_empty(),
        known,
        cached,
        order,
        n,
        to_find,
        parallel,
    );
    let filter_code = match &found {
        Ok((f, _, _)) if f.is_empty() => Code::Unschedulable,
        Ok(_) => Code::Success,
        Err(_) => Code::Error,
    };
    fw.observe_point(point::FILTER, filter_code, t_filter);
    let (feasible, processed, mut diag) = match found {
        Ok(x) => x,
        Err(st) => {
            return Evaluation {
                state,
                pre: None,
                outcome: Outcome::Error(format!(
                    "running Filter plugin {:?}: {}",
                    st.plugin,
                    st.message()
                )),
                processed: n,
            };
        }
    };
    if feasible.is_empty() {
        let absent = num_all - n;
        if absent > 0 {
            let mut ps = pre.restricting_plugins.clone();
            ps.sort_unstable();
            diag.add_n(
                format!("node(s) didn't satisfy plugin(s) [{}]", ps.join(" ")),
                absent,
            );
        }
        let retry = diag.retryable();
        return fail(state, diag.message(num_all), retry, processed);
    }
    if feasible.len() == 1 {
        return Evaluation {
            state,
            pre: Some(pre),
            outcome: Outcome::Feasible(vec![Candidate {
                node: feasible[0],
                total: 0,
                local: 0,
            }]),
            processed,
        };
    }
    let refs: Vec<&crate::snapshot::NodeInfo> =
        feasible.iter().map(|&i| &*snap.nodes()[i]).collect();
    let t_pre_score = fw.point_start();
    let pre_score = fw.run_pre_score(&mut state, pod, snap, &refs);
    fw.observe_point(point::PRE_SCORE, code_of(&pre_score), t_pre_score);
    if let Err(st) = pre_score {
        return Evaluation {
            state,
            pre: None,
            outcome: Outcome::Error(format!(
                "running PreScore plugin {:?}: {}",
                st.plugin,
                st.message()
            )),
            processed,
        };
    }
    let t_score = fw.point_start();
    let scores = fw.run_score_totals(&state, pod, snap, &feasible, cache.map(|c| &c.scores));
    fw.observe_point(point::SCORE, code_of(&scores), t_score);
    let ScoreTotals { totals, locals } = match scores {
        Ok(s) => s,
        Err(st) => {
            return Evaluation {
                state,
                pre: None,
                outcome: Outcome::Error(format!(
                    "running Score plugin {:?}: {}",
                    st.plugin,
                    st.message()
                )),
                processed,
            };
        }
    };
    // Random tie order among equal totals: one draw per pod, hashed per node.
    let tie: u64 = rng.random();
    // The k best by (total descending, tie hash ascending): a strict order (mix64
    // is a bijection, so no two nodes share a hash). Selected on u128 keys (inverted
    // total, hash), which compare and move as plain integers, then the k chosen
    // are sorted.
    let key = |j: usize| -> u128 {
        let hi = !((totals[j] as u64) ^ (1u64 << 63));
        (u128::from(hi) << 64) | u128::from(mix64(tie ^ feasible[j] as u64))
    };
    let keys: Vec<u128> = (0..feasible.len()).map(key).collect();
    let k = k.max(1);
    let mut best: Vec<(u128, u32)> = if keys.len() > k {
        let mut sel = keys.clone();
        let (_, &mut kth, _) = sel.select_nth_unstable(k - 1);
        let mut v = Vec::with_capacity(k);
        v.extend(
            keys.iter()
                .enumerate()
                .filter(|(_, key)| **key <= kth)
                .map(|(j, &key)| (key, j as u32)),
        );
        v
    } else {
        keys.iter()
            .enumerate()
            .map(|(j, &key)| (key, j as u32))
            .collect()
    };
    best.sort_unstable_by_key(|e| e.0);
    let mut cands: Vec<(Candidate, u64)> = best
        .iter()
        .map(|&(key, j)| {
            let j = j as usize;
            let c = Candidate {
                node: feasible[j],
                total: totals[j],
                local: locals[j],
            };
            (c, key as u64)
        })
        .collect();
    if tol > 0 {
        // Shuffle the nearly-equal prefix (selection_tolerance).
        let best = cands[0].0.total;
        let m = cands.iter().take_while(|c| c.0.total >= best - tol).count();
        for i in (1..m).rev() {
            let j = rng.random_range(0..=i);
            cands.swap(i, j);
        }
    }
    Evaluation {
        state,
        pre: Some(pre),
        outcome: Outcome::Feasible(cands.into_iter().map(|c| c.0).collect()),
        processed,
    }
}
