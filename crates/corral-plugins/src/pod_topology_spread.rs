//! PodTopologySpread (kube-scheduler semantics).
//!
//! - PreFilter: for the pod's `DoNotSchedule` constraints, counts matching pods (same
//!   namespace, not terminating, selector + `matchLabelKeys`) per topology domain over
//!   the nodes that carry every constraint's topology key and pass the constraint's
//!   `nodeAffinityPolicy` (default Honor: node must match the pod's nodeSelector and
//!   required node affinity) and `nodeTaintsPolicy` (default Ignore); keeps the exact
//!   global minimum per constraint. Skips pods without `DoNotSchedule` constraints.
//!   The counts are updated incrementally by `add_pod`/`remove_pod`.
//! - Filter: a node missing a topology key is UnschedulableAndUnresolvable
//!   ([`ERR_REASON_MISSING_LABEL`]); otherwise `count(domain) + selfMatch − globalMin`
//!   must not exceed `maxSkew` ([`ERR_REASON_CONSTRAINTS`], Unschedulable). When fewer
//!   domains than `minDomains` exist, the global minimum is 0.
//! - PreScore/Score/NormalizeScore: for `ScheduleAnyway` constraints, each node scores
//!   `Σ count(domain) × log(#domains + 2) + (maxSkew − 1)` (hostname constraints count
//!   the node's own pods), nodes missing a key are ignored (score 0), and scores are
//!   normalized to `100 × (max + min − s) / max`.
//!
//! Args: `defaultingType` (`System`, the default, or `List`) and `defaultConstraints`
//! (only with `List`; they must not set a `labelSelector`). Like kube, default
//! constraints apply only to pods without their own constraints and only with a selector
//! derived from the Services / ReplicationControllers / ReplicaSets / StatefulSets
//! selecting the pod. Corral's snapshot has none of those objects yet, so
//! [`PodTopologySpread::default_selector`] returns `None` and default constraints
//! (System or List) do not apply until the integration layer provides owners.
//!
//! Deviations: invalid constraints (maxSkew ≤ 0, empty topologyKey, unknown
//! whenUnsatisfiable / inclusion policy, minDomains with ScheduleAnyway or ≤ 0,
//! duplicate key+action, bad selector) are rejected in PreFilter with
//! UnschedulableAndUnresolvable naming the field (kube relies on API validation).
//! The incremental updates keep the exact global minimum (kube's two "critical paths"
//! can drift after several additions) and apply the same pod predicate as PreFilter
//! (empty selector and terminating pods never count), so Filter after `add_pod` equals
//! Filter after a fresh PreFilter.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use serde::Deserialize;

use crate::framework::{
    CycleState, FilterPlugin, MAX_NODE_SCORE, NodeScore, NormalizeScorePlugin, Plugin,
    PreFilterExtensions, PreFilterPlugin, PreFilterResult, PreScorePlugin, ScorePlugin, Status,
};
use crate::helpers::{FxHasher, find_untolerated_taint, is_do_not_schedule_taint};
use crate::labels::{Labels, Op, Requirement, Selector};
use crate::node_affinity::RequiredNodeAffinity;
use crate::snapshot::{LABEL_HOSTNAME, LABEL_ZONE, NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "PodTopologySpread";
/// kube-scheduler's reason when the skew would be exceeded.
pub const ERR_REASON_CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
/// kube-scheduler's reason when the node lacks a topology key.
pub const ERR_REASON_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

const PRE_FILTER_KEY: &str = "PreFilterPodTopologySpread";
const PRE_SCORE_KEY: &str = "PreScorePodTopologySpread";
const DO_NOT_SCHEDULE: &str = "DoNotSchedule";
const SCHEDULE_ANYWAY: &str = "ScheduleAnyway";
const HONOR: &str = "Honor";
const IGNORE: &str = "Ignore";

/// A compiled constraint (`topologySpreadConstraint`).
#[derive(Debug, Clone)]
struct Constraint {
    max_skew: i64,
    topology_key: String,
    selector: Selector,
    min_domains: usize,
    honor_affinity: bool,
    honor_taints: bool,
}

impl Constraint {
    /// Whether `p` counts toward this constraint for a pod in namespace `ns`
    /// (`countPodsMatchSelector`: an empty selector counts nothing; terminating pods and
    /// other namespaces are skipped).
    #[inline]
    fn counts(&self, p: &PodInfo, ns: &str) -> bool {
        !self.selector.is_everything()
            && p.namespace == ns
            && p.pod.metadata.deletion_timestamp.is_none()
            && self.selector.matches(&p.labels)
    }

    fn count_on(&self, node: &NodeInfo, ns: &str) -> i64 {
        if self.selector.is_everything() || self.selector.is_nothing() {
            return 0;
        }
        node.pods.iter().filter(|p| self.counts(p, ns)).count() as i64
    }

    /// `matchNodeInclusionPolicies`.
    #[inline]
    fn includes(&self, pod: &PodInfo, node: &NodeInfo, req: &RequiredNodeAffinity) -> bool {
        if self.honor_affinity && !req.matches(node) {
            return false;
        }
        !(self.honor_taints
            && find_untolerated_taint(&node.taints, &pod.tolerations, is_do_not_schedule_taint)
                .is_some())
    }
}

/// True when the node carries every constraint's topology key.
#[inline]
fn has_all_keys(labels: &Labels, cs: &[Constraint]) -> bool {
    cs.iter().all(|c| labels.contains_key(&c.topology_key))
}

fn policy(v: Option<&str>, default: bool, field: &str) -> Result<bool, String> {
    match v {
        None => Ok(default),
        Some(HONOR) => Ok(true),
        Some(IGNORE) => Ok(false),
        Some(o) => Err(format!(
            "{field}: unsupported value {o:?} (supported: Honor, Ignore)"
        )),
    }
}

/// Validates one constraint (API validation rules) and compiles it.
fn compile(
    c: &TopologySpreadConstraint,
    pod_labels: &Labels,
    field: &str,
) -> Result<Constraint, String> {
    if c.max_skew <= 0 {
        return Err(format!(
            "{field}.maxSkew: must be greater than zero, got {}",
            c.max_skew
        ));
    }
    if c.topology_key.is_empty() {
        return Err(format!("{field}.topologyKey: must not be empty"));
    }
    let action = c.when_unsatisfiable.as_str();
    if action != DO_NOT_SCHEDULE && action != SCHEDULE_ANYWAY {
        return Err(format!(
            "{field}.whenUnsatisfiable: unsupported value {action:?} (supported: DoNotSchedule, ScheduleAnyway)"
        ));
    }
    let min_domains = match c.min_domains {
        None => 1,
        Some(m) if m <= 0 => {
            return Err(format!(
                "{field}.minDomains: must be greater than zero, got {m}"
            ));
        }
        Some(_) if action != DO_NOT_SCHEDULE => {
            return Err(format!(
                "{field}.minDomains: can only be set when whenUnsatisfiable is DoNotSchedule"
            ));
        }
        Some(m) => m as usize,
    };
    let mut selector = Selector::from_label_selector(c.label_selector.as_ref())
        .map_err(|e| format!("{field}.labelSelector: {e}"))?;
    // matchLabelKeys: the incoming pod's values are ANDed into the selector (a nil
    // selector stays "nothing", like kube's mergeLabelSetWithSelector).
    if !selector.is_nothing() {
        for k in c.match_label_keys.iter().flatten() {
            if let Some(v) = pod_labels.get(k) {
                selector.push(Requirement {
                    key: k.clone(),
                    op: Op::In,
                    values: vec![v.clone()],
                });
            }
        }
    }
    Ok(Constraint {
        max_skew: i64::from(c.max_skew),
        topology_key: c.topology_key.clone(),
        selector,
        min_domains,
        honor_affinity: policy(
            c.node_affinity_policy.as_deref(),
            true,
            &format!("{field}.nodeAffinityPolicy"),
        )?,
        honor_taints: policy(
            c.node_taints_policy.as_deref(),
            false,
            &format!("{field}.nodeTaintsPolicy"),
        )?,
    })
}

/// Shared validation of a constraint list (pod spec or args).
fn validate_list(cs: &[TopologySpreadConstraint], field: &str) -> Result<(), String> {
    for (i, c) in cs.iter().enumerate() {
        let dup = cs[..i].iter().any(|o| {
            o.topology_key == c.topology_key && o.when_unsatisfiable == c.when_unsatisfiable
        });
        if dup {
            return Err(format!(
                "{field}[{i}]: duplicate constraint for topologyKey {:?} and whenUnsatisfiable {:?}",
                c.topology_key, c.when_unsatisfiable
            ));
        }
    }
    Ok(())
}

/// `PodTopologySpreadArgs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodTopologySpreadArgs {
    #[serde(default)]
    pub default_constraints: Vec<TopologySpreadConstraint>,
    /// `System` (default) or `List`.
    #[serde(default)]
    pub defaulting_type: Option<String>,
}

