//! Per-profile framework runtime: runs the configured plugins of each extension point
//! in order, tagging statuses with the plugin that produced them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::observe::point;
use super::*;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

pub use super::score_cache::{LocalScoreCache, ScoreTotals};

/// A score plugin with its weight.
#[derive(Clone)]
pub struct WeightedScore {
    pub plugin: Arc<dyn ScorePlugin>,
    pub weight: i64,
}

/// A configured scheduling profile.
#[derive(Clone)]
pub struct Framework {
    pub scheduler_name: String,
    /// Profile (or global) `percentageOfNodesToScore`; `None`/0 = adaptive.
    pub percentage_of_nodes_to_score: Option<i32>,
    pub queue_sort: Arc<dyn QueueSortPlugin>,
    pub pre_filter: Vec<Arc<dyn PreFilterPlugin>>,
    pub filter: Vec<Arc<dyn FilterPlugin>>,
    pub post_filter: Vec<Arc<dyn PostFilterPlugin>>,
    pub pre_score: Vec<Arc<dyn PreScorePlugin>>,
    pub score: Vec<WeightedScore>,
    pub reserve: Vec<Arc<dyn ReservePlugin>>,
    pub permit: Vec<Arc<dyn PermitPlugin>>,
    pub pre_bind: Vec<Arc<dyn PreBindPlugin>>,
    pub bind: Vec<Arc<dyn BindPlugin>>,
    pub post_bind: Vec<Arc<dyn PostBindPlugin>>,
    /// Receives extension point and (sampled) plugin timings; `None`: nothing is
    /// timed ([`super::observe`]).
    pub observer: Option<Arc<dyn FrameworkObserver>>,
}

/// Outcome of the PreFilter phase.
#[derive(Debug, Clone)]
pub struct PreFilterOutcome {
    /// Node names the pod is restricted to (`None` = all).
    pub nodes: Option<BTreeSet<String>>,
    /// Plugins that returned a node restriction (for the absent-nodes reason).
    pub restricting_plugins: Vec<&'static str>,
}

/// The `n` lowest bits set (all 64 for `n` ≥ 64).
#[inline]
fn low_bits(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// Bit mask of the positions of `skipped` names in `names`.
fn mask_of<'a>(names: impl Iterator<Item = &'a str>, skipped: &[&str]) -> u64 {
    let mut m = 0u64;
    for (i, n) in names.enumerate() {
        if skipped.contains(&n) {
            m |= 1u64 << (i & 63);
        }
    }
    m
}

impl Framework {
    /// Runs PreFilter plugins. Plugins returning Skip are recorded in the state so
    /// their Filter is not run. A rejection or an empty node restriction is returned
    /// as `Err`.
    pub fn run_pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> Result<PreFilterOutcome, Status> {
        let mut result = PreFilterResult::all_nodes();
        let mut restricting = Vec::new();
        let obs = self.plugin_observer(state);
        for p in &self.pre_filter {
            let t = obs.map(|_| Instant::now());
            let (res, st) = p.pre_filter(state, pod, snap);
            if let (Some(o), Some(t)) = (obs, t) {
                o.plugin(
                    p.name(),
                    point::PRE_FILTER,
                    st.code,
                    t.elapsed().as_secs_f64(),
                );
            }
            if st.is_skip() {
                state.skip_filter.push(p.name());
                continue;
            }
            if !st.is_success() {
                return Err(st.with_plugin(p.name()));
            }
            if let Some(r) = res
                && r.node_names.is_some()
            {
                restricting.push(p.name());
                result = result.merge(r);
                if result.node_names.as_ref().is_some_and(|s| s.is_empty()) {
                    let msg = if restricting.len() == 1 {
                        format!("node(s) didn't satisfy plugin {}", restricting[0])
                    } else {
                        format!(
                            "node(s) didn't satisfy plugin(s) [{}] simultaneously",
                            restricting.join(" ")
                        )
                    };
                    return Err(Status::unresolvable(msg).with_plugin(p.name()));
                }
            }
        }
        state.filter_skip_mask = mask_of(self.filter.iter().map(|p| p.name()), &state.skip_filter);
        Ok(PreFilterOutcome {
            nodes: result.node_names,
            restricting_plugins: restricting,
        })
    }

    /// Runs Filter plugins on one node; returns the first non-success status.
    #[inline]
    pub fn run_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Status {
        self.run_filter_masked(state, pod, node, snap, u64::MAX)
    }

