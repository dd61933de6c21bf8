//! `run` with volumes against the test API server acting as PV controller and
//! provisioner: a WaitForFirstConsumer claim gets `selected-node`, is provisioned
//! and the pod binds on that node; a pod with a local PV lands on the PV's node
//! (the scheduler writes the PV's claimRef, the controller binds); a failing
//! provisioner times PreBind out: the pod is not bound, the writes are rolled back
//! and a FailedScheduling event carries `running PreBind plugin "VolumeBinding"`;
//! the extender filters from its own volume watches.

mod common;

use std::time::{Duration, Instant};

use corral_scheduler::k8s::queue::Backoff;
use corral_scheduler::k8s::{RunOptions, start};
use corral_test_apiserver::{Options, TestApiServer, VolumeController};
use serde_json::{Value, json};

const PROVISIONER: &str = "csi.test.corral";

fn node(name: &str, zone: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}}})
}

fn pod(name: &str, claim: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"schedulerName": "corral",
            "containers": [{"name": "c", "image": "img", "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]},
        "status": {"phase": "Pending"}})
}

fn claim(name: &str, class: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}})
}

fn classes() -> Vec<Value> {
    vec![
        // Provisioned in zone b only.
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "wffc"}, "provisioner": PROVISIONER,
            "volumeBindingMode": "WaitForFirstConsumer",
            "allowedTopologies": [{"matchLabelExpressions": [{"key": "topology.kubernetes.io/zone", "values": ["b"]}]}]}),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "local"}, "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer"}),
    ]
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cluster(failing: bool) -> TestApiServer {
    let server = TestApiServer::start_with(Options {
        volume_controller: Some(VolumeController {
            provisioner: PROVISIONER.into(),
            failing,
        }),
        ..Options::default()
    })
    .await
    .expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    for (n, z) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")] {
        server.insert(node(n, z)).expect("node");
    }
    server.insert_all(classes()).expect("classes");
    server
}

async fn run(server: &TestApiServer, opts: RunOptions) -> corral_scheduler::k8s::Handle {
    let c = common::client(server).await;
    start(c, corral_scheduler::config::default_frameworks(), opts).expect("start")
}

