//! The watched batch objects: CRD, ResourceQuota and PriorityClass events, and the
//! per-object decoding cache behind [`BatchState::objects`].

use super::*;

/// Whether a watched batch object's event may alter a decision: anything but a
/// change of status alone (a Queue's `status.state` excepted) and of bookkeeping
/// metadata. The PodGroup/Queue status patches `run` writes itself come back as
/// such events; a re-sent identical object counts as a change (it is not known to
/// be status-only).
fn relevant_change(crd: Crd, old: Option<&Value>, new: &Value) -> bool {
    let Some(old) = old else { return true };
    if old == new {
        return true;
    }
    let rest = |v: &Value| {
        let mut v = v.clone();
        match crd {
            Crd::VolcanoPodGroup | Crd::CoschedulingPodGroup => {
                if let Some(m) = v.as_object_mut() {
                    m.remove("status");
                }
            }
            Crd::VolcanoQueue => {
                let state = v["status"]["state"].clone();
                v["status"] = json!({ "state": state });
            }
            _ => {}
        }
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        v
    };
    rest(old) != rest(new)
}

impl BatchState {
    /// A CRD watch event. Returns whether scheduling-relevant state changed.
    /// NodeResourceTopology events update the snapshot's NUMA topology (`snap`);
    /// a malformed NRT is logged by name and its node has no topology.
    pub fn on_crd_event(
        &mut self,
        crd: Crd,
        ev: Event<DynamicObject>,
        snap: &mut Snapshot,
    ) -> bool {
        if matches!(ev, Event::InitDone) {
            self.crds_synced.insert(crd);
        }
        if crd == Crd::NodeResourceTopology {
            let changed = self.on_topology_event(ev, snap);
            self.set_count("noderesourcetopologies", self.topology.len());
            return changed;
        }
        let is_group = matches!(crd, Crd::VolcanoPodGroup | Crd::CoschedulingPodGroup);
        let api = match crd {
            Crd::CoschedulingPodGroup => GroupApi::Coscheduling,
            _ => GroupApi::Volcano,
        };
        // Returns (key, whether the change can alter a decision).
        let apply = |this: &mut Self, o: DynamicObject| -> (String, bool) {
            let key = object_key(&o.metadata);
            this.patcher.observe(crd, &o);
            let mut relevant = false;
            if let Some(raw) = dynamic_to_raw(crd, &o) {
                let m = this.crds.entry(crd).or_default();
                relevant = relevant_change(crd, m.get(&key), &raw.value);
                m.insert(key.clone(), raw.value);
                this.decoded
                    .entry(crd)
                    .or_default()
                    .insert(key.clone(), None);
            }
            if relevant && is_group {
                this.ungate.push((api, key.clone()));
            }
            (key, relevant)
        };
        let relevant = match ev {
            Event::Init => {
                self.crd_relist.insert(crd, HashSet::new());
                return false;
            }
            Event::InitApply(o) => {
                let (k, r) = apply(self, o);
                self.crd_relist.entry(crd).or_default().insert(k);
                r
            }
            Event::InitDone => {
                let mut gone = Vec::new();
                if let Some(seen) = self.crd_relist.remove(&crd) {
                    let m = self.crds.entry(crd).or_default();
                    gone = m.keys().filter(|k| !seen.contains(*k)).cloned().collect();
                    for k in &gone {
                        m.remove(k);
                        if let Some(d) = self.decoded.get_mut(&crd) {
                            d.remove(k);
                        }
                        if is_group {
                            self.ungate.push((api, k.clone()));
                        }
                    }
                }
                !gone.is_empty()
            }
            Event::Apply(o) => {
                let (key, relevant) = apply(self, o);
                // A group already in the assembled objects: patched in place at the
                // next `objects` (no reassembly of every group).
                if is_group
                    && self.objs.is_some()
                    && self.group_index.contains_key(&(api, key.clone()))
                {
                    self.in_place.push((api, key));
                    return relevant;
                }
                relevant
            }
            Event::Delete(o) => {
                let key = object_key(&o.metadata);
                if let Some(m) = self.crds.get_mut(&crd) {
                    m.remove(&key);
                }
                if let Some(d) = self.decoded.get_mut(&crd) {
                    d.remove(&key);
                }
                if is_group {
                    self.ungate.push((api, key));
                }
                true
            }
        };
        let n = self.crds.get(&crd).map_or(0, |m| m.len());
        self.set_count(
            match crd {
                Crd::VolcanoPodGroup => "podgroups.scheduling.volcano.sh",
                Crd::VolcanoQueue => "queues.scheduling.volcano.sh",
                Crd::HyperNode => "hypernodes.topology.volcano.sh",
                _ => "podgroups.scheduling.x-k8s.io",
            },
            n,
        );
        self.objs = None;
        relevant
    }

    /// PodGroups whose gated members may try again (their spec changed or the
    /// object is gone), since the last call.
    pub fn take_ungated(&mut self) -> Vec<GroupKey> {
        std::mem::take(&mut self.ungate)
    }