#[derive(Debug)]
pub struct PodTopologySpread {
    default_constraints: Vec<TopologySpreadConstraint>,
    system_defaulted: bool,
}

impl Default for PodTopologySpread {
    fn default() -> Self {
        PodTopologySpread {
            default_constraints: system_default_constraints(),
            system_defaulted: true,
        }
    }
}

/// kube-scheduler's system default constraints.
fn system_default_constraints() -> Vec<TopologySpreadConstraint> {
    vec![
        TopologySpreadConstraint {
            topology_key: LABEL_HOSTNAME.into(),
            when_unsatisfiable: SCHEDULE_ANYWAY.into(),
            max_skew: 3,
            ..Default::default()
        },
        TopologySpreadConstraint {
            topology_key: LABEL_ZONE.into(),
            when_unsatisfiable: SCHEDULE_ANYWAY.into(),
            max_skew: 5,
            ..Default::default()
        },
    ]
}

impl PodTopologySpread {
    /// Builds the plugin from decoded args; errors name the offending field.
    pub fn new(args: PodTopologySpreadArgs) -> Result<Self, String> {
        match args.defaulting_type.as_deref().unwrap_or("System") {
            "System" => {
                if !args.default_constraints.is_empty() {
                    return Err(
                        "defaultConstraints: must be empty when defaultingType is \"System\""
                            .into(),
                    );
                }
                Ok(PodTopologySpread::default())
            }
            "List" => {
                let empty = Labels::new();
                for (i, c) in args.default_constraints.iter().enumerate() {
                    let field = format!("defaultConstraints[{i}]");
                    if c.label_selector.is_some() {
                        return Err(format!(
                            "{field}.labelSelector: constraint must not define a selector, as they are deduced for each pod"
                        ));
                    }
                    compile(c, &empty, &field)?;
                }
                validate_list(&args.default_constraints, "defaultConstraints")?;
                Ok(PodTopologySpread {
                    default_constraints: args.default_constraints,
                    system_defaulted: false,
                })
            }
            other => Err(format!(
                "defaultingType: unsupported value {other:?} (supported: System, List)"
            )),
        }
    }

    /// Selector for default constraints (`helper.DefaultSelector`): the union of the
    /// selectors of the Services, ReplicationControllers, ReplicaSets and StatefulSets
    /// owning/selecting the pod. The snapshot holds none of these objects, so no default
    /// selector exists and default constraints don't apply (as in kube for a pod no
    /// such object selects).
    fn default_selector(&self, _pod: &PodInfo) -> Option<Selector> {
        None
    }

    /// The pod's (DoNotSchedule, ScheduleAnyway) constraints, all validated, or the
    /// default constraints when the pod has none.
    fn constraints(&self, pod: &PodInfo) -> Result<(Vec<Constraint>, Vec<Constraint>), String> {
        let own = pod
            .spec()
            .and_then(|s| s.topology_spread_constraints.as_deref())
            .unwrap_or(&[]);
        let mut hard = Vec::new();
        let mut soft = Vec::new();
        if own.is_empty() {
            if self.default_constraints.is_empty() {
                return Ok((hard, soft));
            }
            let Some(sel) = self.default_selector(pod) else {
                return Ok((hard, soft));
            };
            for (i, c) in self.default_constraints.iter().enumerate() {
                let mut cc = compile(c, &pod.labels, &format!("defaultConstraints[{i}]"))?;
                cc.selector = sel.clone();
                if c.when_unsatisfiable == DO_NOT_SCHEDULE {
                    hard.push(cc);
                } else {
                    soft.push(cc);
                }
            }
            return Ok((hard, soft));
        }
        const FIELD: &str = "spec.topologySpreadConstraints";
        validate_list(own, FIELD)?;
        for (i, c) in own.iter().enumerate() {
            let cc = compile(c, &pod.labels, &format!("{FIELD}[{i}]"))?;
            if c.when_unsatisfiable == DO_NOT_SCHEDULE {
                hard.push(cc);
            } else {
                soft.push(cc);
            }
        }
        Ok((hard, soft))
    }
}

