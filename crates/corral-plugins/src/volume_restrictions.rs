//! VolumeRestrictions: conflicting inline disks on the node and ReadWriteOncePod
//! claims in use anywhere (kube-scheduler's `volumerestrictions`).
//!
//! PreFilter skips pods without GCE PD, AWS EBS, RBD, iSCSI or PVC volumes; a
//! missing claim is UnschedulableAndUnresolvable; pods whose only such volumes are
//! claims none of which is ReadWriteOncePod skip too (kube runs a Filter that can
//! only succeed for them); it counts the pod's
//! ReadWriteOncePod claims already used by a placed pod (kept current by the
//! PreFilter extensions as pods are added/removed, so a batch cannot place two
//! users). Filter: the same GCE PD (unless both read-only), EBS volume ID, RBD image
//! (overlapping monitors, same pool/image, unless both read-only) or iSCSI IQN
//! (unless both read-only) on the node is Unschedulable ("no available disk"); a
//! ReadWriteOncePod claim in use is Unschedulable (preemption can free it).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Volume;

use crate::framework::{
    CycleState, FilterPlugin, Plugin, PreFilterExtensions, PreFilterPlugin, PreFilterResult, Status,
};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "VolumeRestrictions";
/// kube-scheduler's reasons.
pub const ERR_REASON_DISK_CONFLICT: &str = "node(s) had no available disk";
pub const ERR_REASON_RWOP_CONFLICT: &str =
    "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode";
const STATE_KEY: &str = "PreFilterVolumeRestrictions";

#[derive(Debug, Default)]
pub struct VolumeRestrictions;

crate::impl_plugin!(VolumeRestrictions, NAME, pre_filter, filter);

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    match args {
        None | Some(serde_json::Value::Null) => Ok(Arc::new(VolumeRestrictions)),
        Some(serde_json::Value::Object(m))
            if m.keys().all(|k| k == "apiVersion" || k == "kind") =>
        {
            Ok(Arc::new(VolumeRestrictions))
        }
        Some(_) => Err("this plugin takes no args".into()),
    }
}

#[derive(Debug, Clone, Default)]
struct State {
    /// The pod's ReadWriteOncePod claims (`namespace/name`).
    rwop: Vec<String>,
    /// Placed pods' references to those claims.
    conflicts: i64,
}

fn needs_check(v: &Volume) -> bool {
    v.gce_persistent_disk.is_some()
        || v.aws_elastic_block_store.is_some()
        || v.rbd.is_some()
        || v.iscsi.is_some()
        || v.persistent_volume_claim.is_some()
}

/// `isVolumeConflict`.
fn conflicts(v: &Volume, other: &Volume) -> bool {
    if let (Some(a), Some(b)) = (&v.gce_persistent_disk, &other.gce_persistent_disk)
        && a.pd_name == b.pd_name
        && !(a.read_only == Some(true) && b.read_only == Some(true))
    {
        return true;
    }
    if let (Some(a), Some(b)) = (&v.aws_elastic_block_store, &other.aws_elastic_block_store)
        && a.volume_id == b.volume_id
    {
        return true;
    }
    if let (Some(a), Some(b)) = (&v.iscsi, &other.iscsi)
        && a.iqn == b.iqn
        && !(a.read_only == Some(true) && b.read_only == Some(true))
    {
        return true;
    }
    if let (Some(a), Some(b)) = (&v.rbd, &other.rbd) {
        let pool = |p: &Option<String>| p.clone().unwrap_or_else(|| "rbd".into());
        if a.monitors.iter().any(|m| b.monitors.contains(m))
            && pool(&a.pool) == pool(&b.pool)
            && a.image == b.image
            && !(a.read_only == Some(true) && b.read_only == Some(true))
        {
            return true;
        }
    }
    false
}

/// References of `p` to the claims in `keys` (each volume once).
fn refs(p: &PodInfo, keys: &[String]) -> i64 {
    crate::volumes::pod_volumes(&p.pod)
        .iter()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .filter(|c| keys.contains(&corral_api::pod::key(&p.namespace, &c.claim_name)))
        .count() as i64
}

