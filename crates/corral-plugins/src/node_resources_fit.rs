//! NodeResourcesFit: the node must have enough allocatable resources left for the pod
//! (Filter), and nodes are scored by how allocated they would be with the pod
//! (Score, `scoringStrategy` LeastAllocated / MostAllocated / RequestedToCapacityRatio).
//!
//! Semantics follow kube-scheduler's `noderesources` plugin:
//! - Filter (`fitsRequest`): "Too many pods" first; a pod requesting nothing is then
//!   done; otherwise each requested cpu / memory / ephemeral-storage / scalar resource
//!   must fit in `allocatable - requested`. All failures are reported together; the
//!   code is UnschedulableAndUnresolvable when some request exceeds the node's whole
//!   allocatable (preemption cannot help), Unschedulable otherwise. `ignoredResources`
//!   and `ignoredResourceGroups` skip extended resources only. The per-card vGPU
//!   amounts GpuShare accounts ([`VGPU_ACCOUNTED`]) are always skipped, as Volcano's
//!   deviceshare ignores them and HAMi configures kube-scheduler to.
//! - Score: cpu and memory use the node's non-zero requested sums plus the pod's
//!   non-zero request (100m / 200Mi substituted per container); ephemeral-storage and
//!   scalar resources use actual requests; a scalar resource the pod does not request,
//!   or the node does not have, is left out, as is any resource with zero allocatable.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::framework::{
    Code, CycleState, FilterPlugin, MAX_NODE_SCORE, Plugin, PreFilterPlugin, PreFilterResult,
    PreScorePlugin, ScorePlugin, StateKey, Status,
};
use crate::resources::{CPU, EPHEMERAL_STORAGE, MEMORY, ResourceName, is_hugepages};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "NodeResourcesFit";
/// kube-scheduler's reason strings.
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";
pub const REASON_CPU: &str = "Insufficient cpu";
pub const REASON_MEMORY: &str = "Insufficient memory";
pub const REASON_EPHEMERAL_STORAGE: &str = "Insufficient ephemeral-storage";

/// Per-card vGPU amounts (HAMi `nvidia.com/gpumem`, `gpumem-percentage`,
/// `gpucores`; Volcano `volcano.sh/vgpu-memory`, `vgpu-memory-percentage`,
/// `vgpu-cores`): GpuShare accounts them on the cards the device plugins register,
/// and the device plugins advertise no (or no comparable) node resource for them,
/// so the Filter never checks them (Volcano's deviceshare puts the same names on
/// its ignored-devices list). The card counts (`nvidia.com/gpu`,
/// `volcano.sh/vgpu-number`) are advertised and checked as usual.
pub const VGPU_ACCOUNTED: &[&str] = corral_api::keys::VGPU_PER_CARD_AMOUNTS;

static PRE_FILTER_KEY: StateKey = StateKey::new("PreFilterNodeResourcesFit");
static PRE_SCORE_KEY: StateKey = StateKey::new("PreScoreNodeResourcesFit");

/// `config.MaxCustomPriorityScore`: shape scores are 0..=10, scaled to 0..=100.
const MAX_CUSTOM_PRIORITY_SCORE: i64 = 10;
/// `maxUtilization` of the RequestedToCapacityRatio shape.
const MAX_UTILIZATION: i64 = 100;

// ---------------------------------------------------------------------------------
// Resource classification and the allocatable/requested pair used by all scorers
// (`resourceAllocationScorer.calculateResourceAllocatableRequest`); shared with
// NodeResourcesBalancedAllocation.
// ---------------------------------------------------------------------------------

/// kube-scheduler's `IsScalarResourceName`: extended resources, hugepages, prefixed
/// native resources (`*kubernetes.io/*`) and attachable volume limits.
pub(crate) fn is_kube_scalar(name: &str) -> bool {
    (name.contains('/') && !name.starts_with("requests."))
        || is_hugepages(name)
        || name.starts_with("attachable-volumes-")
}

/// `v1helper.IsExtendedResourceName`: fully qualified, outside `kubernetes.io/`.
fn is_extended(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

/// A resource named in scoring args, classified once at construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScoreResource {
    Cpu,
    Memory,
    EphemeralStorage,
    /// A kube scalar resource (extended, hugepages, ...).
    Scalar(ResourceName),
    /// Anything else (e.g. `pods`): never contributes to a score.
    Other,
}

impl ScoreResource {
    pub(crate) fn parse(name: &str) -> ScoreResource {
        match name {
            CPU => ScoreResource::Cpu,
            MEMORY => ScoreResource::Memory,
            EPHEMERAL_STORAGE => ScoreResource::EphemeralStorage,
            n if is_kube_scalar(n) => ScoreResource::Scalar(Arc::from(n)),
            _ => ScoreResource::Other,
        }
    }

    /// The pod's request of this resource: non-zero variant for cpu/memory unless
    /// `use_requested` (`calculatePodResourceRequest`).
    pub(crate) fn pod_request(&self, pod: &PodInfo, use_requested: bool) -> i64 {
        let r = &pod.requests;
        match self {
            ScoreResource::Cpu if use_requested => r.requests.milli_cpu,
            ScoreResource::Cpu => r.non_zero_milli_cpu,
            ScoreResource::Memory if use_requested => r.requests.memory,
            ScoreResource::Memory => r.non_zero_memory,
            ScoreResource::EphemeralStorage => r.requests.ephemeral_storage,
            ScoreResource::Scalar(n) => r.requests.scalar_value(n),
            ScoreResource::Other => 0,
        }
    }

