//! The volume objects of the snapshot, indexed, and the assume cache.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::*;

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
