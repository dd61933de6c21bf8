//! Metrics under the names, labels and buckets of kube-scheduler
//! (`pkg/scheduler/metrics/metrics.go`) and Volcano (`pkg/scheduler/metrics/
//! {metrics,queue}.go`), so that the dashboards and alerts users already have work
//! against Corral. Corral-only series stay under `corral_scheduler_*`
//! ([`super::metrics`]).
//!
//! Where Corral's batched loop differs from kube-scheduler's one-pod cycle:
//! `scheduler_scheduling_attempt_duration_seconds` observes each pod's share of its
//! batch's evaluation time; `scheduler_schedule_attempts_total{result="scheduled"}`
//! and `scheduler_pod_scheduling_sli_duration_seconds` are recorded when the binding
//! succeeds (as kube-scheduler does at the end of the binding cycle), a failed
//! binding counts as `result="error"`. Not exported (yet): the per extension point
//! and per plugin duration histograms — the filter/score loop is batched across
//! pods and reported as a whole by `corral_scheduler_scheduling_algorithm_*`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultProfile {
    pub result: String,
    pub profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Attempts {
    pub attempts: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Queue {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueEvent {
    pub queue: String,
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueName {
    pub queue_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueResource {
    pub queue_name: String,
    pub resource: String,
}

type FGauge = Gauge<f64, AtomicU64>;
type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn attempt_hist() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}
fn sli_hist() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 20))
}

/// kube-scheduler's series.
pub struct KubeScheduler {
    pub schedule_attempts: Family<ResultProfile, Counter>,
    pub attempt_duration: HistFamily<ResultProfile>,
    pub pending_pods: Family<Queue, Gauge>,
    pub sli_duration: HistFamily<Attempts>,
    pub pod_scheduling_attempts: Histogram,
    pub preemption_attempts: Counter,
    pub preemption_victims: Histogram,
    pub queue_incoming_pods: Family<QueueEvent, Counter>,
}

/// Volcano's series.
pub struct Volcano {
    pub e2e_latency_ms: Histogram,
    pub task_latency_ms: Histogram,
    pub preemption_attempts: Counter,
    pub preemption_victims: Gauge,
    pub queue_allocated_milli_cpu: Family<QueueName, FGauge>,
    pub queue_allocated_memory_bytes: Family<QueueName, FGauge>,
    pub queue_allocated_scalar: Family<QueueResource, FGauge>,
    pub queue_deserved_milli_cpu: Family<QueueName, FGauge>,
    pub queue_deserved_memory_bytes: Family<QueueName, FGauge>,
    pub queue_deserved_scalar: Family<QueueResource, FGauge>,
    pub queue_share: Family<QueueName, FGauge>,
    pub queue_weight: Family<QueueName, FGauge>,
    pub queue_overused: Family<QueueName, FGauge>,
}

impl KubeScheduler {
    pub fn new(r: &mut Registry) -> Self {
        let m = KubeScheduler {
            schedule_attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(attempt_hist),
            pending_pods: Family::default(),
            sli_duration: Family::new_with_constructor(sli_hist),
            pod_scheduling_attempts: Histogram::new(exponential_buckets(1.0, 2.0, 5)),
            preemption_attempts: Counter::default(),
            preemption_victims: Histogram::new(exponential_buckets(1.0, 2.0, 7)),
            queue_incoming_pods: Family::default(),
        };
        r.register(
            "scheduler_schedule_attempts",
            "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem.",
            m.schedule_attempts.clone(),
        );
        r.register(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            m.attempt_duration.clone(),
        );
        r.register(
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type. 'active' means number of pods in activeQ; 'backoff' means number of pods in backoffQ; 'unschedulable' means number of pods in unschedulablePods; 'gated' is the number of gated pods.",
            m.pending_pods.clone(),
        );
        r.register(
            "scheduler_pod_scheduling_sli_duration_seconds",
            "E2e latency for a pod being scheduled, from the time the pod enters the scheduling queue; might involve multiple scheduling attempts.",
            m.sli_duration.clone(),
        );
        r.register(
            "scheduler_pod_scheduling_attempts",
            "Number of attempts to successfully schedule a pod.",
            m.pod_scheduling_attempts.clone(),
        );
        r.register(
            "scheduler_preemption_attempts",
            "Total preemption attempts in the cluster till now",
            m.preemption_attempts.clone(),
        );
        r.register(
            "scheduler_preemption_victims",
            "Number of selected preemption victims",
            m.preemption_victims.clone(),
        );
        r.register(
            "scheduler_queue_incoming_pods",
            "Number of pods added to scheduling queues by event and queue type.",
            m.queue_incoming_pods.clone(),
        );
        for q in ["active", "backoff", "unschedulable", "gated"] {
            let _ = m.pending_pods.get_or_create(&Queue { queue: q.into() });
        }
        m
    }

    pub fn attempt(&self, result: &str, profile: &str) {
        self.schedule_attempts
            .get_or_create(&ResultProfile {
                result: result.into(),
                profile: profile.into(),
            })
            .inc();
    }

    pub fn attempt_duration(&self, result: &str, profile: &str, secs: f64) {
        self.attempt_duration
            .get_or_create(&ResultProfile {
                result: result.into(),
                profile: profile.into(),
            })
            .observe(secs);
    }

    pub fn incoming(&self, queue: &str, event: &str) {
        self.queue_incoming_pods
            .get_or_create(&QueueEvent {
                queue: queue.into(),
                event: event.into(),
            })
            .inc();
    }

