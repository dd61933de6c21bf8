//! The ranked fast path of a pod's evaluation: one pass over the pod's scan window
//! (the first `numFeasibleNodesToFind` feasible nodes from its start index, wrapping)
//! that reads the class's known-feasible marks and cached node-local score sums, then
//! selects the `k` best (inverted total, tie hash) keys ([`select_best`]): when at
//! least `k` nodes share the best total, only their tie hashes are computed and a
//! threshold on the (uniform) hashes leaves about `4k` of them to select among.
//!
//! It decides exactly what [`evaluate`](crate::evaluate::evaluate) decides for the
//! same inputs (same feasible window, same `processed`, same PreScore state, same
//! totals through [`Framework::run_score_totals`], same candidates in the same
//! order, the same random draw), and it is taken only where that is evident:
//! the pod has its class's cache and PreFilter state, PreFilter restricted no nodes,
//! no cross-node Filter is live for it, nodes are scanned sequentially, no selection
//! tolerance and no sampled (plugin-timed) cycle. Anything unusual — a Filter
//! error, fewer than two feasible nodes (the diagnosis and single-node paths), a
//! PreScore or Score error — returns `None` before any random draw, and the caller
//! runs `evaluate`, which reports it exactly as before.
//!
//! Why not an ordered structure (segment tree) over node positions per class: the
//! tie-break among equal totals is a per-pod hash of the node index
//! (`mix64(tie ^ node)`, `tie` drawn per pod), so the best key of a window is not a
//! function of per-node values; with SchedulingBasic's identical nodes most of a
//! window shares the best total, and every tied node's hash must be computed
//! whatever structure holds the totals. The window scan is therefore kept, at a few
//! instructions per node.

use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::evaluate::{Candidate, ClassCache, Evaluation, Outcome, mix64};
use crate::framework::observe::point;
use crate::framework::runtime::ScoreTotals;
use crate::framework::{Code, CycleState, Framework};
use crate::scheduler::num_feasible_nodes_to_find;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

/// The (inverted total, tie hash) key of `evaluate`: ascending key = descending
/// total, then ascending hash; a strict order since `mix64` is a bijection.
#[inline]
pub(crate) fn rank_key(total: i64, tie: u64, node: usize) -> u128 {
    let hi = !((total as u64) ^ (1u64 << 63));
    (u128::from(hi) << 64) | u128::from(mix64(tie ^ node as u64))
}

/// Distinct totals of a window tracked by [`select_best`] before it falls back to
/// selecting among all keys.
const LEVELS: usize = 8;

