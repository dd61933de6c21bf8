//! VolumeBinding: the pod's PersistentVolumeClaims must be bound, or bindable, to
//! volumes usable from the node (kube-scheduler's `volumebinding` plugin and its
//! `SchedulerVolumeBinder`).
//!
//! - **PreFilter**: Skip for pods without claims; a missing or terminating claim, or
//!   an unbound claim of an Immediate (or missing) StorageClass, is
//!   UnschedulableAndUnresolvable; a bound claim whose PV is gone while the claim is
//!   `Lost` too. Bound PVs whose node affinity pins hostnames restrict the nodes.
//! - **Filter** (`FindPodVolumes`): bound PVs' node affinity; for each unbound
//!   WaitForFirstConsumer claim the smallest matching available PV (class,
//!   capacity, access modes, volume mode, selector, node affinity; PVs assumed by
//!   pods placed earlier are taken) or, failing that, dynamic provisioning: a
//!   provisioner, `allowedTopologies` admitting the node and, for CSI drivers with
//!   `storageCapacity`, a CSIStorageCapacity for the class whose topology selects
//!   the node and whose `maximumVolumeSize` (else `capacity`) fits the request.
//!   A claim already provisioned for another node (`selected-node`) fails.
//! - **Reserve** leaves the chosen bindings/provisionings in the cycle state
//!   ([`crate::volumes::BINDINGS_STATE_KEY`]); the committer assumes them in the
//!   snapshot, so the next pod of the batch cannot take the same PV (the Filter is
//!   cross-node: it has PreFilter extensions and is re-run at commit). Unreserve
//!   drops them; removing the pod from the snapshot forgets the assumption.
//! - PreBind (writing the PV/PVC and waiting for the binding) is the job of the
//!   application's binder, which reads the reported bindings.
//!
//! - **Score** (kube-scheduler's StorageCapacityScoring, a feature gate there; in
//!   Corral the `shape` argument turns it on, without it PreScore skips as kube
//!   does with the gate off): per storage class of the node's volume decisions,
//!   utilization = requested / capacity — for static bindings the claims' requests
//!   against the chosen PVs' capacities, else for provisionings the requests
//!   against the node's CSIStorageCapacity `capacity` — through the shape's broken
//!   linear function, averaged over the classes and rounded.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Deserialize;

use crate::framework::{
    Code, CycleState, FilterPlugin, Plugin, PreFilterExtensions, PreFilterPlugin, PreFilterResult,
    PreScorePlugin, ReservePlugin, ScorePlugin, Status,
};
use crate::snapshot::{LABEL_HOSTNAME, NodeInfo, PodInfo, Snapshot};
use crate::volumes::{
    BINDINGS_STATE_KEY, CapacityInfo, NO_PROVISIONER, PodVolumeBindings, PvInfo, PvcInfo,
    VolumeState,
};

pub const NAME: &str = "VolumeBinding";
/// kube-scheduler's reason strings.
pub const ERR_REASON_BIND_CONFLICT: &str =
    "node(s) didn't find available persistent volumes to bind";
pub const ERR_REASON_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
pub const ERR_REASON_NOT_ENOUGH_SPACE: &str = "node(s) did not have enough free storage";
pub const ERR_REASON_PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
pub const ERR_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
const STATE_KEY: &str = "PreFilterVolumeBinding";

/// `VolumeBindingArgs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Args {
    #[serde(default, rename = "apiVersion")]
    _api_version: Option<String>,
    #[serde(default, rename = "kind")]
    _kind: Option<String>,
    bind_timeout_seconds: Option<i64>,
    shape: Option<serde_json::Value>,
}

/// Default `bindTimeoutSeconds`.
pub const DEFAULT_BIND_TIMEOUT_SECONDS: i64 = 600;

