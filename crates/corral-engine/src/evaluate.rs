//! The parallel phase of a batch: PreFilter, Filter over nodes in rotated order until
//! enough feasible nodes are found, PreScore, Score, NormalizeScore, weights; the
//! equivalence-class caches ([`ClassCache`]) that let pods of one class share work.
//! Evaluation only reads `&Snapshot`.

use std::collections::HashMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

pub(crate) use crate::cells::{Checked, FilterCells};
#[path = "diagnosis.rs"]
mod diagnosis;
use crate::framework::observe::point;
use crate::framework::runtime::{LocalScoreCache, PreFilterOutcome, ScoreTotals};
use crate::framework::{Code, CycleState, Framework, Status};
use crate::scheduler::{NODE_CHUNK, num_feasible_nodes_to_find};
use crate::snapshot::{PodInfo, Snapshot};
pub(crate) use diagnosis::Diagnosis;
use diagnosis::same_str;

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
pub(crate) fn find_feasible<'a>(
    has_filters: bool,
    known: impl Fn(usize) -> bool + Sync,
    check: impl Fn(usize) -> Checked<'a> + Sync,
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
            let ck = check(idx);
            match ck.status() {
                None => {
                    feasible.push(idx);
                    if feasible.len() >= to_find {
                        return Ok((feasible, i + 1, diag));
                    }
                }
                Some(st) if st.code == Code::Error => return Err(ck.into_status()),
                Some(st) if matches!(ck, Checked::Fail(_)) => diag.add_kept(st),
                Some(st) => diag.add(st),
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
                    let ck = check(idx);
                    match ck.status() {
                        None => ok.push(i),
                        Some(st) if st.code == Code::Error => {
                            return (ok, bad, Some(ck.into_status()));
                        }
                        Some(st) if matches!(ck, Checked::Fail(_)) => bad.add_kept(st),
                        Some(st) => bad.add(st),
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

/// Node-local work shared by every class of one node-local class
/// ([`PodInfo::node_local_class`]) and profile: each node's result of the node-local
/// Filters (those without PreFilter extensions) and its node-local scores. Pods
/// that differ only in labels, namespace, owners or pod (anti-)affinity / spread
/// constraints share these cells. Cells are stamped with the node's generation, so
/// they stay valid across commits and batches for unchanged nodes; setting up or
/// reusing the cells costs no work per node (a node never visited costs one zeroed
/// word per table).
pub(crate) struct LocalCells {
    /// Per node: the node-local Filters' verdict.
    pub(crate) filter: FilterCells,
    pub(crate) scores: LocalScoreCache,
    nodes_version: u64,
    /// The skipped node-local Filters (`filter_skip_mask` restricted to them) the
    /// filter cells are computed for; a pod with another set does not use them.
    pub(crate) skip_key: u64,
}

impl LocalCells {
    /// Cells for `num_nodes` nodes (0: none, for a class whose PreFilter failed).
    fn new(fw: &Framework, num_nodes: usize, snap: &Snapshot, skip_key: u64) -> Self {
        LocalCells {
            filter: FilterCells::new(num_nodes),
            scores: if num_nodes == snap.num_nodes() {
                LocalScoreCache::for_snapshot(fw, snap)
            } else {
                LocalScoreCache::new(fw, num_nodes)
            },
            nodes_version: snap.nodes_version(),
            skip_key,
        }
    }

    /// Whether the cells serve a new batch: same node set (cells of changed nodes
    /// no longer match their node's generation, so nothing needs clearing).
    fn valid_for(&self, snap: &Snapshot) -> bool {
        self.nodes_version == snap.nodes_version()
    }

    /// Forgets the Filter and score cells of nodes changed since they were computed,
    /// in one read of each node, and marks the score cache fresh for `snap`: until
    /// the next commit a filled cell is then current without reading its node
    /// (`LocalScoreCache::fresh_for`, `FilterCells::passes_fresh`). Worth its pass
    /// over every node only for a class with many pods in the batch
    /// (`refresh_pays`); otherwise cells are matched by generation.
    fn refresh(&mut self, snap: &Snapshot) {
        if self.filter.len() != snap.num_nodes() {
            return;
        }
        let filter = &self.filter;
        self.scores
            .invalidate_stale_with(snap, |i, g| filter.forget_stale(i, g));
    }
}

/// Per-class cells of the cross-node Filters the class's PreFilter state declared
/// node-local (`CycleState::mark_filter_node_local`): their result depends on the
/// whole pod (labels, affinity terms), so they are not shared across classes.
pub(crate) struct DeclaredCells {
    /// The declared Filters (bit per position in `Framework::filter`).
    mask: u64,
    filter: FilterCells,
    nodes_version: u64,
}

/// Shared work for pods of one equivalence class: PreFilter once per batch, the
/// node-local cells of its node-local class ([`LocalCells`], shared with other
/// classes) and the cells of its declared cross-node Filters ([`DeclaredCells`]).
/// Cross-node Filters (InterPodAffinity, PodTopologySpread, ...) not declared
/// node-local are never cached, they run per pod against its own PreFilter state.
pub(crate) struct ClassCache {
    pub(crate) pre: Result<(CycleState, PreFilterOutcome), Status>,
    pub(crate) local: Arc<LocalCells>,
    declared: Option<DeclaredCells>,
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

    /// The cross-node Filters `state` declared node-local (not skipped).
    pub(crate) fn declared_mask(fw: &Framework, cross_mask: u64, state: &CycleState) -> u64 {
        cross_mask & !state.filter_skip_mask & !fw.cross_filter_mask_with(cross_mask, state)
    }

    /// Declared cells for the class's PreFilter state, reusing `old` when it was
    /// computed for the same declared Filters and node set.
    fn declared_for(
        fw: &Framework,
        snap: &Snapshot,
        cross_mask: u64,
        pre: &Result<(CycleState, PreFilterOutcome), Status>,
        old: Option<DeclaredCells>,
    ) -> Option<DeclaredCells> {
        let mask = match pre {
            Ok((st, _)) => Self::declared_mask(fw, cross_mask, st),
            Err(_) => 0,
        };
        if mask == 0 {
            return None;
        }
        match old {
            Some(d) if d.mask == mask && d.nodes_version == snap.nodes_version() => Some(d),
            _ => Some(DeclaredCells {
                mask,
                filter: FilterCells::new(snap.num_nodes()),
                nodes_version: snap.nodes_version(),
            }),
        }
    }
}

/// Node cells (nodes × node-local classes) kept across batches: the least recently
/// used node-local classes' cells beyond this are dropped (about 40 bytes per
/// node cell: 80 MB at the budget; every node-local class of the mixed profile at
/// 5,000 nodes fits).
const LOCAL_CELLS_BUDGET: usize = 1 << 21;

/// Whether refreshing a reused class's cells (one read of every node) pays for
/// itself: each of the class's pods in the batch then skips a node read per visited
/// node, and a pod visits on the order of kube's `percentageOfNodesToScore` share
/// of the nodes (hundreds), so a class with a few dozen pods (SchedulingBasic's
/// whole batch) gains, while the many small classes of a mixed workload would pay
/// an O(all nodes) pass per batch for little.
fn refresh_pays(pods_in_batch: usize, num_nodes: usize) -> bool {
    pods_in_batch.saturating_mul(256) >= num_nodes
}

/// (node-local class, profile, skipped node-local Filters).
type LocalKey = (u64, usize, u64);

/// The class caches of a batch, and the node-local cells they share (kept across
/// batches for the node-local classes that come again, least recently used dropped
/// beyond [`LOCAL_CELLS_BUDGET`]).
#[derive(Default)]
pub(crate) struct ClassCaches {
    classes: HashMap<(u64, usize), ClassCache>,
    /// Per (node-local class, profile, skipped node-local Filters): its cells and
    /// the batch that last used them.
    locals: HashMap<LocalKey, (Arc<LocalCells>, u64)>,
    batch: u64,
}

/// The skipped node-local (not cross-node) Filters of a PreFilter outcome.
fn local_skip_key(cross_mask: u64, pre: &Result<(CycleState, PreFilterOutcome), Status>) -> u64 {
    match pre {
        Ok((st, _)) => st.filter_skip_mask & !cross_mask,
        Err(_) => u64::MAX,
    }
}

impl ClassCaches {
    pub(crate) fn get(&self, key: &(u64, usize)) -> Option<&ClassCache> {
        self.classes.get(key)
    }

    /// Builds the caches of a batch from the previous batch's. `classes`: class
    /// (key, profile) → members (batch positions); `class_of[j]` the class key of
    /// the pod at position j. Every class gets a cache (its PreFilter runs once,
    /// the classes' PreFilters in parallel), with the node-local cells of its
    /// node-local class, kept from earlier batches when they are still valid. The
    /// node-local class of a pod whose class key is not its own equivalence
    /// (interchangeable claims) is that class key.
    pub(crate) fn prepare(
        previous: ClassCaches,
        fws: &[Framework],
        snap: &Snapshot,
        pods: &[&PodInfo],
        classes: &HashMap<(u64, usize), Vec<usize>>,
        class_of: &[u64],
    ) -> ClassCaches {
        let local_of = |j: usize| {
            if class_of[j] != pods[j].equivalence {
                class_of[j]
            } else {
                pods[j].node_local_class
            }
        };
        let ClassCaches {
            classes: prev_classes,
            locals: mut prev_locals,
            batch,
        } = previous;
        let batch = batch + 1;
        let mut prev: HashMap<(u64, usize), Option<DeclaredCells>> = prev_classes
            .into_iter()
            .map(|(k, c)| (k, c.declared))
            .collect();
        // Sorted, so caches are built in the same order every run.
        let mut chosen: Vec<(&(u64, usize), &Vec<usize>)> = classes.iter().collect();
        chosen.sort_unstable_by_key(|(_, m)| m[0]);
        // The classes' PreFilters, in parallel (each reads only the snapshot).
        let pres: Vec<Result<(CycleState, PreFilterOutcome), Status>> = chosen
            .par_iter()
            .map(|(key, members)| ClassCache::pre_filter(&fws[key.1], snap, pods[members[0]]))
            .collect();
        let mut out = ClassCaches {
            batch,
            ..ClassCaches::default()
        };
        for ((&key, members), pre) in chosen.into_iter().zip(pres) {
            let j = members[0];
            let fw = &fws[key.1];
            let cross_mask = fw.cross_node_filter_mask();
            let skip_key = local_skip_key(cross_mask, &pre);
            // Cells per set of skipped node-local Filters, so classes of one
            // node-local class whose PreFilters skip differently do not evict each
            // other's cells. A class whose PreFilter rejected the pod reads no cell.
            let lk = (local_of(j), key.1, skip_key);
            let local = match out.locals.get(&lk) {
                Some((l, _)) => l.clone(),
                None if pre.is_err() => Arc::new(LocalCells::new(fw, 0, snap, skip_key)),
                None => {
                    let l = match prev_locals.remove(&lk) {
                        Some((mut l, _)) if l.valid_for(snap) => {
                            if refresh_pays(members.len(), snap.num_nodes())
                                && let Some(cells) = Arc::get_mut(&mut l)
                            {
                                cells.refresh(snap);
                            }
                            l
                        }
                        _ => Arc::new(LocalCells::new(fw, snap.num_nodes(), snap, skip_key)),
                    };
                    out.locals.insert(lk, (l.clone(), batch));
                    l
                }
            };
            let declared =
                ClassCache::declared_for(fw, snap, cross_mask, &pre, prev.remove(&key).flatten());
            out.classes.insert(
                key,
                ClassCache {
                    pre,
                    local,
                    declared,
                    cross_mask,
                },
            );
        }
        // Cells of node-local classes not in this batch, most recently used first,
        // while within the budget.
        let mut cells: usize = out.locals.values().map(|(l, _)| l.filter.len()).sum();
        let mut rest: Vec<(LocalKey, (Arc<LocalCells>, u64))> = prev_locals
            .into_iter()
            .filter(|(_, (l, _))| l.nodes_version == snap.nodes_version())
            .collect();
        rest.sort_unstable_by_key(|(k, (_, used))| (std::cmp::Reverse(*used), *k));
        for (k, (l, used)) in rest {
            cells += l.filter.len();
            if cells > LOCAL_CELLS_BUDGET {
                break;
            }
            out.locals.insert(k, (l, used));
        }
        out
    }
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
    // The node-local cells serve pods whose node-local Filters skipped what the
    // cells were computed for (the same for every pod of a node-local class).
    let class = cache;
    let cache = cache.filter(|c| state.filter_skip_mask & !c.cross_mask == c.local.skip_key);
    // Cross-node Filters this pod declared node-local: cached per class when the
    // class's PreFilter state declared the same ones, else run live.
    let declared = cache.and_then(|c| {
        c.declared
            .as_ref()
            .filter(|d| d.mask == ClassCache::declared_mask(fw, c.cross_mask, &state))
    });
    let live = match cache {
        Some(c) => {
            let all_declared = ClassCache::declared_mask(fw, c.cross_mask, &state);
            cross | (all_declared & !declared.map_or(0, |d| d.mask))
        }
        None => cross,
    };
    // Position bound: the Filters before the first failing one (profile order).
    let before = |st: &Status| -> u64 {
        if st.is_success() {
            return u64::MAX;
        }
        match fw.filter.iter().position(|p| same_str(p.name(), st.plugin)) {
            Some(i) if i < 64 => (1u64 << i) - 1,
            _ => u64::MAX,
        }
    };
    // The node-local verdict: the node-local Filters' cells merged with the
    // declared cross-node Filters' cells (`None` without a class cache).
    let first_of = |idx: usize| -> Option<Checked<'_>> {
        let c = cache?;
        let node = &nodes[idx];
        let g = node.generation;
        let pure = !c.cross_mask;
        let mut first = c.local.filter.get_or_run(idx, g, || {
            fw.run_filter_masked(&state, pod, node, snap, pure)
        });
        if let Some(d) = declared {
            let x = d.filter.get_or_run(idx, g, || {
                fw.run_filter_masked(&state, pod, node, snap, d.mask)
            });
            // As in `run_filter`, the first failing plugin in profile order is
            // reported.
            if let Some(xs) = x.status()
                && first.status().is_none_or(|f| before(xs) < before(f))
            {
                first = x;
            }
        }
        Some(first)
    };
    let cached = |idx: usize| -> Checked<'_> {
        let Some(first) = first_of(idx) else {
            return Checked::of(direct(idx));
        };
        if live == 0 {
            return first;
        }
        let bound = first.status().map_or(u64::MAX, before);
        match Checked::of(fw.run_filter_masked(&state, pod, &nodes[idx], snap, live & bound)) {
            Checked::Pass => first,
            x => x,
        }
    };
    let t_filter = fw.point_start();
    // Nodes whose cached Filters passed at their current generation, for a pod
    // without live cross-node Filters: feasible without running anything.
    let pass_local: Option<&FilterCells> = cache.filter(|_| live == 0).map(|c| &c.local.filter);
    let pass_declared: Option<&FilterCells> = declared.map(|d| &d.filter);
    let known = |idx: usize| match pass_local {
        Some(p) => {
            let g = nodes[idx].generation;
            p.passes(idx, g) && pass_declared.is_none_or(|d| d.passes(idx, g))
        }
        None => false,
    };
    // Live cross-node Filters with a bulk verdict for this pod and state
    // (`FilterPlugin::filter_mask`, computed here, so after the committer's
    // AddPod it describes the updated state): a node's verdict for them is a bit.
    let mut bulk_bits: Vec<u64> = Vec::new();
    let bulk = match cache {
        Some(_) if live != 0 => fw.filter_bulk(&state, pod, snap, live, &mut bulk_bits),
        _ => 0,
    };
    let found = if bulk != 0 {
        // The other live Filters, run per node.
        let rest = live & !bulk;
        let in_bulk = |idx: usize| bulk_bits[idx / 64] >> (idx % 64) & 1 == 1;
        let local = cache.map(|c| &c.local.filter);
        let known_bulk = |idx: usize| {
            rest == 0
                && in_bulk(idx)
                && local.is_some_and(|p| {
                    let g = nodes[idx].generation;
                    p.passes(idx, g) && pass_declared.is_none_or(|d| d.passes(idx, g))
                })
        };
        // Never reported: the walk's diagnosis is only used when no node is
        // feasible, and then it is rebuilt by the per-node path below.
        let rejected = Status::unschedulable("rejected by a bulk Filter verdict");
        // A node's verdict, exact wherever it decides the walk: feasible or not,
        // and an Error where the per-node path (`cached`) returns one (a covered
        // plugin's Filter does not err where its bulk verdict is offered).
        let bulk_check = |idx: usize| -> Checked<'_> {
            let Some(first) = first_of(idx) else {
                return cached(idx);
            };
            match first.status() {
                None => {}
                // Only covered Filters precede the node-local rejection: the
                // node is rejected.
                Some(st) if st.code != Code::Error && rest & before(st) == 0 => {
                    return first;
                }
                Some(_) => return cached(idx),
            }
            if !in_bulk(idx) {
                return if rest == 0 {
                    Checked::Fail(&rejected)
                } else {
                    cached(idx)
                };
            }
            if rest == 0 {
                return Checked::Pass;
            }
            Checked::of(fw.run_filter_masked(&state, pod, &nodes[idx], snap, rest))
        };
        let walked = match cache {
            // Every live Filter covered: one bit and the node-local cells' stamps
            // per node, in rotation order (no Status, no Diagnosis); a node whose
            // cells are not filled at its generation goes through `bulk_check`.
            Some(c) if rest == 0 => {
                let walk = || -> Result<(Vec<usize>, usize, Diagnosis), Status> {
                    let mut feasible = Vec::with_capacity(to_find.min(n));
                    let cells = &c.local.filter;
                    for i in 0..n {
                        let idx = order(i);
                        let g = nodes[idx].generation;
                        let pass = if in_bulk(idx) {
                            if cells.passes(idx, g)
                                && pass_declared.is_none_or(|d| d.passes(idx, g))
                            {
                                true
                            } else {
                                bulk_check(idx).into_verdict()?
                            }
                        } else if cells.known(idx, g)
                            && pass_declared.is_none_or(|d| d.known(idx, g))
                        {
                            // Rejected by a covered Filter; its node-local
                            // verdict is known, so no Error either.
                            false
                        } else {
                            bulk_check(idx).into_verdict()?
                        };
                        if pass {
                            feasible.push(idx);
                            if feasible.len() >= to_find {
                                return Ok((feasible, i + 1, Diagnosis::default()));
                            }
                        }
                    }
                    Ok((feasible, n, Diagnosis::default()))
                };
                walk()
            }
            _ => find_feasible(true, known_bulk, bulk_check, order, n, to_find, parallel),
        };
        match walked {
            // No feasible node: the diagnosis (reasons per node) of the per-node
            // path; it visits the same nodes with the same verdicts.
            Ok((f, _, _)) if f.is_empty() => {
                find_feasible(true, known, cached, order, n, to_find, parallel)
            }
            r => r,
        }
    } else {
        find_feasible(
            !fw.filter.is_empty(),
            known,
            cached,
            order,
            n,
            to_find,
            parallel,
        )
    };
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
    let scores = fw.run_score_totals(&state, pod, snap, &feasible, class.map(|c| &c.local.scores));
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

#[cfg(test)]
#[path = "evaluate_bulk_tests.rs"]
mod bulk_tests;
