use k8s_openapi::api::storage::v1::StorageClass;

use super::*;
use crate::labels::Labels;
use crate::resources::FieldError;

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
