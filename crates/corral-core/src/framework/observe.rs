//! Timing hook of the framework runtime, for kube-scheduler's
//! `scheduler_framework_extension_point_duration_seconds` and
//! `scheduler_plugin_execution_duration_seconds`. The library layers only measure;
//! the application turns the observations into metrics (no metrics crate here).
//!
//! As in kube-scheduler, extension points are observed for every scheduling cycle
//! and individual plugins only in sampled cycles ([`CycleState::record_plugin_metrics`],
//! set for a fraction of cycles by the engine). Without an observer nothing is timed.
//!
//! [`CycleState::record_plugin_metrics`]: super::CycleState::record_plugin_metrics

use super::Code;

/// kube-scheduler's `pluginMetricsSamplePercent` (10): plugins are timed in one
/// cycle out of ten.
pub const PLUGIN_METRICS_SAMPLE_EVERY: u64 = 10;

/// kube-scheduler's extension point label values.
pub mod point {
    pub const PRE_FILTER: &str = "PreFilter";
    pub const FILTER: &str = "Filter";
    pub const PRE_SCORE: &str = "PreScore";
    pub const SCORE: &str = "Score";
    pub const SCORE_NORMALIZE: &str = "ScoreExtensionNormalize";
}

/// Receives framework timings; implemented by the application (e.g. `run` records
/// them in Prometheus histograms). Called from the evaluation threads: keep it cheap.
pub trait FrameworkObserver: Send + Sync {
    /// One extension point (all its plugins) for one pod of profile `profile`.
    fn extension_point(&self, profile: &str, point: &'static str, status: Code, secs: f64);
    /// One plugin at one extension point (sampled cycles only).
    fn plugin(&self, plugin: &'static str, point: &'static str, status: Code, secs: f64);
}

impl Code {
    /// kube-scheduler's `Code.String()` (the `status` label).
    pub fn as_str(&self) -> &'static str {
        match self {
            Code::Success => "Success",
            Code::Error => "Error",
            Code::Unschedulable => "Unschedulable",
            Code::UnschedulableAndUnresolvable => "UnschedulableAndUnresolvable",
            Code::Wait => "Wait",
            Code::Skip => "Skip",
            Code::Pending => "Pending",
        }
    }
}