#[derive(Debug)]
pub struct VolumeBinding {
    /// How long the binder waits for claims to bind (`bindTimeoutSeconds`).
    pub bind_timeout_seconds: i64,
    /// StorageCapacityScoring's shape, scaled to node scores (None: no Score).
    pub shape: Option<Vec<(i64, i64)>>,
    /// Filter memos per claim shapes ([`Memo`]) of the current volume objects.
    pub memos: std::sync::Mutex<std::collections::HashMap<String, Arc<Memo>>>,
}

impl Default for VolumeBinding {
    fn default() -> Self {
        VolumeBinding {
            bind_timeout_seconds: DEFAULT_BIND_TIMEOUT_SECONDS,
            shape: None,
            memos: Default::default(),
        }
    }
}

impl VolumeBinding {
    /// The memo for interchangeable claims of these shapes under the current volume
    /// objects (memos of older objects are dropped).
    fn memo_for(&self, claims: &PodClaims, vols: &VolumeState) -> Arc<Memo> {
        let key = shape_key(claims);
        let Ok(mut m) = self.memos.lock() else {
            return Arc::new(Memo::new(vols));
        };
        if m.values().any(|x| x.objects_stamp != vols.objects_stamp()) {
            m.retain(|_, x| x.objects_stamp == vols.objects_stamp());
        }
        m.entry(key)
            .or_insert_with(|| Arc::new(Memo::new(vols)))
            .clone()
    }
}

crate::impl_plugin!(
    VolumeBinding,
    NAME,
    pre_filter,
    filter,
    pre_score,
    score,
    reserve
);

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let Some(v) = args.filter(|v| !v.is_null()) else {
        return Ok(Arc::new(VolumeBinding::default()));
    };
    let a: Args = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let shape = match a.shape {
        None => None,
        Some(serde_json::Value::Array(points)) => Some(crate::node_resources_fit::validate_shape(
            "shape",
            Some(points),
        )?),
        Some(_) => return Err("shape: must be a list of {utilization, score} points".into()),
    };
    let t = a
        .bind_timeout_seconds
        .unwrap_or(DEFAULT_BIND_TIMEOUT_SECONDS);
    if !(0..=86_400).contains(&t) {
        return Err(format!("bindTimeoutSeconds: must be in 0..=86400, got {t}"));
    }
    Ok(Arc::new(VolumeBinding {
        bind_timeout_seconds: t,
        shape,
        ..VolumeBinding::default()
    }))
}

/// The pod's claims as PreFilter sorted them.
#[derive(Clone, Debug, Default)]
pub struct PodClaims {
    /// The pod these claims are of (a class-shared PreFilter state may come from
    /// another pod of the equivalence class: then the claims are re-read).
    pub pod: String,
    pub bound: Vec<Arc<PvcInfo>>,
    /// Unbound WaitForFirstConsumer claims.
    pub delayed: Vec<Arc<PvcInfo>>,
    /// Per-node Filter answers, when every claim is interchangeable (shared by every
    /// pod whose claims have the same shapes).
    memo: Option<Arc<Memo>>,
    /// The volume state's stamp at PreFilter.
    stamp: u64,
}

/// Memoised Filter answers for pods whose claims are all interchangeable
/// ([`crate::volumes::claim_interchangeable`]): the answer on a node then depends
/// only on the node (its labels: the `Node` object) and the claims' shapes, so it
/// is computed once per node for every pod with claims of those shapes (the plugin
/// keeps one memo per shape while the volume objects are unchanged), instead of
/// once per pod and node. It answers while the volume objects are those it was
/// computed from and the asking pod's own claims are still not assumed (assuming
/// other claims or PVs cannot change the answer: the claims' classes have no
/// static PVs); nodes it does not know (added, or updated since) are computed live.
#[derive(Debug)]
pub struct Memo {
    objects_stamp: u64,
    /// `Node` object (by address; the `Arc` kept so the address is not reused) →
    /// reason bits or [`MEMO_LIVE`], for every node of the snapshot it was built on
    /// (built on first use).
    table: std::sync::OnceLock<PtrMap<(Arc<k8s_openapi::api::core::v1::Node>, u8)>>,
}

