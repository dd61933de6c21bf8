//! Loading real Kubernetes objects from multi-document YAML/JSON files or
//! directories. Supported kinds are decoded into k8s-openapi types; unknown kinds are
//! skipped with one warning each; every error names file, document index, object and
//! field.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde::Deserialize;

use crate::labels::Labels;
use crate::snapshot::{NodeInfo, PodInfo};

/// Where an object came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    /// 1-based document index within the file.
    pub doc: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.doc)
    }
}

/// An input error: file, document, object and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Built-in priority classes.
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i32)] = &[
    ("system-cluster-critical", 2_000_000_000),
    ("system-node-critical", 2_000_001_000),
];

/// A raw document of a kind the core does not decode (for later layers, e.g.
/// PodGroups and Queues).
#[derive(Debug, Clone)]
pub struct RawObject {
    pub api_version: String,
    pub kind: String,
    pub value: serde_json::Value,
    pub origin: Origin,
}

/// Everything read from the inputs.
#[derive(Debug, Default)]
pub struct ClusterInput {
    pub nodes: Vec<(NodeInfo, Origin)>,
    /// All pods in input order (bound or not); priorities resolved.
    pub pods: Vec<(PodInfo, Origin)>,
    pub namespaces: HashMap<String, Labels>,
    pub priority_classes: HashMap<String, i32>,
    /// `preemptionPolicy` of the PriorityClasses that set one (`""` = the
    /// globalDefault class), copied to their pods like the Priority admission plugin.
    pub preemption_policies: HashMap<String, String>,
    /// NodeResourceTopology objects: node name, topology, where it was read.
    pub topologies: Vec<(String, crate::topology::NodeTopology, Origin)>,
    /// PersistentVolumes, PersistentVolumeClaims, StorageClasses, CSINodes,
    /// CSIDrivers and CSIStorageCapacities, decoded, in input order.
    pub volumes: Vec<(crate::volumes::VolumeObject, Origin)>,
    /// Documents of kinds the core does not decode, kept for extension layers.
    pub other: Vec<RawObject>,
    /// One line per skipped document.
    pub warnings: Vec<String>,
}