fn invalid(e: String) -> Status {
    Status::unresolvable(format!("invalid topology spread constraints: {e}"))
}

/// Topology value → `T`, with a fast hasher (probed per node in Filter/Score).
type FxMap<T> = HashMap<String, T, BuildHasherDefault<FxHasher>>;

/// Matching-pod counts per topology domain of one constraint, with the exact minimum.
#[derive(Debug, Clone, Default)]
struct Domains {
    /// Topology value → position in `counts`; shared between cycle-state clones (it
    /// only changes when a new domain appears).
    index: Arc<FxMap<usize>>,
    counts: Vec<i64>,
    /// Minimum over `counts` (0 when there are no domains).
    min: i64,
    /// Number of domains whose count equals `min`.
    at_min: usize,
}

impl Domains {
    /// Registers domain `v` (if new) and adds `n` to it, without maintaining `min`.
    fn add_raw(&mut self, v: &str, n: i64) {
        match self.index.get(v) {
            Some(&i) => self.counts[i] += n,
            None => {
                Arc::make_mut(&mut self.index).insert(v.to_string(), self.counts.len());
                self.counts.push(n);
            }
        }
    }

    fn recompute_min(&mut self) {
        self.min = self.counts.iter().copied().min().unwrap_or(0);
        self.at_min = self.counts.iter().filter(|&&c| c == self.min).count();
    }

