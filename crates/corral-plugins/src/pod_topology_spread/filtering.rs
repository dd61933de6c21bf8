//! PreFilter, its incremental updates and Filter.

use super::*;

/// Topology value → `T`, with a fast hasher (probed per node in Filter/Score).
pub(super) type FxMap<T> = HashMap<String, T, BuildHasherDefault<FxHasher>>;

/// Matching-pod counts per topology domain of one constraint, with the exact minimum.
///
/// Counts are kept by *slot*: slots `0..key.len()` are the domain ids of the
/// snapshot's index of the constraint's key (so Filter reads a node's count with two
/// array reads: its domain id by position, then the count), later slots hold values
/// the index does not know (a node that is not the snapshot's own). Only registered
/// domains (kube's `TpValueToMatchNum` entries: a domain with an eligible node, or
/// one an added pod created) take part in the minimum and the domain count; an
/// unregistered slot counts 0, as kube's missing map entry does.
#[derive(Debug, Clone, Default)]
pub(super) struct Domains {
    /// Value → slot for values outside `key` (every value when `key` is `None`);
    /// shared between cycle-state clones (it only changes when such a value appears).
    pub(super) extra: Arc<FxMap<usize>>,
    /// Count per slot (0 for an unregistered slot).
    pub(super) counts: Vec<i64>,
    /// Per slot: the domain is registered.
    pub(super) registered: Vec<bool>,
    /// Number of registered domains.
    pub(super) domains: usize,
    /// Minimum over the registered counts (0 when there are no domains).
    pub(super) min: i64,
    /// Number of registered domains whose count equals `min`.
    pub(super) at_min: usize,
    /// The snapshot's domain index of the constraint's key (`None` only in tests).
    pub(super) key: Option<Arc<KeyDomains>>,
}

impl Domains {
    fn for_key(key: Arc<KeyDomains>) -> Domains {
        Domains {
            counts: vec![0; key.len()],
            registered: vec![false; key.len()],
            key: Some(key),
            ..Domains::default()
        }
    }

    /// The slot of value `v`, if it has one.
    #[inline]
    fn slot_of(&self, v: &str) -> Option<usize> {
        self.key
            .as_ref()
            .and_then(|k| k.id_of(v))
            .map(|id| id as usize)
            .or_else(|| self.extra.get(v).copied())
    }

    #[inline]
    fn register(&mut self, slot: usize) {
        if !self.registered[slot] {
            self.registered[slot] = true;
            self.domains += 1;
        }
    }

    /// Registers every domain of `key` whose flag is set (`None`: all of them).
    fn register_ids(&mut self, which: Option<&[bool]>) {
        match which {
            None => {
                for r in self.registered.iter_mut() {
                    *r = true;
                }
                self.domains = self.registered.len();
            }
            Some(w) => {
                for (slot, _) in w.iter().enumerate().filter(|(_, on)| **on) {
                    self.register(slot);
                }
            }
        }
    }

    /// Registers domain `v` (if new) and adds `n` to it, without maintaining `min`.
    pub(super) fn add_raw(&mut self, v: &str, n: i64) {
        let slot = match self.slot_of(v) {
            Some(s) => s,
            None => {
                let s = self.counts.len();
                Arc::make_mut(&mut self.extra).insert(v.to_string(), s);
                self.counts.push(0);
                self.registered.push(false);
                s
            }
        };
        self.register(slot);
        self.counts[slot] += n;
    }

    /// [`Domains::add_raw`] by domain id of `key`.
    #[inline]
    fn add_id(&mut self, id: u32, n: i64) {
        let slot = id as usize;
        if slot < self.registered.len() {
            self.register(slot);
            self.counts[slot] += n;
        }
    }

    /// Count of the domain with id `id` of `key` (0 when unregistered).
    #[inline]
    fn count_id(&self, id: u32) -> i64 {
        self.counts.get(id as usize).copied().unwrap_or(0)
    }

    pub(super) fn recompute_min(&mut self) {
        let regs = || {
            self.counts
                .iter()
                .zip(&self.registered)
                .filter(|(_, r)| **r)
                .map(|(c, _)| *c)
        };
        self.min = regs().min().unwrap_or(0);
        self.at_min = regs().filter(|&c| c == self.min).count();
    }

    /// Adds `delta` to domain `v`, keeping `min` exact.
    pub(super) fn update(&mut self, v: &str, delta: i64) {
        if delta == 0 {
            return;
        }
        match self.slot_of(v) {
            Some(s) if self.registered[s] => self.update_at(s, delta),
            _ => {
                self.add_raw(v, delta);
                self.recompute_min();
            }
        }
    }

    /// [`Domains::update`] by domain id of `key`.
    fn update_id(&mut self, id: u32, delta: i64) {
        if delta == 0 {
            return;
        }
        let slot = id as usize;
        match self.registered.get(slot) {
            Some(true) => self.update_at(slot, delta),
            Some(false) => {
                self.register(slot);
                self.counts[slot] += delta;
                self.recompute_min();
            }
            None => {}
        }
    }