/// A map keyed by an address (multiplicative hashing: the key is already unique).
type PtrMap<V> = std::collections::HashMap<usize, V, std::hash::BuildHasherDefault<PtrHasher>>;

#[derive(Default)]
struct PtrHasher(u64);

impl std::hash::Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

/// A memo cell whose answer must be computed live (an error status).
const MEMO_LIVE: u8 = 0xff;
/// `find_pod_volumes` reasons in kube-scheduler's order, as memo bits.
const MEMO_REASONS: [&str; 4] = [
    ERR_REASON_NODE_CONFLICT,
    ERR_REASON_BIND_CONFLICT,
    ERR_REASON_NOT_ENOUGH_SPACE,
    ERR_REASON_PV_NOT_EXIST,
];

/// The memo key of interchangeable claims: their shapes, in order.
fn shape_key(claims: &PodClaims) -> String {
    let mut k = String::new();
    for c in &claims.delayed {
        k.push_str(&format!(
            "{}|{:?}|{:?}|{};",
            c.class, c.request, c.access_modes, c.volume_mode
        ));
    }
    k
}

fn ptr(n: &NodeInfo) -> usize {
    Arc::as_ptr(&n.node) as usize
}

impl Memo {
    fn new(vols: &VolumeState) -> Memo {
        Memo {
            objects_stamp: vols.objects_stamp(),
            table: std::sync::OnceLock::new(),
        }
    }

    /// True when the memo answers for `pod` (whose PreFilter state is `claims`).
    fn applies(&self, claims: &PodClaims, pod: &PodInfo, vols: &VolumeState) -> bool {
        if vols.objects_stamp() != self.objects_stamp {
            return false;
        }
        if vols.stamp() == claims.stamp {
            // Unchanged since PreFilter: the pod shares the class of `claims.pod`.
            return true;
        }
        if claims.pod == pod.key {
            return claims
                .delayed
                .iter()
                .all(|c| vols.assumed_claim(&c.key).is_none());
        }
        // Another pod of the class after assumptions: its own claims must still be
        // unassumed (and be as many, none ephemeral).
        let mut n = 0;
        for v in crate::volumes::pod_volumes(&pod.pod) {
            if v.ephemeral.is_some() {
                return false;
            }
            if let Some(c) = &v.persistent_volume_claim {
                n += 1;
                if vols
                    .assumed_claim(&corral_api::pod::key(&pod.namespace, &c.claim_name))
                    .is_some()
                {
                    return false;
                }
            }
        }
        n == claims.delayed.len() + claims.bound.len()
    }

    fn bits(claims: &PodClaims, node: &NodeInfo, snap: &Snapshot) -> u8 {
        // As for unassumed claims of these shapes, whatever became of `claims`
        // themselves (they may be a class-mate's, placed since).
        match find_pod_volumes_as(claims, node, snap, false) {
            Ok(f) => f.reasons.iter().fold(0u8, |b, r| {
                b | MEMO_REASONS
                    .iter()
                    .position(|m| m == r)
                    .map_or(MEMO_LIVE, |i| 1 << i)
            }),
            Err(_) => MEMO_LIVE,
        }
    }

    /// The memoised Filter status on `node`, None when it must be computed live.
    fn answer(&self, claims: &PodClaims, node: &NodeInfo, snap: &Snapshot) -> Option<Status> {
        let table = self.table.get_or_init(|| {
            snap.nodes()
                .iter()
                .map(|n| (ptr(n), (n.node.clone(), Self::bits(claims, n, snap))))
                .collect()
        });
        let (_, bits) = table.get(&ptr(node))?;
        match *bits {
            MEMO_LIVE => None,
            0 => Some(Status::success()),
            bits => Some(Self::rejection(bits)),
        }
    }

