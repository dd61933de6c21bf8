//! Volume state of the snapshot: PersistentVolumes, PersistentVolumeClaims,
//! StorageClasses, CSINodes, CSIDrivers and CSIStorageCapacities (decoded once into
//! the `*Info` types the volume plugins read), plus the *assume cache*: the PV
//! bindings and provisionings chosen by VolumeBinding's Reserve for pods placed but
//! not yet confirmed by the API server (kube-scheduler's `AssumeCache`).
//!
//! Invariants:
//! - Like the rest of the snapshot, the volume state is read-only while a batch is
//!   evaluated; objects change between cycles (`Snapshot::volumes_mut`, which bumps
//!   `nodes_version` so cached per-node Filter results are recomputed) and
//!   assumptions only in the committer (`Snapshot::assume_volumes`).
//! - An assumption belongs to one placed pod: removing the pod from the snapshot
//!   (gang rollback, unreserve, deletion) forgets it, so no PV stays assumed by a pod
//!   that is not placed. An observed object that shows the binding done (PVC bound,
//!   PV claimed) replaces the assumption.
//! - Decoding never panics: a malformed quantity or selector is an `Err` naming the
//!   object and field.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, Pod, TopologySelectorTerm, Volume,
};
use k8s_openapi::api::storage::v1::{
    CSIDriver, CSINode, CSIStorageCapacity, StorageClass, VolumeAttachment,
};

use crate::labels::{Labels, NodeSelectorMatcher, Selector};
use crate::resources::FieldError;

/// `pv.kubernetes.io/bind-completed`: the PV controller finished binding a claim.
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// `pv.kubernetes.io/bound-by-controller`.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// `volume.kubernetes.io/selected-node`: the node a WaitForFirstConsumer claim is
/// provisioned for.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Beta storage-class annotation (wins over `spec.storageClassName`).
pub const ANN_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// CSINode annotation listing the in-tree plugins migrated to CSI on the node.
pub const ANN_MIGRATED_PLUGINS: &str = "storage.alpha.kubernetes.io/migrated-plugins";
/// Provisioner of classes without dynamic provisioning.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
/// Binding mode value of delayed binding.
pub const WAIT_FOR_FIRST_CONSUMER: &str = "WaitForFirstConsumer";

/// In-tree volume plugins and the CSI drivers they migrate to (kube's csi-translation-lib).
pub const MIGRATED_PLUGINS: &[(&str, &str)] = &[
    ("kubernetes.io/aws-ebs", "ebs.csi.aws.com"),
    ("kubernetes.io/gce-pd", "pd.csi.storage.gke.io"),
    ("kubernetes.io/azure-disk", "disk.csi.azure.com"),
    ("kubernetes.io/azure-file", "file.csi.azure.com"),
    ("kubernetes.io/cinder", "cinder.csi.openstack.org"),
    ("kubernetes.io/vsphere-volume", "csi.vsphere.vmware.com"),
    ("kubernetes.io/portworx-volume", "pxd.portworx.com"),
];

/// The CSI driver an in-tree plugin migrates to.
pub fn migrated_driver(plugin: &str) -> Option<&'static str> {
    MIGRATED_PLUGINS
        .iter()
        .find(|(p, _)| *p == plugin)
        .map(|(_, d)| *d)
}

fn storage_bytes(
    list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    field: &str,
) -> Result<Option<i64>, FieldError> {
    match list.and_then(|m| m.get("storage")) {
        None => Ok(None),
        Some(q) => parse_bytes(&q.0, &format!("{field}[storage]")).map(Some),
    }
}

fn parse_bytes(s: &str, field: &str) -> Result<i64, FieldError> {
    let v = crate::quantity::parse_resource("storage", s).map_err(|e| FieldError {
        field: field.to_string(),
        message: e.to_string(),
    })?;
    if v < 0 {
        return Err(FieldError {
            field: field.to_string(),
            message: format!("must not be negative, got {s:?}"),
        });
    }
    Ok(v)
}