    /// `(allocatable, requested + pod_request)` on `node`; `(0, 0)` when the resource
    /// does not take part (scalar not requested by the pod or absent on the node).
    #[inline]
    pub(crate) fn alloc_requested(
        &self,
        node: &NodeInfo,
        pod_request: i64,
        use_requested: bool,
    ) -> (i64, i64) {
        match self {
            ScoreResource::Cpu => {
                let used = if use_requested {
                    node.requested.milli_cpu
                } else {
                    node.non_zero_milli_cpu
                };
                (node.allocatable.milli_cpu, used.saturating_add(pod_request))
            }
            ScoreResource::Memory => {
                let used = if use_requested {
                    node.requested.memory
                } else {
                    node.non_zero_memory
                };
                (node.allocatable.memory, used.saturating_add(pod_request))
            }
            ScoreResource::EphemeralStorage => (
                node.allocatable.ephemeral_storage,
                node.requested.ephemeral_storage.saturating_add(pod_request),
            ),
            ScoreResource::Scalar(n) => {
                if pod_request == 0 || !node.allocatable.has(n) {
                    (0, 0)
                } else {
                    (
                        node.allocatable.scalar_value(n),
                        node.requested.scalar_value(n).saturating_add(pod_request),
                    )
                }
            }
            ScoreResource::Other => (0, 0),
        }
    }
}

// ---------------------------------------------------------------------------------
// Args
// ---------------------------------------------------------------------------------

/// `NodeResourcesFitArgs` (kubescheduler.config.k8s.io/v1). Nested values are kept
/// as JSON and decoded with [`decode_at`] so that type errors name their field.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FitArgs {
    #[serde(default)]
    api_version: Option<Value>,
    #[serde(default)]
    kind: Option<Value>,
    #[serde(default)]
    ignored_resources: Option<Value>,
    #[serde(default)]
    ignored_resource_groups: Option<Value>,
    #[serde(default)]
    scoring_strategy: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ScoringStrategyArgs {
    #[serde(default, rename = "type")]
    kind: Option<Value>,
    #[serde(default)]
    resources: Option<Vec<Value>>,
    #[serde(default)]
    requested_to_capacity_ratio: Option<Value>,
}

/// `ResourceSpec{name, weight}`; shared with NodeResourcesBalancedAllocation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ResourceSpecArg {
    pub name: String,
    #[serde(default)]
    pub weight: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RtcrArgs {
    #[serde(default)]
    shape: Option<Vec<Value>>,
}

/// Decodes `v` (absent/null → default), prefixing errors with the field path.
pub(crate) fn decode_at<T: DeserializeOwned + Default>(
    v: Option<Value>,
    path: &str,
) -> Result<T, String> {
    match v {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v) => serde_json::from_value(v).map_err(|e| format!("{path}: {e}")),
    }
}

/// Decodes a list of resource specs (`<path>[i]`).
pub(crate) fn decode_resource_specs(
    list: Option<Vec<Value>>,
    path: &str,
) -> Result<Vec<ResourceSpecArg>, String> {
    list.unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, v)| serde_json::from_value(v).map_err(|e| format!("{path}[{i}]: {e}")))
        .collect()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ShapePointArg {
    utilization: i64,
    score: i64,
}

/// kube-scheduler's default scoring resources: cpu and memory, weight 1.
pub(crate) fn default_resource_specs() -> Vec<ResourceSpecArg> {
    vec![
        ResourceSpecArg {
            name: CPU.into(),
            weight: 1,
        },
        ResourceSpecArg {
            name: MEMORY.into(),
            weight: 1,
        },
    ]
}

/// `metav1validation.ValidateLabelName`-style qualified name check.
pub(crate) fn validate_qualified_name(v: &str) -> Result<(), String> {
    fn name_ok(n: &str) -> bool {
        !n.is_empty()
            && n.len() <= 63
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && n.as_bytes()
                .first()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && n.as_bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric())
    }
    fn prefix_ok(p: &str) -> bool {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    }
    let ok = match v.split_once('/') {
        Some((p, n)) => prefix_ok(p) && name_ok(n),
        None => name_ok(v),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("Invalid value: {v:?}: must be a qualified name"))
    }
}

/// Scoring strategy, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Strategy {
    LeastAllocated,
    MostAllocated,
    /// Shape points `(utilization 0..=100, score 0..=100)`, utilization ascending.
    RequestedToCapacityRatio(Vec<(i64, i64)>),
}

/// NodeResourcesFit plugin.
#[derive(Debug)]
pub struct NodeResourcesFit {
    ignored_resources: Vec<String>,
    ignored_resource_groups: Vec<String>,
    strategy: Strategy,
    /// Scoring resources and weights, in args order.
    resources: Vec<(ScoreResource, i64)>,
}

impl Default for NodeResourcesFit {
    fn default() -> Self {
        NodeResourcesFit {
            ignored_resources: Vec::new(),
            ignored_resource_groups: Vec::new(),
            strategy: Strategy::LeastAllocated,
            resources: vec![(ScoreResource::Cpu, 1), (ScoreResource::Memory, 1)],
        }
    }
}

