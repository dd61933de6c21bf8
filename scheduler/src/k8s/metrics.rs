//! Prometheus metrics (prometheus-client, OpenMetrics text) and the HTTP endpoints
//! `/metrics`, `/healthz` and `/readyz` (ready once pods, nodes and namespaces were
//! listed).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: What,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: What,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    pub resource: What,
}

/// A static label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct What(pub &'static str);

impl EncodeLabelValue for What {
    fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        e.write_str(self.0)
    }
}

pub struct Metrics {
    registry: Registry,
    pub attempts: Family<ResultLabel, Counter>,
    pub e2e_latency: Histogram,
    pub algorithm_latency: Histogram,
    pub algorithm_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub bind_latency: Histogram,
    pub pending: Family<QueueLabel, Gauge>,
    pub binds: Counter,
    pub bind_errors: Family<ResultLabel, Counter>,
    pub events_written: Counter,
    pub events_suppressed: Counter,
    pub status_errors: Counter,
    pub watch_errors: Family<ResourceLabel, Counter>,
    pub invalid_objects: Counter,
    pub leader: Gauge,
    /// PodGroup/Queue status patches sent.
    pub status_patches: Counter,
    /// Objects known per watched batch/topology resource.
    pub objects: Family<ResourceLabel, Gauge>,
    /// Victim evictions by result (evicted, gone, blocked, error).
    pub evictions: Family<ResultLabel, Counter>,
    /// Preemptors waiting for their victims to terminate.
    pub preemptors_waiting: Gauge,
    /// kube-scheduler's names ([`super::compat_metrics`]).
    pub kube: super::compat_metrics::KubeScheduler,
    /// Volcano's names ([`super::compat_metrics`]).
    pub volcano: super::compat_metrics::Volcano,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn eviction(&self, result: &'static str) {
        self.evictions
            .get_or_create(&ResultLabel {
                result: What(result),
            })
            .inc();
    }

    pub fn new() -> Self {
        let mut root = Registry::default();
        let kube = super::compat_metrics::KubeScheduler::new(&mut root);
        let volcano = super::compat_metrics::Volcano::new(&mut root);
        let registry = root.sub_registry_with_prefix("corral_scheduler");
        let m = Metrics {
            registry: Registry::default(),
            kube,
            volcano,
            attempts: Family::default(),
            e2e_latency: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            algorithm_latency: Histogram::new(exponential_buckets(0.000_01, 2.0, 20)),
            algorithm_seconds: Counter::default(),
            bind_latency: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
            pending: Family::default(),
            binds: Counter::default(),
            bind_errors: Family::default(),
            events_written: Counter::default(),
            events_suppressed: Counter::default(),
            status_errors: Counter::default(),
            watch_errors: Family::default(),
            invalid_objects: Counter::default(),
            leader: Gauge::default(),
            status_patches: Counter::default(),
            objects: Family::default(),
            evictions: Family::default(),
            preemptors_waiting: Gauge::default(),
        };
        registry.register(
            "preemption_victims",
            "Evictions of preemption/reclaim victims by result (evicted, gone, blocked by a PodDisruptionBudget, error)",
            m.evictions.clone(),
        );
        registry.register(
            "preemptors_waiting",
            "Preemptors holding a nominated node while their victims terminate",
            m.preemptors_waiting.clone(),
        );
        registry.register(
            "status_patches",
            "PodGroup/Queue status patches sent (one per changed object per session)",
            m.status_patches.clone(),
        );
        registry.register(
            "watched_objects",
            "Objects known per watched batch/topology resource",
            m.objects.clone(),
        );
        registry.register(
            "schedule_attempts",
            "Scheduling attempts by result",
            m.attempts.clone(),
        );
        registry.register(
            "e2e_scheduling_duration_seconds",
            "From first seen pending to bound",
            m.e2e_latency.clone(),
        );
        registry.register(
            "scheduling_algorithm_duration_seconds",
            "Filter+score+commit time per pod (batch time / batch size)",
            m.algorithm_latency.clone(),
        );
        registry.register(
            "scheduling_algorithm_seconds",
            "Total time spent in filter+score+commit",
            m.algorithm_seconds.clone(),
        );
        registry.register(
            "binding_duration_seconds",
            "Binding request latency",
            m.bind_latency.clone(),
        );
        registry.register(
            "pending_pods",
            "Pending pods by queue (active, backoff, unschedulable, binding)",
            m.pending.clone(),
        );
        registry.register("binds", "Successful bindings", m.binds.clone());
        registry.register(
            "bind_errors",
            "Failed bindings by result",
            m.bind_errors.clone(),
        );
        registry.register(
            "events_written",
            "FailedScheduling events created or updated",
            m.events_written.clone(),
        );
        registry.register(
            "events_suppressed",
            "FailedScheduling occurrences folded into an aggregated event",
            m.events_suppressed.clone(),
        );
        registry.register(
            "status_write_errors",
            "Failed status/event writes",
            m.status_errors.clone(),
        );
        registry.register(
            "watch_errors",
            "Watch errors (followed by resume or relist)",
            m.watch_errors.clone(),
        );
        registry.register(
            "invalid_objects",
            "Objects ignored because they could not be parsed",
            m.invalid_objects.clone(),
        );
        registry.register(
            "leader",
            "1 when this replica is the leader",
            m.leader.clone(),
        );
        // Zero series for the known label values, so that rate() and alerts work
        // (and dashboards show 0) before the first error or eviction happens.
        for r in ["conflict", "not_found", "throttled", "not_leader", "error"] {
            let _ = m
                .bind_errors
                .get_or_create(&ResultLabel { result: What(r) });
        }
        for r in ["evicted", "gone", "blocked", "error"] {
            let _ = m.evictions.get_or_create(&ResultLabel { result: What(r) });
        }
        for r in ["pods", "nodes", "namespaces"] {
            let _ = m
                .watch_errors
                .get_or_create(&ResourceLabel { resource: What(r) });
        }
        Metrics {
            registry: root,
            ..m
        }
    }

