//! corral-batch: Volcano-compatible queues, all-or-nothing gangs, fair share,
//! gang-aware preemption, reclaim and backfill, built on the core framework.
//!
//! A *session* ([`session::Session`]) is opened over the core [`Scheduler`]'s
//! snapshot: every pod belongs to a job (its PodGroup, or a one-member gang of its
//! own in queue `default`), every job to a queue. The configured actions
//! ([`actions`]) then run in order, consulting the session plugins ([`plugins`]) for
//! every policy decision. Pod placement itself always goes through the core: the
//! profile's PreFilter/Filter/Score plugins, parallel evaluation and ordered commit
//! (`Scheduler::schedule_all`).
//!
//! Invariants:
//! - A gang is committed only when the gang plugin says it is ready (minMember,
//!   minTaskMember, minResources); otherwise every pod it placed is removed from the
//!   snapshot before the next job is considered.
//! - No queue is charged beyond its capability (checked per task before placement).
//! - Evictions happen only when the preemptor's placement on the freed node was
//!   simulated successfully (all filters), and never leave a running gang below
//!   minMember (the whole gang goes instead).
//! - corral-batch depends on the engine, plugins and core, never the other way:
//!   the engine's `Report` has no batch fields; a session's result is a
//!   [`SessionReport`].

pub mod actions;
pub mod config;
pub mod fit;
pub mod hypernodes;
pub mod objects;
pub mod plugins;
pub mod res;
pub mod running;
pub mod session;
pub mod tiers;
pub mod volcano_conf;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_volumes;

use std::sync::Arc;
use std::time::Instant;

pub use objects::{BatchObjects, EXTRA_KINDS};
pub use session::{Eviction, PodGroupStatus, QueueStatus, SessionConfig};

// The lower layers, imported at the root so that batch files name them
// `crate::snapshot`, `crate::scheduler`, ...
#[cfg(test)]
use corral_core::testutil;
use corral_core::{framework, impl_plugin, resources, snapshot};
use corral_engine::{input, scheduler};

use serde::Serialize;

use crate::scheduler::{Explain, Placement, Report, Scheduler, Stats, Unschedulable};
use crate::snapshot::PodInfo;

/// The result of batch sessions: the engine's report plus what only sessions
/// decide. Serializes flat, in the order of `simulate`'s documented JSON schema
/// (placements, unschedulable, explain, evictions, nominated, podgroups, queues,
/// annotations, stats).
#[derive(Debug, Clone, Default)]
pub struct SessionReport {
    /// Placements, unschedulable pods, explanations, annotations and stats.
    pub core: Report,
    /// Pods evicted by preempt/reclaim.
    pub evictions: Vec<Eviction>,
    /// PodGroup phases and aggregated messages.
    pub podgroups: Vec<PodGroupStatus>,
    /// Queue deserved/allocated.
    pub queues: Vec<QueueStatus>,
    /// Preemptors nominated to the node their victims free; they bind there first
    /// thing in the next session.
    pub nominated: Vec<Placement>,
    /// Nodes that failed (`simulate --fail-node`, a timeline event): their pods
    /// were re-placed, in priority order, before other pending work.
    pub failed_nodes: Vec<FailedNode>,
}

/// A failed node and what became of its pods.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FailedNode {
    pub node: String,
    /// Its pods to re-place, in the order they were re-placed (priority, then
    /// creation).
    pub evicted: Vec<String>,
    /// Pods that do not move with a node (DaemonSet and mirror pods): gone with it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
}

impl SessionReport {
    /// Appends the results of a later run over the same snapshot lineage: its
    /// placements, evictions, nominations and explanations are added; statuses and
    /// the unschedulable list are the later run's; stats are summed.
    pub fn then(mut self, later: SessionReport) -> SessionReport {
        let SessionReport {
            core,
            evictions,
            podgroups,
            queues,
            nominated,
            failed_nodes,
        } = later;
        self.core.placements.extend(core.placements);
        for e in core.explain {
            // A pod tried in both runs is explained by its last attempt.
            self.core.explain.retain(|x| x.pod != e.pod);
            self.core.explain.push(e);
        }
        self.core.annotations.extend(core.annotations);
        self.core.volume_bindings.extend(core.volume_bindings);
        self.core.unschedulable = core.unschedulable;
        let (a, b) = (&mut self.core.stats, core.stats);
        a.pods += b.pods;
        a.nodes = b.nodes;
        if b.decision_latency_us.max >= a.decision_latency_us.max {
            // The slower run's distribution (latencies are not kept to merge).
            a.decision_latency_us = b.decision_latency_us;
        }
        a.batches += b.batches;
        a.conflicts += b.conflicts;
        a.evaluate_ms += b.evaluate_ms;
        a.commit_ms += b.commit_ms;
        a.elapsed_ms += b.elapsed_ms;
        a.pods_per_second = if a.elapsed_ms > 0.0 {
            self.core.placements.len() as f64 * 1000.0 / a.elapsed_ms
        } else {
            0.0
        };
        self.evictions.extend(evictions);
        self.nominated.extend(nominated);
        self.failed_nodes.extend(failed_nodes);
        if !podgroups.is_empty() {
            self.podgroups = podgroups;
        }
        if !queues.is_empty() {
            self.queues = queues;
        }
        self
    }
}

impl From<Report> for SessionReport {
    fn from(core: Report) -> Self {
        SessionReport {
            core,
            ..SessionReport::default()
        }
    }
}

impl std::ops::Deref for SessionReport {
    type Target = Report;
    fn deref(&self) -> &Report {
        &self.core
    }
}