/// Kinds of documents (apiVersion, kind) the loader hands to extension layers
/// instead of warning about them.
pub type ExtraKinds<'a> = &'a [(&'a str, &'a str)];

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let md = std::fs::metadata(path)
        .map_err(|e| InputError(format!("{}: cannot read: {e}", path.display())))?;
    if md.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| InputError(format!("{}: cannot list directory: {e}", path.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            let is_dir = p.is_dir();
            let ext_ok = p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            if is_dir || ext_ok {
                collect_files(&p, out)?;
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Loads every file under `paths` (files or directories, recursively, sorted).
pub fn load_paths(paths: &[PathBuf], extra: ExtraKinds<'_>) -> Result<ClusterInput, InputError> {
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files)?;
    }
    let mut input = ClusterInput::default();
    let mut pending_pods = Vec::new();
    for f in &files {
        let text = read_limited(f, corral_limits::MAX_MANIFEST_BYTES)
            .map_err(|e| InputError(format!("{}: {e}", f.display())))?;
        load_text(
            &text,
            &f.display().to_string(),
            extra,
            &mut input,
            &mut pending_pods,
        )?;
    }
    finish(input, pending_pods)
}

/// Loads documents from one text (used for the built-in example and tests).
pub fn load_str(text: &str, name: &str, extra: ExtraKinds<'_>) -> Result<ClusterInput, InputError> {
    let mut input = ClusterInput::default();
    let mut pods = Vec::new();
    load_text(text, name, extra, &mut input, &mut pods)?;
    finish(input, pods)
}

/// Builds the input from in-memory objects (benchmarks, integration layers).
pub fn from_objects(
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    namespaces: Vec<Namespace>,
    priority_classes: Vec<PriorityClass>,
) -> Result<ClusterInput, InputError> {
    let mut input = ClusterInput::default();
    let mut pending = Vec::new();
    let origin = |doc| Origin {
        file: "<memory>".into(),
        doc,
    };
    for (i, v) in namespaces.into_iter().map(serde_json::to_value).enumerate() {
        let v = v.map_err(|e| InputError(e.to_string()))?;
        add_value(v, &origin(i + 1), &[], &mut input, &mut pending)?;
    }
    for (i, pc) in priority_classes
        .into_iter()
        .map(serde_json::to_value)
        .enumerate()
    {
        let v = pc.map_err(|e| InputError(e.to_string()))?;
        add_value(v, &origin(i + 1), &[], &mut input, &mut pending)?;
    }
    for (i, n) in nodes.into_iter().enumerate() {
        let o = origin(i + 1);
        let name = n.metadata.name.clone().unwrap_or_default();
        let info = NodeInfo::new(n).map_err(|e| InputError(format!("{o} (Node {name}): {e}")))?;
        input.nodes.push((info, o));
    }
    for (i, p) in pods.into_iter().enumerate() {
        pending.push((p, origin(i + 1)));
    }
    finish(input, pending)
}

fn object_name(v: &serde_json::Value) -> String {
    let md = &v["metadata"];
    let name = md["name"].as_str().unwrap_or("<unnamed>");
    match md["namespace"].as_str() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// Reads a file of at most `max` bytes (the size is checked before reading).
pub fn read_limited(path: &Path, max: usize) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut text = String::new();
    // One byte more than the limit tells "too large" from "exactly at the limit".
    f.take(max as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() > max {
        return Err(format!("file is larger than the limit of {max} bytes"));
    }
    Ok(text)
}

fn load_text(
    text: &str,
    file: &str,
    extra: ExtraKinds<'_>,
    input: &mut ClusterInput,
    pods: &mut Vec<(Pod, Origin)>,
) -> Result<(), InputError> {
    // Linear pre-scan: deep nesting fails here in microseconds instead of in the
    // YAML parser's super-linear recursion.
    corral_limits::check_yaml(
        text,
        corral_limits::MAX_NESTING_DEPTH,
        corral_limits::MAX_MANIFEST_BYTES,
    )
    .map_err(|e| InputError(format!("{file}: {e}")))?;
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            file: file.to_string(),
            doc: i + 1,
        };
        let value = serde_json::Value::deserialize(de)
            .map_err(|e| InputError(format!("{origin}: malformed YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        add_value(value, &origin, extra, input, pods)?;
    }
    Ok(())
}

fn add_value(
    value: serde_json::Value,
    origin: &Origin,
    extra: ExtraKinds<'_>,
    input: &mut ClusterInput,
    pods: &mut Vec<(Pod, Origin)>,
) -> Result<(), InputError> {
    if !value.is_object() {
        return Err(InputError(format!(
            "{origin}: expected a Kubernetes object (a mapping with apiVersion and kind)"
        )));
    }
    let tm = TypeMeta::deserialize(&value)
        .map_err(|e| InputError(format!("{origin}: bad apiVersion/kind: {e}")))?;
    let (Some(api), Some(kind)) = (tm.api_version, tm.kind) else {
        return Err(InputError(format!(
            "{origin}: object {} has no apiVersion/kind",
            object_name(&value)
        )));
    };
    let name = object_name(&value);
    let decode_err =
        |e: serde_json::Error, k: &str| InputError(format!("{origin} ({k} {name}): {e}"));
    match (api.as_str(), kind.as_str()) {
        ("v1", "List") => {
            if let Some(items) = value.get("items").and_then(|v| v.as_array()) {
                for item in items.clone() {
                    add_value(item, origin, extra, input, pods)?;
                }
            }
        }
        ("v1", "Node") => {
            let n: Node = serde_json::from_value(value).map_err(|e| decode_err(e, "Node"))?;
            let info =
                NodeInfo::new(n).map_err(|e| InputError(format!("{origin} (Node {name}): {e}")))?;
            input.nodes.push((info, origin.clone()));
        }
        ("v1", "Pod") => {
            let p: Pod = serde_json::from_value(value).map_err(|e| decode_err(e, "Pod"))?;
            pods.push((p, origin.clone()));
        }
        ("v1", "Namespace") => {
            let ns: Namespace =
                serde_json::from_value(value).map_err(|e| decode_err(e, "Namespace"))?;
            let n = ns.metadata.name.clone().unwrap_or_default();
            if n.is_empty() {
                return Err(InputError(format!(
                    "{origin} (Namespace): metadata.name must be set"
                )));
            }
            let mut labels = ns.metadata.labels.clone().unwrap_or_default();
            labels.insert("kubernetes.io/metadata.name".into(), n.clone());
            input.namespaces.insert(n, labels);
        }
        ("scheduling.k8s.io/v1", "PriorityClass") => {
            let pc: PriorityClass =
                serde_json::from_value(value).map_err(|e| decode_err(e, "PriorityClass"))?;
            let n = pc.metadata.name.clone().unwrap_or_default();
            if pc.global_default == Some(true) {
                input.priority_classes.insert(String::new(), pc.value);
                if let Some(p) = &pc.preemption_policy {
                    input.preemption_policies.insert(String::new(), p.clone());
                }
            }
            if let Some(p) = &pc.preemption_policy {
                input.preemption_policies.insert(n.clone(), p.clone());
            }
            input.priority_classes.insert(n, pc.value);
        }
        (
            "topology.node.k8s.io/v1alpha2" | "topology.node.k8s.io/v1alpha1",
            "NodeResourceTopology",
        ) => {
            let (node, topo) = crate::topology::parse_nrt(&value)
                .map_err(|e| InputError(format!("{origin} (NodeResourceTopology {name}): {e}")))?;
            input.topologies.push((node, topo, origin.clone()));
        }
        (a, k)
            if crate::volumes::VOLUME_KINDS
                .iter()
                .any(|(va, vk)| *va == a && *vk == k) =>
        {
            let mut value = value;
            // API-server defaulting: a StorageClass without volumeBindingMode is
            // Immediate.
            if k == "StorageClass" && value.get("volumeBindingMode").is_none_or(|m| m.is_null()) {
                value["volumeBindingMode"] = serde_json::Value::from("Immediate");
            }
            let obj = crate::volumes::VolumeObject::decode(k, value)
                .map_err(|e| InputError(format!("{origin} ({k} {name}): {e}")))?;
            if let Some(o) = obj {
                input.volumes.push((o, origin.clone()));
            }
        }
        (a, k) if extra.iter().any(|(ea, ek)| *ea == a && *ek == k) => {
            input.other.push(RawObject {
                api_version: a.to_string(),
                kind: k.to_string(),
                value,
                origin: origin.clone(),
            });
        }
        (a, k) => input.warnings.push(format!(
            "warning: {origin}: skipping unsupported kind {k} ({a}) {name}"
        )),
    }
    Ok(())
}

fn finish(mut input: ClusterInput, pods: Vec<(Pod, Origin)>) -> Result<ClusterInput, InputError> {
    default_storage_class(&mut input)?;
    for (n, v) in SYSTEM_PRIORITY_CLASSES {
        input.priority_classes.entry(n.to_string()).or_insert(*v);
    }
    let mut seen = HashMap::new();
    for (i, (n, o)) in input.nodes.iter().enumerate() {
        if let Some(j) = seen.insert(n.name.clone(), i) {
            return Err(InputError(format!(
                "{o} (Node {}): duplicate node (first defined at {})",
                n.name, input.nodes[j].1
            )));
        }
    }
    let mut pod_seen: HashMap<String, usize> = HashMap::new();
    for (seq, (mut pod, origin)) in pods.into_iter().enumerate() {
        let name = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or("<unnamed>")
        );
        // What the API server would have done to a pod created through it.
        crate::defaulting::default_pod(&mut pod);
        if let Some(spec) = pod.spec.as_mut()
            && spec.preemption_policy.is_none()
        {
            let class = spec.priority_class_name.clone().unwrap_or_default();
            spec.preemption_policy = Some(
                input
                    .preemption_policies
                    .get(&class)
                    .cloned()
                    .unwrap_or_else(|| "PreemptLowerPriority".into()),
            );
        }
        if let Some(spec) = pod.spec.as_mut()
            && spec.priority.is_none()
        {
            let class = spec.priority_class_name.clone().unwrap_or_default();
            match input.priority_classes.get(&class) {
                Some(v) => spec.priority = Some(*v),
                None if class.is_empty() => spec.priority = Some(0),
                None => {
                    return Err(InputError(format!(
                        "{origin} (Pod {name}): field spec.priorityClassName: PriorityClass {class:?} not found"
                    )));
                }
            }
        }
        let info = PodInfo::new(pod, seq as u64)
            .map_err(|e| InputError(format!("{origin} (Pod {name}): {e}")))?;
        if let Some(j) = pod_seen.insert(info.key.clone(), seq) {
            return Err(InputError(format!(
                "{origin} (Pod {name}): duplicate pod (first defined at {})",
                input.pods[j].1
            )));
        }
        input
            .namespaces
            .entry(info.namespace.clone())
            .or_insert_with(|| {
                Labels::from([("kubernetes.io/metadata.name".into(), info.namespace.clone())])
            });
        input.pods.push((info, origin));
    }
    Ok(input)
}

/// The API server's DefaultStorageClass admission (and the PV controller's
/// retroactive assignment): claims without a storage class get the default
/// StorageClass of the input, if one is marked.
fn default_storage_class(input: &mut ClusterInput) -> Result<(), InputError> {
    use crate::volumes::VolumeObject;
    let Some(default) =
        crate::volumes::default_class(input.volumes.iter().filter_map(|(o, _)| match o {
            VolumeObject::Class(c) => Some(c),
            _ => None,
        }))
        .map(|c| c.name.clone())
    else {
        return Ok(());
    };
    for (o, origin) in input.volumes.iter_mut() {
        if let VolumeObject::Pvc(c) = o
            && c.wants_default_class()
        {
            *c = c.with_class(&default).map_err(|e| {
                InputError(format!("{origin} (PersistentVolumeClaim {}): {e}", c.key))
            })?;
        }
    }
    Ok(())
}

/// True for pods that have terminated (they hold no resources).
pub fn is_terminated(p: &PodInfo) -> bool {
    corral_api::pod::is_finished(&p.pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOLUMES: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: storage.k8s.io/v1
  kind: StorageClass
  metadata: {name: local}
  provisioner: kubernetes.io/no-provisioner
- apiVersion: v1
  kind: PersistentVolume
  metadata: {name: pv1}
  spec: {storageClassName: local, capacity: {storage: 10Gi}, accessModes: [ReadWriteOnce]}
- apiVersion: v1
  kind: PersistentVolumeClaim
  metadata: {name: c1, namespace: ns}
  spec: {storageClassName: local, resources: {requests: {storage: 5Gi}}}
- apiVersion: storage.k8s.io/v1
  kind: CSINode
  metadata: {name: n1}
  spec: {drivers: [{name: d, nodeID: n1, allocatable: {count: 3}}]}
- apiVersion: storage.k8s.io/v1
  kind: CSIDriver
  metadata: {name: d}
  spec: {storageCapacity: true}
- apiVersion: storage.k8s.io/v1
  kind: CSIStorageCapacity
  metadata: {name: cap, namespace: kube-system}
  storageClassName: local
  capacity: 100Gi
"#;

    #[test]
    fn claims_without_a_class_get_the_default_class() {
        use crate::volumes::VolumeObject;
        let y = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: plain, namespace: ns}
spec: {resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: none, namespace: ns}
spec: {storageClassName: "", resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: own, namespace: ns}
spec: {storageClassName: fast}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: bound, namespace: ns}
spec: {volumeName: pv1}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: old-default, creationTimestamp: "2025-01-01T00:00:00Z",
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}}
provisioner: p
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: new-default, creationTimestamp: "2026-01-01T00:00:00Z",
  annotations: {storageclass.beta.kubernetes.io/is-default-class: "true"}}
