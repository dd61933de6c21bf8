//! PodGroup and Queue status decided by the run loop: a session's verdict per
//! touched group, gangs waiting for member pods, member counts, and the Queue
//! status.

use super::*;

impl BatchState {
    /// Records that gang `g` is waiting for member pods (`have` of `min`).
    pub fn gang_waits(&mut self, g: &GroupKey, have: usize, min: usize, now: std::time::Instant) {
        let e = self.waiting.entry(g.clone()).or_insert((now, have, min));
        e.1 = have;
        e.2 = min;
    }

    /// Gangs that have waited for member pods longer than [`GANG_WAIT_GRACE`] get
    /// the PodGroup condition Volcano's gang plugin writes (`Unschedulable`,
    /// `NotEnoughTasks`), once per change; gangs that are no longer short are
    /// forgotten.
    ///
    /// Returns the groups whose PodGroup object is still missing after the grace:
    /// their gated members go through a session, which reports it per pod.
    pub fn sweep_gang_waits(&mut self, now: std::time::Instant) -> Vec<GroupKey> {
        let mut release = Vec::new();
        if !self.missing.is_empty() {
            let members = &self.members;
            self.missing.retain(|g, _| members.contains_key(g));
            for (g, (since, released)) in self.missing.iter_mut() {
                if !*released && now.duration_since(*since) >= GANG_WAIT_GRACE {
                    *released = true;
                    release.push(g.clone());
                }
            }
        }
        if self.waiting.is_empty() {
            return release;
        }
        let due: Vec<GroupKey> = self
            .waiting
            .iter()
            .filter(|(_, (since, _, _))| now.duration_since(*since) >= GANG_WAIT_GRACE)
            .map(|(g, _)| g.clone())
            .collect();
        for g in due {
            let Some((_, _, _)) = self.waiting.get(&g).copied() else {
                continue;
            };
            // Still short? (A member may have arrived, or the spec changed.)
            let Some((have, min)) = self.short_of_members(&g) else {
                self.waiting.remove(&g);
                continue;
            };
            self.waiting.remove(&g);
            let message =
                format!("Not enough valid tasks for gang-scheduling, valid: {have}, min: {min}");
            if self
                .last
                .get(&g)
                .is_some_and(|v| v.reason == "NotEnoughTasks" && v.message == message)
            {
                continue;
            }
            let since = self.condition_since(&g, "Unschedulable");
            let phase = self
                .last
                .get(&g)
                .map_or_else(|| "Pending".to_string(), |v| v.phase.clone());
            self.last.insert(
                g.clone(),
                GroupView {
                    phase,
                    cond_type: "Unschedulable".into(),
                    reason: "NotEnoughTasks".into(),
                    message,
                    since,
                },
            );
            self.dirty.insert(g);
        }
        release
    }

    /// Whether the members of `g` should wait for its PodGroup object (not seen
    /// yet, for less than [`GANG_WAIT_GRACE`]).
    pub fn await_group_object(&mut self, g: &GroupKey, now: std::time::Instant) -> bool {
        if self
            .crds
            .get(&crd_of(g.0))
            .is_some_and(|m| m.contains_key(&g.1))
        {
            self.missing.remove(g);
            return false;
        }
        let (since, _) = *self.missing.entry(g.clone()).or_insert((now, false));
        now.duration_since(since) < GANG_WAIT_GRACE
    }

