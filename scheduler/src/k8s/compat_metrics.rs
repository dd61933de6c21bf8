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
//! binding counts as `result="error"`.
//!
//! `scheduler_framework_extension_point_duration_seconds` and
//! `scheduler_plugin_execution_duration_seconds` come from the framework runtime's
//! timing hook ([`corral_core::framework::FrameworkObserver`], filled here by
//! [`FrameworkTimings`]): PreFilter/Filter/PreScore/Score are observed for every
//! pod evaluation (PreFilter once per equivalence class of pods in a batch, as the
//! class shares its PreFilter state), plugins in one cycle out of ten
//! (kube-scheduler's `pluginMetricsSamplePercent`); a Filter result served from the
//! class cache runs no plugin and is not timed. Reserve/Permit/Bind are not run
//! through the framework by `run` (binding is batched), so they are not observed.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use corral_core::framework::{Code, FrameworkObserver};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::sharded_hist::ShardedHistogram;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExtensionPoint {
    pub extension_point: String,
    pub status: String,
    pub profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginPoint {
    pub plugin: String,
    pub extension_point: String,
    pub status: String,
}

type FGauge = Gauge<f64, AtomicU64>;
type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// kube-scheduler: `ExponentialBuckets(0.001, 2, 15)`.
fn attempt_hist() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}
/// kube-scheduler: `ExponentialBuckets(0.0001, 2, 12)`.
fn extension_point_hist() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 12))
}
/// kube-scheduler: `ExponentialBuckets(0.00001, 1.5, 20)`.
fn plugin_hist() -> ShardedHistogram {
    ShardedHistogram::new(exponential_buckets(0.000_01, 1.5, 20))
}
/// kube-scheduler: `ExponentialBuckets(0.01, 2, 20)`.
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
    pub extension_point_duration: HistFamily<ExtensionPoint>,
    /// Sharded: observed from every evaluation thread, per node, in sampled cycles.
    pub plugin_duration: Family<PluginPoint, ShardedHistogram, fn() -> ShardedHistogram>,
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
    /// `volcano_queue_pod_group_{inqueue,pending,running,unknown}_count`.
    pub queue_pod_groups: [Family<QueueName, Gauge>; 4],
}