impl std::ops::DerefMut for SessionReport {
    fn deref_mut(&mut self) -> &mut Report {
        &mut self.core
    }
}

impl Serialize for SessionReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Flat<'a> {
            placements: &'a [Placement],
            unschedulable: &'a [Unschedulable],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            explain: &'a [Explain],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            evictions: &'a [Eviction],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            nominated: &'a [Placement],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            failed_nodes: &'a [FailedNode],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            podgroups: &'a [PodGroupStatus],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            queues: &'a [QueueStatus],
            #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
            annotations: &'a std::collections::BTreeMap<String, crate::framework::PodAnnotations>,
            #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
            volume_bindings:
                &'a std::collections::BTreeMap<String, corral_core::volumes::PodVolumeBindings>,
            stats: &'a Stats,
        }
        Flat {
            placements: &self.core.placements,
            unschedulable: &self.core.unschedulable,
            explain: &self.core.explain,
            evictions: &self.evictions,
            nominated: &self.nominated,
            failed_nodes: &self.failed_nodes,
            podgroups: &self.podgroups,
            queues: &self.queues,
            annotations: &self.core.annotations,
            volume_bindings: &self.core.volume_bindings,
            stats: &self.core.stats,
        }
        .serialize(s)
    }
}

/// The time of a static input: the newest creation/start timestamp of its pods, so
/// that simulating the same manifests always gives the same result
/// (`corral.session.now` overrides it).
pub fn snapshot_time(sched: &Scheduler, pending: &[PodInfo]) -> Option<i64> {
    let start = |p: &PodInfo| {
        p.pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.as_second())
    };
    let running = sched.snapshot.nodes().iter().flat_map(|n| n.pods.iter());
    running
        .map(|p| p.created.max(start(p).unwrap_or(0)))
        .chain(pending.iter().map(|p| p.created))
        .filter(|t| *t > 0)
        .max()
}

/// Runs `cycles` (≥ 1) sessions; evictions are applied between sessions and
/// pipelined preemptors are placed in the next one. Returns the report and the
/// scheduler (with its final snapshot).
pub fn run_sessions(
    sched: Scheduler,
    pending: Vec<PodInfo>,
    objs: &BatchObjects,
    cfg: &SessionConfig,
    cycles: usize,
) -> Result<(SessionReport, Scheduler), String> {
    run_sessions_with(sched, pending, objs, cfg, cycles, &mut |_, _| {})
}

/// [`run_sessions`], calling `progress(cycle, cycles)` before each session (for a
/// progress display).
pub fn run_sessions_with(
    mut sched: Scheduler,
    pending: Vec<PodInfo>,
    objs: &BatchObjects,
    cfg: &SessionConfig,
    cycles: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(SessionReport, Scheduler), String> {
    let plugins = cfg.plugins()?;
    let actions = cfg.actions();
    let now = cfg
        .now
        .or_else(|| snapshot_time(&sched, &pending))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    let t0 = Instant::now();
    let total_pods = pending.len();
    let mut pending: Vec<Arc<PodInfo>> = pending.into_iter().map(Arc::new).collect();
    let mut carry = session::Carry::default();
    let topology = Arc::new(hypernodes::Topology::new(objs, &sched.snapshot));
    let mut report = SessionReport::default();
    let (mut batches, mut conflicts) = (0, 0);
    let (mut evaluate_ms, mut commit_ms) = (0.0, 0.0);
    let period = cfg.period_seconds.unwrap_or(1).max(0);
    for cycle in 0..cycles.max(1) {
        progress(cycle, cycles.max(1));
        let mut ssn = session::Session::open(
            sched,
            pending,
            objs,
            plugins.clone(),
            actions.clone(),
            now + cycle as i64 * period,
            &carry,
        );
        ssn.pod_group_backoff = cfg.pod_group_backoff_seconds;
        ssn.topology = topology.clone();
        actions::run(&mut ssn);
        let closed = ssn.close();
        report.core.placements.extend(closed.placements);
        report.core.annotations.extend(closed.annotations);
        report.evictions.extend(closed.evictions);
        report.nominated.extend(closed.nominated);
        report.core.unschedulable = closed.unschedulable;
        report.podgroups = closed.podgroups;
        report.queues = closed.queues;
        batches += closed.batches;
        conflicts += closed.conflicts;
        evaluate_ms += closed.evaluate_ms;
        commit_ms += closed.commit_ms;
        sched = closed.sched;
        pending = closed.pending;
        carry = closed.carry;
    }
    // Reserve plugins' annotations of the pods that stayed placed (a gang rolled
    // back, or a pipelined preemptor taken off its node, keeps none).
    let placed: std::collections::HashSet<&str> = report
        .core
        .placements
        .iter()
        .map(|p| p.pod.as_str())
        .collect();
    report
        .core
        .annotations
        .retain(|k, _| placed.contains(k.as_str()));
    // Volume decisions of the placed pods: what the snapshot still assumes (a gang
    // that did not start holds none).
    for p in &report.core.placements {
        if let Some(b) = sched.snapshot.volumes().pod_bindings(&p.pod) {
            report.core.volume_bindings.insert(p.pod.clone(), b.clone());
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    report.core.stats = Stats {
        pods: total_pods,
        nodes: sched.snapshot.num_nodes(),
        elapsed_ms: secs * 1000.0,
        pods_per_second: if secs > 0.0 {
            report.core.placements.len() as f64 / secs
        } else {
            0.0
        },
        batches,
        conflicts,
        evaluate_ms,
        commit_ms,
        ..Stats::default()
    };
    Ok((report, sched))
}