provisioner: p
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: fast, annotations: {storageclass.kubernetes.io/is-default-class: "false"}}
provisioner: p
"#;
        let classes = |inp: &ClusterInput| -> Vec<(String, String)> {
            inp.volumes
                .iter()
                .filter_map(|(o, _)| match o {
                    VolumeObject::Pvc(c) => Some((c.name.clone(), c.class.clone())),
                    _ => None,
                })
                .collect()
        };
        let inp = load_str(y, "c.yaml", &[]).unwrap();
        let want = |d: &str| {
            vec![
                ("plain".to_string(), d.to_string()),
                ("none".into(), String::new()),
                ("own".into(), "fast".into()),
                ("bound".into(), String::new()),
            ]
        };
        // The newest default wins.
        assert_eq!(classes(&inp), want("new-default"));
        // Same creation time: the smaller name.
        let tie = y.replace("2025-01-01", "2026-01-01");
        assert_eq!(
            classes(&load_str(&tie, "c.yaml", &[]).unwrap()),
            want("new-default")
        );
        let tie = tie.replace("name: old-default", "name: a-default");
        assert_eq!(
            classes(&load_str(&tie, "c.yaml", &[]).unwrap()),
            want("a-default")
        );
        // No default class: nothing changes.
        let none = y.replace("\"true\"", "\"false\"");
        assert_eq!(classes(&load_str(&none, "c.yaml", &[]).unwrap()), want(""));
    }

    #[test]
    fn volume_kinds_are_decoded_from_lists() {
        use crate::volumes::VolumeObject;
        let inp = load_str(VOLUMES, "v.yaml", &[]).unwrap();
        assert!(inp.warnings.is_empty(), "{:?}", inp.warnings);
        assert_eq!(inp.volumes.len(), 6);
        match &inp.volumes[0].0 {
            VolumeObject::Class(c) => assert_eq!(c.binding_mode.as_deref(), Some("Immediate")),
            o => panic!("{o:?}"),
        }
        match &inp.volumes[2].0 {
            VolumeObject::Pvc(c) => assert_eq!(c.request, Some(5 << 30)),
            o => panic!("{o:?}"),
        }
        let e = load_str(&VOLUMES.replace("5Gi", "5Gq"), "v.yaml", &[]).unwrap_err();
        assert!(
            e.0.contains("v.yaml: document 1")
                && e.0.contains("(PersistentVolumeClaim ns/c1)")
                && e.0.contains("spec.resources.requests[storage]"),
            "{e}"
        );
        let e = load_str(
            &VOLUMES.replace("capacity: 100Gi", "capacity: lots"),
            "v.yaml",
            &[],
        )
        .unwrap_err();
        assert!(
            e.0.contains("(CSIStorageCapacity kube-system/cap)") && e.0.contains("field capacity"),
            "{e}"
        );
        let e = load_str(&VOLUMES.replace("count: 3", "count: many"), "v.yaml", &[]).unwrap_err();
        assert!(e.0.contains("(CSINode n1)"), "{e}");
    }

    const GOOD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {tier: gold}}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {allocatable: {cpu: "4", memory: 8Gi, pods: "110"}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: team-a}
