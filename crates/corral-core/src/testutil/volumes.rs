//! Test builders for the volume plugins' tables (corral-plugins) and the
//! engine's volume tests: real k8s-openapi objects (built
//! as JSON and decoded) of the six volume kinds, pods with claims, and snapshots.

use serde_json::{Value, json};

use crate::snapshot::{NodeInfo, PodInfo, Snapshot};
use crate::volumes::VolumeObject;

pub fn decode(kind: &str, v: Value) -> VolumeObject {
    VolumeObject::decode(kind, v).unwrap().unwrap()
}

/// `makePV(name, class)`.
pub struct Pv(pub Value);

pub fn pv(name: &str, class: &str) -> Pv {
    Pv(json!({"metadata": {"name": name}, "spec": {"storageClassName": class}, "status": {}}))
}

impl Pv {
    pub fn phase(mut self, p: &str) -> Self {
        self.0["status"]["phase"] = json!(p);
        self
    }
    pub fn capacity(mut self, q: &str) -> Self {
        self.0["spec"]["capacity"] = json!({"storage": q});
        self
    }
    pub fn modes(mut self, m: &[&str]) -> Self {
        self.0["spec"]["accessModes"] = json!(m);
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0["metadata"]["labels"][k] = json!(v);
        self
    }
    /// `withNodeAffinity(map[key][]values)`: one term, one In requirement per key.
    pub fn affinity(mut self, reqs: &[(&str, &[&str])]) -> Self {
        let exprs: Vec<Value> = reqs
            .iter()
            .map(|(k, v)| json!({"key": k, "operator": "In", "values": v}))
            .collect();
        self.0["spec"]["nodeAffinity"] =
            json!({"required": {"nodeSelectorTerms": [{"matchExpressions": exprs}]}});
        self
    }
    pub fn claim(mut self, ns: &str, name: &str) -> Self {
        self.0["spec"]["claimRef"] = json!({"namespace": ns, "name": name});
        self
    }
    pub fn spec(mut self, k: &str, v: Value) -> Self {
        self.0["spec"][k] = v;
        self
    }
    pub fn obj(self) -> VolumeObject {
        decode("PersistentVolume", self.0)
    }
}

/// `makePVC(name, class)` in namespace `default`.
pub struct Pvc(pub Value);

pub fn pvc(name: &str, class: &str) -> Pvc {
    let mut v = json!({"metadata": {"name": name, "namespace": "default"}, "spec": {}});
    if !class.is_empty() {
        v["spec"]["storageClassName"] = json!(class);
    }
    Pvc(v)
}

impl Pvc {
    /// `withBoundPV`: volume name + bind-completed annotation.
    pub fn bound(mut self, pv: &str) -> Self {
        self.0["spec"]["volumeName"] = json!(pv);
        self.0["metadata"]["annotations"][crate::volumes::ANN_BIND_COMPLETED] = json!("yes");
        self
    }
    pub fn volume_name(mut self, pv: &str) -> Self {
        self.0["spec"]["volumeName"] = json!(pv);
        self
    }
    pub fn phase(mut self, p: &str) -> Self {
        self.0["status"]["phase"] = json!(p);
        self
    }
    pub fn request(mut self, q: &str) -> Self {
        self.0["spec"]["resources"] = json!({"requests": {"storage": q}});
        self
    }
    pub fn modes(mut self, m: &[&str]) -> Self {
        self.0["spec"]["accessModes"] = json!(m);
        self
    }
    pub fn selected_node(mut self, n: &str) -> Self {
        self.0["metadata"]["annotations"][crate::volumes::ANN_SELECTED_NODE] = json!(n);
        self
    }
    pub fn spec(mut self, k: &str, v: Value) -> Self {
        self.0["spec"][k] = v;
        self
    }
    pub fn obj(self) -> VolumeObject {
        decode("PersistentVolumeClaim", self.0)
    }
}

/// A StorageClass; `mode` None leaves `volumeBindingMode` unset.
pub fn sc(name: &str, mode: Option<&str>, provisioner: &str) -> Value {
    let mut v = json!({"metadata": {"name": name}, "provisioner": provisioner});
    if let Some(m) = mode {
        v["volumeBindingMode"] = json!(m);
    }
    v
}

pub fn class(v: Value) -> VolumeObject {
    decode("StorageClass", v)
}

pub fn csi_node(name: &str, drivers: &[(&str, Option<i32>)], migrated: &[&str]) -> VolumeObject {
    let d: Vec<Value> = drivers
        .iter()
        .map(|(n, c)| match c {
            Some(c) => json!({"name": n, "nodeID": name, "allocatable": {"count": c}}),
            None => json!({"name": n, "nodeID": name}),
        })
        .collect();
    let mut v = json!({"metadata": {"name": name}, "spec": {"drivers": d}});
    if !migrated.is_empty() {
        v["metadata"]["annotations"][crate::volumes::ANN_MIGRATED_PLUGINS] =
            json!(migrated.join(","));
    }
    decode("CSINode", v)
}

pub fn csi_driver(name: &str, storage_capacity: bool) -> VolumeObject {
    decode(
        "CSIDriver",
        json!({"metadata": {"name": name}, "spec": {"storageCapacity": storage_capacity}}),
    )
}

pub fn capacity(
    name: &str,
    class: &str,
    topology: Option<(&str, &str)>,
    cap: &str,
) -> VolumeObject {
    let mut v = json!({"metadata": {"name": name, "namespace": "kube-system"},
        "storageClassName": class, "capacity": cap});
    if let Some((k, val)) = topology {
        v["nodeTopology"] = json!({"matchLabels": {k: val}});
    }
    decode("CSIStorageCapacity", v)
}

/// A pod in `default` with the given volumes (JSON `spec.volumes` entries).
pub fn pod_with(name: &str, volumes: Vec<Value>) -> PodInfo {
    let mut b = crate::testutil::pod(name);
    if !volumes.is_empty() {
        b = b.spec("volumes", json!(volumes));
    }
    b.info()
}

/// A `persistentVolumeClaim` volume.
pub fn claim_vol(claim: &str) -> Value {
    json!({"name": format!("v-{claim}"), "persistentVolumeClaim": {"claimName": claim}})
}

/// A pod using the given claims.
pub fn pod(name: &str, claims: &[&str]) -> PodInfo {
    pod_with(name, claims.iter().map(|c| claim_vol(c)).collect())
}

/// A node with labels.
pub fn node(name: &str, labels: &[(&str, &str)]) -> NodeInfo {
    let mut b = crate::testutil::node(name);
    for (k, v) in labels {
        b = b.label(k, v);
    }
    b.info()
}

pub fn snapshot(nodes: Vec<NodeInfo>, objs: Vec<VolumeObject>) -> Snapshot {
    let mut s = Snapshot::new();
    s.add_nodes(nodes);
    let v = s.volumes_mut();
    for o in objs {
        v.upsert(o);
    }
    s
}