impl NodeResourcesFit {
    fn from_args(args: FitArgs) -> Result<Self, String> {
        let kind: Option<String> = decode_at(args.kind, "kind")?;
        if let Some(k) = kind.as_deref()
            && k != "NodeResourcesFitArgs"
        {
            return Err(format!("kind: must be NodeResourcesFitArgs, got {k:?}"));
        }
        let _: Option<String> = decode_at(args.api_version, "apiVersion")?;
        let ignored_resources: Vec<String> = decode_at(args.ignored_resources, "ignoredResources")?;
        let ignored_resource_groups: Vec<String> =
            decode_at(args.ignored_resource_groups, "ignoredResourceGroups")?;
        for (i, r) in ignored_resources.iter().enumerate() {
            validate_qualified_name(r).map_err(|e| format!("ignoredResources[{i}]: {e}"))?;
        }
        for (i, g) in ignored_resource_groups.iter().enumerate() {
            if g.contains('/') {
                return Err(format!(
                    "ignoredResourceGroups[{i}]: Invalid value: {g:?}: resource group name can't contain '/'"
                ));
            }
            validate_qualified_name(g).map_err(|e| format!("ignoredResourceGroups[{i}]: {e}"))?;
        }
        let ss: Option<ScoringStrategyArgs> = decode_at(args.scoring_strategy, "scoringStrategy")?;
        let (kind, specs, rtcr) = match ss {
            // v1 defaulting: no scoringStrategy → LeastAllocated on cpu and memory.
            None => ("LeastAllocated".to_string(), Vec::new(), None),
            Some(ss) => {
                let kind: String = decode_at(ss.kind, "scoringStrategy.type")?;
                let specs = decode_resource_specs(ss.resources, "scoringStrategy.resources")?;
                let rtcr: Option<RtcrArgs> = decode_at(
                    ss.requested_to_capacity_ratio,
                    "scoringStrategy.requestedToCapacityRatio",
                )?;
                (kind, specs, rtcr)
            }
        };
        let specs = if specs.is_empty() {
            default_resource_specs()
        } else {
            specs
        };
        let mut resources = Vec::with_capacity(specs.len());
        for (i, r) in specs.iter().enumerate() {
            // v1 defaulting: an unset (or 0) weight is 1.
            let w = if r.weight == 0 { 1 } else { r.weight };
            if w <= 0 || w > 100 {
                return Err(format!(
                    "scoringStrategy.resources[{i}].weight: Invalid value: {w}: resource weight of {} not in valid range (0, 100]",
                    r.name
                ));
            }
            resources.push((ScoreResource::parse(&r.name), w));
        }
        let shape = match rtcr {
            Some(rtcr) => Some(validate_shape(
                "scoringStrategy.requestedToCapacityRatio.shape",
                rtcr.shape,
            )?),
            None => None,
        };
        let strategy = match kind.as_str() {
            "LeastAllocated" => Strategy::LeastAllocated,
            "MostAllocated" => Strategy::MostAllocated,
            "RequestedToCapacityRatio" => match shape {
                Some(s) => Strategy::RequestedToCapacityRatio(s),
                None => {
                    return Err("scoringStrategy.requestedToCapacityRatio: Required value: \
                         must be set for type RequestedToCapacityRatio"
                        .into());
                }
            },
            other => {
                return Err(format!(
                    "scoringStrategy.type: Unsupported value: {other:?}: supported values: \
                     \"LeastAllocated\", \"MostAllocated\", \"RequestedToCapacityRatio\""
                ));
            }
        };
        Ok(NodeResourcesFit {
            ignored_resources,
            ignored_resource_groups,
            strategy,
            resources,
        })
    }

    /// True when `name` is an extended resource the Filter must ignore.
    fn ignored(&self, name: &str) -> bool {
        if !is_extended(name) {
            return false;
        }
        if self.ignored_resources.iter().any(|r| r == name) || VGPU_ACCOUNTED.contains(&name) {
            return true;
        }
        let group = name.split('/').next().unwrap_or(name);
        self.ignored_resource_groups.iter().any(|g| g == group)
    }

    fn pod_requests(&self, pod: &PodInfo) -> Vec<i64> {
        self.resources
            .iter()
            .map(|(r, _)| r.pod_request(pod, false))
            .collect()
    }

    fn score_node(&self, node: &NodeInfo, pod_requests: &[i64]) -> i64 {
        let mut node_score: i64 = 0;
        let mut weight_sum: i64 = 0;
        for ((res, weight), &req) in self.resources.iter().zip(pod_requests) {
            let (alloc, requested) = res.alloc_requested(node, req, false);
            if alloc == 0 {
                continue;
            }
            let s = match &self.strategy {
                Strategy::LeastAllocated => least_requested_score(requested, alloc),
                Strategy::MostAllocated => most_requested_score(requested, alloc),
                Strategy::RequestedToCapacityRatio(shape) => {
                    let s = rtcr_resource_score(shape, requested, alloc);
                    // RTCR leaves zero scores out of the weighted average.
                    if s <= 0 {
                        continue;
                    }
                    s
                }
            };
            node_score = node_score.saturating_add(s.saturating_mul(*weight));
            weight_sum += weight;
        }
        if weight_sum == 0 {
            return 0;
        }
        match self.strategy {
            Strategy::RequestedToCapacityRatio(_) => {
                (node_score as f64 / weight_sum as f64).round() as i64
            }
            _ => node_score / weight_sum,
        }
    }
}

/// Validates and scales a utilization → score shape (`validateFunctionShape`) given
/// at `path` (RequestedToCapacityRatio, VolumeBinding's StorageCapacityScoring).
pub(crate) fn validate_shape(
    path: &str,
    shape: Option<Vec<Value>>,
) -> Result<Vec<(i64, i64)>, String> {
    let shape = shape
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value::<ShapePointArg>(v).map_err(|e| format!("{path}[{i}]: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if shape.is_empty() {
        return Err(format!(
            "{path}: Required value: at least one point must be specified"
        ));
    }
    for i in 1..shape.len() {
        if shape[i - 1].utilization >= shape[i].utilization {
            return Err(format!(
                "{path}[{i}].utilization: Invalid value: {}: utilization values must be sorted in increasing order",
                shape[i].utilization
            ));
        }
    }
    for (i, p) in shape.iter().enumerate() {
        if !(0..=MAX_UTILIZATION).contains(&p.utilization) {
            return Err(format!(
                "{path}[{i}].utilization: Invalid value: {}: not in valid range [0, 100]",
                p.utilization
            ));
        }
        if !(0..=MAX_CUSTOM_PRIORITY_SCORE).contains(&p.score) {
            return Err(format!(
                "{path}[{i}].score: Invalid value: {}: not in valid range [0, 10]",
                p.score
            ));
        }
    }
    Ok(shape
        .iter()
        .map(|p| {
            (
                p.utilization,
                p.score * (MAX_NODE_SCORE / MAX_CUSTOM_PRIORITY_SCORE),
            )
        })
        .collect())
}

/// `leastRequestedScore`: free fraction × 100 (0 when over capacity).
pub(crate) fn least_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested).saturating_mul(MAX_NODE_SCORE) / capacity
}

/// `mostRequestedScore`: used fraction × 100, requested capped at capacity.
pub(crate) fn most_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    requested.min(capacity).saturating_mul(MAX_NODE_SCORE) / capacity
}

