//! A simple PV controller and dynamic provisioner, for tests of volume-aware
//! scheduling (`Options::volume_controller`). After every write to pods, PVs or
//! PVCs (and every `insert`) the server reconciles, synchronously:
//!
//! - **PV controller**: a PV whose `spec.claimRef` names an existing claim that is
//!   not bound yet (the scheduler's static binding) binds it: the claim gets
//!   `spec.volumeName`, `pv.kubernetes.io/bind-completed` and phase `Bound`, the PV
//!   phase `Bound`. A PV without claimRef or phase becomes `Available`.
//! - **Provisioner**: an unbound claim with `volume.kubernetes.io/selected-node`
//!   whose StorageClass' provisioner is [`VolumeController::provisioner`] gets a new
//!   PV `pvc-<claim uid>` with the claim's size, class and access modes, a CSI
//!   source of that driver and node affinity `kubernetes.io/hostname In [<the
//!   node's hostname label>]`, bound as above. With `failing` it never provisions
//!   (the claim stays pending).

use serde_json::{Value, json};

use super::{RESOURCES, Shared, Store, create, key, store_update};

/// The test server's PV controller / provisioner settings.
#[derive(Debug, Clone)]
pub struct VolumeController {
    /// `StorageClass.provisioner` served by the built-in provisioner.
    pub provisioner: String,
    /// A failing provisioner: claims for it are never provisioned.
    pub failing: bool,
}

fn index(group: &str, plural: &str) -> usize {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.plural == plural)
        .expect("served resource")
}

const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

fn claim_bound(c: &Value) -> bool {
    c["spec"]["volumeName"]
        .as_str()
        .is_some_and(|v| !v.is_empty())
        && c["metadata"]["annotations"][BIND_COMPLETED].is_string()
}

/// Binds claim `ck` (`ns/name`) to PV `pv`.
fn bind(shared: &Shared, st: &mut Store, ck: &str, pv: &str) {
    let (pv_i, pvc_i) = (
        index("", "persistentvolumes"),
        index("", "persistentvolumeclaims"),
    );
    if let Some(mut c) = st.objects[pvc_i].get(ck).cloned() {
        c["spec"]["volumeName"] = json!(pv);
        c["metadata"]["annotations"][BIND_COMPLETED] = json!("yes");
        c["status"]["phase"] = json!("Bound");
        let ns = c["metadata"]["namespace"].as_str().map(str::to_string);
        let _ = store_update(shared, st, pvc_i, ns.as_deref(), ck.to_string(), c);
    }
    if let Some(mut v) = st.objects[pv_i].get(pv).cloned()
        && v["status"]["phase"] != "Bound"
    {
        v["status"]["phase"] = json!("Bound");
        let _ = store_update(shared, st, pv_i, None, pv.to_string(), v);
    }
}

pub(crate) fn reconcile(shared: &Shared, st: &mut Store, vc: &VolumeController) {
    let (pv_i, pvc_i) = (
        index("", "persistentvolumes"),
        index("", "persistentvolumeclaims"),
    );
    let (sc_i, node_i) = (
        index("storage.k8s.io", "storageclasses"),
        index("", "nodes"),
    );
    // PV controller.
    let pvs: Vec<(String, Value)> = st.objects[pv_i]
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (name, pv) in pvs {
        let r = &pv["spec"]["claimRef"];
        match (r["namespace"].as_str(), r["name"].as_str()) {
            (Some(ns), Some(cn)) => {
                let ck = key(Some(ns), cn);
                let Some(c) = st.objects[pvc_i].get(&ck) else {
                    continue;
                };
                let free = c["spec"]["volumeName"]
                    .as_str()
                    .is_none_or(|v| v.is_empty() || v == name);
                if free && !claim_bound(c) {
                    bind(shared, st, &ck, &name);
                }
            }
            _ => {
                if pv["status"]["phase"].as_str().is_none_or(str::is_empty) {
                    let mut v = pv.clone();
                    v["status"]["phase"] = json!("Available");
                    let _ = store_update(shared, st, pv_i, None, name, v);
                }
            }
        }
    }
    // Provisioner.
    if vc.failing {
        return;
    }
    let claims: Vec<(String, Value)> = st.objects[pvc_i]
        .iter()
        .filter(|(_, c)| {
            !claim_bound(c)
                && c["spec"]["volumeName"].as_str().is_none_or(str::is_empty)
                && c["metadata"]["annotations"][SELECTED_NODE].is_string()
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (ck, c) in claims {
        let class = c["spec"]["storageClassName"].as_str().unwrap_or("");
        let Some(sc) = st.objects[sc_i].get(class) else {
            continue;
        };
        if sc["provisioner"].as_str() != Some(vc.provisioner.as_str()) {
            continue;
        }
        let node = c["metadata"]["annotations"][SELECTED_NODE]
            .as_str()
            .unwrap_or("");
        let Some(n) = st.objects[node_i].get(node) else {
            continue;
        };
        let host = n["metadata"]["labels"]["kubernetes.io/hostname"]
            .as_str()
            .unwrap_or(node)
            .to_string();
        let uid = c["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let pv_name = format!("pvc-{uid}");
        let pv = json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": vc.provisioner}},
            "spec": {
                "capacity": {"storage": c["spec"]["resources"]["requests"]["storage"].clone()},
                "accessModes": c["spec"]["accessModes"].clone(),
                "storageClassName": class,
                "persistentVolumeReclaimPolicy": "Delete",
                "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                    "namespace": c["metadata"]["namespace"].clone(), "name": c["metadata"]["name"].clone(), "uid": uid},
                "csi": {"driver": vc.provisioner, "volumeHandle": pv_name},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}}
            },
            "status": {"phase": "Bound"}
        });
        if create(shared, st, pv_i, None, pv, false).is_ok() {
            bind(shared, st, &ck, &pv_name);
        }
    }
}