spec:
  priorityClassName: high
  schedulerName: corral
  containers: [{name: c, image: nginx, resources: {requests: {cpu: 1.5}}}]
---
"#;

    #[test]
    fn loads_supported_kinds_and_warns_on_unknown() {
        let inp = load_str(GOOD, "good.yaml", &[]).unwrap();
        assert_eq!(inp.nodes.len(), 1);
        assert_eq!(inp.pods.len(), 1);
        assert_eq!(inp.pods[0].0.priority, 1000);
        assert_eq!(inp.pods[0].0.requests.requests.milli_cpu, 1500);
        assert_eq!(inp.namespaces["team-a"]["tier"], "gold");
        assert_eq!(
            inp.namespaces["team-a"]["kubernetes.io/metadata.name"],
            "team-a"
        );
        assert_eq!(inp.warnings.len(), 1);
        assert!(
            inp.warnings[0].contains("good.yaml: document 4")
                && inp.warnings[0].contains("Deployment")
        );
    }

    #[test]
    fn bad_quantity_names_file_document_object_field() {
        let y = GOOD.replace("cpu: 1.5", "cpu: 1.5x");
        let e = load_str(&y, "bad.yaml", &[]).unwrap_err();
        assert!(e.0.contains("bad.yaml: document 5"), "{e}");
        assert!(e.0.contains("Pod team-a/p1"), "{e}");
        assert!(
            e.0.contains("spec.containers[0].resources.requests[cpu]"),
            "{e}"
        );
        let y = GOOD.replace("memory: 8Gi", "memory: 8Gb");
        let e = load_str(&y, "bad.yaml", &[]).unwrap_err();
        assert!(
            e.0.contains("document 3")
                && e.0.contains("Node n1")
                && e.0.contains("status.allocatable[memory]"),
            "{e}"
        );
    }

    #[test]
    fn malformed_documents_are_errors() {
        let e = load_str(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: [\n",
            "m.yaml",
            &[],
        )
        .unwrap_err();
        assert!(
            e.0.contains("m.yaml: document 1") && e.0.contains("malformed YAML"),
            "{e}"
        );
        let e = load_str("- a\n- b\n", "l.yaml", &[]).unwrap_err();
        assert!(e.0.contains("expected a Kubernetes object"), "{e}");
        let e = load_str(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: 5}\n",
            "t.yaml",
            &[],
        )
        .unwrap_err();
        assert!(e.0.contains("(Pod p)"), "{e}");
        let e = load_str("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {priorityClassName: nope, containers: []}\n", "t.yaml", &[]).unwrap_err();
        assert!(e.0.contains("PriorityClass \"nope\" not found"), "{e}");
        let e = load_paths(&[PathBuf::from("/nonexistent/x.yaml")], &[]).unwrap_err();
        assert!(e.0.contains("/nonexistent/x.yaml"), "{e}");
    }

    #[test]
    fn lists_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata: {name: n2}\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.yml"), GOOD).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let inp = load_paths(&[dir.path().to_path_buf()], &[]).unwrap();
        assert_eq!(inp.nodes.len(), 2);
        let e = {
            std::fs::write(
                dir.path().join("c.yaml"),
                "apiVersion: v1\nkind: Node\nmetadata: {name: n2}\n",
            )
            .unwrap();
            load_paths(&[dir.path().to_path_buf()], &[]).unwrap_err()
        };
        assert!(e.0.contains("duplicate node"), "{e}");
    }
}