    /// The rejection for reason bits (one allocation: the reasons' vector).
    fn rejection(bits: u8) -> Status {
        let mut reasons = Vec::with_capacity(bits.count_ones() as usize);
        for (i, r) in MEMO_REASONS.iter().enumerate() {
            if bits & (1 << i) != 0 {
                reasons.push(std::borrow::Cow::Borrowed(*r));
            }
        }
        Status {
            code: Code::UnschedulableAndUnresolvable,
            reasons: reasons.into(),
            plugin: "",
        }
    }
}

/// `persistentvolumeclaim "<name>" not found`.
pub fn pvc_not_found(name: &str) -> String {
    format!("persistentvolumeclaim {name:?} not found")
}

/// `IsDelayBindingMode`: Ok(true) for a WaitForFirstConsumer class; a missing class
/// or no class is immediate; a class without a mode is an error.
pub fn is_delay_binding(vols: &VolumeState, c: &PvcInfo) -> Result<bool, Status> {
    if c.class.is_empty() {
        return Ok(false);
    }
    match vols.class(&c.class) {
        None => Ok(false),
        Some(sc) => match sc.binding_mode.as_deref() {
            None => Err(Status::error(format!(
                "VolumeBindingMode not set for StorageClass {:?}",
                c.class
            ))),
            Some(_) => Ok(sc.wait_for_first_consumer()),
        },
    }
}

/// `GetPodVolumeClaims` + the PreFilter checks.
pub fn pod_claims(pod: &PodInfo, vols: &VolumeState) -> Result<Option<PodClaims>, Status> {
    let names = crate::volumes::pod_claim_names(&pod.pod);
    if names.is_empty() {
        return Ok(None);
    }
    let mut out = PodClaims {
        pod: pod.key.clone(),
        ..PodClaims::default()
    };
    let mut immediate = false;
    for n in &names {
        let Some(c) = vols.pvc(&pod.namespace, n) else {
            return Err(Status::unresolvable(pvc_not_found(n)));
        };
        if c.deleting {
            return Err(Status::unresolvable(format!(
                "persistentvolumeclaim {n:?} is being deleted"
            )));
        }
        if c.fully_bound() {
            out.bound.push(c.clone());
            continue;
        }
        if is_delay_binding(vols, c)? && c.volume_name.is_empty() {
            out.delayed.push(c.clone());
        } else {
            immediate = true;
        }
    }
    if immediate {
        return Err(Status::unresolvable(ERR_UNBOUND_IMMEDIATE));
    }
    Ok(Some(out))
}

/// Hostnames a PV's node affinity pins (`GetEligibleNodes`): None unless every
/// term has a `kubernetes.io/hostname In` requirement.
fn eligible_nodes(pv: &PvInfo) -> Option<BTreeSet<String>> {
    let required = pv
        .pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?;
    let mut out = BTreeSet::new();
    for t in &required.node_selector_terms {
        let hosts = t.match_expressions.iter().flatten().find(|r| {
            r.key == LABEL_HOSTNAME
                && r.operator == "In"
                && r.values.as_ref().is_some_and(|v| !v.is_empty())
        })?;
        out.extend(hosts.values.iter().flatten().cloned());
    }
    (!required.node_selector_terms.is_empty()).then_some(out)
}

impl PreFilterPlugin for VolumeBinding {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        let vols = snap.volumes();
        let claims = match pod_claims(pod, vols) {
            Ok(Some(c)) => c,
            Ok(None) => return (None, Status::skip()),
            Err(st) => return (None, st),
        };
        let mut restrict: Option<BTreeSet<String>> = None;
        for c in &claims.bound {
            match vols.pv(&c.volume_name) {
                None if c.phase == "Lost" => {
                    return (
                        None,
                        Status::unresolvable(format!(
                            "persistentvolumeclaim {:?} bound to non-existent persistentvolume {:?}",
                            c.name, c.volume_name
                        )),
                    );
                }
                None => {}
                Some(pv) => {
                    if let Some(hosts) = eligible_nodes(pv) {
                        restrict = Some(match restrict {
                            None => hosts,
                            Some(r) => r.intersection(&hosts).cloned().collect(),
                        });
                    }
                }
            }
        }
        let mut claims = claims;
        claims.stamp = vols.stamp();
        if claims.bound.is_empty()
            && claims
                .delayed
                .iter()
                .all(|c| crate::volumes::claim_interchangeable(c, vols))
        {
            claims.memo = Some(self.memo_for(&claims, vols));
            // The answer on a node is the memo's: a function of the claims'
            // shapes (the class) and the node, whatever other pods assume.
            state.mark_filter_node_local(NAME);
        }
        state.write(STATE_KEY, claims);
        (
            restrict.map(|n| PreFilterResult {
                node_names: Some(n),
            }),
            Status::success(),
        )
    }

    fn extensions(&self) -> Option<&dyn PreFilterExtensions> {
        Some(self)
    }
}

