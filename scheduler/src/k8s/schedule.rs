//! Batch popping of the run loop: plain pods through `Scheduler::schedule_all`,
//! gang and queue pods through a batch session, bind requests and their results,
//! failure reports.

use super::*;

/// Retries of a gang member's failed binding (to the same node) before its
/// assumption is forgotten.
pub(super) const GANG_BIND_RETRIES: u32 = 3;

impl Loop {
    pub(super) fn schedule_batch(&mut self) {
        let room = self.max_in_flight - self.in_flight;
        let pods = self.queue.pop_active(self.batch.min(room));
        if pods.is_empty() {
            return;
        }
        // Gang/queue pods and preemptors placed on their nominated node go through a
        // batch session, before the plain pods of the batch so that the capacity
        // freed for a preemptor is not taken by a lower-priority plain pod.
        let (gang_pods, plain): (Vec<_>, Vec<_>) = pods
            .into_iter()
            .partition(|p| batch_state::is_batch_pod(p) || self.nominations.contains_key(&p.key));
        if !gang_pods.is_empty() {
            self.schedule_gangs(gang_pods);
        }
        if !plain.is_empty() {
            self.schedule_plain(plain);
        }
    }

    pub(super) fn bind_request(
        &self,
        key: String,
        node: String,
        attempt: u32,
    ) -> Option<BindRequest> {
        let e = self.queue.get(&key)?;
        // Annotations Reserve plugins added to the assumed pod (e.g. GpuShare's card
        // assignment): whatever path placed it (plain batch, batch session, a retry),
        // the copy in the snapshot carries them.
        let mut annotations = crate::framework::PodAnnotations::default();
        if let Some((placed, on)) = self.sched.snapshot.placed_pod(&key)
            && **on == *node
            && !Arc::ptr_eq(&placed.pod, &e.info.pod)
        {
            let before = e.info.pod.metadata.annotations.as_ref();
            for (k, v) in placed.pod.metadata.annotations.iter().flatten() {
                if before.and_then(|b| b.get(k)) != Some(v) {
                    annotations.insert(k.clone(), v.clone());
                }
            }
        }
        let volumes = self
            .sched
            .snapshot
            .volumes()
            .pod_bindings(&key)
            .filter(|b| b.node == node)
            .cloned();
        Some(BindRequest {
            volumes,
            namespace: e.info.namespace.clone(),
            name: e.info.name.clone(),
            uid: e.info.uid.clone(),
            enqueued: e.enqueued,
            key,
            node,
            attempt,
            annotations,
        })
    }

    pub(super) fn schedule_plain(&mut self, pods: Vec<Arc<PodInfo>>) {
        let t0 = Instant::now();
        let batch: Vec<PodInfo> = pods.iter().map(|p| (**p).clone()).collect();
        let mut report = self.sched.schedule_all(batch);
        let secs = t0.elapsed().as_secs_f64();
        self.metrics.algorithm_seconds.inc_by(secs);
        self.metrics
            .algorithm_latency
            .observe(secs / pods.len() as f64);
        let now = Instant::now();
        let per_pod = secs / pods.len() as f64;
        for pl in report.placements {
            self.count_attempt("scheduled", &pl.pod, per_pod);
            let annotations = report.annotations.remove(&pl.pod).unwrap_or_default();
            let Some(mut req) = self.bind_request(pl.pod, pl.node, 0) else {
                continue;
            };
            req.annotations = annotations;
            self.in_flight += 1;
            self.binder.bind(req);
        }
        let nominated = self.preempt_for(&report.unschedulable);
        for u in report.unschedulable {
            if nominated.contains(&u.pod) {
                self.count_attempt("preempting", &u.pod, per_pod);
                continue;
            }
            self.count_attempt("unschedulable", &u.pod, per_pod);
            let attempts = self.queue.failed(&u.pod, now, true);
            self.report_failure(&u.pod, u.message, attempts, now);
        }
    }

    /// Hands the loop's preemption state to the next session.
    pub(super) fn prepare_session(&mut self, nominated: HashMap<String, String>) {
        let now = Instant::now();
        self.unevictable.retain(|_, t| *t > now);
        let reserved: HashSet<String> = self.waiting_pod.keys().cloned().collect();
        // A held reservation is a pending pod: never a victim.
        let unevictable = self
            .unevictable
            .keys()
            .cloned()
            .chain(reserved.iter().cloned())
            .collect();
        self.gangs.prepare(nominated, reserved, unevictable);
    }