    /// Adds `delta` to the registered `counts[i]`, keeping `min` exact.
    fn update_at(&mut self, i: usize, delta: i64) {
        let old = self.counts[i];
        let new = old + delta;
        self.counts[i] = new;
        if new < self.min {
            self.min = new;
            self.at_min = 1;
        } else if new == self.min {
            self.at_min += 1;
        } else if old == self.min {
            self.at_min = self.at_min.saturating_sub(1);
            if self.at_min == 0 {
                self.recompute_min();
            }
        }
    }

    #[inline]
    pub(super) fn count(&self, v: &str) -> i64 {
        self.slot_of(v).map_or(0, |s| self.counts[s])
    }

    /// The registered domains' values and counts (for tests and diagnostics).
    #[cfg(test)]
    pub(super) fn entries(&self) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = self
            .extra
            .iter()
            .filter(|(_, s)| self.registered[**s])
            .map(|(v, s)| (v.clone(), self.counts[*s]))
            .collect();
        if let Some(k) = &self.key {
            for (id, v) in k.values().iter().enumerate() {
                if self.registered[id] {
                    out.push((v.clone(), self.counts[id]));
                }
            }
        }
        out.sort();
        out
    }

    /// Global minimum as used by Filter (0 when fewer than `min_domains` domains).
    #[inline]
    pub(super) fn global_min(&self, min_domains: usize) -> i64 {
        if self.domains < min_domains {
            0
        } else {
            self.min
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct PreFilterState {
    pub(super) constraints: Arc<[Constraint]>,
    /// Whether the incoming pod matches each constraint's selector.
    pub(super) self_match: Arc<[i64]>,
    pub(super) domains: Vec<Domains>,
    pub(super) required: Arc<RequiredNodeAffinity>,
    /// Per constraint: the snapshot nodes its inclusion policies admit, by position
    /// (`None`: all), at `nodes_version` ([`inclusion_masks`]).
    pub(super) masks: Arc<[Option<Arc<[bool]>>]>,
    /// Per constraint: the largest count a node's domain may hold for the node to
    /// pass (`maxSkew + globalMin − selfMatch`), kept current by every update.
    pub(super) limits: Vec<i64>,
    /// The snapshot `nodes_version` of the domains' key indices: while it is current,
    /// Filter reads a node's domain by its snapshot position.
    pub(super) nodes_version: u64,
}

impl PreFilterState {
    fn refresh_limits(&mut self) {
        self.limits.clear();
        for ((c, d), self_match) in self
            .constraints
            .iter()
            .zip(&self.domains)
            .zip(self.self_match.iter())
        {
            self.limits
                .push(c.max_skew + d.global_min(c.min_domains) - self_match);
        }
    }

    pub(super) fn update(
        &mut self,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
        delta: i64,
    ) {
        if other.namespace != pod.namespace {
            return;
        }
        // The snapshot's own node while the key indices are current: domains and
        // the inclusion verdict by position.
        if self.nodes_version == snap.nodes_version()
            && let Some(pos) = snap.position(node)
        {
            let id_at = |d: &Domains| d.key.as_ref().map_or(DOMAIN_MISSING, |k| k.id_at(pos));
            if self.domains.iter().any(|d| id_at(d) == DOMAIN_MISSING) {
                return;
            }
            for ((c, d), m) in self
                .constraints
                .iter()
                .zip(self.domains.iter_mut())
                .zip(self.masks.iter())
            {
                if c.counts(other, &pod.namespace) && m.as_ref().is_none_or(|m| m[pos]) {
                    let id = id_at(d);
                    d.update_id(id, delta);
                }
            }
            self.refresh_limits();
            return;
        }
        if !has_all_keys(&node.labels, &self.constraints) {
            return;
        }
        for (c, d) in self.constraints.iter().zip(self.domains.iter_mut()) {
            if !c.counts(other, &pod.namespace) || !c.includes(pod, node, &self.required) {
                continue;
            }
            if let Some(v) = node.labels.get(&c.topology_key) {
                d.update(v, delta);
            }
        }
        self.refresh_limits();
    }
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        // Soft constraints are validated here too, so an invalid spec is reported at
        // filtering time.
        let constraints = match self.constraints(pod) {
            Ok((hard, _)) => hard,
            Err(e) => return (None, invalid(e)),
        };
        if constraints.is_empty() {
            return (None, Status::skip());
        }
        let required = match RequiredNodeAffinity::from_pod(pod) {
            Ok(r) => r,
            Err(e) => {
                return (
                    None,
                    Status::unresolvable(format!("invalid node affinity: {e}")),
                );
            }
        };
        // The snapshot's domain index per key: domains are registered by id, nodes
        // are read by position (no label lookups).
        let keys: Vec<Arc<KeyDomains>> = constraints
            .iter()
            .map(|c| snap.topology_domains(&c.topology_key))
            .collect();
        let mut domains: Vec<Domains> = keys.iter().cloned().map(Domains::for_key).collect();
        // The domains with an eligible node are registered from a per-snapshot cache
        // (O(domains)); matching pods are counted through the pod index when the
        // selector has an `In` requirement (only the pods it can match are visited),
        // else per eligible node (the only node walk).
        let el = Eligibility::plan(&constraints, &keys, &required, snap, pod, true, |_| true);
        for (ci, d) in domains.iter_mut().enumerate() {
            let reg = el.registered_domains(&constraints, &keys, ci, snap);
            d.register_ids(reg.as_deref());
        }
        el.for_each_included(&keys, snap.nodes(), |ci, ni, node| {
            let n = constraints[ci].count_on(node, &pod.namespace);
            domains[ci].add_id(keys[ci].ids()[ni], n);
        });
        let idx = snap.pod_index();
        for (ci, (c, d)) in constraints.iter().zip(domains.iter_mut()).enumerate() {
            if !el.indexed[ci] || d.domains == 0 {
                continue;
            }
            let ids = keys[ci].ids();
            for e in idx.candidates(&c.selector).into_iter().flatten() {
                if !c.counts(&e.pod, &pod.namespace) {
                    continue;
                }
                let Some(ni) = snap.node_index(&e.node) else {
                    continue;
                };
                if el.admits(&keys, ci, ni) {
                    d.add_id(ids[ni], 1);
                }
            }
        }
        for d in domains.iter_mut() {
            d.recompute_min();
        }
        let self_match: Arc<[i64]> = constraints
            .iter()
            .map(|c| i64::from(c.selector.matches(&pod.labels)))
            .collect();
        let mut st = PreFilterState {
            constraints: constraints.into(),
            self_match,
            domains,
            required: Arc::new(required),
            masks: el.masks.into(),
            limits: Vec::new(),
            nodes_version: snap.nodes_version(),
        };
        st.refresh_limits();
        state.write(PRE_FILTER_KEY, st);
        (None, Status::success())
    }

    fn extensions(&self) -> Option<&dyn PreFilterExtensions> {
        Some(self)
    }
}

impl PreFilterExtensions for PodTopologySpread {
    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        added: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Status {
        if let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_KEY) {
            s.update(pod, added, node, snap, 1);
        }
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Status {
        if let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_KEY) {
            s.update(pod, removed, node, snap, -1);
        }
        Status::success()
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> Status {
        let Some(s) = state.read::<PreFilterState>(PRE_FILTER_KEY) else {
            return Status::error("PodTopologySpread: PreFilter state not found");
        };
        // The snapshot's own node while the key indices are current: its domain by
        // position. Otherwise (a copy, another node set) its labels are looked up.
        if s.nodes_version == snap.nodes_version()
            && let Some(pos) = snap.position(node)
        {
            // Per constraint: the node's domain id, its count, the skew check.
            for (d, &limit) in s.domains.iter().zip(&s.limits) {
                let id = match &d.key {
                    Some(k) => k.id_at(pos),
                    None => DOMAIN_MISSING,
                };
                if id == DOMAIN_MISSING {
                    return Status::unresolvable(ERR_REASON_MISSING_LABEL);
                }
                if d.count_id(id) > limit {
                    return Status::unschedulable(ERR_REASON_CONSTRAINTS);
                }
            }
            return Status::success();
        }
        for ((c, d), self_match) in s
            .constraints
            .iter()
            .zip(s.domains.iter())
            .zip(s.self_match.iter())
        {
            let Some(v) = node.labels.get(&c.topology_key) else {
                return Status::unresolvable(ERR_REASON_MISSING_LABEL);
            };
            let skew = d.count(v) + self_match - d.global_min(c.min_domains);
            if skew > c.max_skew {
                return Status::unschedulable(ERR_REASON_CONSTRAINTS);
            }
        }
        Status::success()
    }

    /// Every node's verdict at once: per constraint, the nodes whose domain's count
    /// is within the constraint's limit (a node lacking the key fails), ANDed. The
    /// same comparisons as the position path of [`FilterPlugin::filter`], per
    /// domain instead of per node (word operations over per-domain node masks for
    /// keys with few domains).
    fn filter_mask(
        &self,
        state: &CycleState,
        _: &PodInfo,
        snap: &Snapshot,
        out: &mut [u64],
    ) -> bool {
        let Some(s) = state.read::<PreFilterState>(PRE_FILTER_KEY) else {
            return false;
        };
        let n = snap.num_nodes();
        if s.nodes_version != snap.nodes_version() || out.len() != n.div_ceil(64) {
            return false;
        }
        let keys_current = s.domains.iter().all(|d| {
            d.key
                .as_ref()
                .is_some_and(|k| k.nodes_version() == s.nodes_version && k.ids().len() == n)
        });
        if !keys_current {
            return false;
        }
        if s.domains.is_empty() {
            for (w, o) in out.iter_mut().enumerate() {
                *o = if (w + 1) * 64 <= n {
                    u64::MAX
                } else {
                    (1u64 << (n % 64)) - 1
                };
            }
            return true;
        }
        for (ci, (d, &limit)) in s.domains.iter().zip(&s.limits).enumerate() {
            if let Some(k) = &d.key {
                k.and_passing(|id| d.count_id(id) <= limit, ci == 0, out);
            }
        }
        true
    }
}