/// No PreFilter state depends on other pods; the extensions exist so that the
/// Filter counts as cross-node and is re-run on every candidate at commit time
/// (a pod committed earlier in the batch may have taken a PV).
///
/// `add_pod` (called before that re-run, with the volume state as the committed
/// pods left it) brings the state up to date for the pod being scheduled: a
/// class-mate's claims are replaced by the pod's own, and when a memo applies to
/// the pod now (its own claims still unassumed) the state's stamp is moved to the
/// current one, so the re-run Filters and Reserve on every candidate neither
/// re-read the claims nor re-check the assumptions. Any later change of the volume
/// state changes the stamp, and the checks run again.
impl PreFilterExtensions for VolumeBinding {
    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &PodInfo,
        _: &NodeInfo,
        snap: &Snapshot,
    ) -> Status {
        let vols = snap.volumes();
        let Some(c) = state.read::<PodClaims>(STATE_KEY) else {
            return Status::success();
        };
        if c.pod == pod.key && c.stamp == vols.stamp() {
            return Status::success();
        }
        let memo_applies = c.memo.as_ref().is_some_and(|m| m.applies(c, pod, vols));
        if !memo_applies {
            // E.g. the pod's own claim was assumed by a pod sharing it: the answer
            // is the pod's own again, re-checked on every candidate.
            state.unmark_filter_node_local(NAME);
        }
        let Some(c) = state.read::<PodClaims>(STATE_KEY) else {
            return Status::success();
        };
        if c.pod == pod.key {
            if memo_applies && let Some(c) = state.read_mut::<PodClaims>(STATE_KEY) {
                c.stamp = vols.stamp();
            }
            return Status::success();
        }
        let memo = c.memo.clone();
        // On an error the state stays: Filter reports it (re-reading the claims).
        if let Ok(Some(own)) = pod_claims(pod, vols) {
            let stamp = if memo_applies { vols.stamp() } else { c.stamp };
            state.write(STATE_KEY, PodClaims { memo, stamp, ..own });
        }
        Status::success()
    }
    fn remove_pod(
        &self,
        _: &mut CycleState,
        _: &PodInfo,
        _: &PodInfo,
        _: &NodeInfo,
        _: &Snapshot,
    ) -> Status {
        Status::success()
    }
}

/// Outcome of `FindPodVolumes` on one node.
#[derive(Debug, Default)]
pub struct Found {
    pub bindings: PodVolumeBindings,
    /// Per provisioning (in `bindings.provisions` order): the CSIStorageCapacity
    /// that fits it on the node (`NodeCapacity`), if capacity is tracked.
    pub capacities: Vec<Option<Arc<CapacityInfo>>>,
    /// kube-scheduler's reasons, in its order; empty = feasible.
    pub reasons: Vec<&'static str>,
}

