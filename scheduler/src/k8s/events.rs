//! Event handling of the run loop: watch events for pods, nodes and namespaces
//! applied incrementally to the snapshot and the queue.

use super::preemption::mark_terminating;
use super::*;

// Finished, or being deleted before it was bound. A bound pod that is terminating
// still holds its node's resources (the kubelet has not stopped it yet) and stays in
// the snapshot until the API removes it.
use corral_api::pod::is_done;

impl Loop {
    pub(super) fn on_pod_event(&mut self, ev: reflector::PodEvent) {
        use reflector::PodEvent;
        match ev {
            PodEvent::Init => self.relist[0] = Some(HashSet::new()),
            PodEvent::Apply { init, pods } => {
                for p in pods {
                    if init && let Some(s) = self.relist[0].as_mut() {
                        s.insert(p.key.clone());
                    }
                    self.apply_pod(p);
                }
            }
            PodEvent::InitDone => {
                if let Some(seen) = self.relist[0].take() {
                    let gone: Vec<String> = self
                        .pods
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for k in gone {
                        self.delete_pod(&k);
                    }
                }
                self.synced[0] = true;
            }
            PodEvent::Delete(key) => self.delete_pod(&key),
        }
    }

    pub(super) fn delete_pod(&mut self, key: &str) {
        let had = self.pods.remove(key).is_some();
        let node_ready = self
            .sched
            .snapshot
            .pod_node(key)
            .and_then(|n| self.sched.snapshot.node(n))
            .map(|n| super::failover::node_ready(&n.node));
        let removed = self.sched.snapshot.remove_pod(key);
        if let (Some(p), Some(false)) = (&removed, node_ready)
            && !self.victims.contains_key(key)
        {
            // Evicted from a NotReady node (past its grace): its replacement goes
            // first.
            self.failover.lost([&**p], Instant::now());
        }
        let placed = removed.is_some();
        if let Some(e) = self.queue.remove(key)
            && e.state == queue::State::InFlight
        {
            // The bind result will find no entry and do nothing.
        }
        self.last_report.remove(key);
        self.bind_retries.remove(key);
        self.gangs.forget_pod(key);
        self.nominations.remove(key);
        self.caps.forget(key);
        self.victim_gone(key);
        self.preemptor_gone(key);
        if had && placed {
            // Freed capacity: unschedulable pods may fit now.
            self.queue.on_cluster_event();
        }
    }

