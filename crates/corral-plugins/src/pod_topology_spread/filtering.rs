//! PreFilter, its incremental updates and Filter.

use super::*;

/// Topology value → `T`, with a fast hasher (probed per node in Filter/Score).
pub(super) type FxMap<T> = HashMap<String, T, BuildHasherDefault<FxHasher>>;

/// `Domains::by_id` value: the key's domain is not registered (count 0).
pub(super) const DOMAIN_NONE: u32 = u32::MAX;

/// Matching-pod counts per topology domain of one constraint, with the exact minimum.
#[derive(Debug, Clone, Default)]
pub(super) struct Domains {
    /// Topology value → position in `counts`; shared between cycle-state clones (it
    /// only changes when a new domain appears).
    pub(super) index: Arc<FxMap<usize>>,
    pub(super) counts: Vec<i64>,
    /// Minimum over `counts` (0 when there are no domains).
    pub(super) min: i64,
    /// Number of domains whose count equals `min`.
    pub(super) at_min: usize,
    /// The snapshot's domain index of the constraint's key (`None` only in tests).
    pub(super) key: Option<Arc<KeyDomains>>,
    /// Per domain id of `key`: position in `counts` or [`DOMAIN_NONE`], so Filter reads
    /// a node's count by its snapshot position without a label lookup.
    pub(super) by_id: Arc<Vec<u32>>,
}

impl Domains {
    fn for_key(key: Arc<KeyDomains>) -> Domains {
        Domains {
            by_id: Arc::new(vec![DOMAIN_NONE; key.len()]),
            key: Some(key),
            ..Domains::default()
        }
    }

    /// Registers domain `v` (if new) and adds `n` to it, without maintaining `min`.
    pub(super) fn add_raw(&mut self, v: &str, n: i64) {
        match self.index.get(v) {
            Some(&i) => self.counts[i] += n,
            None => {
                let i = self.counts.len();
                Arc::make_mut(&mut self.index).insert(v.to_string(), i);
                self.counts.push(n);
                if let Some(id) = self.key.as_ref().and_then(|k| k.id_of(v)) {
                    Arc::make_mut(&mut self.by_id)[id as usize] = i as u32;
                }
            }
        }
    }

    /// [`Domains::add_raw`] by domain id of `key`.
    #[inline]
    fn add_id(&mut self, id: u32, n: i64) {
        match self.by_id.get(id as usize) {
            Some(&i) if i != DOMAIN_NONE => self.counts[i as usize] += n,
            Some(_) => {
                let Some(key) = self.key.clone() else { return };
                self.add_raw(key.value(id), n);
            }
            None => {}
        }
    }

    /// Count of the domain with id `id` of `key` (by position, no hashing).
    #[inline]
    fn count_id(&self, id: u32) -> i64 {
        match self.by_id.get(id as usize) {
            Some(&i) if i != DOMAIN_NONE => self.counts[i as usize],
            _ => 0,
        }
    }

    pub(super) fn recompute_min(&mut self) {
        self.min = self.counts.iter().copied().min().unwrap_or(0);
        self.at_min = self.counts.iter().filter(|&&c| c == self.min).count();
    }

    /// Adds `delta` to domain `v`, keeping `min` exact.
    pub(super) fn update(&mut self, v: &str, delta: i64) {
        if delta == 0 {
            return;
        }
        let Some(&i) = self.index.get(v) else {
            self.add_raw(v, delta);
            self.recompute_min();
            return;
        };
        self.update_at(i, delta);
    }

    /// [`Domains::update`] by domain id of `key`.
    fn update_id(&mut self, id: u32, delta: i64) {
        if delta == 0 {
            return;
        }
        match self.by_id.get(id as usize) {
            Some(&i) if i != DOMAIN_NONE => self.update_at(i as usize, delta),
            _ => {
                if let Some(key) = self.key.clone() {
                    self.update(key.value(id), delta);
                }
            }
        }
    }

    /// Adds `delta` to `counts[i]`, keeping `min` exact.
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
        self.index.get(v).map_or(0, |&i| self.counts[i])
    }

    /// Global minimum as used by Filter (0 when fewer than `min_domains` domains).
    #[inline]
    pub(super) fn global_min(&self, min_domains: usize) -> i64 {
        if self.counts.len() < min_domains {
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
    /// The snapshot `nodes_version` of the domains' key indices: while it is current,
    /// Filter reads a node's domain by its snapshot position.
    pub(super) nodes_version: u64,
}

impl PreFilterState {
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
        // The snapshot's own node while the key indices are current: domains by
        // position.
        if self.nodes_version == snap.nodes_version()
            && let Some(pos) = snap.position(node)
        {
            let id_at = |d: &Domains| d.key.as_ref().map_or(DOMAIN_MISSING, |k| k.id_at(pos));
            if self.domains.iter().any(|d| id_at(d) == DOMAIN_MISSING) {
                return;
            }
            for (c, d) in self.constraints.iter().zip(self.domains.iter_mut()) {
                if c.counts(other, &pod.namespace) && c.includes(pod, node, &self.required) {
                    let id = id_at(d);
                    d.update_id(id, delta);
                }
            }
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
        // Every eligible node registers its domain; matching pods are counted through
        // the pod index when the selector has an `In` requirement (only the pods it
        // can match are visited), else per node. When every node carries every key
        // and a constraint's inclusion policies admit every node, all of the key's
        // domains are registered in O(domains) and no node is visited.
        let mut el = Eligibility::plan(&constraints, &keys, &required, snap, pod, true, |_| true);
        for (ci, d) in domains.iter_mut().enumerate() {
            if el.all_nodes(ci) {
                for id in 0..keys[ci].len() as u32 {
                    d.add_id(id, 0);
                }
            }
        }
        if !el.per_node.is_empty() {
            let per_node = std::mem::take(&mut el.per_node);
            for (ni, node) in snap.nodes().iter().enumerate() {
                if el.skips(&keys, ni) {
                    continue;
                }
                for &ci in &per_node {
                    if !el.includes(ci, ni) {
                        continue;
                    }
                    el.mark(ci, ni);
                    let n = if el.indexed[ci] {
                        0
                    } else {
                        constraints[ci].count_on(node, &pod.namespace)
                    };
                    domains[ci].add_id(keys[ci].ids()[ni], n);
                }
            }
        }
        let idx = snap.pod_index();
        for (ci, (c, d)) in constraints.iter().zip(domains.iter_mut()).enumerate() {
            if !el.indexed[ci] || d.counts.is_empty() {
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
                if el.admits(ci, ni) {
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
        state.write(
            PRE_FILTER_KEY,
            PreFilterState {
                constraints: constraints.into(),
                self_match,
                domains,
                required: Arc::new(required),
                nodes_version: snap.nodes_version(),
            },
        );
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
            for ((c, d), self_match) in s
                .constraints
                .iter()
                .zip(s.domains.iter())
                .zip(s.self_match.iter())
            {
                let id = d.key.as_ref().map_or(DOMAIN_MISSING, |k| k.id_at(pos));
                if id == DOMAIN_MISSING {
                    return Status::unresolvable(ERR_REASON_MISSING_LABEL);
                }
                if d.count_id(id) + self_match - d.global_min(c.min_domains) > c.max_skew {
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
}