/// `helper.BuildBrokenLinearFunction` evaluated at utilization `p`.
fn broken_linear(shape: &[(i64, i64)], p: i64) -> i64 {
    for (i, &(u, s)) in shape.iter().enumerate() {
        if p <= u {
            if i == 0 {
                return s;
            }
            let (pu, ps) = shape[i - 1];
            return ps + (s - ps) * (p - pu) / (u - pu);
        }
    }
    shape.last().map_or(0, |&(_, s)| s)
}

/// One resource's RequestedToCapacityRatio score (also VolumeBinding's per-class
/// storage score).
pub(crate) fn rtcr_resource_score(shape: &[(i64, i64)], requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return broken_linear(shape, MAX_UTILIZATION);
    }
    broken_linear(shape, requested.saturating_mul(MAX_UTILIZATION) / capacity)
}

// ---------------------------------------------------------------------------------
// Filter
// ---------------------------------------------------------------------------------

/// The pod's request vector, computed once per pod in PreFilter.
#[derive(Debug, Clone, Default)]
struct PreFilterState {
    milli_cpu: i64,
    memory: i64,
    ephemeral_storage: i64,
    /// Non-zero, non-ignored kube scalar requests with their reason strings.
    scalars: Vec<(ResourceName, i64, Cow<'static, str>)>,
    /// True when the pod requests nothing (only the pod count is checked).
    empty: bool,
}

impl NodeResourcesFit {
    fn compute_state(&self, pod: &PodInfo) -> PreFilterState {
        let r = &pod.requests.requests;
        let scalars: Vec<_> = r
            .scalar
            .iter()
            .filter(|(n, v)| *v != 0 && is_kube_scalar(n) && !self.ignored(n))
            .map(|(n, v)| (n.clone(), *v, Cow::Owned(format!("Insufficient {n}"))))
            .collect();
        let empty = r.milli_cpu == 0
            && r.memory == 0
            && r.ephemeral_storage == 0
            && r.scalar.iter().all(|(n, v)| *v == 0 || !is_kube_scalar(n));
        PreFilterState {
            milli_cpu: r.milli_cpu,
            memory: r.memory,
            ephemeral_storage: r.ephemeral_storage,
            scalars,
            empty,
        }
    }
}

/// `fitsRequest`: the reasons the pod does not fit, and whether preemption cannot help.
fn fits_request(s: &PreFilterState, node: &NodeInfo) -> Status {
    let mut reasons: Vec<Cow<'static, str>> = Vec::new();
    let mut unresolvable = false;
    if node.pods.len() as i64 + 1 > node.allocatable.pods {
        reasons.push(Cow::Borrowed(REASON_TOO_MANY_PODS));
    }
    if !s.empty {
        let a = &node.allocatable;
        let u = &node.requested;
        let mut check = |req: i64, alloc: i64, used: i64, reason: &Cow<'static, str>| {
            if req > 0 && req > alloc.saturating_sub(used) {
                reasons.push(reason.clone());
                unresolvable |= req > alloc;
            }
        };
        check(
            s.milli_cpu,
            a.milli_cpu,
            u.milli_cpu,
            &Cow::Borrowed(REASON_CPU),
        );
        check(s.memory, a.memory, u.memory, &Cow::Borrowed(REASON_MEMORY));
        check(
            s.ephemeral_storage,
            a.ephemeral_storage,
            u.ephemeral_storage,
            &Cow::Borrowed(REASON_EPHEMERAL_STORAGE),
        );
        for (name, req, reason) in &s.scalars {
            check(*req, a.scalar_value(name), u.scalar_value(name), reason);
        }
    }
    if reasons.is_empty() {
        return Status::success();
    }
    Status {
        code: if unresolvable {
            Code::UnschedulableAndUnresolvable
        } else {
            Code::Unschedulable
        },
        reasons: reasons.into(),
        plugin: NAME,
    }
}

crate::impl_plugin!(NodeResourcesFit, NAME, pre_filter, filter, pre_score, score);

impl PreFilterPlugin for NodeResourcesFit {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        state.put(&PRE_FILTER_KEY, self.compute_state(pod));
        (None, Status::success())
    }
}

impl FilterPlugin for NodeResourcesFit {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Status {
        match state.get::<PreFilterState>(&PRE_FILTER_KEY) {
            Some(s) => fits_request(s, node),
            // PreFilter did not run (e.g. a what-if check): compute it here.
            None => fits_request(&self.compute_state(pod), node),
        }
    }
}

/// The pod's requests of the scoring resources, in args order.
#[derive(Debug, Clone)]
struct PreScoreState {
    pod_requests: Vec<i64>,
}

impl PreScorePlugin for NodeResourcesFit {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
        _: &[&NodeInfo],
    ) -> Status {
        state.put(
            &PRE_SCORE_KEY,
            PreScoreState {
                pod_requests: self.pod_requests(pod),
            },
        );
        Status::success()
    }
}