/// `FindMatchingVolume`: the smallest available PV for the claim on the node, or
/// the PV already (or assumed) bound to it.
fn find_matching<'a>(
    vols: &'a VolumeState,
    c: &PvcInfo,
    node: &NodeInfo,
    chosen: &[(String, String)],
) -> Option<&'a Arc<PvInfo>> {
    let request = c.request.unwrap_or(0);
    let mut best: Option<&Arc<PvInfo>> = None;
    for name in vols
        .objects()
        .pvs_by_class
        .get(&c.class)
        .into_iter()
        .flatten()
    {
        let Some(pv) = vols.pv(name) else { continue };
        if chosen.iter().any(|(_, p)| p == name) {
            continue;
        }
        let assumed = vols.assumed_claim_of(name);
        let bound_here = match (&pv.claim_ref, assumed) {
            (Some(_), _) => pv.bound_to(c),
            (None, Some(k)) => k == c.key,
            (None, None) => false,
        };
        if (pv.claim_ref.is_some() || assumed.is_some()) && !bound_here {
            continue;
        }
        if pv.capacity < request || pv.volume_mode != c.volume_mode || pv.deleting {
            continue;
        }
        let node_ok = pv.node_ok(&node.name, &node.labels);
        if bound_here {
            return node_ok.then_some(pv);
        }
        // "" accepted as Available: hand-written manifests carry no status.
        if !(pv.phase == "Available" || pv.phase.is_empty())
            || c.selector.as_ref().is_some_and(|s| !s.matches(&pv.labels))
            || pv.class != c.class
            || !node_ok
            || !c.access_modes.iter().all(|m| pv.access_modes.contains(m))
        {
            continue;
        }
        if best.is_none_or(|b| b.capacity > pv.capacity) {
            best = Some(pv);
        }
    }
    best
}

/// `hasEnoughCapacity`: Err(()) when capacity is tracked and no CSIStorageCapacity
/// of the class, reaching the node, fits the request; else Ok with the fitting
/// object (None when capacity is not tracked or the claim requests nothing).
fn has_enough_capacity<'a>(
    vols: &'a VolumeState,
    provisioner: &str,
    c: &PvcInfo,
    class: &str,
    node: &NodeInfo,
) -> Result<Option<&'a Arc<CapacityInfo>>, ()> {
    let Some(size) = c.request else {
        return Ok(None);
    };
    match vols.csi_driver(provisioner) {
        Some(d) if d.storage_capacity => {}
        _ => return Ok(None),
    }
    vols.objects()
        .capacities
        .values()
        .find(|cap| {
            cap.class == class
                && cap.limit.is_some_and(|l| l >= size)
                && cap
                    .topology
                    .as_ref()
                    .is_some_and(|t| t.matches(&node.labels))
        })
        .map(Some)
        .ok_or(())
}

/// `FindPodVolumes` for one node.
pub fn find_pod_volumes(
    claims: &PodClaims,
    node: &NodeInfo,
    snap: &Snapshot,
) -> Result<Found, Status> {
    find_pod_volumes_as(claims, node, snap, true)
}