impl PreFilterPlugin for VolumeRestrictions {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        let vols = crate::volumes::pod_volumes(&pod.pod);
        if !vols.iter().any(needs_check) {
            return (None, Status::skip());
        }
        let mut st = State::default();
        for v in vols {
            let Some(c) = &v.persistent_volume_claim else {
                continue;
            };
            let Some(pvc) = snap.volumes().pvc(&pod.namespace, &c.claim_name) else {
                return (
                    None,
                    Status::unresolvable(crate::volume_binding::pvc_not_found(&c.claim_name)),
                );
            };
            if pvc.read_write_once_pod() && !st.rwop.contains(&pvc.key) {
                st.rwop.push(pvc.key.clone());
            }
        }
        if st.rwop.is_empty()
            && vols
                .iter()
                .all(|v| v.persistent_volume_claim.is_some() || !needs_check(v))
        {
            // Only claims, none ReadWriteOncePod: the Filter could only succeed, so
            // it is skipped (and, being cross-node, not re-run at commit).
            return (None, Status::skip());
        }
        if !st.rwop.is_empty() {
            // `IsPVCUsedByPods`: each claim counts once however many pods use it.
            let mut used: Vec<&String> = Vec::new();
            for n in snap.nodes() {
                for p in &n.pods {
                    if p.key == pod.key {
                        continue;
                    }
                    for k in &st.rwop {
                        if !used.contains(&k) && refs(p, std::slice::from_ref(k)) > 0 {
                            used.push(k);
                        }
                    }
                }
            }
            st.conflicts = used.len() as i64;
        }
        state.write(STATE_KEY, st);
        (None, Status::success())
    }

    fn extensions(&self) -> Option<&dyn PreFilterExtensions> {
        Some(self)
    }

    /// Skips by the pod alone (see `PreFilterPlugin::skip_depends_on_pods`).
    fn skip_depends_on_pods(&self) -> bool {
        false
    }
}

impl PreFilterExtensions for VolumeRestrictions {
    fn add_pod(
        &self,
        state: &mut CycleState,
        _: &PodInfo,
        added: &PodInfo,
        _: &NodeInfo,
        _: &Snapshot,
    ) -> Status {
        if let Some(s) = state.read_mut::<State>(STATE_KEY)
            && !s.rwop.is_empty()
        {
            s.conflicts += refs(added, &s.rwop);
        }
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        _: &PodInfo,
        removed: &PodInfo,
        _: &NodeInfo,
        _: &Snapshot,
    ) -> Status {
        if let Some(s) = state.read_mut::<State>(STATE_KEY)
            && !s.rwop.is_empty()
        {
            s.conflicts -= refs(removed, &s.rwop);
        }
        Status::success()
    }
}