/// The PodGroup phases of `volcano_queue_pod_group_<phase>_count`, in
/// [`Volcano::queue_pod_groups`] order.
pub const POD_GROUP_PHASES: [&str; 4] = ["Inqueue", "Pending", "Running", "Unknown"];

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
            extension_point_duration: Family::new_with_constructor(extension_point_hist),
            plugin_duration: Family::new_with_constructor(plugin_hist),
        };
        r.register(
            "scheduler_framework_extension_point_duration_seconds",
            "Latency for running all plugins of a specific extension point.",
            m.extension_point_duration.clone(),
        );
        r.register(
            "scheduler_plugin_execution_duration_seconds",
            "Duration for running a plugin at a specific extension point.",
            m.plugin_duration.clone(),
        );
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

    /// `[active, backoff, unschedulable, in flight, gated]`: in-flight pods are being
    /// bound, not pending, in kube-scheduler's terms. `gated` counts gang members
    /// waiting for their gang-mates (coscheduling's PreEnqueue rejection); a pod with
    /// schedulingGates is not queued at all.
    pub fn set_pending(&self, c: [usize; 5]) {
        for (q, n) in ["active", "backoff", "unschedulable", "", "gated"]
            .iter()
            .zip(c)
            .filter(|(q, _)| !q.is_empty())
        {
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
            queue_pod_groups: Default::default(),
        };
        for (phase, g) in POD_GROUP_PHASES.iter().zip(&m.queue_pod_groups) {
            let lower = phase.to_ascii_lowercase();
            r.register(
                format!("volcano_queue_pod_group_{lower}_count"),
                format!("The number of {phase} PodGroup in this queue"),
                g.clone(),
            );
        }
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

impl Volcano {
    /// PodGroups per phase of one queue (`[Inqueue, Pending, Running, Unknown]`).
    pub fn set_queue_pod_groups(&self, queue: &str, counts: [i64; 4]) {
        let q = QueueName {
            queue_name: queue.into(),
        };
        for (g, n) in self.queue_pod_groups.iter().zip(counts) {
            g.get_or_create(&q).set(n);
        }
    }
}

/// Turns the framework runtime's timings into kube-scheduler's histograms. Label
/// sets are resolved once per (extension point, status[, plugin]) and kept by
/// their static names, so an observation costs a read lock and the histogram.
pub struct FrameworkTimings {
    points: HistFamily<ExtensionPoint>,
    plugins: Family<PluginPoint, ShardedHistogram, fn() -> ShardedHistogram>,
    point_cache: RwLock<Vec<(String, &'static str, Code, Histogram)>>,
    /// Tells this hook's entries in the threads' plugin caches from another's.
    id: u64,
}

/// Per thread: (hook id, plugin, extension point, status) → histogram, matched by
/// the `&'static str` pointers (the plugins' names are static), so a sampled
/// per-node observation takes neither a lock nor a string hash.
type PluginCache = Vec<(u64, &'static str, &'static str, Code, ShardedHistogram)>;
thread_local! {
    static PLUGIN_CACHE: std::cell::RefCell<PluginCache> = const { std::cell::RefCell::new(Vec::new()) };
}

impl KubeScheduler {
    /// The hook to install on every profile's framework.
    pub fn framework_timings(&self) -> Arc<FrameworkTimings> {
        static IDS: AtomicU64 = AtomicU64::new(0);
        Arc::new(FrameworkTimings {
            points: self.extension_point_duration.clone(),
            plugins: self.plugin_duration.clone(),
            point_cache: RwLock::default(),
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }
}

impl FrameworkObserver for FrameworkTimings {
    fn extension_point(&self, profile: &str, point: &'static str, status: Code, secs: f64) {
        let hit = self.point_cache.read().ok().and_then(|c| {
            c.iter()
                .find(|e| e.1 == point && e.2 == status && e.0 == profile)
                .map(|e| e.3.clone())
        });
        let h = hit.unwrap_or_else(|| {
            let h = self
                .points
                .get_or_create(&ExtensionPoint {
                    extension_point: point.into(),
                    status: status.as_str().into(),
                    profile: profile.into(),
                })
                .clone();
            if let Ok(mut c) = self.point_cache.write() {
                c.push((profile.to_string(), point, status, h.clone()));
            }
            h
        });
        h.observe(secs);
    }

    fn plugin(&self, plugin: &'static str, point: &'static str, status: Code, secs: f64) {
        PLUGIN_CACHE.with(|c| {
            let mut c = c.borrow_mut();
            let hit = c.iter().find(|e| {
                e.0 == self.id
                    && e.3 == status
                    && std::ptr::eq(e.1, plugin)
                    && std::ptr::eq(e.2, point)
            });
            match hit {
                Some(e) => e.4.observe(secs),
                None => {
                    let h = self
                        .plugins
                        .get_or_create(&PluginPoint {
                            plugin: plugin.into(),
                            extension_point: point.into(),
                            status: status.as_str().into(),
                        })
                        .clone();
                    h.observe(secs);
                    c.push((self.id, plugin, point, status, h));
                }
            }
        });
    }
}

#[cfg(test)]
mod bucket_tests {
    use super::*;

    /// Histogram buckets as kube-scheduler (`pkg/scheduler/metrics/metrics.go`) and
    /// Volcano (`pkg/scheduler/metrics/metrics.go`) declare them:
    /// (series, `ExponentialBuckets(start, factor, count)`).
    const UPSTREAM: &[(&str, f64, f64, u16)] = &[
        (
            "scheduler_scheduling_attempt_duration_seconds",
            0.001,
            2.0,
            15,
        ),
        (
            "scheduler_pod_scheduling_sli_duration_seconds",
            0.01,
            2.0,
            20,
        ),
        ("scheduler_pod_scheduling_attempts", 1.0, 2.0, 5),
        ("scheduler_preemption_victims", 1.0, 2.0, 7),
        (
            "scheduler_framework_extension_point_duration_seconds",
            0.0001,
            2.0,
            12,
        ),
        (
            "scheduler_plugin_execution_duration_seconds",
            0.00001,
            1.5,
            20,
        ),
        ("volcano_e2e_scheduling_latency_milliseconds", 5.0, 2.0, 15),
        ("volcano_task_scheduling_latency_milliseconds", 5.0, 2.0, 15),
    ];

    #[test]
    fn histogram_buckets_are_kube_schedulers_and_volcanos() {
        let mut r = Registry::default();
        let k = KubeScheduler::new(&mut r);
        let v = Volcano::new(&mut r);
        let rp = ResultProfile {
            result: "scheduled".into(),
            profile: "corral".into(),
        };
        k.attempt_duration.get_or_create(&rp).observe(0.1);
        k.sli_duration
            .get_or_create(&Attempts {
                attempts: "1".into(),
            })
            .observe(0.1);
        k.extension_point_duration
            .get_or_create(&ExtensionPoint {
                extension_point: "Filter".into(),
                status: "Success".into(),
                profile: "corral".into(),
            })
            .observe(0.001);
        k.plugin_duration
            .get_or_create(&PluginPoint {
                plugin: "NodeName".into(),
                extension_point: "Filter".into(),
                status: "Success".into(),
            })
            .observe(0.0001);
        v.e2e_latency_ms.observe(10.0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).expect("encode");
        for &(name, start, factor, count) in UPSTREAM {
            let want: Vec<f64> = exponential_buckets(start, factor, count).collect();
            let got: Vec<f64> = text
                .lines()
                .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
                .filter_map(|l| {
                    let le = l.split("le=\"").nth(1)?.split('"').next()?;
                    le.parse::<f64>().ok()
                })
                .filter(|le| le.is_finite())
                .collect();
            assert_eq!(got.len(), want.len(), "{name}: {got:?}\n{text}");
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= w * 1e-9, "{name}: {got:?} vs {want:?}");
            }
        }
    }
}
