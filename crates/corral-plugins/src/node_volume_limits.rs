//! NodeVolumeLimits: CSI attach limits (kube-scheduler's `nodevolumelimits`
//! CSILimits).
//!
//! The node's limits are its CSINode drivers' `allocatable.count`. The pod's
//! attachable volumes are its claims (PVC and generic ephemeral volumes) resolved
//! to (CSI driver, volume handle): a bound PV's CSI source; an in-tree PV or inline
//! volume of a plugin migrated to CSI on this node (CSINode's
//! `storage.alpha.kubernetes.io/migrated-plugins`) under the CSI driver it
//! migrates to; an unbound claim (or a claim whose PV is missing) by its
//! StorageClass' provisioner and a per-claim handle. The node's existing pods'
//! volumes are counted the same way, each unique volume once; a volume the node
//! already has is not counted again. VolumeAttachments of the node (by
//! `spec.nodeName`) whose PV is a CSI volume count as attached under their
//! attacher, unless a pod's volume already counted them. Per driver, attached +
//! new > limit is Unschedulable (preemption can free attachments).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Volume;

use crate::framework::{
    CycleState, FilterPlugin, Plugin, PreFilterPlugin, PreFilterResult, Status,
};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};
use crate::volumes::{CsiNodeInfo, PvcInfo, VolumeState, migrated_driver};

pub const NAME: &str = "NodeVolumeLimits";
/// kube-scheduler's reason.
pub const ERR_REASON_MAX_VOLUME_COUNT_EXCEEDED: &str = "node(s) exceed max volume count";

#[derive(Debug, Default)]
pub struct NodeVolumeLimits;

crate::impl_plugin!(NodeVolumeLimits, NAME, pre_filter, filter);

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    match args {
        None | Some(serde_json::Value::Null) => Ok(Arc::new(NodeVolumeLimits)),
        Some(serde_json::Value::Object(m))
            if m.keys().all(|k| k == "apiVersion" || k == "kind") =>
        {
            Ok(Arc::new(NodeVolumeLimits))
        }
        Some(_) => Err("this plugin takes no args".into()),
    }
}

/// The in-tree plugin and volume identity of a migratable inline volume.
fn inline_migratable(v: &Volume) -> Option<(&'static str, String)> {
    if let Some(s) = &v.aws_elastic_block_store {
        return Some(("kubernetes.io/aws-ebs", s.volume_id.clone()));
    }
    if let Some(s) = &v.gce_persistent_disk {
        return Some(("kubernetes.io/gce-pd", s.pd_name.clone()));
    }
    if let Some(s) = &v.azure_disk {
        return Some(("kubernetes.io/azure-disk", s.disk_uri.clone()));
    }
    if let Some(s) = &v.azure_file {
        return Some(("kubernetes.io/azure-file", s.share_name.clone()));
    }
    if let Some(s) = &v.cinder {
        return Some(("kubernetes.io/cinder", s.volume_id.clone()));
    }
    if let Some(s) = &v.vsphere_volume {
        return Some(("kubernetes.io/vsphere-volume", s.volume_path.clone()));
    }
    if let Some(s) = &v.portworx_volume {
        return Some(("kubernetes.io/portworx-volume", s.volume_id.clone()));
    }
    None
}

fn migration_on(csi: Option<&CsiNodeInfo>, plugin: &str) -> bool {
    csi.is_some_and(|c| c.is_migrated(plugin))
}

/// `getCSIDriverInfoFromSC`.
fn driver_from_class(
    vols: &VolumeState,
    csi: Option<&CsiNodeInfo>,
    c: &PvcInfo,
) -> Option<(String, String)> {
    if c.class.is_empty() {
        return None;
    }
    let sc = vols.class(&c.class)?;
    let mut driver = sc.provisioner.clone();
    if let Some(d) = migrated_driver(&sc.provisioner) {
        if !migration_on(csi, &sc.provisioner) {
            return None;
        }
        driver = d.to_string();
    }
    Some((driver, format!("{}-{}", c.namespace, c.name)))
}

/// `getCSIDriverInfo`: (driver, volume handle) of a claim, if it counts.
fn driver_info(
    vols: &VolumeState,
    csi: Option<&CsiNodeInfo>,
    c: &PvcInfo,
) -> Option<(String, String)> {
    if c.volume_name.is_empty() {
        return driver_from_class(vols, csi, c);
    }
    let Some(pv) = vols.pv(&c.volume_name) else {
        return driver_from_class(vols, csi, c);
    };
    let spec = pv.pv.spec.as_ref()?;
    if let Some(s) = &spec.csi {
        return Some((s.driver.clone(), s.volume_handle.clone()));
    }
    let (plugin, id) = if let Some(s) = &spec.aws_elastic_block_store {
        ("kubernetes.io/aws-ebs", s.volume_id.clone())
    } else if let Some(s) = &spec.gce_persistent_disk {
        ("kubernetes.io/gce-pd", s.pd_name.clone())
    } else if let Some(s) = &spec.azure_disk {
        ("kubernetes.io/azure-disk", s.disk_uri.clone())
    } else if let Some(s) = &spec.azure_file {
        ("kubernetes.io/azure-file", s.share_name.clone())
    } else if let Some(s) = &spec.cinder {
        ("kubernetes.io/cinder", s.volume_id.clone())
    } else if let Some(s) = &spec.vsphere_volume {
        ("kubernetes.io/vsphere-volume", s.volume_path.clone())
    } else if let Some(s) = &spec.portworx_volume {
        ("kubernetes.io/portworx-volume", s.volume_id.clone())
    } else {
        return None;
    };
    if !migration_on(csi, plugin) {
        return None;
    }
    Some((migrated_driver(plugin)?.to_string(), id))
}