impl FilterPlugin for VolumeRestrictions {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Status {
        for v in crate::volumes::pod_volumes(&pod.pod) {
            // Only inline disks conflict on the node (claims are checked below).
            if v.persistent_volume_claim.is_some() || !needs_check(v) {
                continue;
            }
            for p in &node.pods {
                if crate::volumes::pod_volumes(&p.pod)
                    .iter()
                    .any(|e| conflicts(v, e))
                {
                    return Status::unschedulable(ERR_REASON_DISK_CONFLICT);
                }
            }
        }
        if state
            .read::<State>(STATE_KEY)
            .is_some_and(|s| s.conflicts > 0)
        {
            return Status::unschedulable(ERR_REASON_RWOP_CONFLICT);
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    //! kube-scheduler's `volumerestrictions/volume_restrictions_test.go`
    //! (TestGCEDiskConflicts, TestAWSDiskConflicts, TestRBDDiskConflicts,
    //! TestISCSIDiskConflicts, TestAccessModeConflicts) as data.
    use serde_json::{Value, json};

    use super::*;
    use crate::framework::Code;
    use crate::testutil::volumes::*;

    fn with_vol(name: &str, v: Value) -> PodInfo {
        pod_with(name, vec![v])
    }

    /// Filter of `new` on a node running `existing` (no claims involved).
    fn disk(existing: Option<PodInfo>, new: &PodInfo) -> Status {
        let mut snap = snapshot(vec![node("n", &[])], vec![]);
        if let Some(e) = existing {
            snap.add_pod(Arc::new(e), "n");
        }
        let mut st = CycleState::new();
        let (_, pre) = VolumeRestrictions.pre_filter(&mut st, new, &snap);
        if pre.is_skip() {
            return Status::success();
        }
        VolumeRestrictions.filter(&st, new, &snap.nodes()[0], &snap)
    }

    fn assert_conflict(kind: &str, a: Value, b: Value) {
        let va = with_vol(
            "a",
            json!({"name": "v"})
                .as_object()
                .cloned()
                .map(|mut m| {
                    m.extend(a.as_object().unwrap().clone());
                    Value::Object(m)
                })
                .unwrap(),
        );
        let vb = with_vol(
            "b",
            json!({"name": "v"})
                .as_object()
                .cloned()
                .map(|mut m| {
                    m.extend(b.as_object().unwrap().clone());
                    Value::Object(m)
                })
                .unwrap(),
        );
        let empty = with_vol("e", json!({"name": "e", "emptyDir": {}}));
        // nothing, empty pod, same volume, different volume
        assert!(disk(None, &va).is_success(), "{kind}: nothing");
        assert!(disk(Some(empty), &va).is_success(), "{kind}: one state");
        let st = disk(Some(va.clone()), &va);
        assert_eq!(st.code, Code::Unschedulable, "{kind}: same state");
        assert_eq!(st.reasons, [ERR_REASON_DISK_CONFLICT]);
        assert!(disk(Some(vb), &va).is_success(), "{kind}: different state");
    }

    #[test]
    fn kube_disk_conflicts() {
        assert_conflict(
            "GCE",
            json!({"gcePersistentDisk": {"pdName": "foo"}}),
            json!({"gcePersistentDisk": {"pdName": "bar"}}),
        );
        assert_conflict(
            "AWS",
            json!({"awsElasticBlockStore": {"volumeID": "foo"}}),
            json!({"awsElasticBlockStore": {"volumeID": "bar"}}),
        );
        assert_conflict(
            "RBD",
            json!({"rbd": {"monitors": ["a", "b"], "pool": "foo", "image": "bar", "fsType": "ext4"}}),
            json!({"rbd": {"monitors": ["c", "d"], "pool": "foo", "image": "bar", "fsType": "ext4"}}),
        );
        assert_conflict(
            "ISCSI",
            json!({"iscsi": {"targetPortal": "127.0.0.1:3260", "iqn": "iqn.2016-12.server:storage.target01", "lun": 0, "fsType": "ext4"}}),
            json!({"iscsi": {"targetPortal": "127.0.0.1:3260", "iqn": "iqn.2017-12.server:storage.target01", "lun": 0, "fsType": "ext4"}}),
        );
        // Read-only on both sides does not conflict (GCE).
        let ro = with_vol(
            "ro",
            json!({"name": "v", "gcePersistentDisk": {"pdName": "foo", "readOnly": true}}),
        );
        assert!(disk(Some(ro.clone()), &ro).is_success());
    }

    #[test]
    fn kube_access_mode_conflicts() {
        let rwop = |n: &str| pvc(n, "").bound("pv").modes(&["ReadWriteOncePod"]).obj();
        let objs = || vec![rwop("claim-with-rwop-1"), rwop("claim-with-rwop-2")];
        let p1 = || pod("pod-1", &["claim-with-rwop-1"]);
        let p2 = || pod("pod-2", &["claim-with-rwop-2"]);
        let snap = |placed: Vec<PodInfo>| {
            let mut s = snapshot(vec![node("node-1", &[])], objs());
            for p in placed {
                s.add_pod(Arc::new(p), "node-1");
            }
            s
        };
        let prefilter = |p: &PodInfo, s: &Snapshot| {
            let mut st = CycleState::new();
            let (_, r) = VolumeRestrictions.pre_filter(&mut st, p, s);
            (st, r)
        };
        // nothing
        let s = snap(vec![]);
        let (st, r) = prefilter(&p1(), &s);
        assert!(r.is_success());
        assert!(
            VolumeRestrictions
                .filter(&st, &p1(), &s.nodes()[0], &s)
                .is_success()
        );
        // failed to get PVC
        let lonely = pod("pod-x", &["claim-x"]);
        let (_, r) = prefilter(&lonely, &s);
        assert_eq!(r.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(r.reasons, [r#"persistentvolumeclaim "claim-x" not found"#]);
        // no access mode conflict
        let s = snap(vec![p2()]);
        let (st, _) = prefilter(&p1(), &s);
        assert!(
            VolumeRestrictions
                .filter(&st, &p1(), &s.nodes()[0], &s)
                .is_success()
        );
        // access mode conflict, unschedulable
        let s = snap(vec![pod("pod-3", &["claim-with-rwop-1"])]);
        let (st, _) = prefilter(&p1(), &s);
        let f = VolumeRestrictions.filter(&st, &p1(), &s.nodes()[0], &s);
        assert_eq!(f.code, Code::Unschedulable);
        assert_eq!(f.reasons, [ERR_REASON_RWOP_CONFLICT]);
        // PreFilter extensions: a user added after PreFilter conflicts; removing it clears.
        let s = snap(vec![]);
        let (mut st, _) = prefilter(&p1(), &s);
        let user = pod("pod-3", &["claim-with-rwop-1"]);
        VolumeRestrictions.add_pod(&mut st, &p1(), &user, &s.nodes()[0], &s);
        assert!(
            !VolumeRestrictions
                .filter(&st, &p1(), &s.nodes()[0], &s)
                .is_success()
        );
        VolumeRestrictions.remove_pod(&mut st, &p1(), &user, &s.nodes()[0], &s);
        assert!(
            VolumeRestrictions
                .filter(&st, &p1(), &s.nodes()[0], &s)
                .is_success()
        );
    }

    #[test]
    fn pods_without_restricted_volumes_skip() {
        let p = with_vol("e", json!({"name": "e", "emptyDir": {}}));
        let (_, st) = VolumeRestrictions.pre_filter(&mut CycleState::new(), &p, &Snapshot::new());
        assert!(st.is_skip());
    }
}