    /// Runs every Filter plugin on one node and returns all failures (for explain).
    pub fn run_filter_all(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Vec<Status> {
        self.filter
            .iter()
            .filter(|p| !state.filter_skipped(p.name()))
            .map(|p| p.filter(state, pod, node, snap).with_plugin(p.name()))
            .filter(|s| !s.is_success())
            .collect()
    }

    /// Runs PreScore plugins; Skip is recorded so the plugin's Score is not run.
    pub fn run_pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        nodes: &[&NodeInfo],
    ) -> Result<(), Status> {
        let obs = self.plugin_observer(state);
        for p in &self.pre_score {
            let t = obs.map(|_| Instant::now());
            let st = p.pre_score(state, pod, snap, nodes);
            if let (Some(o), Some(t)) = (obs, t) {
                o.plugin(
                    p.name(),
                    point::PRE_SCORE,
                    st.code,
                    t.elapsed().as_secs_f64(),
                );
            }
            if st.is_skip() {
                state.skip_score.push(p.name());
                continue;
            }
            if !st.is_success() {
                return Err(st.with_plugin(p.name()));
            }
        }
        state.score_skip_mask = mask_of(
            self.score.iter().map(|s| s.plugin.name()),
            &state.skip_score,
        );
        Ok(())
    }

    /// Scores `nodes` (snapshot indices) with every non-skipped Score plugin and
    /// normalizes. Returns, per score plugin (same order as `self.score`), the
    /// normalized 0..=100 score of each node, or `None` for a skipped plugin.
    /// [`Framework::run_score_totals`] gives the weighted totals directly.
    pub fn run_score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        nodes: &[usize],
    ) -> Result<Vec<Option<Vec<i64>>>, Status> {
        let all = snap.nodes();
        let obs = self.plugin_observer(state);
        let mut out = Vec::with_capacity(self.score.len());
        for (pi, ws) in self.score.iter().enumerate() {
            let p = &ws.plugin;
            if state.score_skip_mask & (1u64 << (pi & 63)) != 0 {
                out.push(None);
                continue;
            }
            // One plugin on one node, timed in sampled cycles.
            let score = |node: &NodeInfo| match obs {
                None => p.score(state, pod, node, snap),
                Some(o) => {
                    let t = Instant::now();
                    let r = p.score(state, pod, node, snap);
                    let code = r.as_ref().map_or_else(|st| st.code, |_| Code::Success);
                    o.plugin(p.name(), point::SCORE, code, t.elapsed().as_secs_f64());
                    r
                }
            };
            let mut scores = Vec::with_capacity(nodes.len());
            if obs.is_none() {
                // Untimed: the whole set at once (one state read for plugins that
                // override it).
                p.score_positions(state, pod, snap, nodes, &mut scores)
                    .map_err(|st| st.with_plugin(p.name()))?;
            } else {
                for &i in nodes {
                    let s = score(&all[i]).map_err(|st| st.with_plugin(p.name()))?;
                    scores.push(NodeScore { node: i, score: s });
                }
            }
            if let Some(n) = p.normalize() {
                let t = obs.map(|_| Instant::now());
                let st = n.normalize_score(state, pod, &mut scores);
                if let (Some(o), Some(t)) = (obs, t) {
                    let secs = t.elapsed().as_secs_f64();
                    o.plugin(p.name(), point::SCORE_NORMALIZE, st.code, secs);
                }
                if !st.is_success() {
                    return Err(st.with_plugin(p.name()));
                }
            }
            let mut v = Vec::with_capacity(scores.len());
            for s in scores {
                if !(MIN_NODE_SCORE..=MAX_NODE_SCORE).contains(&s.score) {
                    return Err(Status::error(format!(
                        "plugin {:?} returns an invalid score {}, it should in the range of [{}, {}] after normalizing",
                        p.name(),
                        s.score,
                        MIN_NODE_SCORE,
                        MAX_NODE_SCORE
                    ))
                    .with_plugin(p.name()));
                }
                v.push(s.score);
            }
            out.push(Some(v));
        }
        Ok(out)
    }

    /// The observer when this cycle's plugins are timed.
    #[inline]
    pub(super) fn plugin_observer(&self, state: &CycleState) -> Option<&dyn FrameworkObserver> {
        if state.record_plugin_metrics {
            self.observer.as_deref()
        } else {
            None
        }
    }

    /// `run_filter_masked` with each plugin timed (sampled cycles).
    fn filter_observed(
        &self,
        o: &dyn FrameworkObserver,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
        mask: u64,
    ) -> Status {
        for (i, p) in self.filter.iter().enumerate() {
            let bit = 1u64 << (i & 63);
            if mask & bit == 0 || state.filter_skip_mask & bit != 0 {
                continue;
            }
            let t = Instant::now();
            let st = p.filter(state, pod, node, snap);
            o.plugin(p.name(), point::FILTER, st.code, t.elapsed().as_secs_f64());
            if !st.is_success() {
                return st.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Reports one extension point's duration since `t0` when there is an observer.
    #[inline]
    pub fn observe_point(&self, point: &'static str, code: Code, t0: Option<Instant>) {
        if let (Some(o), Some(t0)) = (&self.observer, t0) {
            o.extension_point(
                &self.scheduler_name,
                point,
                code,
                t0.elapsed().as_secs_f64(),
            );
        }
    }

    /// Whether a new cycle's plugins are timed (set it as
    /// [`CycleState::record_plugin_metrics`]): one cycle out of
    /// [`super::observe::PLUGIN_METRICS_SAMPLE_EVERY`] (a shared counter, so the pods'
    /// random streams, and thus placements, are unaffected) when there is an
    /// observer.
    pub fn sample_plugin_metrics(&self) -> bool {
        static CYCLES: AtomicU64 = AtomicU64::new(0);
        self.observer.is_some()
            && CYCLES
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(super::observe::PLUGIN_METRICS_SAMPLE_EVERY)
    }

    /// `Some(now)` when there is an observer (the start of a timed extension point).
    #[inline]
    pub fn point_start(&self) -> Option<Instant> {
        self.observer.as_ref().map(|_| Instant::now())
    }

    /// Bit mask of Filter plugins whose result can change when pods are added on
    /// *other* nodes (their PreFilter has extensions: InterPodAffinity,
    /// PodTopologySpread, ...). Other filters are pure functions of (pod, node).
    pub fn cross_node_filter_mask(&self) -> u64 {
        // Names of the PreFilter plugins with extensions (a handful), without
        // allocating: this runs once per pod when the caller has no cached value.
        let mut ext: [&str; 8] = [""; 8];
        let mut n = 0;
        for p in &self.pre_filter {
            if p.extensions().is_some() {
                if n == ext.len() {
                    // More than fit: the general path.
                    let all: Vec<&str> = self
                        .pre_filter
                        .iter()
                        .filter(|p| p.extensions().is_some())
                        .map(|p| p.name())
                        .collect();
                    return mask_of(self.filter.iter().map(|p| p.name()), &all);
                }
                ext[n] = p.name();
                n += 1;
            }
        }
        if n == 0 {
            return 0;
        }
        mask_of(self.filter.iter().map(|p| p.name()), &ext[..n])
    }

    /// The cross-node Filter plugins that run live for this pod: those of
    /// [`Self::cross_node_filter_mask`] neither skipped nor declared node-local
    /// ([`CycleState::node_local_filter`]).
    pub fn cross_filter_mask_for(&self, state: &CycleState) -> u64 {
        self.cross_filter_mask_with(self.cross_node_filter_mask(), state)
    }

    /// [`Self::cross_filter_mask_for`] given `cross` = [`Self::cross_node_filter_mask`]
    /// (computed once per profile and batch by the caller).
    pub fn cross_filter_mask_with(&self, cross: u64, state: &CycleState) -> u64 {
        let mut m = cross & !state.filter_skip_mask;
        if m != 0 && !state.node_local_filter.is_empty() {
            m &= !mask_of(
                self.filter.iter().map(|p| p.name()),
                &state.node_local_filter,
            );
        }
        m
    }

    /// The bulk verdicts ([`FilterPlugin::filter_mask`]) of the Filter plugins in
    /// `mask` (not skipped) that offer one for this pod and state, ANDed into `out`
    /// (resized to `snap.num_nodes().div_ceil(64)` words: bit `i % 64` of word
    /// `i / 64` set when node `i` passes every covered plugin). Returns the covered
    /// plugins (bit per position in `self.filter`; 0: none, `out` unspecified). None
    /// in cycles whose plugins are timed (they are timed per node), nor for profiles
    /// with more than 64 Filter plugins.
    pub fn filter_bulk(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        mask: u64,
        out: &mut Vec<u64>,
    ) -> u64 {
        if self.filter.len() > 64 || self.plugin_observer(state).is_some() {
            return 0;
        }
        let words = snap.num_nodes().div_ceil(64);
        let mut covered = 0u64;
        let mut scratch: Vec<u64> = Vec::new();
        let mut run = mask & !state.filter_skip_mask & low_bits(self.filter.len());
        while run != 0 {
            let i = run.trailing_zeros() as usize;
            run &= run - 1;
            let p = &self.filter[i];
            if covered == 0 {
                out.clear();
                out.resize(words, 0);
                if p.filter_mask(state, pod, snap, out) {
                    covered |= 1u64 << i;
                }
                continue;
            }
            scratch.clear();
            scratch.resize(words, 0);
            if p.filter_mask(state, pod, snap, &mut scratch) {
                covered |= 1u64 << i;
                for (o, m) in out.iter_mut().zip(&scratch) {
                    *o &= m;
                }
            }
        }
        covered
    }

    /// Runs only the Filter plugins in `mask` (and not skipped) on one node.
    pub fn run_filter_masked(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
        mask: u64,
    ) -> Status {
        if let Some(o) = self.plugin_observer(state) {
            return self.filter_observed(o, state, pod, node, snap, mask);
        }
        if self.filter.len() > 64 {
            return self.filter_wide(state, pod, node, snap, mask);
        }
        // Only the plugins to run, in profile order: the set bits, lowest first (a
        // walk over every configured plugin testing its bit cost more than the
        // plugins themselves when one or two of ~20 run per node).
        let mut run = mask & !state.filter_skip_mask & low_bits(self.filter.len());
        while run != 0 {
            let i = run.trailing_zeros() as usize;
            run &= run - 1;
            let p = &self.filter[i];
            let st = p.filter(state, pod, node, snap);
            if !st.is_success() {
                return st.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// [`Self::run_filter_masked`] for profiles with more than 64 Filter plugins
    /// (mask bits are taken modulo 64, as everywhere else).
    #[cold]
    fn filter_wide(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
        mask: u64,
    ) -> Status {
        for (i, p) in self.filter.iter().enumerate() {
            let bit = 1u64 << (i & 63);
            if mask & bit == 0 || state.filter_skip_mask & bit != 0 {
                continue;
            }
            let st = p.filter(state, pod, node, snap);
            if !st.is_success() {
                return st.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Weighted sum of the node-local score plugins for one node (used by the batch
    /// committer to re-score candidates against the latest node state).
    pub fn node_local_score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Result<i64, Status> {
        let mut total = 0;
        for (pi, ws) in self.score.iter().enumerate() {
            if !ws.plugin.rescorable() || state.score_skip_mask & (1u64 << (pi & 63)) != 0 {
                continue;
            }
            let s = ws
                .plugin
                .score(state, pod, node, snap)
                .map_err(|st| st.with_plugin(ws.plugin.name()))?;
            total += s.clamp(MIN_NODE_SCORE, MAX_NODE_SCORE) * ws.weight;
        }
        Ok(total)
    }

    /// True when any score plugin is node-local.
    pub fn has_node_local_scores(&self) -> bool {
        self.score.iter().any(|s| s.plugin.rescorable())
    }

    /// Reserve plugins in order; on failure the already-reserved ones are unreserved.
    pub fn run_reserve(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        node: &str,
        snap: &Snapshot,
    ) -> Result<(), Status> {
        for (i, p) in self.reserve.iter().enumerate() {
            let st = p.reserve(state, pod, node, snap);
            if !st.is_success() {
                for q in self.reserve[..=i].iter().rev() {
                    q.unreserve(state, pod, node, snap);
                }
                return Err(st.with_plugin(p.name()));
            }
        }
        Ok(())
    }

    /// Unreserve in reverse order.
    pub fn run_unreserve(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        node: &str,
        snap: &Snapshot,
    ) {
        for p in self.reserve.iter().rev() {
            p.unreserve(state, pod, node, snap);
        }
    }

    /// Permit plugins; the first non-success (Wait or rejection) is returned.
    pub fn run_permit(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        node: &str,
    ) -> Result<(), (Status, std::time::Duration)> {
        for p in &self.permit {
            let (st, d) = p.permit(state, pod, node);
            if !st.is_success() {
                return Err((st.with_plugin(p.name()), d));
            }
        }
        Ok(())
    }

    /// PreBind, Bind (first non-Skip wins), PostBind.
    pub fn run_bind_cycle(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        node: &str,
    ) -> Result<(), Status> {
        for p in &self.pre_bind {
            let st = p.pre_bind(state, pod, node);
            if !st.is_success() {
                return Err(st.with_plugin(p.name()));
            }
        }
        let mut bound = false;
        for p in &self.bind {
            let st = p.bind(state, pod, node);
            if st.is_skip() {
                continue;
            }
            if !st.is_success() {
                return Err(st.with_plugin(p.name()));
            }
            bound = true;
            break;
        }
        if !bound {
            return Err(Status::error("no bind plugin bound the pod"));
        }
        for p in &self.post_bind {
            p.post_bind(state, pod, node);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Framework {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |v: Vec<&'static str>| v.join(",");
        f.debug_struct("Framework")
            .field("scheduler_name", &self.scheduler_name)
            .field("queue_sort", &self.queue_sort.name())
            .field(
                "pre_filter",
                &names(self.pre_filter.iter().map(|p| p.name()).collect()),
            )
            .field(
                "filter",
                &names(self.filter.iter().map(|p| p.name()).collect()),
            )
            .field(
                "score",
                &self
                    .score
                    .iter()
                    .map(|s| format!("{}:{}", s.plugin.name(), s.weight))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}