fn name_of(
    md: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<String, FieldError> {
    match md.name.as_deref() {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(FieldError {
            field: "metadata.name".into(),
            message: "must be set".into(),
        }),
    }
}

/// A claim reference on a PV (`spec.claimRef`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// A decoded PersistentVolume.
#[derive(Debug, Clone)]
pub struct PvInfo {
    pub pv: Arc<PersistentVolume>,
    pub name: String,
    pub labels: Labels,
    /// `spec.capacity[storage]` in bytes (0 when absent).
    pub capacity: i64,
    /// `spec.storageClassName` (or the beta annotation), "" when none.
    pub class: String,
    pub access_modes: Vec<String>,
    /// `spec.volumeMode`, "Filesystem" when unset.
    pub volume_mode: String,
    /// `spec.nodeAffinity.required` (None: any node).
    pub affinity: Option<NodeSelectorMatcher>,
    pub claim_ref: Option<ClaimRef>,
    /// `status.phase` ("" when unset).
    pub phase: String,
    pub deleting: bool,
}

impl PvInfo {
    pub fn new(pv: PersistentVolume) -> Result<PvInfo, FieldError> {
        let name = name_of(&pv.metadata)?;
        let spec = pv.spec.as_ref();
        let capacity =
            storage_bytes(spec.and_then(|s| s.capacity.as_ref()), "spec.capacity")?.unwrap_or(0);
        let affinity = match spec
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.as_ref())
        {
            Some(ns) => Some(NodeSelectorMatcher::compile(ns).map_err(|e| FieldError {
                field: "spec.nodeAffinity.required".into(),
                message: e,
            })?),
            None => None,
        };
        let class = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANN_STORAGE_CLASS).cloned())
            .or_else(|| spec.and_then(|s| s.storage_class_name.clone()))
            .unwrap_or_default();
        let claim_ref = spec.and_then(|s| s.claim_ref.as_ref()).map(|r| ClaimRef {
            namespace: r.namespace.clone().unwrap_or_default(),
            name: r.name.clone().unwrap_or_default(),
            uid: r.uid.clone().unwrap_or_default(),
        });
        Ok(PvInfo {
            labels: pv.metadata.labels.clone().unwrap_or_default(),
            capacity,
            class,
            access_modes: spec
                .and_then(|s| s.access_modes.clone())
                .unwrap_or_default(),
            volume_mode: spec
                .and_then(|s| s.volume_mode.clone())
                .unwrap_or_else(|| "Filesystem".into()),
            affinity,
            claim_ref,
            phase: pv
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default(),
            deleting: pv.metadata.deletion_timestamp.is_some(),
            name,
            pv: Arc::new(pv),
        })
    }

    /// `CheckNodeAffinity`: the PV's required node affinity admits the node.
    pub fn node_ok(&self, node_name: &str, labels: &Labels) -> bool {
        self.affinity
            .as_ref()
            .is_none_or(|a| a.matches(node_name, labels))
    }

    /// `IsVolumeBoundToClaim`.
    pub fn bound_to(&self, c: &PvcInfo) -> bool {
        self.claim_ref.as_ref().is_some_and(|r| {
            r.name == c.name && r.namespace == c.namespace && (r.uid.is_empty() || r.uid == c.uid)
        })
    }
}