    /// `[active, backoff, unschedulable, in flight]`: in-flight pods are being bound,
    /// not pending, in kube-scheduler's terms. Corral has no gated pods in the queue
    /// (a pod with schedulingGates is not queued), so `gated` stays 0.
    pub fn set_pending(&self, c: [usize; 4]) {
        for (q, n) in ["active", "backoff", "unschedulable"].iter().zip(c) {
            self.pending_pods
                .get_or_create(&Queue { queue: (*q).into() })
                .set(n as i64);
        }
    }

    /// A pod bound after `attempts` attempts, `secs` after it entered the queue.
    pub fn scheduled(&self, profile: &str, attempts: u32, secs: f64) {
        self.attempt("scheduled", profile);
        let a = attempts.max(1);
        // kube-scheduler's label: the attempt count as a string.
        self.sli_duration
            .get_or_create(&Attempts {
                attempts: a.to_string(),
            })
            .observe(secs);
        self.pod_scheduling_attempts.observe(f64::from(a));
    }
}

impl Volcano {
    pub fn new(r: &mut Registry) -> Self {
        let m = Volcano {
            e2e_latency_ms: Histogram::new(exponential_buckets(5.0, 2.0, 15)),
            task_latency_ms: Histogram::new(exponential_buckets(5.0, 2.0, 15)),
            preemption_attempts: Counter::default(),
            preemption_victims: Gauge::default(),
            queue_allocated_milli_cpu: Family::default(),
            queue_allocated_memory_bytes: Family::default(),
            queue_allocated_scalar: Family::default(),
            queue_deserved_milli_cpu: Family::default(),
            queue_deserved_memory_bytes: Family::default(),
            queue_deserved_scalar: Family::default(),
            queue_share: Family::default(),
            queue_weight: Family::default(),
            queue_overused: Family::default(),
        };
        r.register(
            "volcano_e2e_scheduling_latency_milliseconds",
            "E2e scheduling latency in milliseconds (scheduling algorithm + binding)",
            m.e2e_latency_ms.clone(),
        );
        r.register(
            "volcano_task_scheduling_latency_milliseconds",
            "Task scheduling latency in milliseconds (task create to task bound to a node)",
            m.task_latency_ms.clone(),
        );
        r.register(
            "volcano_total_preemption_attempts",
            "Total preemption attempts in the cluster till now",
            m.preemption_attempts.clone(),
        );
        r.register(
            "volcano_pod_preemption_victims",
            "Number of selected preemption victims",
            m.preemption_victims.clone(),
        );
        let gauges: [(&str, &str, &Family<QueueName, FGauge>); 7] = [
            (
                "volcano_queue_allocated_milli_cpu",
                "Allocated CPU count for one queue",
                &m.queue_allocated_milli_cpu,
            ),
            (
                "volcano_queue_allocated_memory_bytes",
                "Allocated memory for one queue",
                &m.queue_allocated_memory_bytes,
            ),
            (
                "volcano_queue_deserved_milli_cpu",
                "Deserved CPU count for one queue",
                &m.queue_deserved_milli_cpu,
            ),
            (
                "volcano_queue_deserved_memory_bytes",
                "Deserved memory for one queue",
                &m.queue_deserved_memory_bytes,
            ),
            ("volcano_queue_share", "Share for one queue", &m.queue_share),
            (
                "volcano_queue_weight",
                "Weight for one queue",
                &m.queue_weight,
            ),
            (
                "volcano_queue_overused",
                "If one queue is overused",
                &m.queue_overused,
            ),
        ];
        for (name, help, g) in gauges {
            r.register(name, help, g.clone());
        }
        r.register(
            "volcano_queue_allocated_scalar_resources",
            "Allocated scalar resources for one queue",
            m.queue_allocated_scalar.clone(),
        );
        r.register(
            "volcano_queue_deserved_scalar_resources",
            "Deserved scalar resources for one queue",
            m.queue_deserved_scalar.clone(),
        );
        m
    }

    /// One queue's allocation after a session: `(resource, allocated, deserved)` with
    /// cpu in millicores, memory in bytes, others in their units.
    pub fn set_queue(&self, queue: &str, weight: u32, res: &[(String, i64, i64)]) {
        let q = QueueName {
            queue_name: queue.into(),
        };
        let mut share = 0f64;
        let mut overused = !res.is_empty();
        for (r, alloc, deserved) in res {
            let (a, d) = (*alloc as f64, *deserved as f64);
            if *deserved > 0 {
                share = share.max(a / d);
            }
            if *alloc < *deserved || *deserved == 0 {
                overused = false;
            }
            match r.as_str() {
                "cpu" => {
                    self.queue_allocated_milli_cpu.get_or_create(&q).set(a);
                    self.queue_deserved_milli_cpu.get_or_create(&q).set(d);
                }
                "memory" => {
                    self.queue_allocated_memory_bytes.get_or_create(&q).set(a);
                    self.queue_deserved_memory_bytes.get_or_create(&q).set(d);
                }
                "pods" => {}
                other => {
                    let k = QueueResource {
                        queue_name: queue.into(),
                        resource: other.into(),
                    };
                    self.queue_allocated_scalar.get_or_create(&k).set(a);
                    self.queue_deserved_scalar.get_or_create(&k).set(d);
                }
            }
        }
        for g in [
            &self.queue_allocated_milli_cpu,
            &self.queue_allocated_memory_bytes,
            &self.queue_deserved_milli_cpu,
            &self.queue_deserved_memory_bytes,
        ] {
            let _ = g.get_or_create(&q);
        }
        self.queue_share.get_or_create(&q).set(share);
        self.queue_weight.get_or_create(&q).set(f64::from(weight));
        self.queue_overused
            .get_or_create(&q)
            .set(if overused { 1.0 } else { 0.0 });
    }
}
