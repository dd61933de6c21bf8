//! The preemption state machine of the run loop: a preemptor's victims are evicted
//! while its pods wait (held on their nominated nodes as reservations); when the
//! victims are gone, or the wait expires, the preemptor is nominated or released.

use super::*;

/// A preemptor waiting for its victims to terminate. Its pods stay in flight (never
/// popped) and are held in the snapshot on their nominated nodes as reservations, so
/// the capacity the victims free cannot be taken by anyone else.
pub(super) struct Wait {
    /// (pod key, nominated node).
    pub(super) pods: Vec<(String, String)>,
    /// Victims not yet gone.
    pub(super) victims: HashSet<String>,
    /// After this the preemptor is released even if victims remain (e.g. a kubelet
    /// that never finishes termination).
    pub(super) deadline: Instant,
}

/// A victim whose eviction was requested.
pub(super) struct Victim {
    pub(super) job: String,
    pub(super) node: String,
    pub(super) uid: String,
    /// The pod as last seen without a deletion timestamp (restored if the eviction
    /// fails).
    pub(super) unmarked: Arc<PodInfo>,
    /// The API shows it terminating.
    pub(super) api_terminating: bool,
}

/// A victim as the snapshot keeps it until the API removes it: still using its
/// resources, marked terminating so no session picks it as a victim again.
pub(super) fn mark_terminating(p: &PodInfo) -> Arc<PodInfo> {
    let mut pod = (*p.pod).clone();
    pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let mut info = p.clone();
    info.pod = Arc::new(pod);
    Arc::new(info)
}

/// How long a refused victim is left alone.
pub(super) const UNEVICTABLE_FOR: Duration = Duration::from_secs(60);

/// Slack over the victims' termination grace before a waiting preemptor is released.
pub(super) const WAIT_SLACK: Duration = Duration::from_secs(60);

