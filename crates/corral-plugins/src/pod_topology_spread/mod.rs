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
//! Cost: the topology domains come from the snapshot's index
//! ([`Snapshot::topology_domains`], built once per key and node set) and counts are
//! kept by domain id: Filter reads a node's domain id by its snapshot position
//! ([`Snapshot::position`]) and its count by id (a few array reads per constraint);
//! Score reads a term per domain id (per node position for hostname) built once in
//! PreScore. The inclusion policies' verdict per node comes from a mask cached in the
//! snapshot per (policies, nodeSelector + required node affinity, tolerations) until
//! the nodes change (`inclusion_masks`), and the domains with an eligible node from a
//! second cached mask per (inclusion mask, constraint keys), so PreFilter registers
//! domains in O(domains) and counts matching pods through the pod index without
//! visiting a node; only selectors the pod index cannot serve walk the eligible nodes
//! (`Eligibility::for_each_included`, shared by PreFilter and PreScore). `add_pod`
//! / `remove_pod` update the counts by position with the same masks. A node that is
//! not the snapshot's own (a copy) or a node set changed since PreFilter takes the
//! label-lookup path, with identical results (the unit tests check both on every
//! node).
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

use crate::domains::{DOMAIN_MISSING, KeyDomains};
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

/// An inclusion policy (`field.name`; the error's field name is only built on error).
fn policy(v: Option<&str>, default: bool, field: &str, name: &str) -> Result<bool, String> {
    match v {
        None => Ok(default),
        Some(HONOR) => Ok(true),
        Some(IGNORE) => Ok(false),
        Some(o) => Err(format!(
            "{field}.{name}: unsupported value {o:?} (supported: Honor, Ignore)"
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
            field,
            "nodeAffinityPolicy",
        )?,
        honor_taints: policy(
            c.node_taints_policy.as_deref(),
            false,
            field,
            "nodeTaintsPolicy",
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

/// Which nodes each constraint counts (its eligible nodes), shared by PreFilter and
/// PreScore: a node is eligible for constraint `ci` when the walk does not skip it
/// (it carries every constraint's key, or missing keys don't exclude) and the
/// constraint's inclusion policies admit it ([`inclusion_masks`]). Eligibility is
/// read per node from the cached masks, never materialized per pod. Only the
/// constraints whose matching pods the pod index cannot find need a node walk
/// ([`Eligibility::for_each_included`]); the others count the index's candidates.
struct Eligibility {
    /// Per constraint: its matching pods are found through the pod index.
    indexed: Vec<bool>,
    /// Per constraint: the nodes its inclusion policies admit ([`inclusion_masks`]).
    masks: Vec<Option<Arc<[bool]>>>,
    /// Per constraint with a mask: the mask's cache key (`None`: not cacheable).
    mask_keys: Vec<Option<String>>,
    /// Every snapshot node carries every constraint's key.
    all_keys: bool,
    /// Nodes missing a key are not eligible for any constraint.
    missing_excludes: bool,
    /// The active constraints needing a node walk (not indexed), in order.
    per_node: Vec<usize>,
}

impl Eligibility {
    /// The plan for `constraints` (keys: their snapshot domain indices); constraints
    /// for which `active(ci)` is false are left out (neither walked nor counted).
    fn plan(
        constraints: &[Constraint],
        keys: &[Arc<KeyDomains>],
        required: &RequiredNodeAffinity,
        snap: &Snapshot,
        pod: &PodInfo,
        missing_excludes: bool,
        active: impl Fn(usize) -> bool,
    ) -> Eligibility {
        let idx = snap.pod_index();
        let indexed: Vec<bool> = constraints
            .iter()
            .map(|c| idx.candidates(&c.selector).is_some())
            .collect();
        let all_keys = keys.iter().all(|k| k.missing() == 0);
        let (masks, mask_keys) = inclusion_masks(constraints, pod, required, snap, &active);
        let per_node = (0..constraints.len())
            .filter(|&ci| active(ci) && !indexed[ci])
            .collect();
        Eligibility {
            indexed,
            masks,
            mask_keys,
            all_keys,
            missing_excludes,
            per_node,
        }
    }

    /// Whether every node is eligible for constraint `ci`.
    #[inline]
    fn all_nodes(&self, ci: usize) -> bool {
        self.masks[ci].is_none() && (self.all_keys || !self.missing_excludes)
    }

    /// Whether the node walk skips the node at `pos` (it misses a key that excludes it).
    #[inline]
    fn skips(&self, keys: &[Arc<KeyDomains>], pos: usize) -> bool {
        self.missing_excludes
            && !self.all_keys
            && keys.iter().any(|k| k.id_at(pos) == DOMAIN_MISSING)
    }

    /// Whether constraint `ci`'s inclusion policies admit the node at `pos`
    /// (`matchNodeInclusionPolicies`).
    #[inline]
    fn includes(&self, ci: usize, pos: usize) -> bool {
        self.masks[ci].as_ref().is_none_or(|m| m[pos])
    }

    /// Whether the node at `pos` is eligible for constraint `ci`.
    #[inline]
    fn admits(&self, keys: &[Arc<KeyDomains>], ci: usize, pos: usize) -> bool {
        self.includes(ci, pos) && !self.skips(keys, pos)
    }

    /// Calls `f(ci, pos, node)` for every node eligible for each walked constraint
    /// (`per_node`), node by node.
    fn for_each_included(
        &self,
        keys: &[Arc<KeyDomains>],
        nodes: &[Arc<NodeInfo>],
        mut f: impl FnMut(usize, usize, &NodeInfo),
    ) {
        if self.per_node.is_empty() {
            return;
        }
        for (ni, node) in nodes.iter().enumerate() {
            if self.skips(keys, ni) {
                continue;
            }
            for &ci in &self.per_node {
                if self.includes(ci, ni) {
                    f(ci, ni, node);
                }
            }
        }
    }

    /// Per domain id of `keys[ci]`: whether some eligible node lies in it (kube
    /// registers exactly those domains), or `None` when every domain does. Cached in
    /// the snapshot under what it reads (the inclusion mask's key, every
    /// constraint's topology key) until the nodes change, so a PreFilter visits no
    /// node for it.
    fn registered_domains(
        &self,
        constraints: &[Constraint],
        keys: &[Arc<KeyDomains>],
        ci: usize,
        snap: &Snapshot,
    ) -> Option<Arc<[bool]>> {
        if self.all_nodes(ci) {
            return None;
        }
        let build = || -> Vec<bool> {
            let mut reg = vec![false; keys[ci].len()];
            for (ni, &id) in keys[ci].ids().iter().enumerate() {
                if id != DOMAIN_MISSING && self.admits(keys, ci, ni) {
                    reg[id as usize] = true;
                }
            }
            reg
        };
        let mask_key = match (&self.masks[ci], &self.mask_keys[ci]) {
            (None, _) => "all",
            (Some(_), Some(k)) => k.as_str(),
            (Some(_), None) => return Some(build().into()),
        };
        let mut key = format!(
            "PodTopologySpread/registered\n{mask_key}\nexcludes:{}\nkey:{}\nkeys:",
            self.missing_excludes, constraints[ci].topology_key
        );
        for c in constraints {
            key.push_str(&c.topology_key);
            key.push('\0');
        }
        Some(
            snap.domain_index()
                .cached_mask(snap.nodes_version(), &key, build),
        )
    }
}

/// Per constraint: its inclusion mask and the mask's cache key ([`inclusion_masks`]).
type Masks = (Vec<Option<Arc<[bool]>>>, Vec<Option<String>>);

/// Per constraint: the snapshot's nodes its inclusion policies admit
/// ([`Constraint::includes`]), by position, or `None` when they admit every node
/// (or the constraint is not `active`), with the mask's cache key. A mask is cached in
/// the snapshot ([`crate::domains::DomainIndex::node_mask`]) under the policies and
/// exactly what they read of the pod — its `nodeSelector` and required node
/// affinity, its tolerations — until the nodes change, so pods of other classes with
/// the same node requirements (and this class's next PreFilter) reuse it instead of
/// matching every node again.
fn inclusion_masks(
    constraints: &[Constraint],
    pod: &PodInfo,
    required: &RequiredNodeAffinity,
    snap: &Snapshot,
    active: impl Fn(usize) -> bool,
) -> Masks {
    let mut affinity: Option<Option<String>> = None;
    let mut tolerations: Option<Option<String>> = None;
    let spec = pod.spec();
    let mut keys = vec![None; constraints.len()];
    let masks = constraints
        .iter()
        .enumerate()
        .map(|(ci, c)| {
            let aff = c.honor_affinity && !required.is_empty();
            if !active(ci) || (!aff && !c.honor_taints) {
                return None;
            }
            let build = |nodes: &[Arc<NodeInfo>]| -> Vec<bool> {
                nodes.iter().map(|n| c.includes(pod, n, required)).collect()
            };
            let mut key = String::from("PodTopologySpread/inclusion");
            if aff {
                let a = affinity.get_or_insert_with(|| {
                    let sel = spec.and_then(|s| s.node_selector.as_ref());
                    let req = spec
                        .and_then(|s| s.affinity.as_ref())
                        .and_then(|a| a.node_affinity.as_ref())
                        .and_then(|a| {
                            a.required_during_scheduling_ignored_during_execution
                                .as_ref()
                        });
                    serde_json::to_string(&(sel, req)).ok()
                });
                let Some(a) = a else {
                    return Some(build(snap.nodes()).into());
                };
                key.push_str("\naffinity:");
                key.push_str(a);
            }
            if c.honor_taints {
                let t =
                    tolerations.get_or_insert_with(|| serde_json::to_string(&pod.tolerations).ok());
                let Some(t) = t else {
                    return Some(build(snap.nodes()).into());
                };
                key.push_str("\ntolerations:");
                key.push_str(t);
            }
            let m = snap
                .domain_index()
                .node_mask(snap.nodes(), snap.nodes_version(), &key, build);
            keys[ci] = Some(key);
            Some(m)
        })
        .collect();
    (masks, keys)
}

fn invalid(e: String) -> Status {
    Status::unresolvable(format!("invalid topology spread constraints: {e}"))
}

mod filtering;
mod scoring;

use filtering::*;
#[cfg(test)]
mod tests;

crate::impl_plugin!(
    PodTopologySpread,
    NAME,
    pre_filter,
    filter,
    pre_score,
    score
);

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let args: PodTopologySpreadArgs = super::decode_args(args)?;
    Ok(Arc::new(PodTopologySpread::new(args)?))
}