/// The `k` best candidates of a scored window — the `k` smallest
/// [`rank_key`]s of `(nodes[j], totals[j])` — as `(key, j)`, ascending: exactly
/// what selecting among all keys gives (keys are distinct).
///
/// Windows hold few distinct totals (SchedulingBasic's identical nodes differ only
/// by how many pods they hold), so the totals are counted per level first: every
/// node above the cut level (the level where the running count reaches `k`) is
/// among the `k` best, and of the cut level the `need` smallest tie hashes are.
/// Hashes are uniform, so only the cut level's hashes below a threshold expected
/// to admit about `1.5 × need + 16` of them are kept (exact: every hash below it is
/// kept, so if at least `need` are, the `need` smallest are among them; otherwise
/// the cut level is collected again without threshold). More than [`LEVELS`]
/// distinct totals: selection among all keys.
pub(crate) fn select_best(k: usize, nodes: &[usize], totals: &[i64], tie: u64) -> Vec<(u128, u32)> {
    let k = k.max(1);
    let m = nodes.len().min(totals.len());
    let totals = &totals[..m];
    let mut lv = [(0i64, 0usize); LEVELS];
    let mut nl = 0;
    if m > k {
        // Most windows: at least k nodes share the best total (one level suffices).
        let best = totals.iter().copied().max().unwrap_or(0);
        let ties = totals.iter().filter(|&&t| t == best).count();
        if ties >= k {
            lv[0] = (best, ties);
            nl = 1;
        } else {
            for &t in totals {
                match lv[..nl].iter_mut().find(|e| e.0 == t) {
                    Some(e) => e.1 += 1,
                    None if nl < LEVELS => {
                        lv[nl] = (t, 1);
                        nl += 1;
                    }
                    None => {
                        nl = 0;
                        break;
                    }
                }
            }
        }
    }
    if nl == 0 {
        let mut keys: Vec<(u128, u32)> = (0..m)
            .map(|j| (rank_key(totals[j], tie, nodes[j]), j as u32))
            .collect();
        if keys.len() > k {
            keys.select_nth_unstable(k - 1);
            keys.truncate(k);
        }
        keys.sort_unstable();
        return keys;
    }
    let lv = &mut lv[..nl];
    lv.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
    // m > k nodes in all, so the running count reaches k at some level.
    let mut above = 0;
    let mut c = 0;
    while above + lv[c].1 < k {
        above += lv[c].1;
        c += 1;
    }
    let (cut, at_cut) = lv[c];
    let need = k - above;
    let want = need + need / 2 + 16;
    let mut limit = if want >= at_cut {
        u64::MAX
    } else {
        (u64::MAX / at_cut as u64).saturating_mul(want as u64)
    };
    let mut out: Vec<(u128, u32)> = Vec::with_capacity(k);
    let mut v: Vec<(u64, u32)> = Vec::with_capacity(want.min(at_cut) + 8);
    for j in 0..m {
        let t = totals[j];
        if t == cut {
            let h = mix64(tie ^ nodes[j] as u64);
            if h <= limit {
                v.push((h, j as u32));
            }
        } else if t > cut {
            out.push((rank_key(t, tie, nodes[j]), j as u32));
        }
    }
    if v.len() < need {
        v.clear();
        limit = u64::MAX;
        for j in 0..m {
            if totals[j] == cut {
                v.push((mix64(tie ^ nodes[j] as u64), j as u32));
            }
        }
    }
    // Higher totals first (all of them are among the k best), then the cut level's
    // `need` smallest hashes, ascending.
    out.sort_unstable();
    let v = smallest_sorted(v, need, limit);
    let hi = rank_key(cut, 0, 0) >> 64 << 64;
    out.extend(v.iter().map(|&(h, j)| (hi | u128::from(h), j)));
    out
}

/// The `need` smallest of `v` (distinct hashes, each `<= limit`), ascending: a
/// bucket sort by the hashes' top bits (the hashes are uniform below `limit`, so
/// buckets hold about one each) with an insertion sort within each bucket.
fn smallest_sorted(v: Vec<(u64, u32)>, need: usize, limit: u64) -> Vec<(u64, u32)> {
    let n = v.len();
    if n <= 32 {
        let mut v = v;
        v.sort_unstable();
        v.truncate(need);
        return v;
    }
    let bits = n.next_power_of_two().trailing_zeros();
    let used = 64 - limit.leading_zeros();
    let shift = used.saturating_sub(bits);
    let buckets = 1usize << bits;
    let bucket = |h: u64| ((h >> shift) as usize).min(buckets - 1);
    let mut start = vec![0u32; buckets + 1];
    for &(h, _) in &v {
        start[bucket(h) + 1] += 1;
    }
    for b in 0..buckets {
        start[b + 1] += start[b];
    }
    let mut out = vec![(0u64, 0u32); n];
    let mut next = start.clone();
    for &e in &v {
        let b = bucket(e.0);
        out[next[b] as usize] = e;
        next[b] += 1;
    }
    // Buckets are in hash order; sort each (tiny) bucket, stopping once `need`
    // elements are placed.
    for b in 0..buckets {
        let (lo, hi) = (start[b] as usize, start[b + 1] as usize);
        if hi - lo > 1 {
            out[lo..hi].sort_unstable();
        }
        if hi >= need {
            break;
        }
    }
    out.truncate(need);
    out
}

/// `Some(now - d)`: a start instant for `Framework::observe_point` that reports the
/// duration `d` measured earlier (observations are made only once the fast path is
/// sure to decide, so a fallback to `evaluate` never observes a point twice).
fn started(d: Option<Duration>) -> Option<Instant> {
    d.map(|d| {
        let now = Instant::now();
        now.checked_sub(d).unwrap_or(now)
    })
}