fn node_of(server: &TestApiServer, name: &str) -> Option<String> {
    server
        .get("", "pods", Some("default"), name)
        .and_then(|p| p["spec"]["nodeName"].as_str().map(String::from))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wffc_claim_is_provisioned_on_the_chosen_node_and_local_pv_pins_the_pod() {
    let server = cluster(false).await;
    server.insert(claim("fresh", "wffc")).expect("claim");
    server
        .insert(json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "local-a2"},
            "spec": {"storageClassName": "local", "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteOnce"], "local": {"path": "/mnt/d"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["a2"]}]}]}}}}))
        .expect("pv");
    server.insert(claim("scratch", "local")).expect("claim");
    server.insert(pod("provisioned", "fresh")).expect("pod");
    server.insert(pod("local", "scratch")).expect("pod");
    let h = run(&server, RunOptions::default()).await;
    wait_for("both pods bound", Duration::from_secs(20), || {
        node_of(&server, "provisioned").is_some() && node_of(&server, "local").is_some()
    })
    .await;
    // WaitForFirstConsumer + allowedTopologies: a zone-b node was selected, the
    // claim carries it, the provisioned PV is pinned there and bound to the claim.
    let n = node_of(&server, "provisioned").expect("bound");
    assert!(n.starts_with('b'), "provisioned pod on {n}");
    let c = server
        .get("", "persistentvolumeclaims", Some("default"), "fresh")
        .expect("claim");
    assert_eq!(
        c["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        json!(n)
    );
    let pv_name = c["spec"]["volumeName"]
        .as_str()
        .expect("bound claim")
        .to_string();
    let pv = server
        .get("", "persistentvolumes", None, &pv_name)
        .expect("pv");
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
        json!([n])
    );
    // The local PV's node, and the scheduler's static binding (claimRef) honoured.
    assert_eq!(node_of(&server, "local").as_deref(), Some("a2"));
    let pv = server
        .get("", "persistentvolumes", None, "local-a2")
        .expect("pv");
    assert_eq!(pv["spec"]["claimRef"]["name"], "scratch");
    let c = server
        .get("", "persistentvolumeclaims", Some("default"), "scratch")
        .expect("claim");
    assert_eq!(c["spec"]["volumeName"], "local-a2");
    // Every pod bound exactly once.
    assert!(
        server.bindings().values().all(|n| *n == 1),
        "{:?}",
        server.bindings()
    );
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_provisioner_times_out_rolls_back_and_reports() {
    let server = cluster(true).await;
    server.insert(claim("fresh", "wffc")).expect("claim");
    server.insert(pod("stuck", "fresh")).expect("pod");
    let h = run(
        &server,
        RunOptions {
            volume_bind_timeout: Duration::from_secs(1),
            // No retry during the test: what a failed PreBind leaves is observable.
            backoff: Backoff {
                initial: Duration::from_secs(60),
                max: Duration::from_secs(60),
            },
            ..RunOptions::default()
        },
    )
    .await;
    let failed = |e: &Value| {
        e["regarding"]["name"] == "stuck"
            && e["reason"] == "FailedScheduling"
            && e["note"]
                .as_str()
                .is_some_and(|m| m.contains("running PreBind plugin \"VolumeBinding\""))
    };
    let t0 = Instant::now();
    while !server.list("events.k8s.io", "events").iter().any(failed) {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no FailedScheduling from PreBind; events {:?}; claim {:?}; metrics {}",
            server.list("events.k8s.io", "events"),
            server.get("", "persistentvolumeclaims", Some("default"), "fresh"),
            h.metrics.encode()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ev = server.list("events.k8s.io", "events");
    let e = ev.iter().find(|e| failed(e)).expect("event");
    assert!(
        e["note"].as_str().unwrap_or("").contains("binding volumes"),
        "{e}"
    );
    // Not bound, nothing provisioned, the selected-node annotation rolled back.
    assert!(node_of(&server, "stuck").is_none());
    assert!(server.bindings().is_empty());
    assert!(server.list("", "persistentvolumes").is_empty());
    let c = server
        .get("", "persistentvolumeclaims", Some("default"), "fresh")
        .expect("claim");
    assert!(
        c["metadata"]["annotations"]["volume.kubernetes.io/selected-node"].is_null(),
        "{c}"
    );
    assert!(
        h.metrics.encode().contains("prebind"),
        "bind error counted by reason"
    );
    h.stop();
}

fn local_pv(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {"storageClassName": "local", "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteOnce"], "local": {"path": "/mnt/d"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}})
}

fn gang_member(name: &str, claim_name: &str) -> Value {
    let mut p = pod(name, claim_name);
    p["metadata"]["annotations"] = json!({"scheduling.k8s.io/group-name": "train"});
    p
}

/// A gang of four, each member with a local-PV claim; the four PVs sit on four
/// different nodes. With three PVs nothing binds (no PV is claimed); adding the
/// fourth lets the whole gang start, each member on its PV's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gang_with_local_pvs_starts_all_or_nothing() {
    let server = cluster(false).await;
    server
        .insert(
            json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": "train", "namespace": "default"},
            "spec": {"minMember": 4, "queue": "default"}}),
        )
        .expect("podgroup");
    for (i, n) in ["a1", "a2", "b1"].iter().enumerate() {
        server.insert(local_pv(&format!("pv{i}"), n)).expect("pv");
    }
    for i in 0..4 {
        server
            .insert(claim(&format!("c{i}"), "local"))
            .expect("claim");
        server
            .insert(gang_member(&format!("w{i}"), &format!("c{i}")))
            .expect("pod");
    }
    let h = run(&server, RunOptions::default()).await;
    // Give the scheduler a few cycles: nothing may bind and no PV may be claimed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(server.bindings().is_empty(), "{:?}", server.bindings());
    for i in 0..3 {
        let pv = server
            .get("", "persistentvolumes", None, &format!("pv{i}"))
            .expect("pv");
        assert!(pv["spec"]["claimRef"].is_null(), "pv{i} claimed: {pv}");
    }
    server.insert(local_pv("pv3", "b2")).expect("pv");
    wait_for("the whole gang bound", Duration::from_secs(30), || {
        (0..4).all(|i| node_of(&server, &format!("w{i}")).is_some())
    })
    .await;
    let mut nodes = Vec::new();
    for i in 0..4 {
        let n = node_of(&server, &format!("w{i}")).expect("bound");
        let c = server
            .get(
                "",
                "persistentvolumeclaims",
                Some("default"),
                &format!("c{i}"),
            )
            .expect("claim");
        let pv = c["spec"]["volumeName"]
            .as_str()
            .expect("claim bound")
            .to_string();
        let v = server.get("", "persistentvolumes", None, &pv).expect("pv");
        assert_eq!(
            v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
                [0],
            json!(n),
            "w{i} on {n} with {pv}"
        );
        nodes.push(n);
    }
    nodes.sort();
    assert_eq!(nodes, ["a1", "a2", "b1", "b2"]);
    h.stop();
}