/// `filterAttachableVolumes`: unique volume name (`driver/handle`) → driver.
fn attachable(
    vols: &VolumeState,
    csi: Option<&CsiNodeInfo>,
    pod: &PodInfo,
    new_pod: bool,
    out: &mut HashMap<String, String>,
) -> Result<(), Status> {
    for v in crate::volumes::pod_volumes(&pod.pod) {
        let Some(claim) = crate::volumes::claim_name(&pod.name, v) else {
            if let Some((plugin, id)) = inline_migratable(v)
                && migration_on(csi, plugin)
                && let Some(d) = migrated_driver(plugin)
            {
                out.insert(format!("{d}/{id}"), d.to_string());
            }
            continue;
        };
        if claim.is_empty() {
            return Err(Status::error("PersistentVolumeClaim had no name"));
        }
        let Some(c) = vols.pvc(&pod.namespace, &claim) else {
            if new_pod {
                return Err(Status::unresolvable(format!(
                    "looking up PVC {}/{claim}: {}",
                    pod.namespace,
                    crate::volume_binding::pvc_not_found(&claim)
                )));
            }
            continue;
        };
        if let Some((driver, handle)) = driver_info(vols, csi, c)
            && !driver.is_empty()
            && !handle.is_empty()
        {
            out.insert(format!("{driver}/{handle}"), driver);
        }
    }
    Ok(())
}

impl PreFilterPlugin for NodeVolumeLimits {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        let counts = crate::volumes::pod_volumes(&pod.pod).iter().any(|v| {
            v.persistent_volume_claim.is_some()
                || v.ephemeral.is_some()
                || inline_migratable(v).is_some()
        });
        (
            None,
            if counts {
                Status::success()
            } else {
                Status::skip()
            },
        )
    }

    /// Skips by the pod alone (see `PreFilterPlugin::skip_depends_on_pods`).
    fn skip_depends_on_pods(&self) -> bool {
        false
    }
}

impl FilterPlugin for NodeVolumeLimits {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, snap: &Snapshot) -> Status {
        if crate::volumes::pod_volumes(&pod.pod).is_empty() {
            return Status::success();
        }
        let vols = snap.volumes();
        let csi = vols.csi_node(&node.name).map(|c| &**c);
        let mut new = HashMap::new();
        if let Err(st) = attachable(vols, csi, pod, true, &mut new) {
            return st;
        }
        if new.is_empty() {
            return Status::success();
        }
        let Some(limits) = csi.map(|c| &c.limits).filter(|l| !l.is_empty()) else {
            return Status::success();
        };
        let mut attached = HashMap::new();
        for p in &node.pods {
            if let Err(st) = attachable(vols, csi, p, false, &mut attached) {
                return st;
            }
        }
        // `getNodeVolumeAttachmentInfo`: volumes the attach/detach controller has
        // attached (or is attaching) to the node count too — a pod may be gone or
        // not yet placed — unless a pod's volume already counted them.
        for va in vols.objects().node_attachments(&node.name) {
            let Some(pv) = va.pv.as_deref().and_then(|n| vols.pv(n)) else {
                continue;
            };
            let Some(source) = pv.pv.spec.as_ref().and_then(|s| s.csi.as_ref()) else {
                continue;
            };
            if va.attacher.is_empty() {
                continue;
            }
            attached
                .entry(format!("{}/{}", va.attacher, source.volume_handle))
                .or_insert_with(|| va.attacher.clone());
        }
        let mut attached_count: BTreeMap<&str, i64> = BTreeMap::new();
        for (unique, driver) in &attached {
            new.remove(unique);
            *attached_count.entry(driver).or_default() += 1;
        }
        let mut new_count: BTreeMap<&str, i64> = BTreeMap::new();
        for driver in new.values() {
            *new_count.entry(driver).or_default() += 1;
        }
        for (driver, n) in new_count {
            if let Some(limit) = limits.get(driver)
                && attached_count.get(driver).copied().unwrap_or(0) + n > *limit
            {
                return Status::unschedulable(ERR_REASON_MAX_VOLUME_COUNT_EXCEEDED);
            }
        }
        Status::success()
    }
}

#[cfg(test)]
#[path = "node_volume_limits_tests.rs"]
mod tests;
