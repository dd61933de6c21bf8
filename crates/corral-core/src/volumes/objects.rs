//! The decoded volume objects (`*Info`) and their decoding from the API kinds.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, TopologySelectorTerm};
use k8s_openapi::api::storage::v1::{
    CSIDriver, CSINode, CSIStorageCapacity, StorageClass, VolumeAttachment,
};

use super::*;
use crate::labels::{Labels, NodeSelectorMatcher, Selector};
use crate::resources::FieldError;

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