/// A decoded PersistentVolumeClaim.
#[derive(Debug, Clone)]
pub struct PvcInfo {
    pub pvc: Arc<PersistentVolumeClaim>,
    /// `namespace/name`.
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.volumeName` ("" when unset).
    pub volume_name: String,
    /// `GetPersistentVolumeClaimClass`: the beta annotation, else
    /// `spec.storageClassName`, else "".
    pub class: String,
    /// `spec.resources.requests[storage]` in bytes (None when absent).
    pub request: Option<i64>,
    pub access_modes: Vec<String>,
    pub volume_mode: String,
    /// `spec.selector` (None when unset).
    pub selector: Option<Selector>,
    pub phase: String,
    pub deleting: bool,
    /// `volume.kubernetes.io/selected-node`.
    pub selected_node: Option<String>,
    /// `pv.kubernetes.io/bind-completed` present.
    pub bind_completed: bool,
}

impl PvcInfo {
    pub fn new(pvc: PersistentVolumeClaim) -> Result<PvcInfo, FieldError> {
        let name = name_of(&pvc.metadata)?;
        let namespace = pvc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let spec = pvc.spec.as_ref();
        let request = storage_bytes(
            spec.and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref()),
            "spec.resources.requests",
        )?;
        let selector = match spec.and_then(|s| s.selector.as_ref()) {
            Some(ls) => Some(
                Selector::from_label_selector(Some(ls)).map_err(|e| FieldError {
                    field: "spec.selector".into(),
                    message: e,
                })?,
            ),
            None => None,
        };
        let ann = pvc.metadata.annotations.as_ref();
        Ok(PvcInfo {
            key: corral_api::pod::key(&namespace, &name),
            uid: pvc.metadata.uid.clone().unwrap_or_default(),
            volume_name: spec.and_then(|s| s.volume_name.clone()).unwrap_or_default(),
            class: ann
                .and_then(|a| a.get(ANN_STORAGE_CLASS).cloned())
                .or_else(|| spec.and_then(|s| s.storage_class_name.clone()))
                .unwrap_or_default(),
            request,
            access_modes: spec
                .and_then(|s| s.access_modes.clone())
                .unwrap_or_default(),
            volume_mode: spec
                .and_then(|s| s.volume_mode.clone())
                .unwrap_or_else(|| "Filesystem".into()),
            selector,
            phase: pvc
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default(),
            deleting: pvc.metadata.deletion_timestamp.is_some(),
            selected_node: ann.and_then(|a| a.get(ANN_SELECTED_NODE).cloned()),
            bind_completed: ann.is_some_and(|a| a.contains_key(ANN_BIND_COMPLETED)),
            namespace,
            name,
            pvc: Arc::new(pvc),
        })
    }

    /// True when the DefaultStorageClass admission (or the PV controller's
    /// retroactive assignment) gives the claim the default class: no
    /// `spec.storageClassName` (an explicit "" is kept), no beta class annotation,
    /// not bound to a volume.
    pub fn wants_default_class(&self) -> bool {
        self.pvc
            .spec
            .as_ref()
            .is_none_or(|s| s.storage_class_name.is_none())
            && !self
                .pvc
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ANN_STORAGE_CLASS))
            && self.volume_name.is_empty()
    }

    /// The claim with `spec.storageClassName` set to `class`.
    pub fn with_class(&self, class: &str) -> Result<PvcInfo, FieldError> {
        let mut pvc = (*self.pvc).clone();
        pvc.spec
            .get_or_insert_with(Default::default)
            .storage_class_name = Some(class.to_string());
        PvcInfo::new(pvc)
    }

    /// `isPVCFullyBound`: a volume name and the bind-completed annotation (or, for
    /// hand-written manifests, `status.phase: Bound`).
    pub fn fully_bound(&self) -> bool {
        !self.volume_name.is_empty() && (self.bind_completed || self.phase == "Bound")
    }

    /// True when the claim allows only one pod (`ReadWriteOncePod`).
    pub fn read_write_once_pod(&self) -> bool {
        self.access_modes.iter().any(|m| m == "ReadWriteOncePod")
    }
}

/// `storageclass.kubernetes.io/is-default-class`.
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The beta form of [`ANN_DEFAULT_CLASS`].
pub const ANN_DEFAULT_CLASS_BETA: &str = "storageclass.beta.kubernetes.io/is-default-class";

/// The default StorageClass (`GetDefaultClass`): of the classes annotated
/// [`ANN_DEFAULT_CLASS`] (or its beta form) `"true"`, the newest by
/// `creationTimestamp`, ties broken by the smaller name; None when there is none.
pub fn default_class<'a>(
    classes: impl IntoIterator<Item = &'a ClassInfo>,
) -> Option<&'a ClassInfo> {
    let is_default = |c: &ClassInfo| {
        c.sc.metadata.annotations.as_ref().is_some_and(|a| {
            a.get(ANN_DEFAULT_CLASS).map(String::as_str) == Some("true")
                || a.get(ANN_DEFAULT_CLASS_BETA).map(String::as_str) == Some("true")
        })
    };
    let created = |c: &ClassInfo| c.sc.metadata.creation_timestamp.as_ref().map(|t| t.0);
    classes
        .into_iter()
        .filter(|c| is_default(c))
        .min_by(|a, b| {
            created(b)
                .cmp(&created(a))
                .then_with(|| a.name.cmp(&b.name))
        })
}

/// A decoded StorageClass.
#[derive(Debug, Clone)]
pub struct ClassInfo {
    pub sc: Arc<StorageClass>,
    pub name: String,
    pub provisioner: String,
    /// `volumeBindingMode` (None: unset; the API server defaults it to Immediate).
    pub binding_mode: Option<String>,
    pub allowed_topologies: Vec<TopologySelectorTerm>,
}

impl ClassInfo {
    pub fn new(sc: StorageClass) -> Result<ClassInfo, FieldError> {
        let name = name_of(&sc.metadata)?;
        if let Some(m) = sc.volume_binding_mode.as_deref()
            && !matches!(m, "Immediate" | WAIT_FOR_FIRST_CONSUMER)
        {
            return Err(FieldError {
                field: "volumeBindingMode".into(),
                message: format!("unsupported value {m:?} (Immediate, WaitForFirstConsumer)"),
            });
        }
        Ok(ClassInfo {
            provisioner: sc.provisioner.clone(),
            binding_mode: sc.volume_binding_mode.clone(),
            allowed_topologies: sc.allowed_topologies.clone().unwrap_or_default(),
            name,
            sc: Arc::new(sc),
        })
    }

    pub fn wait_for_first_consumer(&self) -> bool {
        self.binding_mode.as_deref() == Some(WAIT_FOR_FIRST_CONSUMER)
    }

    /// `MatchTopologySelectorTerms(allowedTopologies, node labels)`.
    pub fn topology_allows(&self, labels: &Labels) -> bool {
        if self.allowed_topologies.is_empty() {
            return true;
        }
        self.allowed_topologies.iter().any(|t| {
            let exprs = t.match_label_expressions.as_deref().unwrap_or(&[]);
            !exprs.is_empty()
                && exprs.iter().all(|r| {
                    !r.values.is_empty() && labels.get(&r.key).is_some_and(|v| r.values.contains(v))
                })
        })
    }
}

/// A decoded CSINode: attach limits per driver and the migrated in-tree plugins.
#[derive(Debug, Clone)]
pub struct CsiNodeInfo {
    pub node: Arc<CSINode>,
    pub name: String,
    /// Driver → `allocatable.count` (drivers without a count are unlimited).
    pub limits: BTreeMap<String, i64>,
    /// In-tree plugin names migrated to CSI on this node.
    pub migrated: Vec<String>,
}

impl CsiNodeInfo {
    pub fn new(n: CSINode) -> Result<CsiNodeInfo, FieldError> {
        let name = name_of(&n.metadata)?;
        let mut limits = BTreeMap::new();
        for (i, d) in n.spec.drivers.iter().enumerate() {
            if let Some(c) = d.allocatable.as_ref().and_then(|a| a.count) {
                if c < 0 {
                    return Err(FieldError {
                        field: format!("spec.drivers[{i}].allocatable.count"),
                        message: format!("must not be negative, got {c}"),
                    });
                }
                limits.insert(d.name.clone(), i64::from(c));
            }
        }
        let migrated = n
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANN_MIGRATED_PLUGINS))
            .map(|s| {
                s.split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(CsiNodeInfo {
            limits,
            migrated,
            name,
            node: Arc::new(n),
        })
    }

    pub fn is_migrated(&self, plugin: &str) -> bool {
        self.migrated.iter().any(|p| p == plugin)
    }
}

/// A decoded CSIDriver.
#[derive(Debug, Clone)]
pub struct CsiDriverInfo {
    pub driver: Arc<CSIDriver>,
    pub name: String,
    /// `spec.storageCapacity`: provisioning is checked against CSIStorageCapacity.
    pub storage_capacity: bool,
}

impl CsiDriverInfo {
    pub fn new(d: CSIDriver) -> Result<CsiDriverInfo, FieldError> {
        Ok(CsiDriverInfo {
            name: name_of(&d.metadata)?,
            storage_capacity: d.spec.storage_capacity.unwrap_or(false),
            driver: Arc::new(d),
        })
    }
}

/// A decoded CSIStorageCapacity.
#[derive(Debug, Clone)]
pub struct CapacityInfo {
    pub capacity: Arc<CSIStorageCapacity>,
    /// `namespace/name`.
    pub key: String,
    pub class: String,
    /// `nodeTopology` (None: no node has access).
    pub topology: Option<Selector>,
    /// `maximumVolumeSize`, else `capacity`, in bytes (None: neither set).
    pub limit: Option<i64>,
    /// `capacity` in bytes (None: unset).
    pub total: Option<i64>,
}

impl CapacityInfo {
    pub fn new(c: CSIStorageCapacity) -> Result<CapacityInfo, FieldError> {
        let name = name_of(&c.metadata)?;
        let ns = c
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let cap = match &c.capacity {
            Some(q) => Some(parse_bytes(&q.0, "capacity")?),
            None => None,
        };
        let max = match &c.maximum_volume_size {
            Some(q) => Some(parse_bytes(&q.0, "maximumVolumeSize")?),
            None => None,
        };
        let topology = match c.node_topology.as_ref() {
            Some(ls) => Some(
                Selector::from_label_selector(Some(ls)).map_err(|e| FieldError {
                    field: "nodeTopology".into(),
                    message: e,
                })?,
            ),
            None => None,
        };
        Ok(CapacityInfo {
            key: corral_api::pod::key(&ns, &name),
            class: c.storage_class_name.clone(),
            topology,
            limit: max.or(cap),
            total: cap,
            capacity: Arc::new(c),
        })
    }
}

/// A decoded VolumeAttachment (a CSI volume attached, or being attached, to a node
/// by the attach/detach controller).
#[derive(Debug, Clone)]
pub struct AttachmentInfo {
    pub name: String,
    /// `spec.nodeName`.
    pub node: String,
    /// `spec.attacher` (the CSI driver).
    pub attacher: String,
    /// `spec.source.persistentVolumeName` (None for inline volumes).
    pub pv: Option<String>,
}

impl AttachmentInfo {
    pub fn new(va: VolumeAttachment) -> Result<AttachmentInfo, FieldError> {
        Ok(AttachmentInfo {
            name: name_of(&va.metadata)?,
            node: va.spec.node_name,
            attacher: va.spec.attacher,
            pv: va.spec.source.persistent_volume_name,
        })
    }
}

/// One volume object of any of the volume kinds, decoded.
#[derive(Debug, Clone)]
pub enum VolumeObject {
    Pv(PvInfo),
    Pvc(PvcInfo),
    Class(ClassInfo),
    CsiNode(CsiNodeInfo),
    CsiDriver(CsiDriverInfo),
    Capacity(CapacityInfo),
    Attachment(AttachmentInfo),
}

impl VolumeObject {
    /// Decodes a JSON object of one of the six kinds (by `kind`). `Ok(None)` for
    /// another kind; errors name the field (`decode: ...` for a document that does
    /// not decode into the k8s-openapi type).
    pub fn decode(kind: &str, v: serde_json::Value) -> Result<Option<VolumeObject>, FieldError> {
        fn de<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, FieldError> {
            serde_json::from_value(v).map_err(|e| FieldError {
                field: "(decode)".into(),
                message: e.to_string(),
            })
        }
        Ok(Some(match kind {
            "PersistentVolume" => VolumeObject::Pv(PvInfo::new(de(v)?)?),
            "PersistentVolumeClaim" => VolumeObject::Pvc(PvcInfo::new(de(v)?)?),
            "StorageClass" => VolumeObject::Class(ClassInfo::new(de(v)?)?),
            "CSINode" => VolumeObject::CsiNode(CsiNodeInfo::new(de(v)?)?),
            "CSIDriver" => VolumeObject::CsiDriver(CsiDriverInfo::new(de(v)?)?),
            "CSIStorageCapacity" => VolumeObject::Capacity(CapacityInfo::new(de(v)?)?),
            "VolumeAttachment" => VolumeObject::Attachment(AttachmentInfo::new(de(v)?)?),
            _ => return Ok(None),
        }))
    }
}

/// (apiVersion, kind) of the volume kinds.
pub const VOLUME_KINDS: &[(&str, &str)] = &[
    ("v1", "PersistentVolume"),
    ("v1", "PersistentVolumeClaim"),
    ("storage.k8s.io/v1", "StorageClass"),
    ("storage.k8s.io/v1", "CSINode"),
    ("storage.k8s.io/v1", "CSIDriver"),
    ("storage.k8s.io/v1", "CSIStorageCapacity"),
    ("storage.k8s.io/v1", "VolumeAttachment"),
];

/// The volume objects of the cluster.
#[derive(Debug, Clone, Default)]
pub struct VolumeObjects {
    pub pvs: HashMap<String, Arc<PvInfo>>,
    /// By `namespace/name`.
    pub pvcs: HashMap<String, Arc<PvcInfo>>,
    pub classes: HashMap<String, Arc<ClassInfo>>,
    pub csi_nodes: HashMap<String, Arc<CsiNodeInfo>>,
    pub csi_drivers: HashMap<String, Arc<CsiDriverInfo>>,
    /// By `namespace/name`.
    pub capacities: BTreeMap<String, Arc<CapacityInfo>>,
    /// PV names by storage class (candidates for delayed binding).
    pub pvs_by_class: HashMap<String, Vec<String>>,
    /// VolumeAttachments by name.
    pub attachments: HashMap<String, Arc<AttachmentInfo>>,
    /// VolumeAttachment names by `spec.nodeName`.
    pub attachments_by_node: HashMap<String, Vec<String>>,
}

impl VolumeObjects {
    fn unindex_attachment(&mut self, name: &str) -> Option<Arc<AttachmentInfo>> {
        let old = self.attachments.remove(name)?;
        if let Some(l) = self.attachments_by_node.get_mut(&old.node) {
            l.retain(|n| n != name);
            if l.is_empty() {
                self.attachments_by_node.remove(&old.node);
            }
        }
        Some(old)
    }

    /// The VolumeAttachments of a node.
    pub fn node_attachments(&self, node: &str) -> impl Iterator<Item = &AttachmentInfo> {
        self.attachments_by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|n| self.attachments.get(n).map(|a| &**a))
    }

    fn index_pv(&mut self, name: &str, class: Option<&str>, add: bool) {
        let Some(class) = class else { return };
        let list = self.pvs_by_class.entry(class.to_string()).or_default();
        match (add, list.binary_search_by(|n| n.as_str().cmp(name))) {
            (true, Err(i)) => list.insert(i, name.to_string()),
            (false, Ok(i)) => {
                list.remove(i);
            }
            _ => {}
        }
    }
}

/// A pod's volume decisions made by VolumeBinding's Reserve on its chosen node.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PodVolumeBindings {
    pub node: String,
    /// Static bindings: (claim `namespace/name`, PV name).
    pub bindings: Vec<(String, String)>,
    /// Claims to provision on `node` (the selected-node annotation).
    pub provisions: Vec<String>,
}

impl PodVolumeBindings {
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty() && self.provisions.is_empty()
    }
}

/// Cycle-state key under which VolumeBinding's Reserve leaves the pod's
/// [`PodVolumeBindings`]; the committer applies them with
/// `Snapshot::assume_volumes` and reports them for the binder's PreBind.
pub const BINDINGS_STATE_KEY: &str = "framework/VolumeBindings";

/// Assumed (not yet confirmed) volume decisions.
#[derive(Debug, Clone, Default)]
pub struct Assumed {
    /// Per placed pod key.
    pub by_pod: HashMap<String, PodVolumeBindings>,
    /// PV name → claim key it is assumed bound to.
    pub pv_claims: HashMap<String, String>,
    /// Claim key → (node, PV name if statically bound).
    pub claims: HashMap<String, (String, Option<String>)>,
}

/// Source of the state stamps: unique across every `VolumeState` of the process,
/// so two states with equal stamps are one state (or unchanged clones of it).
static STAMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_stamp() -> u64 {
    STAMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The snapshot's volume state: objects plus assumptions (both copy-on-write).
#[derive(Debug, Clone, Default)]
pub struct VolumeState {
    objects: Arc<VolumeObjects>,
    assumed: Arc<Assumed>,
    /// Changes with every change of the objects (0: never changed).
    objects_stamp: u64,
    /// Changes with every change of the objects or the assumptions.
    stamp: u64,
}

impl VolumeState {
    /// A stamp that changes whenever the objects change (see [`Self::stamp`]).
    pub fn objects_stamp(&self) -> u64 {
        self.objects_stamp
    }

    /// A stamp that changes whenever the objects or the assumptions change; equal
    /// stamps mean the same state (stamps are unique across the process), so a
    /// plugin may memoise what it computed from the state under its stamp.
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    fn touch(&mut self, objects: bool) {
        self.stamp = next_stamp();
        if objects {
            self.objects_stamp = self.stamp;
        }
    }

    pub fn objects(&self) -> &VolumeObjects {
        &self.objects
    }

    pub fn assumed(&self) -> &Assumed {
        &self.assumed
    }

    /// True when there are no volume objects at all (plugins short-cut).
    pub fn is_empty(&self) -> bool {
        let o = &*self.objects;
        o.pvs.is_empty()
            && o.pvcs.is_empty()
            && o.classes.is_empty()
            && o.csi_nodes.is_empty()
            && o.csi_drivers.is_empty()
            && o.capacities.is_empty()
            && o.attachments.is_empty()
    }

    pub fn pvc(&self, namespace: &str, name: &str) -> Option<&Arc<PvcInfo>> {
        self.objects
            .pvcs
            .get(&corral_api::pod::key(namespace, name))
    }

    pub fn pv(&self, name: &str) -> Option<&Arc<PvInfo>> {
        self.objects.pvs.get(name)
    }

    pub fn class(&self, name: &str) -> Option<&Arc<ClassInfo>> {
        self.objects.classes.get(name)
    }

    pub fn csi_node(&self, name: &str) -> Option<&Arc<CsiNodeInfo>> {
        self.objects.csi_nodes.get(name)
    }

    pub fn csi_driver(&self, name: &str) -> Option<&Arc<CsiDriverInfo>> {
        self.objects.csi_drivers.get(name)
    }

    /// The claim the PV is assumed bound to, if any.
    pub fn assumed_claim_of(&self, pv: &str) -> Option<&str> {
        self.assumed.pv_claims.get(pv).map(String::as_str)
    }

    /// The assumed decision for a claim: (node, statically bound PV).
    pub fn assumed_claim(&self, key: &str) -> Option<&(String, Option<String>)> {
        self.assumed.claims.get(key)
    }

    /// Adds or replaces an object. An observed binding replaces its assumption.
    pub fn upsert(&mut self, obj: VolumeObject) {
        self.touch(true);
        let o = Arc::make_mut(&mut self.objects);
        match obj {
            VolumeObject::Pv(p) => {
                let old = o.pvs.get(&p.name).map(|x| x.class.clone());
                o.index_pv(&p.name, old.as_deref(), false);
                o.index_pv(&p.name, Some(&p.class), true);
                let confirmed = p.claim_ref.is_some();
                let name = p.name.clone();
                o.pvs.insert(p.name.clone(), Arc::new(p));
                if confirmed {
                    self.confirm_pv(&name);
                }
            }
            VolumeObject::Pvc(c) => {
                let key = c.key.clone();
                let confirmed = c.fully_bound()
                    || (c.selected_node.is_some()
                        && self
                            .assumed
                            .claims
                            .get(&key)
                            .is_some_and(|(_, pv)| pv.is_none()));
                o.pvcs.insert(key.clone(), Arc::new(c));
                if confirmed {
                    self.confirm_claim(&key);
                }
            }
            VolumeObject::Class(c) => {
                o.classes.insert(c.name.clone(), Arc::new(c));
            }
            VolumeObject::CsiNode(n) => {
                o.csi_nodes.insert(n.name.clone(), Arc::new(n));
            }
            VolumeObject::CsiDriver(d) => {
                o.csi_drivers.insert(d.name.clone(), Arc::new(d));
            }
            VolumeObject::Capacity(c) => {
                o.capacities.insert(c.key.clone(), Arc::new(c));
            }
            VolumeObject::Attachment(a) => {
                o.unindex_attachment(&a.name);
                o.attachments_by_node
                    .entry(a.node.clone())
                    .or_default()
                    .push(a.name.clone());
                o.attachments.insert(a.name.clone(), Arc::new(a));
            }
        }
    }

    /// Removes an object by kind and key (`namespace/name` for namespaced kinds).
    pub fn remove(&mut self, kind: &str, key: &str) -> bool {
        self.touch(true);
        let o = Arc::make_mut(&mut self.objects);
        match kind {
            "PersistentVolume" => {
                let old = o.pvs.remove(key);
                if let Some(p) = &old {
                    o.index_pv(key, Some(&p.class), false);
                }
                old.is_some()
            }
            "PersistentVolumeClaim" => o.pvcs.remove(key).is_some(),
            "StorageClass" => o.classes.remove(key).is_some(),
            "CSINode" => o.csi_nodes.remove(key).is_some(),
            "CSIDriver" => o.csi_drivers.remove(key).is_some(),
            "CSIStorageCapacity" => o.capacities.remove(key).is_some(),
            "VolumeAttachment" => o.unindex_attachment(key).is_some(),
            _ => false,
        }
    }

    fn confirm_pv(&mut self, pv: &str) {
        if self.assumed.pv_claims.contains_key(pv) {
            let a = Arc::make_mut(&mut self.assumed);
            if let Some(claim) = a.pv_claims.remove(pv) {
                Self::drop_claim(a, &claim);
            }
        }
    }

    fn confirm_claim(&mut self, key: &str) {
        if self.assumed.claims.contains_key(key) {
            let a = Arc::make_mut(&mut self.assumed);
            if let Some((_, Some(pv))) = a.claims.get(key).cloned() {
                a.pv_claims.remove(&pv);
            }
            Self::drop_claim(a, key);
        }
    }

    fn drop_claim(a: &mut Assumed, key: &str) {
        a.claims.remove(key);
        for b in a.by_pod.values_mut() {
            b.bindings.retain(|(c, _)| c != key);
            b.provisions.retain(|c| c != key);
        }
        a.by_pod.retain(|_, b| !b.is_empty());
    }

    /// Records a placed pod's decisions (Reserve's `AssumePodVolumes`).
    pub fn assume(&mut self, pod_key: &str, b: PodVolumeBindings) {
        if b.is_empty() {
            return;
        }
        self.forget(pod_key);
        self.touch(false);
        let a = Arc::make_mut(&mut self.assumed);
        for (claim, pv) in &b.bindings {
            a.pv_claims.insert(pv.clone(), claim.clone());
            a.claims
                .insert(claim.clone(), (b.node.clone(), Some(pv.clone())));
        }
        for claim in &b.provisions {
            a.claims.insert(claim.clone(), (b.node.clone(), None));
        }
        a.by_pod.insert(pod_key.to_string(), b);
    }

    /// Forgets a pod's assumed decisions (Unreserve / the pod left the snapshot);
    /// returns them.
    pub fn forget(&mut self, pod_key: &str) -> Option<PodVolumeBindings> {
        if !self.assumed.by_pod.contains_key(pod_key) {
            return None;
        }
        self.touch(false);
        let a = Arc::make_mut(&mut self.assumed);
        let b = a.by_pod.remove(pod_key)?;
        for (claim, pv) in &b.bindings {
            a.pv_claims.remove(pv);
            a.claims.remove(claim);
        }
        for claim in &b.provisions {
            a.claims.remove(claim);
        }
        Some(b)
    }

    /// The pod's assumed decisions.
    pub fn pod_bindings(&self, pod_key: &str) -> Option<&PodVolumeBindings> {
        self.assumed.by_pod.get(pod_key)
    }
}

/// An equivalence key for a pod whose claims are interchangeable with other pods'
/// claims: every volume claim is an unbound, not yet provisioned
/// WaitForFirstConsumer claim (no selected node, nothing assumed, not
/// ReadWriteOncePod, no selector) of a class without static PVs. The volume plugins'
/// Filter results for such a pod depend only on the claims' shape (class, request,
/// access and volume modes), so the key hashes the pod with each claim name
/// replaced by that shape. None when the pod has no claims or one that is not
/// interchangeable (then the pod's own `equivalence` applies).
pub fn interchangeable_class(pod: &crate::snapshot::PodInfo, vols: &VolumeState) -> Option<u64> {
    let volumes = pod_volumes(&pod.pod);
    if volumes.is_empty() || vols.is_empty() {
        return None;
    }
    let mut shapes = Vec::new();
    for v in volumes {
        if v.ephemeral.is_some() {
            return None;
        }
        let Some(c) = &v.persistent_volume_claim else {
            continue;
        };
        let c = vols.pvc(&pod.namespace, &c.claim_name)?;
        if !claim_interchangeable(c, vols) {
            return None;
        }
        shapes.push(format!(
            "{}|{:?}|{:?}|{}",
            c.class, c.request, c.access_modes, c.volume_mode
        ));
    }
    if shapes.is_empty() {
        return None;
    }
    let mut p = (*pod.pod).clone();
    let mut shapes = shapes.into_iter();
    if let Some(spec) = p.spec.as_mut() {
        for v in spec.volumes.iter_mut().flatten() {
            if let Some(c) = v.persistent_volume_claim.as_mut()
                && let Some(s) = shapes.next()
            {
                c.claim_name = s;
            }
        }
    }
    Some(crate::snapshot::equivalence_hash_ignoring(&p, &[]) ^ 0x5bd1_e995_0000_0001)
}

/// True when VolumeBinding's answer for the claim on any node depends only on the
/// claim's shape (class, request, access and volume modes) and the node: an
/// unbound, not yet provisioned WaitForFirstConsumer claim (no selected node,
/// nothing assumed, not ReadWriteOncePod, no selector, not being deleted) of an
/// existing class without static PVs. Assuming other claims or PVs cannot change
/// that answer; assuming this claim can.
pub fn claim_interchangeable(c: &PvcInfo, vols: &VolumeState) -> bool {
    let Some(class) = vols.class(&c.class) else {
        return false;
    };
    !(c.fully_bound()
        || !c.volume_name.is_empty()
        || c.selected_node.is_some()
        || c.deleting
        || c.selector.is_some()
        || c.read_write_once_pod()
        || vols.assumed_claim(&c.key).is_some()
        || !class.wait_for_first_consumer()
        || vols
            .objects()
            .pvs_by_class
            .get(&c.class)
            .is_some_and(|l| !l.is_empty()))
}

/// Claim names of a pod's `persistentVolumeClaim` volumes and generic ephemeral
/// volumes (`<pod>-<volume>`), in volume order.
pub fn pod_claim_names(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    pod_volumes(pod)
        .iter()
        .filter_map(|v| claim_name(pod_name, v))
        .collect()
}

/// The claim a volume refers to (a PVC volume or a generic ephemeral volume).
pub fn claim_name(pod_name: &str, v: &Volume) -> Option<String> {
    if let Some(c) = &v.persistent_volume_claim {
        Some(c.claim_name.clone())
    } else if v.ephemeral.is_some() {
        Some(format!("{pod_name}-{}", v.name))
    } else {
        None
    }
}

/// The pod's volumes (empty when none).
pub fn pod_volumes(pod: &Pod) -> &[Volume] {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: &str, v: serde_json::Value) -> Result<VolumeObject, FieldError> {
        VolumeObject::decode(kind, v).map(|o| o.unwrap())
    }

    #[test]
    fn decoding_names_bad_fields() {
        let e = obj(
            "PersistentVolumeClaim",
            serde_json::json!({"metadata": {"name": "c"}, "spec": {"resources": {"requests": {"storage": "5Gx"}}}}),
        )
        .unwrap_err();
        assert_eq!(e.field, "spec.resources.requests[storage]", "{e}");
        let e = obj(
            "PersistentVolume",
            serde_json::json!({"metadata": {"name": "v"}, "spec": {"capacity": {"storage": "-1Gi"}}}),
        )
        .unwrap_err();
        assert_eq!(e.field, "spec.capacity[storage]", "{e}");
        let e = obj(
            "CSIStorageCapacity",
            serde_json::json!({"metadata": {"name": "c", "namespace": "x"}, "storageClassName": "s", "capacity": "lots"}),
        )
        .unwrap_err();
        assert_eq!(e.field, "capacity", "{e}");
        let e = obj(
            "StorageClass",
            serde_json::json!({"metadata": {"name": "s"}, "provisioner": "p", "volumeBindingMode": "Later"}),
        )
        .unwrap_err();
        assert_eq!(e.field, "volumeBindingMode", "{e}");
        let e = obj(
            "CSINode",
            serde_json::json!({"metadata": {}, "spec": {"drivers": []}}),
        )
        .unwrap_err();
        assert_eq!(e.field, "metadata.name", "{e}");
        assert!(
            VolumeObject::decode("Pod", serde_json::json!({}))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn assume_forget_and_confirm() {
        let mut s = VolumeState::default();
        let pv = obj(
            "PersistentVolume",
            serde_json::json!({"metadata": {"name": "pv1"}, "spec": {"storageClassName": "local", "capacity": {"storage": "10Gi"}}, "status": {"phase": "Available"}}),
        )
        .unwrap();
        s.upsert(pv);
        assert_eq!(s.objects().pvs_by_class["local"], vec!["pv1".to_string()]);
        let b = PodVolumeBindings {
            node: "n1".into(),
            bindings: vec![("ns/c1".into(), "pv1".into())],
            provisions: vec!["ns/c2".into()],
        };
        s.assume("ns/p", b.clone());
        assert_eq!(s.assumed_claim_of("pv1"), Some("ns/c1"));
        assert_eq!(s.forget("ns/p"), Some(b.clone()));
        assert!(s.assumed_claim_of("pv1").is_none() && s.assumed_claim("ns/c2").is_none());
        // An observed PV with a claimRef confirms (replaces) the assumption.
        s.assume("ns/p", b);
        s.upsert(
            obj(
                "PersistentVolume",
                serde_json::json!({"metadata": {"name": "pv1"}, "spec": {"storageClassName": "local", "claimRef": {"namespace": "ns", "name": "c1"}}}),
            )
            .unwrap(),
        );
        assert!(s.assumed_claim_of("pv1").is_none());
        assert_eq!(
            s.pod_bindings("ns/p").unwrap().provisions,
            vec!["ns/c2".to_string()]
        );
        s.upsert(
            obj(
                "PersistentVolumeClaim",
                serde_json::json!({"metadata": {"name": "c2", "namespace": "ns", "annotations": {ANN_SELECTED_NODE: "n1"}}}),
            )
            .unwrap(),
        );
        assert!(s.pod_bindings("ns/p").is_none());
        assert!(s.remove("PersistentVolume", "pv1"));
        assert!(s.objects().pvs_by_class["local"].is_empty());
    }

    #[test]
    fn attachments_are_indexed_by_node() {
        let mut s = VolumeState::default();
        let va = |node: &str| {
            obj(
                "VolumeAttachment",
                serde_json::json!({"metadata": {"name": "va"}, "spec": {"nodeName": node,
                    "attacher": "d", "source": {"persistentVolumeName": "pv"}}}),
            )
            .unwrap()
        };
        s.upsert(va("n1"));
        let on = |s: &VolumeState, n: &str| s.objects().node_attachments(n).count();
        assert_eq!((on(&s, "n1"), on(&s, "n2")), (1, 0));
        assert!(!s.is_empty());
        // Moved (an update with another node): re-indexed.
        s.upsert(va("n2"));
        assert_eq!((on(&s, "n1"), on(&s, "n2")), (0, 1));
        assert!(s.remove("VolumeAttachment", "va"));
        assert_eq!(on(&s, "n2"), 0);
        assert!(s.is_empty());
    }

    #[test]
    fn topology_terms() {
        let sc: StorageClass = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"}, "provisioner": "p",
            "allowedTopologies": [{"matchLabelExpressions": [{"key": "zone", "values": ["a", "b"]}]}]
        }))
        .unwrap();
        let c = ClassInfo::new(sc).unwrap();
        let l = |z: &str| Labels::from([("zone".to_string(), z.to_string())]);
        assert!(c.topology_allows(&l("a")) && !c.topology_allows(&l("c")));
        assert!(!c.topology_allows(&Labels::new()));
    }
}
