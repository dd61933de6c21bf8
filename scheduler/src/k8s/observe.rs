//! The run loop's kube-scheduler/Volcano-compatible metrics
//! ([`super::compat_metrics`]): which profile a pod belongs to, attempts, bound
//! pods, preemptions, queue gauges.

use super::*;

impl Loop {
    /// The profile (schedulerName) of a tracked pod.
    pub(super) fn profile_of(&self, key: &str) -> String {
        self.queue
            .get(key)
            .map(|e| e.info.scheduler_name.clone())
            .filter(|s| !s.is_empty())
            .or_else(|| {
                self.sched
                    .frameworks
                    .first()
                    .map(|f| f.scheduler_name.clone())
            })
            .unwrap_or_else(|| "default-scheduler".into())
    }

    /// One pod's scheduling attempt: `scheduled` (placed, binding next),
    /// `unschedulable` or `preempting` (kube-scheduler: unschedulable, preemption
    /// nominated); `secs` is the pod's share of its batch's evaluation time.
    pub(super) fn count_attempt(&self, result: &'static str, key: &str, secs: f64) {
        self.metrics.attempt(result);
        let profile = self.profile_of(key);
        let kube = if result == "scheduled" {
            "scheduled"
        } else {
            "unschedulable"
        };
        // `scheduled` is counted when the binding succeeds (`count_bound`).
        if kube != "scheduled" {
            self.metrics.kube.attempt(kube, &profile);
        }
        self.metrics.kube.attempt_duration(kube, &profile, secs);
    }

    /// A binding succeeded (`entry`: the pod's queue entry, if still tracked) or
    /// failed (`error`).
    pub(super) fn count_bound(&self, key: &str, entry: Option<&queue::Entry>, now: Instant) {
        let profile = self.profile_of(key);
        let profile = entry
            .map(|e| e.info.scheduler_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or(profile);
        let (attempts, secs) = entry.map_or((1, 0.0), |e| {
            (e.attempts + 1, now.duration_since(e.enqueued).as_secs_f64())
        });
        self.metrics.kube.scheduled(&profile, attempts, secs);
        self.metrics.volcano.task_latency_ms.observe(secs * 1e3);
    }

    pub(super) fn count_bind_error(&self, key: &str) {
        let profile = self.profile_of(key);
        self.metrics.kube.attempt("error", &profile);
    }

    /// A preemption started for one preemptor job with `victims` victims.
    pub(super) fn count_preemption(&self, victims: usize) {
        self.metrics.kube.preemption_attempts.inc();
        self.metrics.kube.preemption_victims.observe(victims as f64);
        self.metrics.volcano.preemption_attempts.inc();
        self.metrics.volcano.preemption_victims.set(victims as i64);
    }

    /// Volcano's per-session latency and queue gauges.
    pub(super) fn count_session(&self, secs: f64, queues: &[batch::QueueStatus]) {
        self.metrics.volcano.e2e_latency_ms.observe(secs * 1e3);
        for q in queues {
            let dims: std::collections::BTreeSet<&String> =
                q.allocated.0.keys().chain(q.deserved.0.keys()).collect();
            let res: Vec<(String, i64, i64)> = dims
                .into_iter()
                .map(|d| (d.clone(), q.allocated.get(d), q.deserved.get(d)))
                .collect();
            self.metrics.volcano.set_queue(&q.name, q.weight, &res);
        }
    }

    /// Pending gauges and incoming counters from the queue (every loop pass).
    pub(super) fn publish_queue_metrics(&mut self) {
        let c = self.queue.counts();
        self.metrics.set_pending(c);
        for ((q, ev), n) in self.queue.take_incoming() {
            self.metrics
                .kube
                .queue_incoming_pods
                .get_or_create(&compat_metrics::QueueEvent {
                    queue: q.into(),
                    event: ev.into(),
                })
                .inc_by(n);
        }
    }
}
