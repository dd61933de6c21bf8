//! A pod's claims: names, volumes and the interchangeable-claims equivalence key.

use k8s_openapi::api::core::v1::{Pod, Volume};

use super::*;

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
