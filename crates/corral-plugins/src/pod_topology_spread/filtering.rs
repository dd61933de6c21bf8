//! PreFilter, its incremental updates and Filter.

use super::*;

/// Topology value → `T`, with a fast hasher (probed per node in Filter/Score).
pub(super) type FxMap<T> = HashMap<String, T, BuildHasherDefault<FxHasher>>;

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
}

impl Domains {
    /// Registers domain `v` (if new) and adds `n` to it, without maintaining `min`.
    pub(super) fn add_raw(&mut self, v: &str, n: i64) {
        match self.index.get(v) {
            Some(&i) => self.counts[i] += n,
            None => {
                Arc::make_mut(&mut self.index).insert(v.to_string(), self.counts.len());
                self.counts.push(n);
            }
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
    /// Each node's domain per constraint, so Filter probes no label map.
    pub(super) node_domains: Arc<NodeDomains>,
}

/// `NodeDomains::ids` value: the node's topology value is not a registered domain
/// (its count is 0).
pub(super) const DOMAIN_NONE: u32 = u32::MAX;
/// `NodeDomains::ids` value: the node lacks the constraint's topology key.
pub(super) const DOMAIN_MISSING: u32 = u32::MAX - 1;

/// Per snapshot node and constraint, the position of the node's topology value in
/// `Domains::counts`, computed in PreFilter. Filter reads it instead of looking the
/// label up and hashing the value (the dominant cost of spread pods: Filter runs on
/// every node until enough feasible ones are found). Used only while the snapshot's
/// nodes are those PreFilter saw (`nodes_version`, same `NodeInfo`) and no domain was
/// registered since; otherwise Filter looks the value up as before.
#[derive(Debug)]
pub(super) struct NodeDomains {
    pub(super) nodes_version: u64,
    /// Per constraint: domains registered when the table was built.
    pub(super) registered: Vec<usize>,
    /// `ids[node * constraints + c]`: position, [`DOMAIN_NONE`] or [`DOMAIN_MISSING`].
    pub(super) ids: Vec<u32>,
}

impl NodeDomains {
    pub(super) fn build(snap: &Snapshot, constraints: &[Constraint], domains: &[Domains]) -> Self {
        let nc = constraints.len();
        let mut ids = Vec::with_capacity(snap.num_nodes() * nc);
        for node in snap.nodes() {
            for (c, d) in constraints.iter().zip(domains) {
                ids.push(match node.labels.get(&c.topology_key) {
                    None => DOMAIN_MISSING,
                    Some(v) => d
                        .index
                        .get(v.as_str())
                        .and_then(|&i| u32::try_from(i).ok())
                        .filter(|&i| i < DOMAIN_MISSING)
                        .unwrap_or(DOMAIN_NONE),
                });
            }
        }
        NodeDomains {
            nodes_version: snap.nodes_version(),
            registered: domains.iter().map(|d| d.counts.len()).collect(),
            ids,
        }
    }

    /// The node's row, when the table describes it.
    #[inline]
    pub(super) fn row(
        &self,
        snap: &Snapshot,
        node: &NodeInfo,
        domains: &[Domains],
    ) -> Option<&[u32]> {
        let nc = self.registered.len();
        if snap.nodes_version() != self.nodes_version
            || self.ids.len() != snap.num_nodes() * nc
            || domains
                .iter()
                .zip(&self.registered)
                .any(|(d, &r)| d.counts.len() != r)
        {
            return None;
        }
        let i = snap.node_index(&node.name)?;
        if !std::ptr::eq(&*snap.nodes()[i], node) {
            return None;
        }
        self.ids.get(i * nc..(i + 1) * nc)
    }
}

impl PreFilterState {
    pub(super) fn update(&mut self, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i64) {
        if other.namespace != pod.namespace || !has_all_keys(&node.labels, &self.constraints) {
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
        let mut domains = vec![Domains::default(); constraints.len()];
        // Every eligible node registers its domain; matching pods are counted through
        // the pod index when the selector has an `In` requirement (only the pods it
        // can match are visited), else per node.
        let idx = snap.pod_index();
        let indexed: Vec<bool> = constraints
            .iter()
            .map(|c| idx.candidates(&c.selector).is_some())
            .collect();
        let mut eligible = vec![Vec::new(); constraints.len()];
        let nodes = snap.nodes();
        for (ni, node) in nodes.iter().enumerate() {
            if !has_all_keys(&node.labels, &constraints) {
                continue;
            }
            for (ci, (c, d)) in constraints.iter().zip(domains.iter_mut()).enumerate() {
                if !c.includes(pod, node, &required) {
                    continue;
                }
                if let Some(v) = node.labels.get(&c.topology_key) {
                    if indexed[ci] {
                        if eligible[ci].is_empty() {
                            eligible[ci] = vec![false; nodes.len()];
                        }
                        eligible[ci][ni] = true;
                        d.add_raw(v, 0);
                    } else {
                        d.add_raw(v, c.count_on(node, &pod.namespace));
                    }
                }
            }
        }
        for (ci, (c, d)) in constraints.iter().zip(domains.iter_mut()).enumerate() {
            if !indexed[ci] || eligible[ci].is_empty() {
                continue;
            }
            for e in idx.candidates(&c.selector).into_iter().flatten() {
                if !c.counts(&e.pod, &pod.namespace) {
                    continue;
                }
                let Some(ni) = snap.node_index(&e.node) else {
                    continue;
                };
                if eligible[ci][ni]
                    && let Some(v) = nodes[ni].labels.get(&c.topology_key)
                {
                    d.add_raw(v, 1);
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
        let node_domains = Arc::new(NodeDomains::build(snap, &constraints, &domains));
        state.write(
            PRE_FILTER_KEY,
            PreFilterState {
                constraints: constraints.into(),
                self_match,
                domains,
                required: Arc::new(required),
                node_domains,
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
        _: &Snapshot,
    ) -> Status {
        if let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_KEY) {
            s.update(pod, added, node, 1);
        }
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot,
    ) -> Status {
        if let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_KEY) {
            s.update(pod, removed, node, -1);
        }
        Status::success()
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> Status {
        let Some(s) = state.read::<PreFilterState>(PRE_FILTER_KEY) else {
            return Status::error("PodTopologySpread: PreFilter state not found");
        };
        if let Some(row) = s.node_domains.row(snap, node, &s.domains) {
            for (((c, d), self_match), &id) in s
                .constraints
                .iter()
                .zip(s.domains.iter())
                .zip(s.self_match.iter())
                .zip(row)
            {
                let count = match id {
                    DOMAIN_MISSING => return Status::unresolvable(ERR_REASON_MISSING_LABEL),
                    DOMAIN_NONE => 0,
                    i => d.counts[i as usize],
                };
                if count + self_match - d.global_min(c.min_domains) > c.max_skew {
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
