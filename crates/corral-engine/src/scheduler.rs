//! The scheduling loop: batches of pending pods are evaluated concurrently against
//! an immutable snapshot (filter + score, parallel across pods and nodes), then
//! committed one at a time in queue order, each re-validated against the decisions
//! committed before it (optimistic concurrency, as in Gödel).
//!
//! Invariants:
//! - During evaluation the snapshot is shared immutably (`&Snapshot`); it is mutated
//!   only by the sequential committer.
//! - A pod evaluated first in its batch, or with no commit since its evaluation, gets
//!   exactly kube-scheduler's decision for that snapshot. Later pods are re-validated:
//!   PreFilter state is brought up to date with `PreFilterExtensions::add_pod`, every
//!   Filter is re-run on the candidate, node-local scores are recomputed; if no
//!   candidate survives the pod is re-queued at the front (a conflict).
//! - All randomness comes from a per-pod RNG seeded from `--seed`, the pod's input
//!   sequence number and its attempt: results do not depend on thread timing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rayon::prelude::*;

use std::collections::HashMap;

use crate::framework::{CycleState, Framework, QueuedPodInfo, Status};
use crate::snapshot::{PodInfo, Snapshot};

use crate::evaluate::*;
use crate::explain::explain;
pub use crate::explain::{Explain, ExplainNode, FilterFailure};
pub use crate::report::{Latency, Placement, Report, Stats, Unschedulable};

/// kube-scheduler's `minFeasibleNodesToFind`.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// kube-scheduler's `minFeasibleNodesPercentageToFind`.
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: i64 = 5;
/// Nodes filtered per work unit when filtering in parallel across nodes.
pub(crate) const NODE_CHUNK: usize = 128;

/// `numFeasibleNodesToFind`: how many feasible nodes to look for among `n`.
pub fn num_feasible_nodes_to_find(percentage: Option<i32>, n: usize) -> usize {
    if n < MIN_FEASIBLE_NODES_TO_FIND {
        return n;
    }
    let mut p = i64::from(percentage.unwrap_or(0));
    if p <= 0 {
        p = (50 - n as i64 / 125).max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND);
    }
    let num = (n as i64 * p / 100) as usize;
    num.max(MIN_FEASIBLE_NODES_TO_FIND).min(n)
}

pub use crate::batch_size::*;

/// Scheduler options.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    /// Pods evaluated concurrently per batch (>= 1); with `adaptive_batch`, the
    /// largest batch.
    pub batch_size: usize,
    /// Adapt the batch size between [`ADAPTIVE_BATCH_MIN`] and `batch_size` (opt-in;
    /// off by default since session 7: measured no faster than the fixed 64 for
    /// SchedulingBasic, and it moved the health timeline's herd ratio above its
    /// bound — see BENCHMARKS.md "Batch size: adaptive vs fixed"): start small while
    /// the class caches are cold (the first pods do not wait for a whole cold
    /// batch), double after a batch without conflicts, halve after one in which
    /// more than a quarter of the pods conflicted (see [`next_batch_size`]).
    /// Depends only on the decisions, never on timing, so results stay
    /// reproducible.
    pub adaptive_batch: bool,
    /// Latency budget per batch (default [`DEFAULT_LATENCY_BUDGET`]; `None`: fixed
    /// batches of `batch_size`; not used with `adaptive_batch`): the first batch
    /// holds [`ADAPTIVE_BATCH_MIN`] pods, each next one as many as the budget
    /// holds at the previous batch's measured cost per pod (at most doubling, at
    /// least twice the worker threads so batches keep every thread busy, at most
    /// `batch_size`; see [`budget_batch_size`]). Placements do not depend on it:
    /// every pod is decided as with batch size 1.
    pub latency_budget: Option<Duration>,
    /// Best-scored candidates kept per pod for the committer (>= 1).
    pub candidates: usize,
    /// Pods (`ns/name`) to explain.
    pub explain: HashSet<String>,
    /// Opt-in (default 0 = kube-scheduler's exact argmax): candidates whose total
    /// score is within this many points of the best are "nearly equal" and one of
    /// them is chosen at random (seeded), so a node that just became attractive
    /// (e.g. recovered health) does not receive every pod of a burst at once.
    pub selection_tolerance: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 0,
            batch_size: DEFAULT_BATCH_SIZE,
            adaptive_batch: false,
            latency_budget: Some(DEFAULT_LATENCY_BUDGET),
            candidates: 16,
            explain: HashSet::new(),
            selection_tolerance: 0,
        }
    }
}