    /// The preemptor job a pod belongs to (its PodGroup, else itself).
    pub(super) fn job_of(&self, pod: &str) -> String {
        self.gangs
            .group_of(pod)
            .map(|g| g.1.clone())
            .unwrap_or_else(|| pod.to_string())
    }

    /// A batch session over the popped gang/queue pods plus every other pending
    /// member of their gangs (whatever their queue state), so a gang is always
    /// decided as a whole: the gang plugin commits it only when minMember (and
    /// minTaskMember/minResources) is placeable, otherwise nothing of it stays in the
    /// snapshot. The placed members' bindings are then issued together.
    pub(super) fn schedule_gangs(&mut self, pods: Vec<Arc<PodInfo>>) {
        // Gangs with fewer member pods than minMember wait for the rest without a
        // session and without a failure write per member (coscheduling's PreEnqueue:
        // the members are gated; the member that completes the gang brings the
        // others in). A gang still short after a grace period gets a PodGroup
        // condition instead (`BatchState::gang_waits`).
        let mut short: HashMap<batch_state::GroupKey, bool> = HashMap::new();
        let now = Instant::now();
        let mut pods = pods;
        pods.retain(|p| {
            let Some(g) = self.gangs.group_of(&p.key).cloned() else {
                return true;
            };
            let is_short = match short.get(&g) {
                Some(s) => *s,
                None => {
                    let s = match self.gangs.short_of_members(&g) {
                        Some((have, min)) => {
                            self.gangs.gang_waits(&g, have, min, now);
                            true
                        }
                        // No PodGroup object (yet): wait a moment for its watch.
                        None => self.gangs.await_group_object(&g, now),
                    };
                    short.insert(g, s);
                    s
                }
            };
            if is_short {
                self.queue.gate(&p.key);
            }
            !is_short
        });
        if pods.is_empty() {
            return;
        }
        let mut keys: HashSet<String> = pods.iter().map(|p| p.key.clone()).collect();
        let touched: HashSet<batch_state::GroupKey> = pods
            .iter()
            .filter_map(|p| self.gangs.group_of(&p.key).cloned())
            .collect();
        let mut pending = pods;
        for g in &touched {
            for m in self.gangs.members(g) {
                if keys.contains(&m) {
                    continue;
                }
                if let Some(info) = self.queue.take(&m) {
                    keys.insert(m);
                    pending.push(info);
                }
            }
        }
        let n = pending.len();
        // Released preemptors of this batch are placed on their nominated node first
        // (once: afterwards they compete normally).
        let nominated: HashMap<String, String> = keys
            .iter()
            .filter_map(|k| self.nominations.remove(k).map(|n| (k.clone(), n)))
            .collect();
        self.prepare_session(nominated);
        let t0 = Instant::now();
        let sched = std::mem::replace(&mut self.sched, batch_state::placeholder());
        let closed = self.gangs.run_session(sched, pending, &touched);
        self.gangs.after_session(&closed, &touched);
        let batch::session::Closed {
            sched,
            placements,
            unschedulable,
            evicted,
            evictions,
            nominated,
            queues,
            ..
        } = closed;
        self.sched = sched;
        let waiting = self.start_preemptions(evicted, evictions, nominated);
        let secs = t0.elapsed().as_secs_f64();
        let per_pod = secs / n as f64;
        self.count_session(secs, &queues);
        for k in &waiting {
            keys.remove(k);
            self.count_attempt("preempting", k, per_pod);
        }
        self.metrics.algorithm_seconds.inc_by(secs);
        self.metrics.algorithm_latency.observe(secs / n as f64);
        let now = Instant::now();
        for pl in placements {
            if !keys.remove(&pl.pod) {
                continue;
            }
            self.count_attempt("scheduled", &pl.pod, per_pod);
            match self.bind_request(pl.pod.clone(), pl.node, 0) {
                Some(req) => {
                    self.in_flight += 1;
                    self.binder.bind(req);
                }
                None => {
                    self.sched.snapshot.remove_pod(&pl.pod);
                }
            }
        }
        for u in unschedulable {
            if !keys.remove(&u.pod) {
                continue;
            }
            self.count_attempt("unschedulable", &u.pod, per_pod);
            let attempts = self.queue.failed(&u.pod, now, true);
            self.report_failure(&u.pod, u.message, attempts, now);
        }
        // Anything the session neither placed nor reported: retry after a backoff.
        for k in keys {
            self.queue.failed(&k, now, false);
        }
        if self.leader.load(Ordering::Relaxed) {
            self.flush_statuses(true);
        }
    }