    pub(super) fn apply_pod(&mut self, parsed: reflector::ParsedPod) {
        let key = parsed.key;
        let mut info = match parsed.info {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("pod {key}: {e}");
                self.metrics.invalid_objects.inc();
                return;
            }
        };
        let p = info.pod.clone();
        if is_done(&p) {
            self.delete_pod(&key);
            // Succeeded/Failed gang members still count in their group's status.
            self.gangs.on_pod(&key, &p);
            return;
        }
        let rv = p.metadata.resource_version.clone().unwrap_or_default();
        if let Some(t) = self.pods.get(&key)
            && t.rv == rv
            && !rv.is_empty()
        {
            return; // Relist duplicate.
        }
        let node = info.node_name.clone();
        if node.is_none() && !self.names.contains(&info.scheduler_name) {
            // Someone else's pending pod.
            self.pods.remove(&key);
            return;
        }
        self.gangs.on_pod(&key, &p);
        // A gang member that shows up already bound (e.g. bound by another
        // scheduler instance) may complete a gang whose pending members are gated.
        if node.is_some()
            && self.queue.counts()[queue::State::Gated as usize] > 0
            && !self.pods.contains_key(&key)
            && let Some(g) = self.gangs.group_of(&key).cloned()
        {
            let members = self.gangs.members(&g);
            self.queue.ungate(&members);
        }
        self.seq += 1;
        info.seq = self.seq;
        let info = Arc::new(info);
        self.pods.insert(
            key.clone(),
            Tracked {
                rv,
                node: node.clone(),
            },
        );
        match node {
            Some(n) => {
                // Bound (by us or anyone): the API is the truth.
                if info.pod.metadata.deletion_timestamp.is_some()
                    && !self.victims.contains_key(&key)
                    && self
                        .sched
                        .snapshot
                        .node(&n)
                        .is_some_and(|ni| !super::failover::node_ready(&ni.node))
                {
                    // Evicted from a NotReady node (past its grace): controllers
                    // replace it at once; the replacement goes first.
                    self.failover.lost([&*info], Instant::now());
                }
                self.queue.remove(&key);
                self.last_report.remove(&key);
                self.nominations.remove(&key);
                self.preemptor_gone(&key);
                if let Some(e) = self.caps.on_pod(&info) {
                    tracing::warn!("{e}");
                    self.metrics.invalid_objects.inc();
                }
                let info = match self.victims.get_mut(&key) {
                    Some(v) if info.pod.metadata.deletion_timestamp.is_none() => {
                        // Eviction requested, not yet visible: keep it marked.
                        v.unmarked = info.clone();
                        mark_terminating(&info)
                    }
                    Some(v) => {
                        v.api_terminating = true;
                        info
                    }
                    None => info,
                };
                self.sched.snapshot.add_pod(info, &n);
            }
            None => {
                if self.sched.snapshot.pod_node(&key).is_some()
                    && self.queue.get(&key).map(|e| e.state) != Some(queue::State::InFlight)
                {
                    // Was bound before (re-created with the same name): forget.
                    self.sched.snapshot.remove_pod(&key);
                }
                let now = Instant::now();
                let first = self.failover.replaces(&info, now);
                self.queue.upsert_first(info, now, first);
            }
        }
    }

    /// A node was deleted: its pods' replacements go first (`failover.rs`).
    fn node_failed(&mut self, name: &str) {
        let Some(n) = self.sched.snapshot.node(name).cloned() else {
            return;
        };
        let k = self
            .failover
            .lost(n.pods.iter().map(|p| &**p), Instant::now());
        if k > 0 {
            tracing::info!(
                node = name,
                "node deleted: the replacements of its {k} controller-owned pod(s) are scheduled first"
            );
        }
    }

    pub(super) fn on_node_event(&mut self, ev: Event<Node>) {
        match ev {
            Event::Init => {
                self.relist[1] = Some(HashSet::new());
                self.node_buf.clear();
            }
            Event::InitApply(n) => {
                if let (Some(s), Some(name)) = (self.relist[1].as_mut(), n.metadata.name.clone()) {
                    s.insert(name);
                }
                // Buffered: applied with one reordering at InitDone.
                self.node_buf.push(n);
            }
            Event::InitDone => {
                let buf = std::mem::take(&mut self.node_buf);
                let mut infos = Vec::with_capacity(buf.len());
                for n in buf {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    match NodeInfo::new(n) {
                        Ok(i) => infos.push(i),
                        Err(e) => {
                            tracing::warn!("node {name}: {e}");
                            self.metrics.invalid_objects.inc();
                        }
                    }
                }
                self.sched.snapshot.upsert_nodes(infos);
                if let Some(seen) = self.relist[1].take() {
                    let gone: Vec<String> = self
                        .sched
                        .snapshot
                        .nodes()
                        .iter()
                        .filter(|n| !seen.contains(&*n.name))
                        .map(|n| n.name.to_string())
                        .collect();
                    for n in gone {
                        self.node_failed(&n);
                        self.sched.snapshot.remove_node(&n);
                    }
                }
                self.synced[1] = true;
                self.queue.on_cluster_event();
            }
            Event::Apply(n) => {
                if self.apply_node(n) {
                    self.queue.on_cluster_event();
                }
            }
            Event::Delete(n) => {
                if let Some(name) = n.metadata.name.as_deref() {
                    self.node_failed(name);
                    self.sched.snapshot.remove_node(name);
                }
            }
        }
    }

    /// Applies a node; returns whether something scheduling-relevant changed
    /// (new node, allocatable, labels, taints, unschedulable) — status heartbeats do
    /// not re-queue unschedulable pods.
    pub(super) fn apply_node(&mut self, n: Node) -> bool {
        let name = n.metadata.name.clone().unwrap_or_default();
        let old = self.sched.snapshot.node(&name).cloned();
        if let Some(old) = &old
            && old.node.metadata.resource_version == n.metadata.resource_version
            && n.metadata.resource_version.is_some()
        {
            return false;
        }
        match NodeInfo::new(n) {
            Ok(info) => {
                let relevant = old.is_none_or(|o| {
                    o.allocatable != info.allocatable
                        || o.labels != info.labels
                        || o.taints != info.taints
                        || o.unschedulable != info.unschedulable
                });
                self.sched.snapshot.upsert_node(info);
                relevant
            }
            Err(e) => {
                tracing::warn!("node {name}: {e}");
                self.metrics.invalid_objects.inc();
                false
            }
        }
    }

    pub(super) fn on_ns_event(&mut self, ev: Event<Namespace>) {
        let apply = |snap: &mut Snapshot, ns: Namespace| {
            if let Some(name) = ns.metadata.name {
                let labels: Labels = ns.metadata.labels.unwrap_or_default().into_iter().collect();
                snap.namespaces.insert(name, labels);
            }
        };
        match ev {
            Event::Init => self.relist[2] = Some(HashSet::new()),
            Event::InitApply(ns) => {
                if let (Some(s), Some(name)) = (self.relist[2].as_mut(), ns.metadata.name.clone()) {
                    s.insert(name);
                }
                apply(&mut self.sched.snapshot, ns);
            }
            Event::InitDone => {
                if let Some(seen) = self.relist[2].take() {
                    self.sched
                        .snapshot
                        .namespaces
                        .retain(|k, _| seen.contains(k));
                }
                self.synced[2] = true;
            }
            Event::Apply(ns) => {
                apply(&mut self.sched.snapshot, ns);
                self.queue.on_cluster_event();
            }
            Event::Delete(ns) => {
                if let Some(name) = ns.metadata.name.as_deref() {
                    self.sched.snapshot.namespaces.remove(name);
                }
            }
        }
    }
}