/// The extender with its volume watches (`spawn_for_extender`) against the test
/// API server: its Filter answers kube-scheduler's `filter` calls from the
/// watched claims, classes and PVs — a WaitForFirstConsumer claim fits only the
/// zone its class allows, a local-PV claim only the PV's node, a missing claim no
/// node — and follows changes (a claim created later, a PV deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extender_filters_from_watched_volumes() {
    use corral_scheduler::extender::{Extender, ExtenderArgs};
    use std::sync::Arc;
    let server = cluster(false).await;
    server.insert(claim("fresh", "wffc")).expect("claim");
    server.insert(claim("pinned", "local")).expect("claim");
    server.insert(local_pv("pv-a2", "a2")).expect("pv");
    let fw = corral_scheduler::config::default_frameworks()
        .into_iter()
        .next()
        .expect("profile");
    let mut ext = Extender::new(fw);
    let c = common::client(&server).await;
    ext.client = Some(c.clone());
    let ext = Arc::new(ext);
    let mut tasks = corral_scheduler::extender::cache::spawn_snapshot_cache(c.clone(), ext.clone());
    tasks.extend(corral_scheduler::k8s::volumes::spawn_for_extender(
        &c,
        ext.clone(),
    ));
    let filter = |p: Value| -> Value {
        let mut p = p;
        p["spec"]["schedulerName"] = json!("default-scheduler");
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(p).expect("pod");
        let args = ExtenderArgs {
            pod: Some(pod),
            nodes: None,
            nodenames: Some(["a1", "a2", "b1", "b2"].map(String::from).to_vec()),
        };
        serde_json::to_value(ext.filter(args)).expect("json")
    };
    let names = |v: &Value| -> Vec<String> {
        v["nodenames"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_for(
        "WFFC claim fits zone b only",
        Duration::from_secs(20),
        || names(&filter(pod("w", "fresh"))) == ["b1", "b2"],
    )
    .await;
    let r = filter(pod("w", "fresh"));
    assert_eq!(
        r["failedAndUnresolvableNodes"]["a1"].as_str(),
        Some("node(s) didn't find available persistent volumes to bind"),
        "{r}"
    );
    wait_for("local PV pins a2", Duration::from_secs(20), || {
        names(&filter(pod("l", "pinned"))) == ["a2"]
    })
    .await;
    // A claim that does not exist yet: no node; created later, it fits.
    let r = filter(pod("late", "later"));
    assert!(names(&r).is_empty(), "{r}");
    server.insert(claim("later", "wffc")).expect("claim");
    wait_for(
        "claim created later is seen",
        Duration::from_secs(20),
        || names(&filter(pod("late", "later"))) == ["b1", "b2"],
    )
    .await;
    // The local PV deleted: no node has a PV for the claim any more.
    assert!(server.delete("", "persistentvolumes", None, "pv-a2"));
    wait_for("PV deletion is seen", Duration::from_secs(20), || {
        names(&filter(pod("l", "pinned"))).is_empty()
    })
    .await;
    for t in tasks {
        t.abort();
    }
}