/// `find_pod_volumes`; without `assumed`, the claims' own assumed provisionings
/// are ignored (a memo answers for the claims' shapes, i.e. for unassumed claims).
fn find_pod_volumes_as(
    claims: &PodClaims,
    node: &NodeInfo,
    snap: &Snapshot,
    assumed: bool,
) -> Result<Found, Status> {
    let vols = snap.volumes();
    let mut f = Found::default();
    f.bindings.node = node.name.to_string();
    let (mut bound_ok, mut pvs_found, mut unbound_ok, mut space_ok) = (true, true, true, true);
    for c in &claims.bound {
        match vols.pv(&c.volume_name) {
            None => {
                pvs_found = false;
                break;
            }
            Some(pv) if !pv.node_ok(&node.name, &node.labels) => {
                bound_ok = false;
                break;
            }
            Some(_) => {}
        }
    }
    'unbound: {
        if claims.delayed.is_empty() {
            break 'unbound;
        }
        let mut to_match: Vec<&Arc<PvcInfo>> = Vec::new();
        let mut to_provision: Vec<&Arc<PvcInfo>> = Vec::new();
        for c in &claims.delayed {
            let selected = c.selected_node.as_deref().or_else(|| {
                if !assumed {
                    return None;
                }
                vols.assumed_claim(&c.key)
                    .filter(|(_, pv)| pv.is_none())
                    .map(|(n, _)| n.as_str())
            });
            match selected {
                Some(n) if n != &*node.name => {
                    unbound_ok = false;
                    break 'unbound;
                }
                Some(_) => to_provision.push(c),
                None => to_match.push(c),
            }
        }
        // Smallest requests first, as kube-scheduler's byPVCSize.
        to_match.sort_by_key(|c| c.request.unwrap_or(0));
        for c in to_match {
            match find_matching(vols, c, node, &f.bindings.bindings) {
                Some(pv) => f.bindings.bindings.push((c.key.clone(), pv.name.clone())),
                None => to_provision.push(c),
            }
        }
        for c in to_provision {
            if c.class.is_empty() {
                return Err(Status::error(format!("no class for claim {:?}", c.key)));
            }
            let Some(class) = vols.class(&c.class) else {
                return Err(Status::error(format!(
                    "failed to find storage class {:?}",
                    c.class
                )));
            };
            if class.provisioner.is_empty()
                || class.provisioner == NO_PROVISIONER
                || !class.topology_allows(&node.labels)
            {
                unbound_ok = false;
                break;
            }
            match has_enough_capacity(vols, &class.provisioner, c, &class.name, node) {
                Err(()) => {
                    space_ok = false;
                    break;
                }
                Ok(cap) => f.capacities.push(cap.cloned()),
            }
            f.bindings.provisions.push(c.key.clone());
        }
    }
    if !bound_ok {
        f.reasons.push(ERR_REASON_NODE_CONFLICT);
    }
    if !unbound_ok {
        f.reasons.push(ERR_REASON_BIND_CONFLICT);
    }
    if !space_ok {
        f.reasons.push(ERR_REASON_NOT_ENOUGH_SPACE);
    }
    if !pvs_found {
        f.reasons.push(ERR_REASON_PV_NOT_EXIST);
    }
    Ok(f)
}

fn rejected(reasons: &[&'static str]) -> Status {
    Status {
        code: Code::UnschedulableAndUnresolvable,
        reasons: reasons.iter().map(|r| (*r).into()).collect(),
        plugin: "",
    }
}

/// The pod's own claims: the PreFilter state's, or re-read when the state came
/// from another pod of the equivalence class.
fn own_claims<'a>(
    state: &'a CycleState,
    pod: &PodInfo,
    snap: &Snapshot,
) -> Result<Option<std::borrow::Cow<'a, PodClaims>>, Status> {
    match state.read::<PodClaims>(STATE_KEY) {
        None => Ok(None),
        Some(c) if c.pod == pod.key => Ok(Some(std::borrow::Cow::Borrowed(c))),
        Some(_) => pod_claims(pod, snap.volumes()).map(|c| c.map(std::borrow::Cow::Owned)),
    }
}

impl FilterPlugin for VolumeBinding {
    fn filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Status {
        if let Some(c) = state.read::<PodClaims>(STATE_KEY)
            && let Some(m) = &c.memo
            && m.applies(c, pod, snap.volumes())
            && let Some(st) = m.answer(c, node, snap)
        {
            return st;
        }
        let claims = match own_claims(state, pod, snap) {
            Ok(Some(c)) => c,
            Ok(None) => return Status::success(),
            Err(st) => return st,
        };
        match find_pod_volumes(&claims, node, snap) {
            Ok(f) if f.reasons.is_empty() => Status::success(),
            Ok(f) => rejected(&f.reasons),
            Err(st) => st,
        }
    }
}

/// StorageCapacityScoring's node score from per-class (requested, capacity) sums
/// (`buildScorerFunction`): each class's utilization through the shape, averaged
/// and rounded; 0 without classes.
pub fn capacity_score(shape: &[(i64, i64)], classes: &[(i64, i64)]) -> i64 {
    if classes.is_empty() {
        return 0;
    }
    let sum: i64 = classes
        .iter()
        .map(|&(req, cap)| crate::node_resources_fit::rtcr_resource_score(shape, req, cap))
        .sum();
    (sum as f64 / classes.len() as f64).round() as i64
}