impl ScorePlugin for NodeResourcesFit {
    fn score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot,
    ) -> Result<i64, Status> {
        Ok(match state.get::<PreScoreState>(&PRE_SCORE_KEY) {
            Some(s) => self.score_node(node, &s.pod_requests),
            None => self.score_node(node, &self.pod_requests(pod)),
        })
    }

    fn node_local(&self) -> bool {
        true
    }
}

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let a: FitArgs = super::decode_args(args)?;
    Ok(Arc::new(NodeResourcesFit::from_args(a)?))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testutil::{node, pod};

    fn plugin(args: serde_json::Value) -> NodeResourcesFit {
        NodeResourcesFit::from_args(serde_json::from_value(args).unwrap()).unwrap()
    }

    fn args_err(args: serde_json::Value) -> String {
        match factory(Some(&args)) {
            Ok(_) => panic!("expected an error for {args}"),
            Err(e) => e,
        }
    }

    fn filter(p: &NodeResourcesFit, pod: &PodInfo, n: &NodeInfo) -> Status {
        let snap = Snapshot::new();
        let mut st = CycleState::new();
        let (res, s) = p.pre_filter(&mut st, pod, &snap);
        assert!(res.is_none() && s.is_success());
        p.filter(&st, pod, n, &snap)
    }

    fn score(p: &NodeResourcesFit, pod: &PodInfo, n: &NodeInfo) -> i64 {
        let snap = Snapshot::new();
        let mut st = CycleState::new();
        assert!(p.pre_score(&mut st, pod, &snap, &[n]).is_success());
        let with_state = p.score(&st, pod, n, &snap).unwrap();
        // Without PreScore state the same score is computed.
        assert_eq!(
            p.score(&CycleState::new(), pod, n, &snap).unwrap(),
            with_state
        );
        with_state
    }

    /// A node with `pods` placed on it.
    fn with_pods(mut n: NodeInfo, pods: &[PodInfo]) -> NodeInfo {
        for p in pods {
            n.add_pod(Arc::new(p.clone()));
        }
        n
    }

    #[test]
    fn filter_fits_and_reports_all_insufficient_resources_together() {
        let p = NodeResourcesFit::default();
        let n = with_pods(
            node("n").cpu("2").mem("4Gi").info(),
            &[pod("a").cpu("1500m").mem("3Gi").info()],
        );
        assert!(filter(&p, &pod("ok").cpu("500m").mem("1Gi").info(), &n).is_success());
        let s = filter(&p, &pod("big").cpu("600m").mem("2Gi").info(), &n);
        assert_eq!(s.code, Code::Unschedulable);
        assert_eq!(s.reasons, vec![REASON_CPU, REASON_MEMORY]);
        assert_eq!(s.plugin, NAME);
        // Only memory short.
        let s = filter(&p, &pod("m").cpu("100m").mem("1025Mi").info(), &n);
        assert_eq!(s.reasons, vec![REASON_MEMORY]);
        assert_eq!(s.code, Code::Unschedulable);
    }

    #[test]
    fn filter_larger_than_node_is_unresolvable() {
        let p = NodeResourcesFit::default();
        let n = node("n").cpu("2").mem("4Gi").info();
        let s = filter(&p, &pod("huge").cpu("3").mem("1Gi").info(), &n);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(s.reasons, vec![REASON_CPU]);
    }

    #[test]
    fn filter_too_many_pods_first_and_zero_request_pods() {
        let p = NodeResourcesFit::default();
        let full = with_pods(
            node("n").cpu("1").mem("1Gi").pods("2").info(),
            &[pod("a").info(), pod("b").info()],
        );
        // Zero-request pod: only the pod count matters.
        let zero = pod("z").info();
        let s = filter(&p, &zero, &full);
        assert_eq!(s.reasons, vec![REASON_TOO_MANY_PODS]);
        assert_eq!(s.code, Code::Unschedulable);
        let s = filter(&p, &pod("c").cpu("2").info(), &full);
        assert_eq!(s.reasons, vec![REASON_TOO_MANY_PODS, REASON_CPU]);
        // A node with no cpu at all still takes a zero-request pod.
        let empty = node("e").info();
        assert!(filter(&p, &zero, &empty).is_success());
        assert_eq!(
            filter(&p, &pod("c").cpu("1m").info(), &empty).reasons,
            vec![REASON_CPU]
        );
    }

    #[test]
    fn filter_counts_init_containers_sidecars_and_overhead() {
        let p = NodeResourcesFit::default();
        let n = node("n").cpu("2").mem("4Gi").info();
        // Init container 2500m > containers 500m: effective 2500m.
        let init = pod("i")
            .cpu("500m")
            .init_container(json!({"cpu": "2500m"}))
            .info();
        assert_eq!(filter(&p, &init, &n).reasons, vec![REASON_CPU]);
        // Sidecar (restartPolicy Always) 1600m adds to the 500m container.
        let mut b = pod("s").cpu("500m");
        b.0["spec"]["initContainers"] = json!([{"name": "side", "image": "img",
            "restartPolicy": "Always", "resources": {"requests": {"cpu": "1600m"}}}]);
        assert_eq!(filter(&p, &b.info(), &n).reasons, vec![REASON_CPU]);
        // Overhead 1600m + 500m > 2.
        let oh = pod("o")
            .cpu("500m")
            .overhead(json!({"cpu": "1600m"}))
            .info();
        assert_eq!(filter(&p, &oh, &n).reasons, vec![REASON_CPU]);
        let fits = pod("f")
            .cpu("500m")
            .overhead(json!({"cpu": "1500m"}))
            .info();
        assert!(filter(&p, &fits, &n).is_success());
    }

    #[test]
    fn filter_extended_resources_hugepages_and_ephemeral_storage() {
        let p = NodeResourcesFit::default();
        let n = node("n")
            .cpu("4")
            .mem("8Gi")
            .alloc("nvidia.com/gpu", "2")
            .alloc("hugepages-2Mi", "8Mi")
            .alloc("ephemeral-storage", "10Gi")
            .info();
        let gpu = pod("g").req("nvidia.com/gpu", "2").info();
        assert!(filter(&p, &gpu, &n).is_success());
        let gpu3 = pod("g").req("nvidia.com/gpu", "3").info();
        let s = filter(&p, &gpu3, &n);
        assert_eq!(s.reasons, vec!["Insufficient nvidia.com/gpu"]);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        // A resource the node does not have at all.
        let foo = pod("f").req("example.com/foo", "1").info();
        assert_eq!(
            filter(&p, &foo, &n).reasons,
            vec!["Insufficient example.com/foo"]
        );
        // hugepages-1Gi absent, hugepages-2Mi partly used.
        let n2 = with_pods(n.clone(), &[pod("h").req("hugepages-2Mi", "6Mi").info()]);
        let hp = pod("hp")
            .req("hugepages-2Mi", "4Mi")
            .req("hugepages-1Gi", "1Gi")
            .req("ephemeral-storage", "11Gi")
            .info();
        let s = filter(&p, &hp, &n2);
        assert_eq!(
            s.reasons,
            vec![
                REASON_EPHEMERAL_STORAGE,
                "Insufficient hugepages-1Gi",
                "Insufficient hugepages-2Mi"
            ]
        );
        // A zero extended request is not checked.
        let zero = pod("z").req("example.com/foo", "0").info();
        assert!(filter(&p, &zero, &n).is_success());
    }

    #[test]
    fn filter_ignored_resources_and_groups_apply_to_extended_only() {
        let p = plugin(json!({
            "ignoredResources": ["example.com/foo"],
            "ignoredResourceGroups": ["ignored.io"]
        }));
        let n = node("n").cpu("1").mem("1Gi").info();
        let pd = pod("p")
            .req("example.com/foo", "5")
            .req("ignored.io/bar", "5")
            .req("example.com/baz", "1")
            .info();
        assert_eq!(
            filter(&p, &pd, &n).reasons,
            vec!["Insufficient example.com/baz"]
        );
        // The vGPU amounts GpuShare accounts are skipped without configuration;
        // the card counts are checked.
        let d = plugin(json!({}));
        let vg = pod("v")
            .req("nvidia.com/gpumem", "4000")
            .req("nvidia.com/gpucores", "30")
            .req("nvidia.com/gpumem-percentage", "10")
            .req("volcano.sh/vgpu-memory", "2000")
            .req("volcano.sh/vgpu-cores", "50")
            .req("volcano.sh/vgpu-memory-percentage", "20")
            .req("volcano.sh/vgpu-number", "1")
            .req("nvidia.com/gpu", "1")
            .info();
        assert_eq!(
            filter(&d, &vg, &n).reasons,
            vec![
                "Insufficient nvidia.com/gpu",
                "Insufficient volcano.sh/vgpu-number"
            ]
        );
        // hugepages are never ignored, even when named.
        let p2 = plugin(json!({"ignoredResources": ["hugepages-2Mi"]}));
        let hp = pod("h").req("hugepages-2Mi", "2Mi").info();
        assert_eq!(
            filter(&p2, &hp, &n).reasons,
            vec!["Insufficient hugepages-2Mi"]
        );
    }

    #[test]
    fn least_allocated_default_score() {
        let p = NodeResourcesFit::default();
        // Node 4 cpu / 8Gi with 1 cpu / 2Gi used; pod 1 cpu / 2Gi.
        // cpu: (4000-2000)*100/4000 = 50; mem: (8192-4096)*100/8192 = 50 → 50.
        let n = with_pods(
            node("n").cpu("4").mem("8Gi").info(),
            &[pod("a").cpu("1").mem("2Gi").info()],
        );
        assert_eq!(score(&p, &pod("p").cpu("1").mem("2Gi").info(), &n), 50);
        // cpu: (4000-1500)*100/4000 = 62 (62.5 truncated); mem: (8192-2560)*100/8192
        // = 68 (68.75) → (62+68)/2 = 65.
        let p2 = pod("p").cpu("500m").mem("512Mi").info();
        assert_eq!(score(&p, &p2, &n), 65);
    }

    #[test]
    fn zero_request_pods_score_with_non_zero_defaults() {
        let p = NodeResourcesFit::default();
        // Empty node 1 cpu / 1000Mi; zero-request pod counts as 100m / 200Mi.
        // cpu: 900*100/1000 = 90; mem: 800Mi*100/1000Mi = 80 → 85.
        let n = node("n").cpu("1").mem("1000Mi").info();
        assert_eq!(score(&p, &pod("z").info(), &n), 85);
        // A zero-request pod already on the node also counts as 100m / 200Mi:
        // cpu: 800*100/1000 = 80; mem: 600*100/1000 = 60 → 70.
        let n2 = with_pods(n, &[pod("a").info()]);
        assert_eq!(score(&p, &pod("z").info(), &n2), 70);
    }

    #[test]
    fn init_containers_and_overhead_raise_scoring_requests() {
        let p = NodeResourcesFit::default();
        let n = node("n").cpu("4").mem("1000Mi").info();
        // No container requests, init container 1 cpu: non-zero cpu = max(100m, 1000m)
        // = 1000m; memory = 200Mi default (both phases).
        // cpu (4000-1000)*100/4000 = 75; mem (1000-200)*100/1000 = 80 → 155/2 = 77.
        let init = pod("i").init_container(json!({"cpu": "1"})).info();
        assert_eq!(score(&p, &init, &n), 77);
        // Overhead adds to the non-zero request: 100m + 900m = 1000m, 200Mi + 300Mi.
        // cpu 75; mem (1000-500)*100/1000 = 50 → 62.
        let oh = pod("o")
            .overhead(json!({"cpu": "900m", "memory": "300Mi"}))
            .info();
        assert_eq!(score(&p, &oh, &n), 62);
    }

    #[test]
    fn hugepages_in_scoring() {
        let p = plugin(json!({"scoringStrategy": {"type": "MostAllocated",
            "resources": [{"name": "hugepages-1Gi", "weight": 1}, {"name": "cpu", "weight": 1}]}}));
        let n = with_pods(
            node("n").cpu("10").alloc("hugepages-1Gi", "8Gi").info(),
            &[pod("a").req("hugepages-1Gi", "2Gi").cpu("1").info()],
        );
        // hugepages (2+4)/8 = 75; cpu (1000+1000)*100/10000 = 20 → 95/2 = 47.
        let pd = pod("p").req("hugepages-1Gi", "4Gi").cpu("1").info();
        assert_eq!(score(&p, &pd, &n), 47);
        // Not requesting hugepages: cpu only → 20.
        assert_eq!(score(&p, &pod("c").cpu("1").info(), &n), 20);
    }

    #[test]
    fn filter_without_pre_filter_state_computes_it() {
        let p = NodeResourcesFit::default();
        let n = node("n").cpu("1").mem("1Gi").info();
        let pd = pod("p").cpu("2").info();
        let s = p.filter(&CycleState::new(), &pd, &n, &Snapshot::new());
        assert_eq!(s.reasons, vec![REASON_CPU]);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
    }

    #[test]
    fn most_allocated_score_with_weights() {
        let p = plugin(json!({"scoringStrategy": {
            "type": "MostAllocated",
            "resources": [{"name": "cpu", "weight": 3}, {"name": "memory", "weight": 1}]
        }}));
        let n = with_pods(
            node("n").cpu("4").mem("8Gi").info(),
            &[pod("a").cpu("1").mem("2Gi").info()],
        );
        // cpu: 1500*100/4000 = 37 (37.5); mem: 2560Mi*100/8192Mi = 31 (31.25)
        // → (37*3 + 31*1) / 4 = 142/4 = 35.
        let pd = pod("p").cpu("500m").mem("512Mi").info();
        assert_eq!(score(&p, &pd, &n), 35);
        // Over capacity is capped at 100 for MostAllocated (and 0 for Least).
        let over = pod("o").cpu("8").mem("16Gi").info();
        assert_eq!(score(&p, &over, &n), 100);
        assert_eq!(score(&NodeResourcesFit::default(), &over, &n), 0);
    }

    #[test]
    fn extended_resources_in_scoring() {
        let p = plugin(json!({"scoringStrategy": {
            "type": "LeastAllocated",
            "resources": [
                {"name": "cpu", "weight": 1},
                {"name": "memory", "weight": 1},
                {"name": "nvidia.com/gpu", "weight": 2}
            ]
        }}));
        let gpu_node = with_pods(
            node("g")
                .cpu("8")
                .mem("8Gi")
                .alloc("nvidia.com/gpu", "4")
                .info(),
            &[pod("a")
                .req("nvidia.com/gpu", "1")
                .cpu("1")
                .mem("1Gi")
                .info()],
        );
        // Pod requests 1 gpu, 1 cpu, 1Gi: cpu (8000-2000)*100/8000 = 75;
        // mem (8-2)*100/8 = 75; gpu (4-2)*100/4 = 50 → (75+75+100)/4 = 62.
        let gp = pod("p")
            .cpu("1")
            .mem("1Gi")
            .req("nvidia.com/gpu", "1")
            .info();
        assert_eq!(score(&p, &gp, &gpu_node), 62);
        // A pod not requesting the gpu: gpu left out → (75+75)/2 = 75.
        let cpu_pod = pod("c").cpu("1").mem("1Gi").info();
        assert_eq!(score(&p, &cpu_pod, &gpu_node), 75);
        // A node without the gpu resource: left out for the gpu pod too.
        let plain = node("n").cpu("8").mem("8Gi").info();
        // cpu (8000-1000)*100/8000 = 87; mem (8-1)*100/8 = 87 → 87.
        assert_eq!(score(&p, &gp, &plain), 87);
    }

    #[test]
    fn requested_to_capacity_ratio_shape_interpolation() {
        let p = plugin(json!({"scoringStrategy": {
            "type": "RequestedToCapacityRatio",
            "resources": [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1}],
            "requestedToCapacityRatio": {"shape": [
                {"utilization": 0, "score": 0},
                {"utilization": 100, "score": 10}
            ]}
        }}));
        let n = node("n").cpu("4").mem("8Gi").info();
        // cpu util 1000*100/4000 = 25 → 0 + 100*25/100 = 25;
        // mem util 3Gi*100/8Gi = 37 (37.5) → 37; round((25+37)/2 = 31.0) = 31.
        let pd = pod("p").cpu("1").mem("3Gi").info();
        assert_eq!(score(&p, &pd, &n), 31);
        // cpu util 25 → 25; mem 2560Mi: util 2560*100/8192 = 31 (31.25) → 31;
        // (25+31)/2 = 28.0 → 28.
        let pd = pod("p").cpu("1").mem("2560Mi").info();
        assert_eq!(score(&p, &pd, &n), 28);
        // cpu 1140m: util 1140*100/4000 = 28 (28.5) → 28; mem 2Gi: util 25 → 25;
        // (28+25)/2 = 26.5 → math.Round (half away from zero) = 27.
        let pd = pod("p").cpu("1140m").mem("2Gi").info();
        assert_eq!(score(&p, &pd, &n), 27);
    }

    #[test]
    fn requested_to_capacity_ratio_multi_segment_and_zero_scores_skipped() {
        // Bin-packing-ish shape: 0→0, 50→4 (40), 100→10 (100).
        let p = plugin(json!({"scoringStrategy": {
            "type": "RequestedToCapacityRatio",
            "resources": [{"name": "cpu", "weight": 2}, {"name": "memory", "weight": 1}],
            "requestedToCapacityRatio": {"shape": [
                {"utilization": 0, "score": 0},
                {"utilization": 50, "score": 4},
                {"utilization": 100, "score": 10}
            ]}
        }}));
        let n = node("n").cpu("10").mem("10Gi").info();
        // cpu util 75 → 40 + (100-40)*(75-50)/50 = 70; mem util 30 → 0 + 40*30/50 = 24
        // → (70*2 + 24) / 3 = 164/3 = 54.67 → 55.
        let pd = pod("p").cpu("7500m").mem("3Gi").info();
        assert_eq!(score(&p, &pd, &n), 55);
        // Memory score 0 is left out of the weight sum. Second container: explicit
        // cpu 0 (stays 0), no memory (200Mi substituted): memory 1 byte + 200Mi →
        // util 1 (1.95) → 40*1/50 = 0 → skipped; cpu util 75 → 70 → 70*2/2 = 70.
        let pd = pod("p")
            .cpu("7500m")
            .mem("1")
            .container(json!({"cpu": "0"}))
            .info();
        assert_eq!(score(&p, &pd, &n), 70);
        // Over capacity uses the score at 100% utilization.
        let over = pod("o").cpu("20").mem("20Gi").info();
        assert_eq!(score(&p, &over, &n), 100);
    }

    #[test]
    fn broken_linear_function_edges() {
        let shape = vec![(10, 20), (50, 100)];
        assert_eq!(broken_linear(&shape, 0), 20);
        assert_eq!(broken_linear(&shape, 10), 20);
        assert_eq!(broken_linear(&shape, 30), 60);
        assert_eq!(broken_linear(&shape, 90), 100);
        // Decreasing shape (spreading): 0→100, 100→0; util 33 → 100 - 100*33/100 = 67.
        let dec = vec![(0, 100), (100, 0)];
        assert_eq!(broken_linear(&dec, 33), 67);
    }

    #[test]
    fn args_defaults_and_errors_name_the_field() {
        // Weight 0 / unset defaults to 1, as in v1 defaulting.
        let p = plugin(json!({"scoringStrategy": {"type": "MostAllocated",
            "resources": [{"name": "cpu"}, {"name": "memory", "weight": 0}]}}));
        assert_eq!(
            p.resources,
            vec![(ScoreResource::Cpu, 1), (ScoreResource::Memory, 1)]
        );
        assert_eq!(p.strategy, Strategy::MostAllocated);
        // Empty resources → cpu, memory.
        let p = plugin(json!({"scoringStrategy": {"type": "LeastAllocated"}}));
        assert_eq!(p.resources.len(), 2);
        assert!(factory(None).is_ok());
        assert!(factory(Some(&json!({}))).is_ok());

        let e = args_err(json!({"scoringStrategy": {"type": "Foo"}}));
        assert!(e.contains("scoringStrategy.type"), "{e}");
        let e = args_err(json!({"scoringStrategy": {"resources": [{"name": "cpu"}]}}));
        assert!(e.contains("scoringStrategy.type"), "{e}");
        let e = args_err(json!({"scoringStrategy": {"type": "LeastAllocated",
            "resources": [{"name": "cpu", "weight": 101}]}}));
        assert!(e.contains("scoringStrategy.resources[0].weight"), "{e}");
        let e = args_err(json!({"scoringStrategy": {"type": "LeastAllocated",
            "resources": [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": -1}]}}));
        assert!(e.contains("scoringStrategy.resources[1].weight"), "{e}");
        let e = args_err(json!({"scoringStrategy": {"type": "RequestedToCapacityRatio"}}));
        assert!(e.contains("requestedToCapacityRatio"), "{e}");
        let e = args_err(
            json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
            "requestedToCapacityRatio": {"shape": []}}}),
        );
        assert!(e.contains("shape"), "{e}");
        let e = args_err(
            json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
            "requestedToCapacityRatio": {"shape": [
                {"utilization": 50, "score": 1}, {"utilization": 50, "score": 2}]}}}),
        );
        assert!(e.contains("shape[1].utilization"), "{e}");
        let e = args_err(
            json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
            "requestedToCapacityRatio": {"shape": [{"utilization": 101, "score": 1}]}}}),
        );
        assert!(e.contains("shape[0].utilization"), "{e}");
        let e = args_err(
            json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
            "requestedToCapacityRatio": {"shape": [{"utilization": 10, "score": 11}]}}}),
        );
        assert!(e.contains("shape[0].score"), "{e}");
        let e = args_err(json!({"ignoredResourceGroups": ["a/b"]}));
        assert!(e.contains("ignoredResourceGroups[0]"), "{e}");
        let e = args_err(json!({"ignoredResources": ["bad name!"]}));
        assert!(e.contains("ignoredResources[0]"), "{e}");
        // Type errors name their field too.
        let e = args_err(json!({"scoringStrategy": {"type": "LeastAllocated",
            "resources": [{"name": "cpu", "weight": "heavy"}]}}));
        assert!(e.contains("scoringStrategy.resources[0]"), "{e}");
        let e = args_err(json!({"scoringStrategy": {"type": 3}}));
        assert!(e.contains("scoringStrategy.type"), "{e}");
        let e = args_err(
            json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
            "requestedToCapacityRatio": {"shape": [{"utilization": "x", "score": 1}]}}}),
        );
        assert!(e.contains("shape[0]"), "{e}");
        let e = args_err(json!({"ignoredResources": "example.com/foo"}));
        assert!(e.contains("ignoredResources"), "{e}");
        let e = args_err(json!({"scoringStrategy": {"type": "LeastAllocated", "extra": 1}}));
        assert!(e.contains("scoringStrategy") && e.contains("extra"), "{e}");
        // apiVersion/kind may accompany the args.
        assert!(
            factory(Some(
                &json!({"apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "NodeResourcesFitArgs"})
            ))
            .is_ok()
        );
        let e = args_err(json!({"kind": "Other"}));
        assert!(e.contains("kind"), "{e}");
        let e = args_err(json!({"unknownField": 1}));
        assert!(e.contains("unknownField"), "{e}");
        // Shape scores are scaled ×10.
        let p = plugin(
            json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
            "requestedToCapacityRatio": {"shape": [
                {"utilization": 0, "score": 0}, {"utilization": 100, "score": 10}]}}}),
        );
        assert_eq!(
            p.strategy,
            Strategy::RequestedToCapacityRatio(vec![(0, 0), (100, 100)])
        );
    }

    #[test]
    fn ephemeral_storage_and_pods_resources_in_scoring() {
        let p = plugin(json!({"scoringStrategy": {"type": "LeastAllocated",
            "resources": [{"name": "ephemeral-storage", "weight": 1}, {"name": "pods", "weight": 5}]}}));
        let n = node("n").alloc("ephemeral-storage", "100Gi").info();
        // Pod requests 25Gi: (100-25)*100/100 = 75; pods never scores.
        let pd = pod("p").req("ephemeral-storage", "25Gi").info();
        assert_eq!(score(&p, &pd, &n), 75);
        // Not requested: ephemeral-storage still scored (not scalar): 100.
        assert_eq!(score(&p, &pod("z").info(), &n), 100);
        assert_eq!(p.resources[1].0, ScoreResource::Other);
    }
}