    pub fn attempt(&self, result: &'static str) {
        self.attempts
            .get_or_create(&ResultLabel {
                result: What(result),
            })
            .inc();
    }

    pub fn bind_error(&self, result: &'static str) {
        self.bind_errors
            .get_or_create(&ResultLabel {
                result: What(result),
            })
            .inc();
    }

    /// Sets the pending gauges from `[active, backoff, unschedulable, in flight,
    /// gated]`.
    pub fn set_pending(&self, c: [usize; 5]) {
        self.kube.set_pending(c);
        for (q, n) in ["active", "backoff", "unschedulable", "binding", "gated"]
            .iter()
            .zip(c)
        {
            self.pending
                .get_or_create(&QueueLabel { queue: What(q) })
                .set(n as i64);
        }
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let r = ready.load(Ordering::Relaxed);
                async move {
                    if r {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "initial sync in progress")
                    }
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_registered_metrics() {
        let m = Metrics::new();
        m.attempt("scheduled");
        m.bind_error("conflict");
        m.set_pending([1, 2, 3, 4, 0]);
        m.watch_errors
            .get_or_create(&ResourceLabel {
                resource: What("pods"),
            })
            .inc();
        let s = m.encode();
        assert!(
            s.contains("corral_scheduler_schedule_attempts_total{result=\"scheduled\"} 1"),
            "{s}"
        );
        assert!(s.contains("corral_scheduler_bind_errors_total{result=\"conflict\"} 1"));
        assert!(s.contains("corral_scheduler_pending_pods{queue=\"unschedulable\"} 3"));
        assert!(s.contains("corral_scheduler_watch_errors_total{resource=\"pods\"} 1"));
        assert!(s.contains("corral_scheduler_e2e_scheduling_duration_seconds_bucket"));
        // kube-scheduler's and Volcano's names beside Corral's.
        m.kube.attempt("unschedulable", "default-scheduler");
        m.kube.scheduled("corral", 2, 0.5);
        m.volcano.set_queue(
            "gold",
            3,
            &[
                ("cpu".into(), 1500, 3000),
                ("memory".into(), 1 << 30, 1 << 31),
                ("nvidia.com/gpu".into(), 2, 2),
            ],
        );
        m.volcano.set_queue_pod_groups("gold", [1, 2, 3, 0]);
        let t = m.kube.framework_timings();
        use corral_core::framework::{Code, FrameworkObserver};
        t.extension_point("corral", "Filter", Code::Unschedulable, 0.0003);
        t.extension_point("corral", "Filter", Code::Unschedulable, 0.0003);
        t.plugin("NodeResourcesFit", "Filter", Code::Success, 0.00002);
        let s = m.encode();
        for want in [
            "scheduler_framework_extension_point_duration_seconds_count{extension_point=\"Filter\",status=\"Unschedulable\",profile=\"corral\"} 2",
            "scheduler_framework_extension_point_duration_seconds_bucket{le=\"0.0004\",extension_point=\"Filter\",status=\"Unschedulable\",profile=\"corral\"} 2",
            "scheduler_plugin_execution_duration_seconds_count{plugin=\"NodeResourcesFit\",extension_point=\"Filter\",status=\"Success\"} 1",
            "volcano_queue_pod_group_inqueue_count{queue_name=\"gold\"} 1",
            "volcano_queue_pod_group_pending_count{queue_name=\"gold\"} 2",
            "volcano_queue_pod_group_running_count{queue_name=\"gold\"} 3",
            "volcano_queue_pod_group_unknown_count{queue_name=\"gold\"} 0",
            "scheduler_schedule_attempts_total{result=\"unschedulable\",profile=\"default-scheduler\"} 1",
            "scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"corral\"} 1",
            "scheduler_pending_pods{queue=\"unschedulable\"} 3",
            "scheduler_pending_pods{queue=\"gated\"} 0",
            "scheduler_pod_scheduling_sli_duration_seconds_bucket{le=\"0.64\",attempts=\"2\"} 1",
            "scheduler_pod_scheduling_attempts_bucket{le=\"2.0\"} 1",
            "scheduler_preemption_attempts_total 0",
            "volcano_queue_allocated_milli_cpu{queue_name=\"gold\"} 1500",
            "volcano_queue_deserved_memory_bytes{queue_name=\"gold\"} 2147483648",
            "volcano_queue_allocated_scalar_resources{queue_name=\"gold\",resource=\"nvidia.com/gpu\"} 2",
            "volcano_queue_share{queue_name=\"gold\"} 1",
            "volcano_queue_weight{queue_name=\"gold\"} 3",
            "volcano_queue_overused{queue_name=\"gold\"} 0",
            "volcano_e2e_scheduling_latency_milliseconds_bucket",
        ] {
            assert!(s.contains(want), "missing {want}:\n{s}");
        }
        // Not double-prefixed, not under corral_.
        assert!(!s.contains("corral_scheduler_scheduler_"));
    }
}