/// A ranked evaluation's whole scan window, kept for the committer
/// ([`decide_in_window`]): where the scan started, how many nodes it examined, the
/// tie draw, and every feasible node (in scan order) with its total and weighted
/// node-local part.
pub(crate) struct Window {
    pub(crate) start: usize,
    pub(crate) processed: usize,
    pub(crate) tie: u64,
    pub(crate) feasible: Vec<usize>,
    pub(crate) totals: Vec<i64>,
    pub(crate) locals: Vec<i64>,
}

/// Per class, within a batch: (node, filter skip mask, score skip mask) →
/// (node generation, Filter verdict, weighted node-local score) of touched nodes.
pub(crate) type WindowMemo = std::collections::HashMap<(usize, u64, u64), (u64, bool, i64)>;

/// The node the sequential procedure (batch size 1) chooses for a ranked pod whose
/// window `w` was scanned before `touched_nodes` (distinct, each with
/// `touched[node] == epoch`) received pods, given that it would scan from the same
/// start index now; `None` when the window cannot prove it (the caller evaluates
/// the pod again against the current snapshot).
///
/// The pod's PreFilter state must already be brought up to date with the pods
/// committed since its evaluation. Then:
/// - a cross-node Filter live for it now: `None` (the ranked path had none);
/// - a touched node inside the scanned range whose verdict changed (a feasible node
///   now fails, or an infeasible one now passes): the sequential window differs
///   (another `processed`, other nodes, other normalization): `None`;
/// - otherwise the window is the same set of nodes: an untouched node keeps its
///   total, a touched feasible node's node-local part is re-scored; the winner is
///   the smallest (inverted total, tie hash) key among all of them. The untouched
///   nodes' best key is the first untouched candidate's (candidates are the `k`
///   best keys, ascending); with every candidate touched the window is scanned.
///
/// Ties are thus broken by the pod's tie hash among all window nodes at the
/// winning total, as kube-scheduler's sequential selection does.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decide_in_window(
    fw: &Framework,
    cross_mask: u64,
    snap: &Snapshot,
    state: &CycleState,
    pod: &PodInfo,
    cands: &[Candidate],
    w: &Window,
    touched_nodes: &[usize],
    touched: &[u64],
    epoch: u64,
    memo: &mut WindowMemo,
) -> Option<usize> {
    let n = snap.num_nodes();
    if n == 0 || fw.cross_filter_mask_with(cross_mask, state) != 0 {
        return None;
    }
    let nodes = snap.nodes();
    let start = w.start % n;
    let off = |i: usize| (i + n - start) % n;
    let is_touched = |i: usize| touched.get(i) == Some(&epoch);
    let rescore = fw.has_node_local_scores();
    let mut best: Option<(u128, usize)> = None;
    for &t in touched_nodes {
        if off(t) >= w.processed {
            continue;
        }
        let was = w.feasible.binary_search_by_key(&off(t), |&i| off(i));
        let node = &nodes[t];
        // The verdict and node-local score at the node's generation, shared by the
        // pods of one class (node-local plugins only: no cross-node Filter is live).
        let mkey = (t, state.filter_skip_mask, state.score_skip_mask);
        let (now, local) = match memo.get(&mkey) {
            Some(&(g, p, l)) if g == node.generation => (p, l),
            _ => {
                let p = fw.run_filter(state, pod, node, snap).is_success();
                let l = if p && rescore {
                    fw.node_local_score(state, pod, node, snap).ok()?
                } else {
                    0
                };
                memo.insert(mkey, (node.generation, p, l));
                (p, l)
            }
        };
        match (was, now) {
            (Err(_), false) => {}
            (Ok(j), true) => {
                let total = if rescore {
                    w.totals[j] - w.locals[j] + local
                } else {
                    w.totals[j]
                };
                let key = rank_key(total, w.tie, t);
                if best.is_none_or(|(b, _)| key < b) {
                    best = Some((key, t));
                }
            }
            _ => return None,
        }
    }
    let untouched = match cands.iter().find(|c| !is_touched(c.node)) {
        Some(c) => Some((rank_key(c.total, w.tie, c.node), c.node)),
        None => (0..w.feasible.len().min(w.totals.len()))
            .filter(|&j| !is_touched(w.feasible[j]))
            .map(|j| (rank_key(w.totals[j], w.tie, w.feasible[j]), w.feasible[j]))
            .min(),
    };
    match (best, untouched) {
        (Some(a), Some(b)) => Some(a.min(b).1),
        (a, b) => a.or(b).map(|x| x.1),
    }
}

