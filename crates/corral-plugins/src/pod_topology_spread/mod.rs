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
//! ([`Snapshot::topology_domains`], built once per key and node set): PreFilter
//! registers domains by id and counts matching pods through the pod index (no node
//! visited when every node carries the keys and the inclusion policies admit all);
//! Filter and Score read the node's domain by its snapshot position
//! ([`Snapshot::position`]); hostname score counts come from the pod index. A node that
//! is not the snapshot's own (a copy) or a node set changed since PreFilter takes the
//! label-lookup path, with identical results (the unit tests check both on every node).
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