/// The scheduler: profiles, snapshot and the rotating node start index.
pub struct Scheduler {
    pub frameworks: Vec<Framework>,
    pub snapshot: Snapshot,
    pub opts: Options,
    next_start: usize,
    /// Per node: the batch epoch in which it last received a pod.
    touched: Vec<u64>,
    epoch: u64,
    eval_time: Duration,
    commit_time: Duration,
    /// Equivalence-class caches of the previous batch (see [`ClassCaches`]).
    class_caches: ClassCaches,
    /// The current batch size (see [`Options::adaptive_batch`]); 0 = not started.
    batch_now: usize,
    /// Conflicts in the last batch (no candidate survived re-validation).
    batch_conflicts: usize,
    /// Stale or deferred pods evaluated at commit in the current `schedule_all`.
    reevaluated: u64,
}

struct Failed {
    q: QueuedPodInfo,
    message: String,
    retryable: bool,
    placed_at_failure: usize,
}

impl Scheduler {
    pub fn new(frameworks: Vec<Framework>, snapshot: Snapshot, opts: Options) -> Self {
        Scheduler {
            frameworks,
            snapshot,
            opts,
            next_start: 0,
            touched: Vec::new(),
            epoch: 0,
            eval_time: Duration::ZERO,
            commit_time: Duration::ZERO,
            class_caches: ClassCaches::default(),
            batch_now: 0,
            batch_conflicts: 0,
            reevaluated: 0,
        }
    }

    /// The profile for a scheduler name.
    pub fn framework_for(&self, scheduler_name: &str) -> Option<usize> {
        self.frameworks
            .iter()
            .position(|f| f.scheduler_name == scheduler_name)
    }