    /// A ResourceQuota watch event.
    pub fn on_quota_event(&mut self, ev: Event<ResourceQuota>) -> bool {
        let to_value = |q: &ResourceQuota| serde_json::to_value(q).ok();
        match ev {
            Event::Init => {
                self.quota_relist = Some(HashSet::new());
                return false;
            }
            Event::InitApply(q) => {
                let k = object_key(&q.metadata);
                if let Some(v) = to_value(&q) {
                    self.quotas.insert(k.clone(), v);
                }
                if let Some(s) = self.quota_relist.as_mut() {
                    s.insert(k);
                }
            }
            Event::InitDone => {
                if let Some(seen) = self.quota_relist.take() {
                    self.quotas.retain(|k, _| seen.contains(k));
                }
                self.synced[1] = true;
            }
            Event::Apply(q) => {
                if let Some(v) = to_value(&q) {
                    self.quotas.insert(object_key(&q.metadata), v);
                }
            }
            Event::Delete(q) => {
                self.quotas.remove(&object_key(&q.metadata));
            }
        }
        self.set_count("resourcequotas", self.quotas.len());
        self.objs = None;
        true
    }

    /// A PriorityClass watch event.
    pub fn on_priority_class_event(&mut self, ev: Event<PriorityClass>) -> bool {
        match ev {
            Event::Init => {
                self.pc_relist = Some(HashSet::new());
                return false;
            }
            Event::InitApply(pc) => {
                let k = self.apply_priority_class(&pc);
                if let Some(s) = self.pc_relist.as_mut() {
                    s.insert(k);
                }
            }
            Event::InitDone => {
                if let Some(seen) = self.pc_relist.take() {
                    self.priority_classes.retain(|k, _| seen.contains(k));
                    self.pc_global.retain(|k| seen.contains(k));
                }
                self.synced[0] = true;
            }
            Event::Apply(pc) => {
                self.apply_priority_class(&pc);
            }
            Event::Delete(pc) => {
                let k = pc.metadata.name.as_deref().unwrap_or("");
                self.priority_classes.remove(k);
                self.pc_global.remove(k);
            }
        }
        self.set_count("priorityclasses", self.priority_classes.len());
        self.invalidate_groups();
        self.objs = None;
        true
    }

    /// Records a PriorityClass; returns its name.
    fn apply_priority_class(&mut self, pc: &PriorityClass) -> String {
        let k = pc.metadata.name.clone().unwrap_or_default();
        self.priority_classes.insert(k.clone(), pc.value);
        if pc.global_default == Some(true) {
            self.pc_global.insert(k.clone());
        } else {
            self.pc_global.remove(&k);
        }
        k
    }

    /// Priority of a PriorityClass by name.
    pub fn priority_class(&self, name: &str) -> Option<i32> {
        self.priority_classes.get(name).copied()
    }

    /// A NodeResourceTopology event: parsed with the shared strict parser and put
    /// into the snapshot. Returns whether some node's topology changed.
    fn on_topology_event(&mut self, ev: Event<DynamicObject>, snap: &mut Snapshot) -> bool {
        let crd = Crd::NodeResourceTopology;
        let mut apply = |this: &mut Self, o: DynamicObject| -> (String, bool) {
            let key = object_key(&o.metadata);
            let parsed = serde_json::to_value(&o)
                .map_err(|e| e.to_string())
                .and_then(|v| crate::topology::parse_nrt(&v));
            match parsed {
                Ok((node, t)) => {
                    let changed = snap.topology(&node).is_none_or(|old| **old != t);
                    if let Some(prev) = this.topology.insert(key.clone(), node.clone())
                        && prev != node
                    {
                        snap.set_topology(&prev, None);
                    }
                    // Even unchanged, a newer NRT is taken to include the pods
                    // assumed on the node so far.
                    snap.set_topology(&node, Some(Arc::new(t)));
                    (key, changed)
                }
                Err(e) => {
                    this.log_error(format!("NodeResourceTopology {key}: {e}"));
                    let node = this.topology.remove(&key).unwrap_or_else(|| key.clone());
                    snap.set_topology(&node, None);
                    (key, false)
                }
            }
        };
        match ev {
            Event::Init => {
                self.crd_relist.insert(crd, HashSet::new());
                false
            }
            Event::InitApply(o) => {
                let (k, changed) = apply(self, o);
                self.crd_relist.entry(crd).or_default().insert(k);
                changed
            }
            Event::InitDone => {
                let Some(seen) = self.crd_relist.remove(&crd) else {
                    return false;
                };
                let gone: Vec<(String, String)> = self
                    .topology
                    .iter()
                    .filter(|(k, _)| !seen.contains(*k))
                    .map(|(k, n)| (k.clone(), n.clone()))
                    .collect();
                for (k, n) in &gone {
                    self.topology.remove(k);
                    snap.set_topology(n, None);
                }
                !gone.is_empty()
            }
            Event::Apply(o) => apply(self, o).1,
            Event::Delete(o) => {
                let key = object_key(&o.metadata);
                match self.topology.remove(&key) {
                    Some(node) => {
                        snap.set_topology(&node, None);
                        true
                    }
                    None => false,
                }
            }
        }
    }