/// The fast path (see the module docs); `None`: use `evaluate`.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate_ranked(
    fw: &Framework,
    snap: &Snapshot,
    pod: &PodInfo,
    start: usize,
    rng: &mut ChaCha8Rng,
    k: usize,
    tol: i64,
    parallel: bool,
    cache: &ClassCache,
) -> Option<Evaluation> {
    evaluate_ranked_window(fw, snap, pod, start, rng, k, tol, parallel, cache).map(|r| r.0)
}

/// [`evaluate_ranked`], with the scan window it decided on.
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate_ranked_window(
    fw: &Framework,
    snap: &Snapshot,
    pod: &PodInfo,
    start: usize,
    rng: &mut ChaCha8Rng,
    k: usize,
    tol: i64,
    parallel: bool,
    cache: &ClassCache,
) -> Option<(Evaluation, Window)> {
    let num_all = snap.num_nodes();
    if num_all == 0 || parallel || tol > 0 || fw.filter.is_empty() {
        return None;
    }
    let Ok((st, pre)) = &cache.pre else {
        return None;
    };
    // The node-local cells (shared by the pods of one node-local class) must be
    // computed for this pod's skipped Filters, and no cross-node Filter may run:
    // neither live nor declared node-local (those have per-class cells `evaluate`
    // merges in profile order).
    let local = &cache.local;
    if pre.nodes.is_some()
        || st.record_plugin_metrics
        || local.filter.len() != num_all
        || st.filter_skip_mask & !cache.cross_mask != local.skip_key
        || fw.cross_filter_mask_with(cache.cross_mask, st) != 0
        || ClassCache::declared_mask(fw, cache.cross_mask, st) != 0
    {
        return None;
    }
    // Only node-local Filters run (every cross-node one is skipped).
    let pure = !cache.cross_mask;
    let nodes = snap.nodes();
    let to_find = num_feasible_nodes_to_find(fw.percentage_of_nodes_to_score, num_all);
    let mut state = st.clone();
    // No node changed since the cells were refreshed (the batch's parallel phase).
    let fresh = local.scores.fresh_for(snap);

    // Filter: the scan window, in rotated order.
    let t_filter = fw.point_start();
    let mut feasible: Vec<usize> = Vec::with_capacity(to_find.min(num_all));
    let mut processed = num_all;
    let mut idx = start % num_all;
    for i in 0..num_all {
        let node: &NodeInfo = &nodes[idx];
        // Fresh cells: a passing cell is current (no node read).
        let known = if fresh {
            local.filter.passes_fresh(idx)
        } else {
            local.filter.passes(idx, node.generation)
        };
        let pass = known || {
            let v = local.filter.get_or_run(idx, node.generation, || {
                fw.run_filter_masked(&state, pod, node, snap, pure)
            });
            if v.status().is_some_and(|s| s.code == Code::Error) {
                return None;
            }
            v.is_pass()
        };
        if pass {
            feasible.push(idx);
            if feasible.len() >= to_find {
                processed = i + 1;
                break;
            }
        }
        idx += 1;
        if idx == num_all {
            idx = 0;
        }
    }
    if feasible.len() < 2 {
        return None;
    }
    let d_filter = t_filter.map(|t| t.elapsed());

    // PreScore with the feasible nodes, as `evaluate`.
    let refs: Vec<&NodeInfo> = feasible.iter().map(|&i| &*nodes[i]).collect();
    let t_pre_score = fw.point_start();
    fw.run_pre_score(&mut state, pod, snap, &refs).ok()?;
    let d_pre_score = t_pre_score.map(|t| t.elapsed());
    let t_score = fw.point_start();
    let ScoreTotals { totals, locals } = fw
        .run_score_totals(&state, pod, snap, &feasible, Some(&local.scores))
        .ok()?;
    let d_score = t_score.map(|t| t.elapsed());
    fw.observe_point(point::FILTER, Code::Success, started(d_filter));
    fw.observe_point(point::PRE_SCORE, Code::Success, started(d_pre_score));
    fw.observe_point(point::SCORE, Code::Success, started(d_score));

    // Selection: the same single draw as `evaluate`, the same keys, the k best.
    let tie: u64 = rng.random();
    let best = select_best(k, &feasible, &totals, tie);
    let cands = best
        .iter()
        .map(|&(_, j)| {
            let j = j as usize;
            Candidate {
                node: feasible[j],
                total: totals[j],
                local: locals[j],
            }
        })
        .collect();
    Some((
        Evaluation {
            state,
            pre: Some(pre.clone()),
            outcome: Outcome::Feasible(cands),
            processed,
        },
        Window {
            start,
            processed,
            tie,
            feasible,
            totals,
            locals,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use serde_json::json;

    use super::*;
    use crate::config::default_frameworks;
    use crate::evaluate::{ClassCaches, evaluate, pod_rng};
    use corral_core::testutil::{node, pod};

    /// (node, total, local) per candidate, and `processed`.
    type Decided = (Vec<(usize, i64, i64)>, usize);

    fn decided(ev: &Evaluation) -> Option<Decided> {
        match &ev.outcome {
            Outcome::Feasible(c) => Some((
                c.iter().map(|c| (c.node, c.total, c.local)).collect(),
                ev.processed,
            )),
            _ => None,
        }
    }

    /// A random cluster: mixed sizes, some cordoned, NoSchedule- and
    /// PreferNoSchedule-tainted nodes, labelled pools, some images.
    fn cluster(rng: &mut ChaCha8Rng, n: usize) -> Snapshot {
        let mut snap = Snapshot::new();
        snap.add_nodes((0..n).map(|i| {
            let (cpu, mem) = [("2", "8Gi"), ("4", "16Gi"), ("8", "32Gi")][rng.random_range(0..3)];
            let mut b = node(&format!("n{i:04}"))
                .cpu(cpu)
                .mem(mem)
                .zone(["a", "b", "c"][i % 3])
                .label("pool", ["x", "y"][rng.random_range(0..2)]);
            match rng.random_range(0..20) {
                0 => b = b.unschedulable(),
                1 => b = b.taint("dedicated", "gpu", "NoSchedule"),
                2 | 3 => b = b.taint("spot", "true", "PreferNoSchedule"),
                4 => b = b.image("big", 900_000_000),
                _ => {}
            }
            b.info()
        }));
        snap
    }

    /// Pod templates: plain (SchedulingBasic), tolerating, pool-selecting,
    /// preferring a pool, with an image, and one with a spread constraint (not
    /// node-local: the fast path must decline or agree).
    fn template(t: usize, i: u64) -> PodInfo {
        let b = pod(&format!("p{i}")).cpu("250m").mem("512Mi").seq(i);
        let b = match t {
            0 => b,
            1 => b.toleration(json!({"key": "spot", "operator": "Exists"})),
            2 => b.node_selector("pool", "x"),
            3 => b.affinity(json!({"nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 5, "preference": {"matchExpressions": [
                        {"key": "pool", "operator": "In", "values": ["y"]}]}}]}})),
            4 => b.image("big"),
            _ => b.label("app", "s").spread(json!({
                "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app": "s"}}})),
        };
        b.info()
    }

    /// The fast path decides exactly what `evaluate` decides (with the class cache
    /// and without it: the plain per-plugin scan), on random clusters, pod
    /// classes, start indices and candidate counts, while pods are committed one
    /// by one (class caches kept across commits, stale cells dropped as between
    /// batches).
    #[test]
    fn ranked_path_matches_plain_evaluation_under_commits() {
        let fws = default_frameworks();
        let fw = &fws[0];
        let mut fast = 0;
        let mut total = 0;
        for seed in 0..4u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let n = [150, 320, 700, 1200][seed as usize];
            let mut snap = cluster(&mut rng, n);
            // One set of class caches per template, kept across commits as
            // between batches (the pod twice: a class of one gets no cache).
            let mut caches: Vec<ClassCaches> = (0..6).map(|_| ClassCaches::default()).collect();
            for i in 0..120u64 {
                let t = rng.random_range(0..6);
                let p = template(t, i);
                let key = (p.equivalence, 0);
                let classes = HashMap::from([(key, vec![0, 1])]);
                caches[t] = ClassCaches::prepare(
                    std::mem::take(&mut caches[t]),
                    &fws,
                    &snap,
                    &[&p, &p],
                    &classes,
                    &[p.equivalence, p.equivalence],
                );
                let c = caches[t].get(&key).expect("class cache");
                let start = rng.random_range(0..n);
                let k = [1, 16, 64][rng.random_range(0..3)];
                let plain = evaluate(
                    fw,
                    &snap,
                    &p,
                    start,
                    &mut pod_rng(9, &p, 0),
                    k,
                    0,
                    false,
                    None,
                    false,
                    None,
                );
                let cached = evaluate(
                    fw,
                    &snap,
                    &p,
                    start,
                    &mut pod_rng(9, &p, 0),
                    k,
                    0,
                    false,
                    Some(c),
                    false,
                    None,
                );
                let ranked =
                    evaluate_ranked(fw, &snap, &p, start, &mut pod_rng(9, &p, 0), k, 0, false, c);
                total += 1;
                let want = decided(&plain);
                assert_eq!(
                    decided(&cached),
                    want,
                    "seed {seed} pod {i}: cached evaluate"
                );
                if let Some(r) = &ranked {
                    fast += 1;
                    assert_eq!(decided(r), want, "seed {seed} pod {i} (template {t})");
                    assert!(t != 5 || r.state.score_skip_mask != 0);
                }
                // Declined where it must: parallel node scans and tolerances.
                assert!(
                    evaluate_ranked(fw, &snap, &p, start, &mut pod_rng(9, &p, 0), k, 0, true, c)
                        .is_none()
                );
                assert!(
                    evaluate_ranked(fw, &snap, &p, start, &mut pod_rng(9, &p, 0), k, 5, false, c)
                        .is_none()
                );
                // Commit the chosen node (kube's choice: the first candidate).
                if let Some((cands, _)) = want {
                    let name = snap.nodes()[cands[0].0].name.to_string();
                    snap.add_pod(Arc::new(p), &name);
                }
            }
        }
        // Most pods take the fast path (all but the spread template and the
        // single-feasible-node cases).
        assert!(fast * 2 > total, "fast path taken {fast} of {total} times");
    }

    /// `decide_in_window` (the committer's decision for a ranked pod after other
    /// pods were committed since its evaluation) chooses exactly the node a fresh
    /// evaluation on the current snapshot chooses (same start index, same draw),
    /// or declines (the window changed). Commits land on the pod's candidates and
    /// on other window nodes, so touched candidates drop to the level of untouched
    /// nodes and ties among them are decided by hash, not by candidate order.
    #[test]
    fn window_decision_matches_fresh_evaluation_after_commits() {
        let fws = default_frameworks();
        let fw = &fws[0];
        let (mut decided_n, mut declined, mut reordered) = (0, 0, 0);
        let mut next = 100_000u64;
        for seed in 0..4u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(100 + seed);
            let n = [150, 320, 700, 1200][seed as usize];
            let mut snap = cluster(&mut rng, n);
            let mut caches: Vec<ClassCaches> = (0..5).map(|_| ClassCaches::default()).collect();
            for round in 0..60u64 {
                // Node-local templates (the ranked path's pods).
                let t = rng.random_range(0..5);
                let p = template(t, round);
                let key = (p.equivalence, 0);
                caches[t] = ClassCaches::prepare(
                    std::mem::take(&mut caches[t]),
                    &fws,
                    &snap,
                    &[&p, &p],
                    &HashMap::from([(key, vec![0, 1])]),
                    &[p.equivalence, p.equivalence],
                );
                let c = caches[t].get(&key).expect("class cache");
                let start = rng.random_range(0..n);
                let k = [1, 4, 16][rng.random_range(0..3)];
                let Some((ev, w)) = evaluate_ranked_window(
                    fw,
                    &snap,
                    &p,
                    start,
                    &mut pod_rng(9, &p, 0),
                    k,
                    0,
                    false,
                    c,
                ) else {
                    continue;
                };
                let Outcome::Feasible(cands) = &ev.outcome else {
                    panic!("ranked evaluation without candidates");
                };
                assert_eq!(w.feasible.len(), w.totals.len());
                let epoch = 1;
                let mut touched = vec![0u64; n];
                let mut touched_nodes = Vec::new();
                for i in 0..rng.random_range(1..=8usize) {
                    let node = if i % 2 == 0 {
                        cands[rng.random_range(0..cands.len())].node
                    } else {
                        w.feasible[rng.random_range(0..w.feasible.len())]
                    };
                    next += 1;
                    let name = snap.nodes()[node].name.to_string();
                    snap.add_pod(Arc::new(template(0, next)), &name);
                    if touched[node] != epoch {
                        touched_nodes.push(node);
                    }
                    touched[node] = epoch;
                }
                let got = decide_in_window(
                    fw,
                    c.cross_mask,
                    &snap,
                    &ev.state,
                    &p,
                    cands,
                    &w,
                    &touched_nodes,
                    &touched,
                    epoch,
                    &mut WindowMemo::new(),
                );
                let fresh = evaluate(
                    fw,
                    &snap,
                    &p,
                    start,
                    &mut pod_rng(9, &p, 0),
                    1,
                    0,
                    false,
                    None,
                    false,
                    None,
                );
                let want = decided(&fresh).map(|(c, _)| c[0].0);
                match got {
                    Some(node) => {
                        decided_n += 1;
                        assert_eq!(Some(node), want, "seed {seed} round {round} (template {t})");
                        // The committer's old rule: the first surviving candidate
                        // in stale order with the best re-scored total.
                        let first = cands.iter().find(|c| touched[c.node] != epoch);
                        if first.is_none_or(|c| c.node != node) {
                            reordered += 1;
                        }
                    }
                    None => declined += 1,
                }
                // Commit the pod itself where the fresh evaluation put it.
                if let Some(node) = want {
                    let name = snap.nodes()[node].name.to_string();
                    snap.add_pod(Arc::new(p), &name);
                }
            }
        }
        assert!(decided_n > 100, "decided {decided_n}, declined {declined}");
        assert!(
            reordered > 0,
            "no decision differed from the first untouched candidate"
        );
    }

    /// `smallest_sorted` equals sorting and truncating, for uniform hashes below
    /// a limit, skewed ones, and hashes above the limit it was given.
    #[test]
    fn smallest_sorted_matches_sort() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for n in [0usize, 1, 31, 33, 100, 257, 1000] {
            for limit in [u64::MAX, u64::MAX / 7, 1 << 20, 5000] {
                for need in [1usize, 16, 64, 2000] {
                    let mut v: Vec<(u64, u32)> = (0..n)
                        .map(|j| {
                            let h = match j % 3 {
                                0 => rng.random_range(0..=limit),
                                1 => rng.random_range(0..=limit / 64),
                                _ => rng.random(),
                            };
                            (h, j as u32)
                        })
                        .collect();
                    v.sort_unstable();
                    v.dedup_by_key(|e| e.0);
                    let mut want = v.clone();
                    want.truncate(need);
                    let mut shuffled = v.clone();
                    for i in (1..shuffled.len()).rev() {
                        shuffled.swap(i, rng.random_range(0..=i));
                    }
                    assert_eq!(
                        smallest_sorted(shuffled, need.min(v.len().max(1)), limit),
                        want.into_iter()
                            .take(need.min(v.len().max(1)))
                            .collect::<Vec<_>>(),
                        "n {n} limit {limit} need {need}"
                    );
                }
            }
        }
    }

    /// `select_best` equals sorting all keys and taking the first k, with few
    /// and many ties at the best total.
    #[test]
    fn select_best_matches_sort() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for len in [0usize, 1, 5, 64, 65, 200, 500] {
            for levels in [1i64, 2, 4, 50] {
                for k in [1usize, 2, 16, 64, 600] {
                    let tie: u64 = rng.random();
                    let nodes: Vec<usize> = (0..len).map(|j| j * 7 + 3).collect();
                    let totals: Vec<i64> =
                        (0..len).map(|_| rng.random_range(0..levels) * 10).collect();
                    let mut all: Vec<(u128, u32)> = (0..len)
                        .map(|j| (rank_key(totals[j], tie, nodes[j]), j as u32))
                        .collect();
                    all.sort_unstable();
                    all.truncate(k);
                    assert_eq!(
                        select_best(k, &nodes, &totals, tie),
                        all,
                        "len {len} levels {levels} k {k}"
                    );
                }
            }
        }
    }
}