    /// Schedules `pending` pods (each must name one of the profiles) to completion.
    pub fn schedule_all(&mut self, pending: Vec<PodInfo>) -> Report {
        let t0 = Instant::now();
        self.reevaluated = 0;
        let mut report = Report::default();
        let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok();
        let total_pods = pending.len();
        let qs = self.frameworks.first().map(|f| f.queue_sort.clone());
        let mut queue: Vec<QueuedPodInfo> = pending
            .into_iter()
            .map(|p| QueuedPodInfo {
                pod: Arc::new(p),
                attempts: 0,
            })
            .collect();
        if let Some(qs) = &qs {
            queue.sort_by(|a, b| {
                if qs.less(a, b) {
                    std::cmp::Ordering::Less
                } else if qs.less(b, a) {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            });
        }
        let mut failed: Vec<Failed> = Vec::new();
        let mut placed = 0usize;
        let mut batches = 0u64;
        let mut conflicts = 0u64;
        loop {
            let mut q: std::collections::VecDeque<QueuedPodInfo> = queue.into();
            while !q.is_empty() {
                let max = self.opts.batch_size.max(1);
                let budget = self
                    .opts
                    .latency_budget
                    .filter(|_| !self.opts.adaptive_batch);
                let budget_min = ADAPTIVE_BATCH_MIN.max(rayon::current_num_threads() * 2);
                let size = if let Some(_b) = budget {
                    if self.batch_now == 0 {
                        budget_min.min(max)
                    } else {
                        self.batch_now.min(max)
                    }
                } else if !self.opts.adaptive_batch {
                    max
                } else if self.batch_now == 0 {
                    ADAPTIVE_BATCH_MIN.min(max)
                } else {
                    self.batch_now.min(max)
                };
                let take = size.min(q.len());
                let batch: Vec<QueuedPodInfo> = q.drain(..take).collect();
                batches += 1;
                let bt = Instant::now();
                let requeue = self.run_batch(
                    batch,
                    bt,
                    &mut report,
                    &mut hist,
                    &mut failed,
                    &mut placed,
                    &mut conflicts,
                );
                for r in requeue.into_iter().rev() {
                    q.push_front(r);
                }
                if self.opts.adaptive_batch {
                    self.batch_now = next_batch_size(size, take, self.batch_conflicts, max);
                } else if let Some(b) = budget {
                    self.batch_now =
                        budget_batch_size(size, take, bt.elapsed(), b, budget_min, max);
                }
            }
            // Re-queue pods whose failure a later placement may have resolved
            // (kube-scheduler re-queues them on pod-add events).
            let (retry, keep): (Vec<Failed>, Vec<Failed>) = failed
                .into_iter()
                .partition(|f| f.retryable && placed > f.placed_at_failure);
            failed = keep;
            if retry.is_empty() {
                break;
            }
            queue = retry.into_iter().map(|f| f.q).collect();
        }
        for f in failed {
            // Explanations of unschedulable pods are evaluated on the final snapshot.
            if self.opts.explain.contains(&f.q.pod.key)
                && let Some(fi) = self.framework_for(&f.q.pod.scheduler_name)
            {
                report.explain.push(explain(
                    &self.frameworks[fi],
                    &self.snapshot,
                    &f.q.pod,
                    None,
                ));
            }
            report.unschedulable.push(Unschedulable {
                pod: f.q.pod.key.clone(),
                message: f.message,
            });
        }
        let elapsed = t0.elapsed();
        let secs = elapsed.as_secs_f64();
        report.stats = Stats {
            pods: total_pods,
            nodes: self.snapshot.num_nodes(),
            elapsed_ms: secs * 1000.0,
            pods_per_second: if secs > 0.0 {
                total_pods as f64 / secs
            } else {
                0.0
            },
            decision_latency_us: hist
                .map(|h| Latency {
                    p50: h.value_at_quantile(0.5) as f64,
                    p99: h.value_at_quantile(0.99) as f64,
                    max: h.max() as f64,
                })
                .unwrap_or_default(),
            batches,
            conflicts,
            reevaluated: self.reevaluated,
            evaluate_ms: self.eval_time.as_secs_f64() * 1000.0,
            commit_ms: self.commit_time.as_secs_f64() * 1000.0,
        };
        report
    }

    #[allow(clippy::too_many_arguments)]
    fn run_batch(
        &mut self,
        batch: Vec<QueuedPodInfo>,
        batch_start: Instant,
        report: &mut Report,
        hist: &mut Option<Histogram<u64>>,
        failed: &mut Vec<Failed>,
        placed: &mut usize,
        conflicts: &mut u64,
    ) -> Vec<QueuedPodInfo> {
        // Whether hostname label values are unique across nodes (cached by the
        // snapshot per node change).
        let hostname_local = self.snapshot.hostnames_unique();
        let snap = &self.snapshot;
        let snap_len = snap.num_nodes();
        let n = snap.num_nodes().max(1);
        let start = self.next_start;
        let parallel_nodes = batch.len() < rayon::current_num_threads().max(1) * 2;
        let k = self.opts.candidates.max(1).max(if batch.len() > 1 {
            batch.len().min(64)
        } else {
            1
        });
        let seed = self.opts.seed;
        let tol = self.opts.selection_tolerance;
        let fws = &self.frameworks;
        // Equivalence classes with several pods in this batch share PreFilter, Filter
        // results and node-local scores (all pure functions of pod spec and snapshot).
        // Pods whose claims are interchangeable (unbound WaitForFirstConsumer claims
        // of one shape) share a class although their claim names differ.
        let class_of: Vec<u64> = batch
            .iter()
            .map(|q| {
                crate::volumes::interchangeable_class(&q.pod, snap.volumes())
                    .unwrap_or(q.pod.equivalence)
            })
            .collect();
        let mut classes: HashMap<(u64, usize), Vec<usize>> = HashMap::new();
        for (j, q) in batch.iter().enumerate() {
            if let Some(fi) = fws
                .iter()
                .position(|f| f.scheduler_name == q.pod.scheduler_name)
            {
                classes.entry((class_of[j], fi)).or_default().push(j);
            }
        }
        // Per profile: the Filter plugins that can read other nodes' pods (computed
        // once per batch, not per pod).
        let cross_masks: Vec<u64> = self
            .frameworks
            .iter()
            .map(|f| f.cross_node_filter_mask())
            .collect();
        let previous = std::mem::take(&mut self.class_caches);
        let snap = &self.snapshot;
        let fws = &self.frameworks;
        let pods: Vec<&PodInfo> = batch.iter().map(|q| &*q.pod).collect();
        let caches = ClassCaches::prepare(previous, fws, snap, &pods, &classes, &class_of);
        drop(pods);
        // A pod whose class already has a pod earlier in this batch that its
        // cross-node plugins see (same spread selector, affinity terms matching its
        // own labels) is deferred: once that pod commits it is stale anyway, so it is
        // evaluated only at commit, from its class's PreFilter state brought up to
        // date (no wasted parallel evaluation).
        let deferred: Vec<bool> = batch
            .iter()
            .enumerate()
            .map(|(j, q)| {
                let Some(fi) = fws
                    .iter()
                    .position(|f| f.scheduler_name == q.pod.scheduler_name)
                else {
                    return false;
                };
                let Some(members) = classes.get(&(class_of[j], fi)) else {
                    return false;
                };
                let first = members[0];
                if first >= j {
                    return false;
                }
                match caches.get(&(class_of[j], fi)).map(|c| &c.pre) {
                    Some(Ok((st, _))) => cross_node_sensitive(
                        &fws[fi],
                        cross_masks[fi],
                        st,
                        &q.pod,
                        &[(batch[first].pod.clone(), 0)],
                        batch[first].pod.has_affinity(),
                        hostname_local,
                    ),
                    _ => false,
                }
            })
            .collect();
        // Evaluation: parallel across pods (and across nodes for small batches).
        #[allow(clippy::type_complexity)]
        let evals: Vec<(usize, Evaluation, usize, Option<crate::ranked::Window>)> = batch
            .par_iter()
            .enumerate()
            .map(|(j, q)| {
                let Some(fi) = fws
                    .iter()
                    .position(|f| f.scheduler_name == q.pod.scheduler_name)
                else {
                    return (
                        usize::MAX,
                        Evaluation {
                            state: CycleState::new(),
                            pre: None,
                            outcome: Outcome::Error(format!(
                                "no profile for schedulerName {:?}",
                                q.pod.scheduler_name
                            )),
                            processed: 0,
                        },
                        0,
                        None,
                    );
                };
                let fw = &fws[fi];
                let est = num_feasible_nodes_to_find(fw.percentage_of_nodes_to_score, n);
                let s = (start + j * est) % n;
                let mut rng = pod_rng(seed, &q.pod, q.attempts);
                let cache = caches.get(&(class_of[j], fi));
                if deferred[j]
                    && let Some(Ok((st, pre))) = cache.map(|c| &c.pre)
                {
                    return (
                        fi,
                        Evaluation {
                            state: st.clone(),
                            pre: Some(pre.clone()),
                            outcome: Outcome::Deferred,
                            processed: 0,
                        },
                        s,
                        None,
                    );
                }
                // The ranked fast path where it applies (same decision, and its
                // whole window for the committer), else the general evaluation.
                if let Some((ev, w)) = cache.and_then(|c| {
                    crate::ranked::evaluate_ranked_window(
                        fw,
                        snap,
                        &q.pod,
                        s,
                        &mut rng,
                        k,
                        tol,
                        parallel_nodes,
                        c,
                    )
                }) {
                    return (fi, ev, s, Some(w));
                }
                let ev = evaluate(
                    fw,
                    snap,
                    &q.pod,
                    s,
                    &mut rng,
                    k,
                    tol,
                    parallel_nodes,
                    cache,
                    false,
                    None,
                );
                (fi, ev, s, None)
            })
            .collect();
        self.class_caches = caches;
        let commit_start = Instant::now();
        self.eval_time += commit_start - batch_start;
        // The rotating start index advances pod by pod through the commits, by
        // what each pod's decision examined (its window, or its re-evaluation), so
        // every pod is decided from the start index the sequential procedure
        // (batch size 1) would use.
        self.next_start = start;
        self.epoch += 1;
        if self.touched.len() != snap_len {
            self.touched = vec![0; snap_len];
        }

        self.batch_conflicts = 0;
        // Commit: one at a time, in queue order.
        let mut committed: Vec<(Arc<PodInfo>, usize)> = Vec::new();
        // The distinct nodes of `committed` (those with `touched == epoch`).
        let mut touched_nodes: Vec<usize> = Vec::new();
        // Per class: touched nodes' verdicts and scores for `decide_in_window`.
        let mut window_memo: HashMap<(u64, usize), crate::ranked::WindowMemo> = HashMap::new();
        // How many of `committed` have pod (anti-)affinity terms.
        let mut committed_affinity = 0usize;
        let mut requeue = Vec::new();
        // Per class: the PreFilter state of its deferred pods, brought up to date
        // with the first `usize` committed pods (each deferred pod adds only the pods
        // committed since the previous one of its class, not the whole batch).
        let mut advanced: HashMap<
            (u64, usize),
            (
                CycleState,
                crate::framework::runtime::PreFilterOutcome,
                usize,
            ),
        > = HashMap::new();
        for (j, (q, (fi, mut ev, s_j, window))) in batch.into_iter().zip(evals).enumerate() {
            let pod = q.pod.clone();
            let fw = if fi == usize::MAX {
                None
            } else {
                Some(&self.frameworks[fi])
            };
            match ev.outcome {
                Outcome::Error(msg) => {
                    self.next_start = (self.next_start + ev.processed) % n;
                    record_failure(q, msg, false, *placed, failed);
                }
                Outcome::Unschedulable { message, retryable } => {
                    self.next_start = (self.next_start + ev.processed) % n;
                    record_failure(q, message, retryable, *placed, failed);
                }
                o @ (Outcome::Feasible(_) | Outcome::Deferred) => {
                    let Some(fw) = fw else { continue };
                    let is_deferred = matches!(o, Outcome::Deferred);
                    let cands = match o {
                        Outcome::Feasible(c) => c,
                        _ => Vec::new(),
                    };
                    // A pod whose cross-node plugins (pod affinity, topology spread)
                    // see a pod committed since its evaluation is evaluated again
                    // against the current snapshot: its feasible set and normalized
                    // scores may have changed anywhere, and kube-scheduler would
                    // decide on the current state.
                    let stale = is_deferred
                        || (!committed.is_empty()
                            && cross_node_sensitive(
                                fw,
                                cross_masks[fi],
                                &ev.state,
                                &pod,
                                &committed,
                                committed_affinity > 0,
                                hostname_local,
                            ));
                    // Evaluated from another start index than the sequential
                    // procedure would use now (a pod ahead of it examined another
                    // number of nodes): evaluated again from the current one.
                    let moved = !stale && s_j % n != self.next_start % n;
                    let chosen = if stale || moved {
                        None
                    } else if committed.is_empty() {
                        Some(cands[0].node)
                    } else if let Some(w) = &window {
                        // Exactly the sequential decision, or evaluated again.
                        if refresh_pre_filter(fw, &self.snapshot, &mut ev.state, &pod, &committed) {
                            crate::ranked::decide_in_window(
                                fw,
                                cross_masks[fi],
                                &self.snapshot,
                                &ev.state,
                                &pod,
                                &cands,
                                w,
                                &touched_nodes,
                                &self.touched,
                                self.epoch,
                                window_memo.entry((class_of[j], fi)).or_default(),
                            )
                        } else {
                            None
                        }
                    } else if tol == 0
                        && touched_nodes
                            .iter()
                            .any(|&t| (t + n - s_j % n) % n < ev.processed)
                    {
                        // The general path keeps no window: a node touched in its
                        // scanned range may change it (verdict, score, ties among
                        // all window nodes), so it is evaluated again (exact).
                        None
                    } else {
                        let r = revalidate(
                            fw,
                            cross_masks[fi],
                            &self.snapshot,
                            &mut ev.state,
                            &pod,
                            &cands,
                            &committed,
                            &self.touched,
                            self.epoch,
                            tol,
                        );
                        // No node of its window changed: its best candidate is the
                        // sequential choice while it still passes; else evaluated
                        // again.
                        r.filter(|&c| tol > 0 || c == cands[0].node)
                    };
                    let moved = moved || (!committed.is_empty() && (window.is_some() || tol == 0));
                    drop(window);
                    let chosen = match chosen {
                        Some(c) => {
                            self.next_start = (self.next_start + ev.processed) % n;
                            Some(c)
                        }
                        None => {
                            // Conflict (no candidate survived) or stale: re-evaluate
                            // right now against the current snapshot (exactly what a
                            // sequential scheduler would do), so a pod is evaluated at
                            // most twice.
                            if stale || moved {
                                self.reevaluated += 1;
                            } else {
                                *conflicts += 1;
                                self.batch_conflicts += 1;
                            }
                            // A stale pod's PreFilter state is brought up to date
                            // with the pods committed since its evaluation
                            // (`PreFilterExtensions::add_pod`, exact), instead of
                            // running PreFilter again.
                            let class = (class_of[j], fi);
                            let reuse = if !stale {
                                None
                            } else if is_deferred && let Some(a) = advanced.get_mut(&class) {
                                // Same class, same starting state: continue from
                                // where its previous deferred pod left off.
                                let (st, pre, applied) = a;
                                if refresh_pre_filter(
                                    fw,
                                    &self.snapshot,
                                    st,
                                    &pod,
                                    &committed[*applied..],
                                ) {
                                    *applied = committed.len();
                                    Some((st.clone(), pre.clone()))
                                } else {
                                    advanced.remove(&class);
                                    None
                                }
                            } else {
                                ev.pre
                                    .take()
                                    .filter(|_| {
                                        refresh_pre_filter(
                                            fw,
                                            &self.snapshot,
                                            &mut ev.state,
                                            &pod,
                                            &committed,
                                        )
                                    })
                                    .map(|p| {
                                        if is_deferred {
                                            advanced.insert(
                                                class,
                                                (ev.state.clone(), p.clone(), committed.len()),
                                            );
                                        }
                                        (std::mem::take(&mut ev.state), p)
                                    })
                            };
                            let n_now = self.snapshot.num_nodes().max(1);
                            // The same draw as the sequential procedure's.
                            let mut rng = pod_rng(seed, &pod, q.attempts);
                            let fresh = evaluate(
                                fw,
                                &self.snapshot,
                                &pod,
                                self.next_start % n_now,
                                &mut rng,
                                // One candidate suffices, unless the selection
                                // tolerance needs the nearly-equal ones to choose from.
                                if tol > 0 {
                                    self.opts.candidates.max(1)
                                } else {
                                    1
                                },
                                tol,
                                true,
                                self.class_caches.get(&(pod.equivalence, fi)),
                                true,
                                reuse,
                            );
                            self.next_start = (self.next_start + fresh.processed) % n_now;
                            match fresh.outcome {
                                Outcome::Feasible(c) => {
                                    ev.state = fresh.state;
                                    c.first().map(|c| c.node)
                                }
                                Outcome::Unschedulable { message, retryable } => {
                                    record_failure(q, message, retryable, *placed, failed);
                                    continue;
                                }
                                Outcome::Error(msg) => {
                                    record_failure(q, msg, false, *placed, failed);
                                    continue;
                                }
                                // `evaluate` never defers.
                                Outcome::Deferred => None,
                            }
                        }
                    };
                    let Some(node_idx) = chosen else {
                        requeue.push(QueuedPodInfo {
                            pod,
                            attempts: q.attempts + 1,
                        });
                        continue;
                    };
                    let node_name = self.snapshot.nodes()[node_idx].name.to_string();
                    let explain_this = self.opts.explain.contains(&pod.key);
                    let ex = explain_this
                        .then(|| explain(fw, &self.snapshot, &pod, Some(node_name.clone())));
                    match bind_cycle(fw, &mut ev.state, &pod, &node_name, &self.snapshot) {
                        Ok(()) => {
                            // Reserve plugins' annotations (e.g. GpuShare's card
                            // assignment) go on the placed PodInfo, so later pods of
                            // this batch see them.
                            let pod = match ev.state.pod_annotations() {
                                Some(ann) => {
                                    report.annotations.insert(pod.key.clone(), ann.clone());
                                    Arc::new(with_annotations(&pod, ann))
                                }
                                None => pod,
                            };
                            self.snapshot.add_pod(pod.clone(), &node_name);
                            // VolumeBinding's Reserve: PVs taken / claims to
                            // provision, assumed so later pods cannot take them.
                            if let Some(b) = ev
                                .state
                                .read::<crate::volumes::PodVolumeBindings>(
                                    crate::volumes::BINDINGS_STATE_KEY,
                                )
                                .cloned()
                            {
                                report.volume_bindings.insert(pod.key.clone(), b.clone());
                                self.snapshot.assume_volumes(&pod.key, b);
                            }
                            if self.touched[node_idx] != self.epoch {
                                touched_nodes.push(node_idx);
                            }
                            self.touched[node_idx] = self.epoch;
                            committed_affinity += usize::from(pod.has_affinity());
                            committed.push((pod.clone(), node_idx));
                            *placed += 1;
                            report.placements.push(Placement {
                                pod: pod.key.clone(),
                                node: node_name,
                            });
                            if let Some(ex) = ex {
                                report.explain.push(ex);
                            }
                            if let Some(h) = hist.as_mut() {
                                let us = batch_start.elapsed().as_micros().max(1) as u64;
                                let _ = h.record(us.min(h.high()));
                            }
                        }
                        Err(st) => {
                            let msg = format!("binding rejected: {}", st);
                            record_failure(q, msg, false, *placed, failed);
                        }
                    }
                }
            }
        }
        self.commit_time += commit_start.elapsed();
        requeue
    }
}

fn record_failure(
    q: QueuedPodInfo,
    message: String,
    retryable: bool,
    placed: usize,
    failed: &mut Vec<Failed>,
) {
    failed.push(Failed {
        q,
        message,
        retryable,
        placed_at_failure: placed,
    });
}

/// `pod` with `ann` merged into its annotations (what the API pod will carry once
/// the binder patched it).
pub fn with_annotations(pod: &PodInfo, ann: &crate::framework::PodAnnotations) -> PodInfo {
    let mut p = pod.clone();
    let mut obj = (*p.pod).clone();
    let m = obj
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    for (k, v) in ann {
        m.insert(k.clone(), v.clone());
    }
    p.pod = Arc::new(obj);
    p
}

/// Reserve → Permit → PreBind → Bind → PostBind; Unreserve on failure.
fn bind_cycle(
    fw: &Framework,
    state: &mut CycleState,
    pod: &PodInfo,
    node: &str,
    snap: &Snapshot,
) -> Result<(), Status> {
    fw.run_reserve(state, pod, node, snap)?;
    if let Err((st, _)) = fw.run_permit(state, pod, node) {
        fw.run_unreserve(state, pod, node, snap);
        return Err(st);
    }
    if let Err(st) = fw.run_bind_cycle(state, pod, node) {
        fw.run_unreserve(state, pod, node, snap);
        return Err(st);
    }
    Ok(())
}

/// A pod's terms that score other pods' placement (`processExistingPod`'s terms).
fn scoring_terms(p: &PodInfo) -> Vec<&crate::snapshot::AffinityTerm> {
    p.required_affinity_terms
        .iter()
        .chain(p.preferred_affinity_terms.iter().map(|t| &t.term))
        .chain(p.preferred_anti_affinity_terms.iter().map(|t| &t.term))
        .collect()
}

/// True when a pod committed in this batch may change what the pod's cross-node
/// plugins decide beyond the committed pod's own node: a Filter plugin that reads
/// other pods (InterPodAffinity, PodTopologySpread) is active for it or the profile
/// has a Score plugin that is not node-local, and for some committed pod `q`:
/// - one of `q`'s affinity terms or preferred terms selects this pod (scores), or a
///   required anti-affinity term of `q` selects it with a topology key other than a
///   hostname key whose values are unique per node (`hostname_local`);
/// - one of this pod's affinity or preferred terms selects `q`, or one of its
///   required anti-affinity terms does so with a non-hostname key;
/// - one of this pod's spread constraints' selectors selects `q`.
///
/// Required anti-affinity on unique hostnames only changes the committed pod's own
/// node, which re-validation re-filters (touched nodes). Namespaces and
/// `matchLabelKeys` are ignored, which only makes the answer more often true.
fn cross_node_sensitive(
    fw: &Framework,
    cross_mask: u64,
    state: &CycleState,
    pod: &PodInfo,
    committed: &[(Arc<PodInfo>, usize)],
    any_committed_affinity: bool,
    hostname_local: bool,
) -> bool {
    use crate::snapshot::{AffinityTerm, LABEL_HOSTNAME};
    let cross_filter = fw.cross_filter_mask_with(cross_mask, state) != 0;
    // A cross-node Score plugin that skipped at evaluation (nothing matched then)
    // may apply now, so skipped ones count too.
    let cross_score = fw.score.iter().any(|ws| !ws.plugin.node_local());
    if !cross_filter && !cross_score {
        return false;
    }
    let spread: Vec<crate::labels::Selector> = match pod
        .spec()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or(&[])
        .iter()
        .map(|c| crate::labels::Selector::from_label_selector(c.label_selector.as_ref()))
        .collect()
    {
        Ok(v) => v,
        Err(_) => return true,
    };
    let local_anti = |t: &AffinityTerm| hostname_local && t.topology_key == LABEL_HOSTNAME;
    let own = scoring_terms(pod);
    // Nothing on this pod's side: only committed pods with terms can matter
    // (`any_committed_affinity`: whether one of `committed` has any).
    let own_side = !own.is_empty() || pod.has_affinity() || !spread.is_empty();
    if !own_side && !any_committed_affinity {
        return false;
    }
    committed.iter().any(|(q, _)| {
        if !own_side && !q.has_affinity() {
            return false;
        }
        (q.has_affinity()
            && scoring_terms(q)
                .iter()
                .any(|t| t.selector.matches(&pod.labels)))
            || q.required_anti_affinity_terms
                .iter()
                .any(|t| !local_anti(t) && t.selector.matches(&pod.labels))
            || own.iter().any(|t| t.selector.matches(&q.labels))
            || pod
                .required_anti_affinity_terms
                .iter()
                .any(|t| !local_anti(t) && t.selector.matches(&q.labels))
            || spread.iter().any(|s| s.matches(&q.labels))
    })
}

/// Brings a pod's PreFilter state (computed before `committed` were placed) up to
/// date with `PreFilterExtensions::add_pod`. False when that is not possible: a
/// plugin that skipped now applies, or an update fails (evaluate afresh then).
fn refresh_pre_filter(
    fw: &Framework,
    snap: &Snapshot,
    state: &mut CycleState,
    pod: &PodInfo,
    committed: &[(Arc<PodInfo>, usize)],
) -> bool {
    let nodes = snap.nodes();
    // One probe state for the plugins asked again (in profile order, as PreFilter).
    let mut probe: Option<CycleState> = None;
    for p in &fw.pre_filter {
        if state.filter_skipped(p.name()) {
            if !p.skip_depends_on_pods() {
                // Skips by the pod alone: still skips.
                continue;
            }
            let probe = probe.get_or_insert_with(CycleState::new);
            let (_, st) = p.pre_filter(probe, pod, snap);
            if !st.is_skip() {
                return false;
            }
        } else if let Some(ext) = p.extensions() {
            for (cp, ni) in committed {
                if !ext.add_pod(state, pod, cp, &nodes[*ni], snap).is_success() {
                    return false;
                }
            }
        }
    }
    true
}

/// Re-validates a pod's candidates against the snapshot after `committed` pods were
/// placed since its evaluation. Returns the best surviving candidate.
///
/// A candidate node that received no pod in this batch (`touched[node] != epoch`) is
/// unchanged: its node-local Filter results and scores still hold, so only the
/// cross-node filters (whose state `add_pod` just updated) are re-run. A touched node
/// is fully re-filtered and its node-local scores recomputed.
#[allow(clippy::too_many_arguments)]
fn revalidate(
    fw: &Framework,
    cross_mask: u64,
    snap: &Snapshot,
    state: &mut CycleState,
    pod: &PodInfo,
    cands: &[Candidate],
    committed: &[(Arc<PodInfo>, usize)],
    touched: &[u64],
    epoch: u64,
    tol: i64,
) -> Option<usize> {
    let nodes = snap.nodes();
    let mut probe: Option<CycleState> = None;
    for p in &fw.pre_filter {
        if state.filter_skipped(p.name()) {
            // A plugin that did not apply may apply now (e.g. a committed pod carries
            // required anti-affinity): re-evaluate fully in the next batch then.
            // Not asked again of a plugin that skips by the pod alone; one probe
            // state for the others (in profile order, as PreFilter).
            if !p.skip_depends_on_pods() {
                continue;
            }
            let probe = probe.get_or_insert_with(CycleState::new);
            let (_, st) = p.pre_filter(probe, pod, snap);
            if !st.is_skip() {
                return None;
            }
        } else if let Some(ext) = p.extensions() {
            for (cp, ni) in committed {
                let st = ext.add_pod(state, pod, cp, &nodes[*ni], snap);
                if !st.is_success() {
                    return None;
                }
            }
        }
    }
    // After `add_pod`, which may have withdrawn a node-local declaration.
    let cross = fw.cross_filter_mask_with(cross_mask, state);
    let rescore = fw.has_node_local_scores() && cands.len() > 1;
    let mut best: Option<(i64, usize)> = None;
    let mut all: Vec<(i64, usize)> = Vec::new();
    for c in cands {
        let node = &nodes[c.node];
        let changed = touched.get(c.node) == Some(&epoch);
        let adj = if changed {
            if !fw.run_filter(state, pod, node, snap).is_success() {
                continue;
            }
            if rescore {
                match fw.node_local_score(state, pod, node, snap) {
                    Ok(s) => c.total - c.local + s,
                    Err(_) => continue,
                }
            } else {
                c.total
            }
        } else {
            if cross != 0
                && !fw
                    .run_filter_masked(state, pod, node, snap, cross)
                    .is_success()
            {
                continue;
            }
            c.total
        };
        if tol > 0 {
            all.push((adj, c.node));
        }
        if best.is_none_or(|(b, _)| adj > b) {
            best = Some((adj, c.node));
        }
    }
    if tol > 0
        && let Some((b, _)) = best
    {
        // Candidates are in (shuffled) preference order: keep the first nearly-equal.
        return all.iter().find(|(a, _)| *a >= b - tol).map(|x| x.1);
    }
    best.map(|b| b.1)
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Framework>();
    is::<Snapshot>();
    let _ = Duration::ZERO;
}