    /// Adds `delta` to domain `v`, keeping `min` exact.
    fn update(&mut self, v: &str, delta: i64) {
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
    fn count(&self, v: &str) -> i64 {
        self.index.get(v).map_or(0, |&i| self.counts[i])
    }

    /// Global minimum as used by Filter (0 when fewer than `min_domains` domains).
    #[inline]
    fn global_min(&self, min_domains: usize) -> i64 {
        if self.counts.len() < min_domains {
            0
        } else {
            self.min
        }
    }
}

#[derive(Debug, Clone)]
struct PreFilterState {
    constraints: Arc<[Constraint]>,
    /// Whether the incoming pod matches each constraint's selector.
    self_match: Arc<[i64]>,
    domains: Vec<Domains>,
    required: Arc<RequiredNodeAffinity>,
    /// Each node's domain per constraint, so Filter probes no label map.
    node_domains: Arc<NodeDomains>,
}

/// `NodeDomains::ids` value: the node's topology value is not a registered domain
/// (its count is 0).
const DOMAIN_NONE: u32 = u32::MAX;
/// `NodeDomains::ids` value: the node lacks the constraint's topology key.
const DOMAIN_MISSING: u32 = u32::MAX - 1;

/// Per snapshot node and constraint, the position of the node's topology value in
/// `Domains::counts`, computed in PreFilter. Filter reads it instead of looking the
/// label up and hashing the value (the dominant cost of spread pods: Filter runs on
/// every node until enough feasible ones are found). Used only while the snapshot's
/// nodes are those PreFilter saw (`nodes_version`, same `NodeInfo`) and no domain was
/// registered since; otherwise Filter looks the value up as before.
#[derive(Debug)]
struct NodeDomains {
    nodes_version: u64,
    /// Per constraint: domains registered when the table was built.
    registered: Vec<usize>,
    /// `ids[node * constraints + c]`: position, [`DOMAIN_NONE`] or [`DOMAIN_MISSING`].
    ids: Vec<u32>,
}

impl NodeDomains {
    fn build(snap: &Snapshot, constraints: &[Constraint], domains: &[Domains]) -> Self {
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
    fn row(&self, snap: &Snapshot, node: &NodeInfo, domains: &[Domains]) -> Option<&[u32]> {
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
    fn update(&mut self, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i64) {
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

#[derive(Debug, Clone)]
struct PreScoreState {
    constraints: Vec<Constraint>,
    /// Per constraint (hostname constraints: empty, counted per node in Score).
    counts: Vec<FxMap<i64>>,
    weights: Vec<f64>,
    /// Snapshot indices of scored nodes missing a topology key, sorted.
    ignored: Vec<usize>,
}

impl PreScoreState {
    #[inline]
    fn is_ignored(&self, idx: usize) -> bool {
        !self.ignored.is_empty() && self.ignored.binary_search(&idx).is_ok()
    }
}

crate::impl_plugin!(
    PodTopologySpread,
    NAME,
    pre_filter,
    filter,
    pre_score,
    score
);

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

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        nodes: &[&NodeInfo],
    ) -> Status {
        if nodes.is_empty() || snap.num_nodes() == 0 {
            return Status::skip();
        }
        let constraints = match self.constraints(pod) {
            Ok((_, soft)) => soft,
            Err(e) => return Status::error(format!("invalid topology spread constraints: {e}")),
        };
        if constraints.is_empty() {
            return Status::skip();
        }
        // Only require all topology labels with non-system-default rules, so nodes
        // without a zone label still get hostname spreading.
        let has_own = pod
            .spec()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .is_some_and(|c| !c.is_empty());
        let require_all = has_own || !self.system_defaulted;
        let mut counts: Vec<FxMap<i64>> = vec![FxMap::default(); constraints.len()];
        let mut ignored = Vec::new();
        for n in nodes {
            if require_all && !has_all_keys(&n.labels, &constraints) {
                if let Some(i) = snap.node_index(&n.name) {
                    ignored.push(i);
                }
                continue;
            }
            for (c, m) in constraints.iter().zip(counts.iter_mut()) {
                if c.topology_key == LABEL_HOSTNAME {
                    continue;
                }
                let v = n.labels.get(&c.topology_key).map_or("", String::as_str);
                if !m.contains_key(v) {
                    m.insert(v.to_string(), 0);
                }
            }
        }
        ignored.sort_unstable();
        ignored.dedup();
        let weights = constraints
            .iter()
            .zip(counts.iter())
            .map(|(c, m)| {
                let size = if c.topology_key == LABEL_HOSTNAME {
                    nodes.len().saturating_sub(ignored.len())
                } else {
                    m.len()
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        let required = match RequiredNodeAffinity::from_pod(pod) {
            Ok(r) => r,
            Err(e) => return Status::error(format!("invalid node affinity: {e}")),
        };
        // Like PreFilter: eligible nodes are marked, matching pods counted through
        // the pod index when possible.
        let idx = snap.pod_index();
        let all = snap.nodes();
        let mut eligible: Vec<Vec<bool>> = vec![Vec::new(); constraints.len()];
        // Hostname constraints count per node in Score: with only those, no node
        // has anything to count here.
        let any_domain = counts.iter().any(|m| !m.is_empty());
        for (ni, node) in all.iter().enumerate().filter(|_| any_domain) {
            if require_all && !has_all_keys(&node.labels, &constraints) {
                continue;
            }
            for (ci, (c, m)) in constraints.iter().zip(counts.iter_mut()).enumerate() {
                if m.is_empty() || !c.includes(pod, node, &required) {
                    continue;
                }
                let v = node.labels.get(&c.topology_key).map_or("", String::as_str);
                if let Some(cnt) = m.get_mut(v) {
                    if idx.candidates(&c.selector).is_some() {
                        if eligible[ci].is_empty() {
                            eligible[ci] = vec![false; all.len()];
                        }
                        eligible[ci][ni] = true;
                    } else {
                        *cnt += c.count_on(node, &pod.namespace);
                    }
                }
            }
        }
        for (ci, (c, m)) in constraints.iter().zip(counts.iter_mut()).enumerate() {
            if eligible[ci].is_empty() {
                continue;
            }
            for e in idx.candidates(&c.selector).into_iter().flatten() {
                if !c.counts(&e.pod, &pod.namespace) {
                    continue;
                }
                let Some(ni) = snap.node_index(&e.node) else {
                    continue;
                };
                if !eligible[ci][ni] {
                    continue;
                }
                let v = all[ni]
                    .labels
                    .get(&c.topology_key)
                    .map_or("", String::as_str);
                if let Some(cnt) = m.get_mut(v) {
                    *cnt += 1;
                }
            }
        }
        state.write(
            PRE_SCORE_KEY,
            Arc::new(PreScoreState {
                constraints,
                counts,
                weights,
                ignored,
            }),
        );
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Result<i64, Status> {
        let Some(s) = state.read::<Arc<PreScoreState>>(PRE_SCORE_KEY) else {
            return Err(Status::error("PodTopologySpread: PreScore state not found"));
        };
        if !s.ignored.is_empty() && snap.node_index(&node.name).is_some_and(|i| s.is_ignored(i)) {
            return Ok(0);
        }
        let mut score = 0.0;
        for ((c, m), w) in s
            .constraints
            .iter()
            .zip(s.counts.iter())
            .zip(s.weights.iter())
        {
            let Some(v) = node.labels.get(&c.topology_key) else {
                continue;
            };
            let cnt = if c.topology_key == LABEL_HOSTNAME {
                c.count_on(node, &pod.namespace)
            } else {
                m.get(v.as_str()).copied().unwrap_or(0)
            };
            score += cnt as f64 * w + (c.max_skew - 1) as f64;
        }
        Ok(score.round() as i64)
    }

    fn normalize(&self) -> Option<&dyn NormalizeScorePlugin> {
        Some(self)
    }
}

impl NormalizeScorePlugin for PodTopologySpread {
    fn normalize_score(&self, state: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) -> Status {
        let Some(s) = state.read::<Arc<PreScoreState>>(PRE_SCORE_KEY) else {
            return Status::success();
        };
        let mut min = i64::MAX;
        let mut max = 0;
        for ns in scores.iter() {
            if s.is_ignored(ns.node) {
                continue;
            }
            min = min.min(ns.score);
            max = max.max(ns.score);
        }
        for ns in scores.iter_mut() {
            ns.score = if s.is_ignored(ns.node) {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - ns.score) / max
            };
        }
        Status::success()
    }
}

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let args: PodTopologySpreadArgs = super::decode_args(args)?;
    Ok(Arc::new(PodTopologySpread::new(args)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testutil::{node, pod};
    use serde_json::{Value, json};

    fn snapshot(nodes: Vec<NodeInfo>, pods: Vec<(PodInfo, &str)>) -> Snapshot {
        let mut s = Snapshot::new();
        for n in nodes {
            s.upsert_node(n);
        }
        for (p, n) in pods {
            s.add_pod(Arc::new(p), n);
        }
        s
    }

    fn app(name: &str) -> PodInfo {
        pod(name).label("app", "web").info()
    }

    fn hard(key: &str, skew: i32) -> Value {
        json!({"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app": "web"}}})
    }

    fn soft(key: &str, skew: i32) -> Value {
        json!({"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
               "labelSelector": {"matchLabels": {"app": "web"}}})
    }

    /// PreFilter + Filter over every snapshot node, by name.
    fn filter_all(pl: &PodTopologySpread, p: &PodInfo, snap: &Snapshot) -> Vec<(String, Status)> {
        let mut st = CycleState::new();
        let (_, s) = pl.pre_filter(&mut st, p, snap);
        assert!(s.is_success(), "{s}");
        filter_with(pl, &st, p, snap)
    }

    fn filter_with(
        pl: &PodTopologySpread,
        st: &CycleState,
        p: &PodInfo,
        snap: &Snapshot,
    ) -> Vec<(String, Status)> {
        let mut v: Vec<_> = snap
            .nodes()
            .iter()
            .map(|n| {
                let fast = pl.filter(st, p, n, snap);
                // A copy of the node is not the snapshot's: Filter looks its labels
                // up instead of using PreFilter's per-node domain table.
                let copy = NodeInfo::clone(n);
                let slow = pl.filter(st, p, &copy, snap);
                assert_eq!(
                    (fast.code, &fast.reasons),
                    (slow.code, &slow.reasons),
                    "node {}: domain table and label lookup disagree",
                    n.name
                );
                (n.name.to_string(), fast)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn passing(r: &[(String, Status)]) -> Vec<&str> {
        r.iter()
            .filter(|(_, s)| s.is_success())
            .map(|(n, _)| n.as_str())
            .collect()
    }

    fn three_zones() -> Vec<NodeInfo> {
        vec![
            node("a1").zone("a").info(),
            node("a2").zone("a").info(),
            node("b1").zone("b").info(),
            node("c1").zone("c").label("pool", "other").info(),
        ]
    }

    #[test]
    fn skip_without_hard_constraints() {
        let pl = PodTopologySpread::default();
        let snap = snapshot(three_zones(), vec![]);
        let mut st = CycleState::new();
        assert!(pl.pre_filter(&mut st, &app("p"), &snap).1.is_skip());
        let p = pod("p")
            .label("app", "web")
            .spread(soft(LABEL_ZONE, 1))
            .info();
        assert!(pl.pre_filter(&mut st, &p, &snap).1.is_skip());
    }

    #[test]
    fn zone_skew_and_missing_label() {
        let pl = PodTopologySpread::default();
        let mut nodes = three_zones();
        nodes.push(node("nozone").info());
        let snap = snapshot(
            nodes,
            vec![(app("x1"), "a1"), (app("x2"), "a2"), (app("x3"), "b1")],
        );
        let p = pod("p")
            .label("app", "web")
            .spread(hard(LABEL_ZONE, 1))
            .info();
        let r = filter_all(&pl, &p, &snap);
        // a=2, b=1, c=0: min 0 → a: 3 > 1, b: 2 > 1, c: 1.
        assert_eq!(passing(&r), ["c1"]);
        let a1 = &r[0].1;
        assert_eq!(a1.code, Code::Unschedulable);
        assert_eq!(a1.reasons, vec![ERR_REASON_CONSTRAINTS]);
        let nz = &r.iter().find(|(n, _)| n == "nozone").unwrap().1;
        assert_eq!(nz.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(nz.reasons, vec![ERR_REASON_MISSING_LABEL]);

        // maxSkew 2: b passes (1+1-0=2).
        let p = pod("p")
            .label("app", "web")
            .spread(hard(LABEL_ZONE, 2))
            .info();
        assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["b1", "c1"]);
    }

    #[test]
    fn self_match_and_selector_semantics() {
        let pl = PodTopologySpread::default();
        let other_ns = pod("o").ns("other").label("app", "web").info();
        let mut terminating = pod("t").label("app", "web");
        terminating.0["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        let snap = snapshot(
            vec![node("a1").zone("a").info(), node("b1").zone("b").info()],
            vec![
                (app("x1"), "a1"),
                (other_ns, "b1"),
                (terminating.info(), "b1"),
            ],
        );
        // The incoming pod doesn't match its own selector: a: 1+0-0 = 1 ≤ 1.
        let p = pod("p")
            .label("app", "db")
            .spread(hard(LABEL_ZONE, 1))
            .info();
        assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["a1", "b1"]);
        // Matching: a: 2 > 1 (pods in other namespaces / terminating don't count).
        let p = pod("p")
            .label("app", "web")
            .spread(hard(LABEL_ZONE, 1))
            .info();
        assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["b1"]);

        // Exists operator.
        let c = json!({"maxSkew": 1, "topologyKey": LABEL_ZONE, "whenUnsatisfiable": "DoNotSchedule",
                       "labelSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}});
        let p = pod("p").label("app", "other").spread(c).info();
        assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["b1"]);

        // Empty selector counts nothing (kube's countPodsMatchSelector); self-match 1.
        let c = json!({"maxSkew": 1, "topologyKey": LABEL_ZONE, "whenUnsatisfiable": "DoNotSchedule",
                       "labelSelector": {}});
        let p = pod("p").spread(c).info();
        assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["a1", "b1"]);

        // matchLabelKeys restricts to pods with the same value.
        let c = json!({"maxSkew": 1, "topologyKey": LABEL_ZONE, "whenUnsatisfiable": "DoNotSchedule",
                       "labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["rev"]});
        let p = pod("p")
            .label("app", "web")
            .label("rev", "2")
            .spread(c)
            .info();
        assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["a1", "b1"]);
    }

    #[test]
    fn min_domains_treats_global_min_as_zero() {
        let pl = PodTopologySpread::default();
        let snap = snapshot(
            vec![node("a1").zone("a").info(), node("b1").zone("b").info()],
            vec![(app("x1"), "a1"), (app("x2"), "b1")],
        );
        let p = pod("p")
            .label("app", "web")
            .spread(hard(LABEL_ZONE, 1))
            .info();
        assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["a1", "b1"]);
        let mut c = hard(LABEL_ZONE, 1);
        c["minDomains"] = json!(3);
        let p = pod("p").label("app", "web").spread(c).info();
        // 2 domains < 3: global min 0 → 1+1-0 = 2 > 1 everywhere.
        assert!(passing(&filter_all(&pl, &p, &snap)).is_empty());
        let mut c = hard(LABEL_ZONE, 2);
        c["minDomains"] = json!(3);
        let p = pod("p").label("app", "web").spread(c).info();
        assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["a1", "b1"]);
    }

    #[test]
    fn empty_cluster_domains() {
        let pl = PodTopologySpread::default();
        // No node has the key: no domains; every node fails on the missing label.
        let snap = snapshot(vec![node("n1").info()], vec![]);
        let p = pod("p").label("app", "web").spread(hard("rack", 1)).info();
        let r = filter_all(&pl, &p, &snap);
        assert_eq!(r[0].1.reasons, vec![ERR_REASON_MISSING_LABEL]);
        // Domains with zero pods: skew 1 everywhere.
        let snap = snapshot(three_zones(), vec![]);
        let r = filter_all(&pl, &p.clone(), &snap);
        assert!(
            r.iter()
                .all(|(_, s)| s.code == Code::UnschedulableAndUnresolvable)
        );
        let p = pod("p")
            .label("app", "web")
            .spread(hard(LABEL_ZONE, 1))
            .info();
        assert_eq!(passing(&filter_all(&pl, &p, &snap)).len(), 4);
    }

    #[test]
    fn zone_and_hostname_constraints() {
        let pl = PodTopologySpread::default();
        let snap = snapshot(
            three_zones(),
            vec![(app("x1"), "a1"), (app("x2"), "b1"), (app("x3"), "c1")],
        );
        // Zone: a=1 b=1 c=1 (min 1) → all ok at maxSkew 1; hostname: a2 has 0 → min 0,
        // other hosts 1+1-0=2 > 1 → only a2.
        let p = pod("p")
            .label("app", "web")
            .spread(hard(LABEL_ZONE, 1))
            .spread(hard(LABEL_HOSTNAME, 1))
            .info();
        assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["a2"]);
        // A node missing one key is excluded from counting for all constraints.
        let p = pod("p")
            .label("app", "web")
            .spread(hard(LABEL_ZONE, 1))
            .spread(hard("rack", 1))
            .info();
        let r = filter_all(&pl, &p, &snap);
        assert!(
            r.iter()
                .all(|(_, s)| s.reasons == vec![ERR_REASON_MISSING_LABEL])
        );
    }

    #[test]
    fn node_affinity_policy_honor_vs_ignore() {
        let pl = PodTopologySpread::default();
        let snap = snapshot(three_zones(), vec![(app("x1"), "a1"), (app("x2"), "b1")]);
        // The pod only fits pool!=other (zone c excluded under Honor): a=1, b=1, min 1.
        let aff = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["other"]}]}]}}});
        let p = pod("p")
            .label("app", "web")
            .affinity(aff.clone())
            .spread(hard(LABEL_ZONE, 1))
            .info();
        let r = filter_all(&pl, &p, &snap);
        assert_eq!(passing(&r), ["a1", "a2", "b1", "c1"]);
        let mut c = hard(LABEL_ZONE, 1);
        c["nodeAffinityPolicy"] = json!("Ignore");
        let p = pod("p").label("app", "web").affinity(aff).spread(c).info();
        // Zone c (0 pods) now counts: min 0, a and b at 2 > 1.
        assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["c1"]);
    }

    #[test]
    fn node_taints_policy_honor() {
        let pl = PodTopologySpread::default();
        let nodes = vec![
            node("a1").zone("a").info(),
            node("b1").zone("b").info(),
            node("c1")
                .zone("c")
                .taint("dedicated", "ai", "NoSchedule")
                .info(),
            node("d1")
                .zone("d")
                .taint("soft", "", "PreferNoSchedule")
                .info(),
        ];
        let snap = snapshot(
            nodes,
            vec![(app("x1"), "a1"), (app("x2"), "b1"), (app("x3"), "d1")],
        );
        // Default Ignore: c counts (0) → min 0 → a, b, d fail.
        let p = pod("p")
            .label("app", "web")
            .spread(hard(LABEL_ZONE, 1))
            .info();
        assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["c1"]);
        let mut c = hard(LABEL_ZONE, 1);
        c["nodeTaintsPolicy"] = json!("Honor");
        let p = pod("p").label("app", "web").spread(c.clone()).info();
        // c excluded (untolerated NoSchedule), d kept (PreferNoSchedule): min 1.
        assert_eq!(passing(&filter_all(&pl, &p, &snap)).len(), 4);
        // Tolerating the taint brings c back.
        let p = pod("p")
            .label("app", "web")
            .toleration(json!({"key": "dedicated", "operator": "Exists"}))
            .spread(c)
            .info();
        assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["c1"]);
    }

    #[test]
    fn add_remove_pod_match_fresh_prefilter() {
        let pl = PodTopologySpread::default();
        let nodes = vec![
            node("a1").zone("a").info(),
            node("a2").zone("a").info(),
            node("b1").zone("b").info(),
            node("b2").zone("b").info(),
            node("c1").zone("c").info(),
            node("x1").info(),
        ];
        let mut snap = snapshot(nodes, vec![]);
        let p = pod("p")
            .label("app", "web")
            .spread(hard(LABEL_ZONE, 1))
            .spread(hard(LABEL_HOSTNAME, 2))
            .info();
        let mut st = CycleState::new();
        assert!(pl.pre_filter(&mut st, &p, &snap).1.is_success());
        let placements = [
            "a1", "a1", "b1", "c1", "a2", "b2", "c1", "a1", "x1", "b1", "c1", "a2",
        ];
        let mut added = Vec::new();
        for (i, n) in placements.iter().enumerate() {
            let q = if i % 4 == 3 {
                pod(&format!("q{i}")).label("app", "other").info()
            } else {
                app(&format!("q{i}"))
            };
            let node = snap.node(n).unwrap().clone();
            assert!(pl.add_pod(&mut st, &p, &q, &node, &snap).is_success());
            snap.add_pod(Arc::new(q.clone()), n);
            added.push((q, n.to_string()));
            let mut fresh = CycleState::new();
            pl.pre_filter(&mut fresh, &p, &snap);
            assert_eq!(
                filter_with(&pl, &st, &p, &snap),
                filter_with(&pl, &fresh, &p, &snap),
                "after adding {i}"
            );
            let a = st.read::<PreFilterState>(PRE_FILTER_KEY).unwrap();
            let b = fresh.read::<PreFilterState>(PRE_FILTER_KEY).unwrap();
            for (da, db) in a.domains.iter().zip(b.domains.iter()) {
                assert_eq!(da.min, db.min);
                assert_eq!(da.counts.iter().sum::<i64>(), db.counts.iter().sum::<i64>());
            }
        }
        for (i, (q, n)) in added.iter().enumerate().rev() {
            let node = snap.node(n).unwrap().clone();
            assert!(pl.remove_pod(&mut st, &p, q, &node, &snap).is_success());
            snap.remove_pod(&q.key);
            let mut fresh = CycleState::new();
            pl.pre_filter(&mut fresh, &p, &snap);
            assert_eq!(
                filter_with(&pl, &st, &p, &snap),
                filter_with(&pl, &fresh, &p, &snap),
                "after removing {i}"
            );
            let a = st.read::<PreFilterState>(PRE_FILTER_KEY).unwrap();
            let b = fresh.read::<PreFilterState>(PRE_FILTER_KEY).unwrap();
            assert_eq!(a.domains[0].min, b.domains[0].min);
            assert_eq!(a.domains[1].min, b.domains[1].min);
        }
        // Pods in another namespace don't change the counts.
        let before = filter_with(&pl, &st, &p, &snap);
        let node = snap.node("a1").unwrap().clone();
        let other = pod("o").ns("x").label("app", "web").info();
        pl.add_pod(&mut st, &p, &other, &node, &snap);
        assert_eq!(filter_with(&pl, &st, &p, &snap), before);
    }

    /// Randomized add/remove sequences with inclusion policies, other namespaces and
    /// non-matching pods: the incrementally updated state filters exactly like a fresh
    /// PreFilter on the updated snapshot.
    #[test]
    fn incremental_updates_match_fresh_prefilter_randomized() {
        let pl = PodTopologySpread::default();
        let nodes: Vec<NodeInfo> = (0..9)
            .map(|i| {
                let mut b = node(&format!("n{i}")).zone(["a", "b", "c"][i % 3]);
                if i % 4 == 0 {
                    b = b.label("pool", "gpu");
                }
                if i == 5 {
                    b = b.taint("dedicated", "x", "NoSchedule");
                }
                b.info()
            })
            .collect();
        let mut zone = hard(LABEL_ZONE, 1);
        zone["nodeTaintsPolicy"] = json!("Honor");
        zone["minDomains"] = json!(2);
        let mut host = hard(LABEL_HOSTNAME, 2);
        host["nodeAffinityPolicy"] = json!("Ignore");
        let p = pod("p")
            .label("app", "web")
            .affinity(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "DoesNotExist"}]}]}}}))
            .spread(zone)
            .spread(host)
            .info();
        let mut snap = snapshot(nodes, vec![]);
        let mut st = CycleState::new();
        assert!(pl.pre_filter(&mut st, &p, &snap).1.is_success());
        let mut placed: Vec<(PodInfo, String)> = Vec::new();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % m
        };
        for step in 0..200 {
            if placed.is_empty() || next(3) > 0 {
                let n = format!("n{}", next(9));
                let mut b = pod(&format!("q{step}"));
                b = match next(5) {
                    0 => b.label("app", "db"),
                    1 => b.ns("other").label("app", "web"),
                    _ => b.label("app", "web"),
                };
                let q = b.info();
                let ni = snap.node(&n).unwrap().clone();
                pl.add_pod(&mut st, &p, &q, &ni, &snap);
                snap.add_pod(Arc::new(q.clone()), &n);
                placed.push((q, n));
            } else {
                let (q, n) = placed.swap_remove(next(placed.len() as u64) as usize);
                let ni = snap.node(&n).unwrap().clone();
                pl.remove_pod(&mut st, &p, &q, &ni, &snap);
                snap.remove_pod(&q.key);
            }
            let mut fresh = CycleState::new();
            pl.pre_filter(&mut fresh, &p, &snap);
            assert_eq!(
                filter_with(&pl, &st, &p, &snap),
                filter_with(&pl, &fresh, &p, &snap),
                "step {step}"
            );
            let a = st.read::<PreFilterState>(PRE_FILTER_KEY).unwrap();
            let b = fresh.read::<PreFilterState>(PRE_FILTER_KEY).unwrap();
            for (da, db) in a.domains.iter().zip(b.domains.iter()) {
                assert_eq!(
                    (da.min, da.counts.len()),
                    (db.min, db.counts.len()),
                    "step {step}"
                );
                for (v, &i) in db.index.iter() {
                    assert_eq!(da.count(v), db.counts[i], "step {step} domain {v}");
                }
            }
        }
    }

    #[test]
    fn domains_min_is_exact() {
        let mut d = Domains::default();
        for v in ["a", "b", "c"] {
            d.add_raw(v, 1);
        }
        d.recompute_min();
        d.update("b", 1);
        d.update("a", 1);
        assert_eq!(d.min, 1);
        d.update("a", 1);
        assert_eq!(d.min, 1);
        d.update("c", 1);
        assert_eq!((d.min, d.at_min), (2, 2));
        d.update("b", -2);
        assert_eq!((d.min, d.at_min), (0, 1));
        d.update("new", 0);
        d.update("z", 1);
        assert_eq!(d.count("z"), 1);
        assert_eq!(d.global_min(5), 0);
    }

    fn scores(
        pl: &PodTopologySpread,
        p: &PodInfo,
        snap: &Snapshot,
    ) -> (Status, Vec<i64>, Vec<i64>) {
        let mut st = CycleState::new();
        let nodes: Vec<&NodeInfo> = snap.nodes().iter().map(|n| &**n).collect();
        let s = pl.pre_score(&mut st, p, snap, &nodes);
        if !s.is_success() {
            return (s, vec![], vec![]);
        }
        // Report in name order.
        let mut order: Vec<usize> = (0..nodes.len()).collect();
        order.sort_by(|&a, &b| nodes[a].name.cmp(&nodes[b].name));
        let mut out: Vec<NodeScore> = order
            .iter()
            .map(|&i| NodeScore {
                node: i,
                score: pl.score(&st, p, nodes[i], snap).unwrap(),
            })
            .collect();
        let raw = out.iter().map(|s| s.score).collect();
        pl.normalize().unwrap().normalize_score(&st, p, &mut out);
        (s, raw, out.iter().map(|s| s.score).collect())
    }

    #[test]
    fn scoring_matches_kube_formula() {
        let pl = PodTopologySpread::default();
        let nodes = vec![
            node("n1").zone("a").info(),
            node("n2").zone("a").info(),
            node("n3").zone("b").info(),
            node("n4").info(),
        ];
        let snap = snapshot(
            nodes,
            vec![
                (app("x1"), "n1"),
                (app("x2"), "n1"),
                (app("x3"), "n2"),
                (app("x4"), "n4"),
            ],
        );
        // Zone only: weight ln(2+2); a=3 → round(4.159)=4, b=0; n4 ignored.
        let p = pod("p")
            .label("app", "web")
            .spread(soft(LABEL_ZONE, 1))
            .info();
        let (s, raw, norm) = scores(&pl, &p, &snap);
        assert!(s.is_success());
        assert_eq!(raw, [4, 4, 0, 0]);
        assert_eq!(norm, [0, 0, 100, 0]);

        // Zone (maxSkew 1) + hostname (maxSkew 2, weight ln(3+2)):
        // n1 = 3·ln4 + 2·ln5 + 1 = 8.38 → 8; n2 = 3·ln4 + ln5 + 1 = 6.77 → 7; n3 = 1.
        // Normalized: 100·(9−s)/8 → 12, 25, 100; n4 ignored → 0.
        let p = pod("p")
            .label("app", "web")
            .spread(soft(LABEL_ZONE, 1))
            .spread(soft(LABEL_HOSTNAME, 2))
            .info();
        let (_, raw, norm) = scores(&pl, &p, &snap);
        assert_eq!(raw, [8, 7, 1, 0]);
        assert_eq!(norm, [12, 25, 100, 0]);

        // No matching pods anywhere: all max (ignored still 0).
        let p = pod("p").label("app", "db").spread(json!({"maxSkew": 1, "topologyKey": LABEL_ZONE,
            "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "db"}}})).info();
        let (_, raw, norm) = scores(&pl, &p, &snap);
        assert_eq!(raw, [0, 0, 0, 0]);
        assert_eq!(norm, [100, 100, 100, 0]);

        // Hard-only pods and pods without constraints skip scoring.
        let p = pod("p")
            .label("app", "web")
            .spread(hard(LABEL_ZONE, 1))
            .info();
        assert!(scores(&pl, &p, &snap).0.is_skip());
        assert!(scores(&pl, &app("p"), &snap).0.is_skip());
    }

    #[test]
    fn scoring_counts_only_domains_of_filtered_nodes() {
        // Counts for a domain include pods on every node of that domain, even nodes that
        // are not being scored.
        let pl = PodTopologySpread::default();
        let snap = snapshot(
            vec![
                node("n1").zone("a").info(),
                node("n2").zone("a").info(),
                node("n3").zone("b").info(),
            ],
            vec![(app("x1"), "n2"), (app("x2"), "n2")],
        );
        let p = pod("p")
            .label("app", "web")
            .spread(soft(LABEL_ZONE, 1))
            .info();
        let mut st = CycleState::new();
        let n1 = snap.node("n1").unwrap();
        let n3 = snap.node("n3").unwrap();
        assert!(pl.pre_score(&mut st, &p, &snap, &[n1, n3]).is_success());
        // weight ln(4): n1 = 2·1.386 = 2.77 → 3.
        assert_eq!(pl.score(&st, &p, n1, &snap).unwrap(), 3);
        assert_eq!(pl.score(&st, &p, n3, &snap).unwrap(), 0);
    }

    #[test]
    fn invalid_constraints_are_rejected_clearly() {
        let pl = PodTopologySpread::default();
        let snap = snapshot(three_zones(), vec![]);
        let cases = [
            (
                json!({"maxSkew": 0, "topologyKey": "k", "whenUnsatisfiable": "DoNotSchedule"}),
                "maxSkew",
            ),
            (
                json!({"maxSkew": 1, "topologyKey": "", "whenUnsatisfiable": "DoNotSchedule"}),
                "topologyKey",
            ),
            (
                json!({"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "Sometimes"}),
                "whenUnsatisfiable",
            ),
            (
                json!({"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 2}),
                "minDomains",
            ),
            (
                json!({"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "DoNotSchedule", "minDomains": 0}),
                "minDomains",
            ),
            (
                json!({"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "DoNotSchedule", "nodeTaintsPolicy": "Maybe"}),
                "nodeTaintsPolicy",
            ),
            (
                json!({"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}}),
                "labelSelector",
            ),
        ];
        for (c, needle) in cases {
            let p = pod("p").spread(c).info();
            let (_, s) = pl.pre_filter(&mut CycleState::new(), &p, &snap);
            assert_eq!(s.code, Code::UnschedulableAndUnresolvable, "{s}");
            assert!(s.message().contains(needle), "{s}");
            assert!(
                s.message().contains("spec.topologySpreadConstraints[0]"),
                "{s}"
            );
        }
        let p = pod("p").spread(hard("k", 1)).spread(hard("k", 2)).info();
        let (_, s) = pl.pre_filter(&mut CycleState::new(), &p, &snap);
        assert!(s.message().contains("duplicate"), "{s}");
        // Filter without PreFilter state is an error, not a panic.
        let n = node("n").info();
        assert_eq!(
            pl.filter(&CycleState::new(), &p, &n, &snap).code,
            Code::Error
        );
    }

    #[test]
    fn args_defaulting() {
        assert!(factory(None).is_ok());
        assert!(factory(Some(&json!({"defaultingType": "System"}))).is_ok());
        let e = factory(Some(&json!({"defaultingType": "System",
            "defaultConstraints": [{"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway"}]})))
        .err()
        .unwrap();
        assert!(e.contains("defaultConstraints"), "{e}");
        let e = factory(Some(&json!({"defaultingType": "List",
            "defaultConstraints": [{"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway",
                                    "labelSelector": {}}]})))
        .err()
        .unwrap();
        assert!(e.contains("defaultConstraints[0].labelSelector"), "{e}");
        let e = factory(Some(&json!({"defaultingType": "List",
            "defaultConstraints": [{"maxSkew": 0, "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway"}]})))
        .err()
        .unwrap();
        assert!(e.contains("defaultConstraints[0].maxSkew"), "{e}");
        assert!(factory(Some(&json!({"defaultingType": "Other"}))).is_err());
        assert!(factory(Some(&json!({"defaultConstraint": []}))).is_err());
        let pl = PodTopologySpread::new(
            serde_json::from_value(json!({"defaultingType": "List",
                "defaultConstraints": [{"maxSkew": 1, "topologyKey": LABEL_ZONE, "whenUnsatisfiable": "DoNotSchedule"}]}))
            .unwrap(),
        )
        .unwrap();
        assert!(!pl.system_defaulted);
        // No owner objects in the snapshot: default constraints don't apply.
        let snap = snapshot(three_zones(), vec![]);
        assert!(
            pl.pre_filter(&mut CycleState::new(), &app("p"), &snap)
                .1
                .is_skip()
        );
        let sys = PodTopologySpread::default();
        assert!(sys.system_defaulted);
        assert_eq!(sys.default_constraints.len(), 2);
        let nodes: Vec<&NodeInfo> = snap.nodes().iter().map(|n| &**n).collect();
        assert!(
            sys.pre_score(&mut CycleState::new(), &app("p"), &snap, &nodes)
                .is_skip()
        );
    }
}