impl Loop {
    /// PostFilter for plain pods that did not fit: a preemption-only session over
    /// those that may preempt. Returns the pods nominated (now waiting for victims).
    pub(super) fn preempt_for(
        &mut self,
        failed: &[crate::scheduler::Unschedulable],
    ) -> HashSet<String> {
        if failed.is_empty() || !self.gangs.evicts() {
            return HashSet::new();
        }
        let cands: Vec<Arc<PodInfo>> = failed
            .iter()
            .filter_map(|u| self.queue.get(&u.pod))
            .map(|e| e.info.clone())
            .filter(|p| {
                p.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.preemption_policy.as_deref())
                    != Some("Never")
            })
            .collect();
        if cands.is_empty() {
            return HashSet::new();
        }
        // Cheap precheck: preempt needs a running pod of lower priority; reclaim needs
        // queues to reclaim between.
        let top = cands.iter().map(|p| p.priority).max().unwrap_or(i32::MIN);
        let lower = self
            .sched
            .snapshot
            .nodes()
            .iter()
            .any(|n| n.pods.iter().any(|p| p.priority < top));
        if !lower && !self.gangs.may_reclaim() {
            return HashSet::new();
        }
        self.prepare_session(HashMap::new());
        let t0 = Instant::now();
        let sched = std::mem::replace(&mut self.sched, batch_state::placeholder());
        let closed = self.gangs.run_evictions(sched, cands);
        let batch::session::Closed {
            sched,
            evicted,
            evictions,
            nominated,
            ..
        } = closed;
        self.sched = sched;
        self.metrics
            .algorithm_seconds
            .inc_by(t0.elapsed().as_secs_f64());
        self.start_preemptions(evicted, evictions, nominated)
    }

    /// Carries out a session's evictions: victims stay in the snapshot marked
    /// terminating until the API removes them; each preemptor pod is held (in flight,
    /// reserved on its nominated node, `nominatedNodeName` written) until its job's
    /// victims are all gone. Returns the nominated pod keys.
    pub(super) fn start_preemptions(
        &mut self,
        evicted: Vec<(Arc<PodInfo>, String)>,
        evictions: Vec<batch::Eviction>,
        nominated: Vec<crate::scheduler::Placement>,
    ) -> HashSet<String> {
        let now = Instant::now();
        let mut out = HashSet::new();
        if evictions.is_empty() && nominated.is_empty() {
            return out;
        }
        let info: HashMap<String, (Arc<PodInfo>, String)> = evicted
            .into_iter()
            .map(|(p, n)| (p.key.clone(), (p, n)))
            .collect();
        let mut new_waits: HashMap<String, Wait> = HashMap::new();
        for e in evictions {
            let Some((p, node)) = info.get(&e.pod) else {
                continue;
            };
            // Back into the snapshot (the session took it out): it runs until the
            // kubelet stops it.
            self.sched.snapshot.add_pod(mark_terminating(p), node);
            let grace = p
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .clamp(0, 3600) as u64;
            let w = new_waits
                .entry(e.preemptor.clone())
                .or_insert_with(|| Wait {
                    pods: Vec::new(),
                    victims: HashSet::new(),
                    deadline: now,
                });
            w.victims.insert(e.pod.clone());
            w.deadline = w
                .deadline
                .max(now + Duration::from_secs(grace) + WAIT_SLACK);
            self.victims.insert(
                e.pod.clone(),
                Victim {
                    job: e.preemptor.clone(),
                    node: node.clone(),
                    uid: p.uid.clone(),
                    unmarked: p.clone(),
                    api_terminating: false,
                },
            );
            tracing::info!(victim = %e.pod, preemptor = %e.preemptor, node = %node, "evicting: {}", e.reason);
            self.evictor.evict(evictor::EvictRequest {
                cause: evictor::Cause::Preemption,
                key: e.pod.clone(),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                uid: p.uid.clone(),
                node: node.clone(),
                preemptor: e.preemptor,
                reason: e.reason,
            });
        }
        for pl in nominated {
            let Some(entry) = self.queue.get(&pl.pod) else {
                continue;
            };
            let (p, state) = (entry.info.clone(), entry.state);
            if state != queue::State::InFlight {
                continue;
            }
            let job = self.job_of(&pl.pod);
            let w = new_waits.entry(job.clone()).or_insert_with(|| Wait {
                pods: Vec::new(),
                victims: HashSet::new(),
                deadline: now + WAIT_SLACK,
            });
            w.pods.push((pl.pod.clone(), pl.node.clone()));
            self.sched.snapshot.add_pod(p.clone(), &pl.node);
            self.evictor
                .nominate(&p.namespace, &p.name, Some(pl.node.clone()));
            self.waiting_pod.insert(pl.pod.clone(), job);
            out.insert(pl.pod);
        }
        for (job, w) in new_waits {
            self.count_preemption(w.victims.len());
            match self.waits.get_mut(&job) {
                Some(old) => {
                    old.pods.extend(w.pods);
                    old.victims.extend(w.victims);
                    old.deadline = old.deadline.max(w.deadline);
                }
                None => {
                    self.waits.insert(job.clone(), w);
                }
            }
            if self.waits.get(&job).is_some_and(|w| w.victims.is_empty()) {
                self.end_wait(&job, true, now);
            }
        }
        self.metrics
            .preemptors_waiting
            .set(self.waiting_pod.len() as i64);
        out
    }

    /// Ends a preemption wait. `released`: the victims are gone (or the deadline
    /// passed), the preemptors become active with their nomination; otherwise the
    /// preemption is abandoned (nomination cleared, victims not yet terminating
    /// restored, preemptors back off).
    pub(super) fn end_wait(&mut self, job: &str, released: bool, now: Instant) {
        let Some(w) = self.waits.remove(job) else {
            return;
        };
        for (pod, node) in w.pods {
            self.waiting_pod.remove(&pod);
            let api_bound = self.pods.get(&pod).is_some_and(|t| t.node.is_some());
            if !api_bound && self.sched.snapshot.pod_node(&pod).map(|n| &**n) == Some(&*node) {
                self.sched.snapshot.remove_pod(&pod);
            }
            if api_bound {
                continue;
            }
            if released {
                self.nominations.insert(pod.clone(), node);
                self.queue.retry_now(&pod);
            } else {
                if let Some(e) = self.queue.get(&pod) {
                    self.evictor.nominate(&e.info.namespace, &e.info.name, None);
                }
                self.queue.failed(&pod, now, false);
            }
        }
        for v in w.victims {
            if released {
                // Deadline: stop tracking; the snapshot follows the API from here.
                self.victims.remove(&v);
            } else if let Some(vi) = self.victims.remove(&v) {
                self.unmark(&v, vi);
            }
        }
        self.queue.on_cluster_event();
        self.metrics
            .preemptors_waiting
            .set(self.waiting_pod.len() as i64);
    }

    /// Puts a victim back as it was (its eviction did not happen).
    pub(super) fn unmark(&mut self, key: &str, v: Victim) {
        if !v.api_terminating
            && self.sched.snapshot.pod_node(key).map(|n| &**n) == Some(&*v.node)
            && self.pods.contains_key(key)
        {
            self.sched.snapshot.add_pod(v.unmarked, &v.node);
        }
    }

    /// A victim left the API (or the snapshot): its preemptor may be done waiting.
    pub(super) fn victim_gone(&mut self, key: &str) {
        let Some(v) = self.victims.remove(key) else {
            return;
        };
        let done = match self.waits.get_mut(&v.job) {
            Some(w) => {
                w.victims.remove(key);
                w.victims.is_empty()
            }
            None => false,
        };
        if done {
            self.end_wait(&v.job, true, Instant::now());
        }
    }

    /// A waiting preemptor pod was deleted or bound elsewhere.
    pub(super) fn preemptor_gone(&mut self, key: &str) {
        let Some(job) = self.waiting_pod.remove(key) else {
            return;
        };
        if let Some(w) = self.waits.get_mut(&job) {
            w.pods.retain(|(p, _)| p != key);
            if w.pods.is_empty()
                && let Some(w) = self.waits.remove(&job)
            {
                // Nobody to place: victims already asked to go keep going; stop
                // tracking them (the watch removes them).
                for v in w.victims {
                    self.victims.remove(&v);
                }
            }
        }
        self.metrics
            .preemptors_waiting
            .set(self.waiting_pod.len() as i64);
    }

    pub(super) fn on_evicted(&mut self, o: evictor::EvictOutcome) {
        let now = Instant::now();
        match o.result {
            evictor::EvictResult::Evicted => {}
            evictor::EvictResult::Gone => {
                // Gone before the watch said so: drop it from the snapshot (only that
                // incarnation).
                if let Some(v) = self.victims.get(&o.key)
                    && self
                        .sched
                        .snapshot
                        .node(&v.node)
                        .is_some_and(|n| n.pods.iter().any(|p| p.key == o.key && p.uid == v.uid))
                {
                    self.sched.snapshot.remove_pod(&o.key);
                }
                self.victim_gone(&o.key);
            }
            evictor::EvictResult::Blocked(msg) | evictor::EvictResult::Failed(msg) => {
                tracing::info!(victim = %o.key, "eviction not carried out: {msg}");
                self.unevictable
                    .insert(o.key.clone(), now + UNEVICTABLE_FOR);
                match self.victims.get(&o.key).map(|v| v.job.clone()) {
                    Some(job) if self.waits.contains_key(&job) => self.end_wait(&job, false, now),
                    Some(_) => {
                        if let Some(v) = self.victims.remove(&o.key) {
                            self.unmark(&o.key, v);
                        }
                    }
                    None => {}
                }
            }
        }
    }

    /// Releases preemptors whose wait passed its deadline.
    pub(super) fn expire_waits(&mut self, now: Instant) {
        if self.waits.is_empty() {
            return;
        }
        let expired: Vec<String> = self
            .waits
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for job in expired {
            tracing::info!(preemptor = %job, "victims still terminating at the deadline; releasing");
            self.end_wait(&job, true, now);
        }
    }
}