/// Per storage class (requested, capacity) of a node's volume decisions (kube's
/// `classResourceMap`): static bindings if any, else provisionings whose capacity
/// is tracked (capacity = the CSIStorageCapacity's `capacity`, not summed).
fn class_resources(f: &Found, vols: &VolumeState) -> Vec<(i64, i64)> {
    let mut by_class: Vec<(String, i64, i64)> = Vec::new();
    let mut add = |class: &str, req: i64, cap: i64, sum_cap: bool| match by_class
        .iter_mut()
        .find(|(c, _, _)| *c == class)
    {
        Some(e) => {
            e.1 += req;
            e.2 = if sum_cap { e.2 + cap } else { cap };
        }
        None => by_class.push((class.to_string(), req, cap)),
    };
    let pvc = |key: &str| vols.objects().pvcs.get(key);
    if !f.bindings.bindings.is_empty() {
        for (claim, pv) in &f.bindings.bindings {
            let (Some(c), Some(pv)) = (pvc(claim), vols.pv(pv)) else {
                continue;
            };
            add(&pv.class, c.request.unwrap_or(0), pv.capacity, true);
        }
    } else {
        for (claim, cap) in f.bindings.provisions.iter().zip(&f.capacities) {
            let (Some(c), Some(cap)) = (pvc(claim), cap) else {
                continue;
            };
            add(
                &c.class,
                c.request.unwrap_or(0),
                cap.total.unwrap_or(0),
                false,
            );
        }
    }
    by_class.into_iter().map(|(_, r, c)| (r, c)).collect()
}

impl PreScorePlugin for VolumeBinding {
    /// Skip without a shape (kube: no scorer without StorageCapacityScoring) or
    /// for pods without claims.
    fn pre_score(
        &self,
        state: &mut CycleState,
        _: &PodInfo,
        _: &Snapshot,
        _: &[&NodeInfo],
    ) -> Status {
        if self.shape.is_none() || state.read::<PodClaims>(STATE_KEY).is_none() {
            return Status::skip();
        }
        Status::success()
    }
}

impl ScorePlugin for VolumeBinding {
    fn score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Result<i64, Status> {
        let Some(shape) = &self.shape else {
            return Ok(0);
        };
        let claims = match own_claims(state, pod, snap)? {
            Some(c) => c,
            None => return Ok(0),
        };
        match find_pod_volumes(&claims, node, snap) {
            Ok(f) if f.reasons.is_empty() => {
                Ok(capacity_score(shape, &class_resources(&f, snap.volumes())))
            }
            // Not feasible here (kube: no podVolumes for the node): 0.
            Ok(_) => Ok(0),
            Err(st) => Err(st),
        }
    }
}

impl ReservePlugin for VolumeBinding {
    fn reserve(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        node: &str,
        snap: &Snapshot,
    ) -> Status {
        let found = match own_claims(state, pod, snap) {
            Ok(Some(claims)) => match snap.node(node) {
                Some(n) => find_pod_volumes(&claims, n, snap),
                None => return Status::error(format!("node {node:?} not found")),
            },
            Ok(None) => return Status::success(),
            Err(st) => return st,
        };
        match found {
            Ok(f) if f.reasons.is_empty() => {
                if !f.bindings.is_empty() {
                    state.write(BINDINGS_STATE_KEY, f.bindings);
                }
                Status::success()
            }
            Ok(f) => rejected(&f.reasons),
            Err(st) => st,
        }
    }

    fn unreserve(&self, state: &mut CycleState, _: &PodInfo, _: &str, _: &Snapshot) {
        state.delete(BINDINGS_STATE_KEY);
    }
}

#[cfg(test)]
#[path = "volume_binding_tests.rs"]
mod tests;