    /// Aggregation: at most one write per pod per backoff window; repeats in the
    /// window are counted and folded into the next write.
    pub(super) fn report_failure(
        &mut self,
        key: &str,
        message: String,
        attempts: u32,
        now: Instant,
    ) {
        let Some(e) = self.queue.get(key) else { return };
        let window = self.queue.backoff(attempts.max(1));
        let entry = self.last_report.entry(key.to_string()).or_insert((
            now - Duration::from_secs(3600),
            Duration::ZERO,
            0,
        ));
        if now.duration_since(entry.0) < entry.1 {
            entry.2 += 1;
            self.metrics.events_suppressed.inc();
            return;
        }
        let suppressed = entry.2;
        *entry = (now, window, 0);
        self.writer.report(FailureReport {
            namespace: e.info.namespace.clone(),
            name: e.info.name.clone(),
            uid: e.info.uid.clone(),
            message,
            occurrences: suppressed + 1,
        });
    }

    pub(super) fn on_bound(&mut self, o: BindOutcome) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let now = Instant::now();
        match o.result {
            Ok(()) => {
                self.bind_retries.remove(&o.key);
                self.metrics.binds.inc();
                let e = self.queue.remove(&o.key);
                self.count_bound(&o.key, e.as_ref(), now);
                if let Some(e) = e {
                    self.metrics
                        .e2e_latency
                        .observe(now.duration_since(e.enqueued).as_secs_f64());
                }
                // The watch may already have shown the pod bound (and dropped it from
                // the queue): the event comes from the bind result either way.
                if let Some((ns, name)) = o.key.split_once('/') {
                    self.writer.scheduled(status::ScheduledReport {
                        namespace: ns.to_string(),
                        name: name.to_string(),
                        uid: o.uid.clone(),
                        node: o.node.clone(),
                    });
                }
                self.last_report.remove(&o.key);
                // The snapshot already holds the assumed pod; the watch confirms it.
            }
            Err(err) => {
                self.metrics.bind_error(err.label());
                self.count_bind_error(&o.key);
                // Forget the assumption unless the API already showed the pod bound.
                let api_bound = self.pods.get(&o.key).is_some_and(|t| t.node.is_some());
                // A gang member whose gang-mates are being bound: retry the same node
                // (keeping the assumption) a few times before giving up, so that a
                // transient error does not leave the gang partial.
                if !api_bound
                    && matches!(
                        err,
                        binder::BindError::Throttled | binder::BindError::Other(_)
                    )
                    && self.gangs.group_of(&o.key).is_some()
                    && self.sched.snapshot.pod_node(&o.key).map(|n| &**n) == Some(&*o.node)
                {
                    let n = self.bind_retries.entry(o.key.clone()).or_insert(0);
                    *n += 1;
                    let attempt = *n;
                    if attempt <= GANG_BIND_RETRIES
                        && !self.draining.load(std::sync::atomic::Ordering::Relaxed)
                        && let Some(req) = self.bind_request(o.key.clone(), o.node.clone(), attempt)
                    {
                        tracing::info!(pod = %o.key, attempt, "retrying gang member binding");
                        self.in_flight += 1;
                        self.binder.bind(req);
                        return;
                    }
                }
                self.bind_retries.remove(&o.key);
                if !api_bound
                    && self.sched.snapshot.pod_node(&o.key).map(|n| &**n) == Some(&*o.node)
                {
                    self.sched.snapshot.remove_pod(&o.key);
                }
                if api_bound {
                    self.queue.remove(&o.key);
                    return;
                }
                match err {
                    binder::BindError::NotLeader => self.queue.retry_now(&o.key),
                    binder::BindError::NotFound => {
                        self.queue.remove(&o.key);
                    }
                    // Unreserved above (the pod left the snapshot with its
                    // assumed volumes): retry after a backoff, tell the user why.
                    binder::BindError::PreBind(msg) => {
                        let attempts = self.queue.failed(&o.key, now, false);
                        self.report_failure(&o.key, msg, attempts, now);
                    }
                    // Already bound (another scheduler) or transient: back off; the
                    // watch removes the pod once it shows it bound. A 409 is never
                    // retried before the backoff expires: no retry storm.
                    _ => {
                        self.queue.failed(&o.key, now, false);
                    }
                }
            }
        }
    }
}
