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

mod objects;
mod pods;
mod state;
#[cfg(test)]
mod tests;

pub use objects::*;
pub use pods::*;
pub use state::*;

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