    fn condition_since(&self, g: &GroupKey, cond_type: &str) -> String {
        if let Some(v) = self.last.get(g)
            && v.cond_type == cond_type
        {
            return v.since.clone();
        }
        // After a restart: keep the transition time the API shows.
        let (ns, name) = split_key(&g.1);
        self.patcher
            .observed(crd_of(g.0), ns, &name)
            .and_then(|st| st["conditions"].as_array())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == cond_type)
                    .and_then(|c| c["lastTransitionTime"].as_str())
            })
            .map(str::to_string)
            .unwrap_or_else(now_rfc3339)
    }

    /// Decides the status of the PodGroups whose pods were in a session, from the
    /// session's verdict (`closed`) and the members' unschedulable messages.
    pub fn after_session(&mut self, closed: &Closed, touched: &HashSet<GroupKey>) {
        let messages: HashMap<&str, &str> = closed
            .unschedulable
            .iter()
            .map(|u| (u.pod.as_str(), u.message.as_str()))
            .collect();
        let mut by_name: HashMap<&str, &crate::batch::session::PodGroupStatus> = HashMap::new();
        for s in &closed.podgroups {
            by_name.entry(s.name.as_str()).or_insert(s);
        }
        for g in touched {
            if !self
                .crds
                .get(&crd_of(g.0))
                .is_some_and(|m| m.contains_key(&g.1))
            {
                continue; // No object (yet): nothing to write.
            }
            self.waiting.remove(g);
            let Some(st) = by_name.get(g.1.as_str()) else {
                continue;
            };
            // Aggregate the members' failure messages (most frequent first).
            let mut agg: BTreeMap<&str, usize> = BTreeMap::new();
            let members = self.members(g);
            let mut unplaced = 0;
            for k in &members {
                if let Some(m) = messages.get(k.as_str()) {
                    unplaced += 1;
                    *agg.entry(m).or_insert(0) += 1;
                }
            }
            let mut agg: Vec<(&str, usize)> = agg.into_iter().collect();
            agg.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let (cond_type, reason, message) = if unplaced > 0 {
                // The session's gang verdict is already aggregated Volcano-style
                // ("1/3 tasks in gang unschedulable: 0/2 nodes are available: ...");
                // otherwise the members' messages are, most frequent first.
                let message = if st.message.is_empty() {
                    let parts: Vec<String> =
                        agg.iter().map(|(m, n)| format!("{n} × {m}")).collect();
                    format!(
                        "{unplaced}/{} tasks in gang unschedulable: {}",
                        members.len(),
                        parts.join("; ")
                    )
                } else {
                    st.message.clone()
                };
                ("Unschedulable", "NotEnoughResources", message)
            } else {
                (
                    "Scheduled",
                    "tasks in gang are ready to be scheduled",
                    st.message.clone(),
                )
            };
            let since = self.condition_since(g, cond_type);
            self.last.insert(
                g.clone(),
                GroupView {
                    phase: st.phase.clone(),
                    cond_type: cond_type.into(),
                    reason: reason.into(),
                    message,
                    since,
                },
            );
            self.dirty.insert(g.clone());
        }
    }

    /// Status patches for every dirty group with a decided status, and every Queue
    /// object (only changed ones survive the patcher).
    pub fn statuses(&mut self, snapshot: &Snapshot, queues_too: bool) -> Vec<StatusPatch> {
        let mut out = Vec::new();
        let dirty: Vec<GroupKey> = self.dirty.drain().collect();
        for g in dirty {
            if !self
                .crds
                .get(&crd_of(g.0))
                .is_some_and(|m| m.contains_key(&g.1))
            {
                continue;
            }
            let (running, succeeded, failed, total) = self.counts(&g, snapshot);
            let min = self.min_member(&g);
            let Some(view) = self.last.get_mut(&g) else {
                continue; // Never in a session: nothing decided yet.
            };
            if running as usize >= min {
                view.phase = "Running".into();
            } else if total > 0 && running == 0 && (succeeded + failed) as usize == total {
                view.phase = "Completed".into();
            }
            let view = view.clone();
            let (ns, name) = split_key(&g.1);
            let status = match g.0 {
                GroupApi::Volcano => json!({
                    "phase": view.phase,
                    "running": running,
                    "succeeded": succeeded,
                    "failed": failed,
                    "conditions": [{
                        "type": view.cond_type,
                        "status": "True",
                        "lastTransitionTime": view.since,
                        "reason": view.reason,
                        "message": view.message,
                    }],
                }),
                GroupApi::Coscheduling => json!({
                    "phase": match view.phase.as_str() {
                        "Running" => "Running",
                        "Completed" => "Finished",
                        "Inqueue" | "Unknown" => "Scheduling",
                        _ => "Pending",
                    },
                    "running": running,
                    "succeeded": succeeded,
                    "failed": failed,
                }),
            };
            out.push(StatusPatch {
                crd: crd_of(g.0),
                namespace: ns,
                name,
                status,
            });
        }
        if queues_too {
            out.extend(self.queue_statuses());
        }
        self.patcher.changed(out)
    }

    fn queue_statuses(&mut self) -> Vec<StatusPatch> {
        let Some(queues) = self.crds.get(&Crd::VolcanoQueue) else {
            return Vec::new();
        };
        let objs = match &self.objs {
            Some(o) => o.clone(),
            None => return Vec::new(),
        };
        let mut out = Vec::new();
        for (name, v) in queues {
            let mut c: BTreeMap<&str, i32> = BTreeMap::new();
            for g in objs.groups.iter().filter(|g| &g.queue == name) {
                let phase = self
                    .last
                    .get(&(g.api, g.key()))
                    .map(|v| v.phase.as_str())
                    .or(g.phase.as_deref())
                    .unwrap_or("Pending");
                *c.entry(phase).or_insert(0) += 1;
            }
            let n = |p: &str| c.get(p).copied().unwrap_or(0);
            let counts = crate::k8s::compat_metrics::POD_GROUP_PHASES.map(|p| i64::from(n(p)));
            self.metrics.volcano.set_queue_pod_groups(name, counts);
            let state = match v["status"]["state"].as_str() {
                Some(s) if !s.is_empty() => s.to_string(),
                _ => "Open".to_string(),
            };
            let mut status = json!({
                "state": state,
                "pending": c.get("Pending").copied().unwrap_or(0),
                "running": c.get("Running").copied().unwrap_or(0),
                "inqueue": c.get("Inqueue").copied().unwrap_or(0),
                "unknown": c.get("Unknown").copied().unwrap_or(0),
                "completed": c.get("Completed").copied().unwrap_or(0),
            });
            // Always present: Volcano's Queue CRD requires `status.allocated`, so a
            // status without it would be refused on a queue that has none yet.
            status["allocated"] = match self.queue_alloc.get(name) {
                Some(a) => json!(a.to_quantities()),
                None => json!({}),
            };
            out.push(StatusPatch {
                crd: Crd::VolcanoQueue,
                namespace: None,
                name: name.clone(),
                status,
            });
        }
        out
    }
}