    fn log_error(&mut self, e: String) {
        if self.logged_errors.insert(e.clone()) {
            tracing::warn!("{e}");
            self.metrics.invalid_objects.inc();
        }
    }

    /// The PriorityClasses as the batch schemas read them: by name, plus the
    /// globalDefault class (first by name if several) under the key "", as
    /// `simulate`'s input has it (the priority of a PodGroup whose class is missing).
    pub(super) fn priority_class_map(&self) -> HashMap<String, i32> {
        let mut pcs = self.priority_classes.clone();
        if let Some(v) = self
            .pc_global
            .iter()
            .find_map(|g| self.priority_classes.get(g).copied())
        {
            pcs.insert(String::new(), v);
        }
        pcs
    }

    /// Forgets the decoded PodGroups (their priority depends on PriorityClasses).
    fn invalidate_groups(&mut self) {
        for crd in [Crd::VolcanoPodGroup, Crd::CoschedulingPodGroup] {
            if let Some(d) = self.decoded.get_mut(&crd) {
                for v in d.values_mut() {
                    *v = None;
                }
            }
        }
    }

    /// The decoded batch objects: objects that changed since the last call are
    /// decoded (each alone), the rest is reused; the result equals
    /// [`BatchObjects::parse`] over all watched objects.
    pub fn objects(&mut self) -> Arc<BatchObjects> {
        if self.objs.is_some() && !self.in_place.is_empty() && !self.patch_in_place() {
            self.objs = None;
        }
        self.in_place.clear();
        if let Some(o) = &self.objs {
            return o.clone();
        }
        let pcs = self.priority_class_map();
        let mut out = BatchObjects::default();
        for crd in [
            Crd::VolcanoQueue,
            Crd::VolcanoPodGroup,
            Crd::CoschedulingPodGroup,
            Crd::HyperNode,
        ] {
            let Some(raws) = self.crds.get(&crd) else {
                continue;
            };
            let decoded = self.decoded.entry(crd).or_default();
            let ar = crd.api_resource();
            for (k, v) in raws {
                let d = decoded.entry(k.clone()).or_insert(None);
                if d.is_none() {
                    *d = Some(BatchObjects::parse(
                        &[to_raw(&ar.api_version, &ar.kind, v.clone())],
                        &pcs,
                    ));
                }
                if let Some(one) = d {
                    out.queues.extend(one.queues.iter().cloned());
                    out.groups.extend(one.groups.iter().cloned());
                    out.hypernodes.extend(one.hypernodes.iter().cloned());
                    out.network_topology
                        .extend(one.network_topology.iter().map(|(k, v)| (k.clone(), *v)));
                    out.errors.extend(one.errors.iter().cloned());
                }
            }
        }
        // Quotas are few: decoded together.
        let raw: Vec<_> = self
            .quotas
            .values()
            .map(|v| to_raw("v1", "ResourceQuota", v.clone()))
            .collect();
        if !raw.is_empty() {
            let q = BatchObjects::parse(&raw, &pcs);
            out.quotas = q.quotas;
            out.errors.extend(q.errors);
        }
        for e in out.errors.clone() {
            self.log_error(e);
        }
        self.group_index = out
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| ((g.api, g.key()), i))
            .collect();
        let objs = Arc::new(out);
        self.objs = Some(objs.clone());
        objs
    }

    /// Decodes the groups in `in_place` and puts each at its place in the assembled
    /// objects. False (nothing usable was changed) when one of them no longer
    /// decodes to exactly one valid group without a network topology, or had one:
    /// then the objects are assembled anew.
    fn patch_in_place(&mut self) -> bool {
        let pcs = self.priority_class_map();
        let Some(objs) = self.objs.as_mut() else {
            return false;
        };
        let mut fresh = Vec::with_capacity(self.in_place.len());
        for g in &self.in_place {
            let crd = crd_of(g.0);
            let (Some(&i), Some(v)) = (
                self.group_index.get(g),
                self.crds.get(&crd).and_then(|m| m.get(&g.1)),
            ) else {
                return false;
            };
            let ar = crd.api_resource();
            let one = BatchObjects::parse(&[to_raw(&ar.api_version, &ar.kind, v.clone())], &pcs);
            if one.groups.len() != 1
                || !one.errors.is_empty()
                || !one.network_topology.is_empty()
                || objs.network_topology.contains_key(&g.1)
            {
                return false;
            }
            fresh.push((crd, g.1.clone(), i, one));
        }
        let all = Arc::make_mut(objs);
        for (crd, key, i, one) in fresh {
            all.groups[i] = one.groups[0].clone();
            self.decoded.entry(crd).or_default().insert(key, Some(one));
        }
        true
    }

    /// The decoded spec of a PodGroup.
    pub(super) fn group_spec(&mut self, g: &GroupKey) -> Option<(Arc<BatchObjects>, usize)> {
        let objs = self.objects();
        let i = *self.group_index.get(g)?;
        Some((objs, i))
    }
}
