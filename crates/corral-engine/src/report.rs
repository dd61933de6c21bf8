//! The result of a scheduling run: placements, unschedulable pods (with
//! kube-scheduler's aggregated messages), explanations, annotations and stats.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::explain::Explain;

/// A placement decision.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Placement {
    pub pod: String,
    pub node: String,
}

/// A pod that could not be placed, with kube-scheduler's aggregated message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Unschedulable {
    pub pod: String,
    pub message: String,
}

/// Decision latency percentiles (µs).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Run statistics.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Stats {
    pub pods: usize,
    pub nodes: usize,
    pub elapsed_ms: f64,
    pub pods_per_second: f64,
    pub decision_latency_us: Latency,
    pub batches: u64,
    pub conflicts: u64,
    /// Pods evaluated at commit because a pod committed ahead of them in their batch
    /// changed what their cross-node plugins see (stale, or deferred from the
    /// parallel phase); their PreFilter state is updated incrementally.
    pub reevaluated: u64,
    /// Wall time spent evaluating batches (parallel phase).
    pub evaluate_ms: f64,
    /// Wall time spent committing decisions (sequential phase).
    pub commit_ms: f64,
}

/// Result of a run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub placements: Vec<Placement>,
    pub unschedulable: Vec<Unschedulable>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub explain: Vec<Explain>,
    /// Annotations Reserve plugins recorded for placed pods (pod key → annotations),
    /// e.g. GpuShare's card assignment; `run` writes them before the Binding.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, crate::framework::PodAnnotations>,
    /// Volume decisions VolumeBinding's Reserve made for placed pods (pod key →
    /// static PV bindings and claims to provision on the node); `run`'s binder
    /// writes them (PreBind) before the Binding.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volume_bindings: BTreeMap<String, crate::volumes::PodVolumeBindings>,
    pub stats: Stats,
}
