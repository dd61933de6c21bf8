//! Node failure in `run` (issue 12, HA reserve): when a node is deleted, or its pod
//! is evicted while it is NotReady, the replacement of that pod (same controller) is
//! placed before other pending work, even work of a higher priority.

mod common;

use std::time::{Duration, Instant};

use corral_scheduler::k8s::{RunOptions, start};
use corral_test_apiserver::{Fault, FaultKind, TestApiServer};
use serde_json::{Value, json};

fn node(name: &str, cpu: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": cpu, "memory": "16Gi", "pods": "110"},
                   "capacity": {"cpu": cpu, "memory": "16Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn pod(name: &str, prio: i32, owner: Option<&str>, node: Option<&str>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"schedulerName": "corral", "priority": prio, "containers": [{"name": "c", "image": "img",
            "resources": {"requests": {"cpu": "3", "memory": "1Gi"}}}]},
        "status": {"phase": "Pending"}});
    if let Some(uid) = owner {
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": "web", "uid": uid, "controller": true}]);
    }
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
        p["status"]["phase"] = json!("Running");
    }
    p
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node_of(server: &TestApiServer, name: &str) -> Option<String> {
    server
        .get("", "pods", Some("default"), name)
        .and_then(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
}

/// How node n1 fails.
#[derive(Clone, Copy)]
enum Failure {
    /// The Node is deleted (and the pod GC deletes its pods).
    Deleted,
    /// The Node turns NotReady and, past the grace, web-1 is evicted (marked
    /// terminating; the kubelet cannot confirm, so it stays).
    NotReady,
}

async fn replacement_goes_first(failure: Failure) {
    let server = TestApiServer::start().await.expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    // web-1 (ReplicaSet rs-web) runs on n1; n0 has room for one 3-cpu pod; n2 is a
    // small node for the blockers.
    server.insert(node("n0", "4")).expect("n0");
    server.insert(node("n1", "4")).expect("n1");
    server.insert(node("n2", "1")).expect("n2");
    server
        .insert(pod("web-1", 0, Some("rs-web"), Some("n1")))
        .expect("web-1");
    let c = common::client(&server).await;
    let h = start(
        c,
        corral_scheduler::config::default_frameworks(),
        RunOptions {
            bind_concurrency: 1,
            ..RunOptions::default()
        },
    )
    .expect("start");
    wait_for("ready", Duration::from_secs(20), || {
        h.ready.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    // Eight blockers fill the loop's in-flight window (8 binds with one binder) while
    // the first binding is held 3 s: what arrives meanwhile waits in the queue and is
    // popped in queue order afterwards.
    server.inject(Fault {
        method: None,
        path_contains: "/binding".into(),
        kind: FaultKind::Delay(Duration::from_secs(3)),
        count: 1,
    });
    for i in 0..8 {
        let mut b = pod(&format!("blocker-{i}"), 0, None, None);
        b["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("100m");
        b["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "n2"});
        server.insert(b).expect("blocker");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // n1 fails; web-1 goes; its ReplicaSet creates web-2 — after higher-priority
    // work arrived.
    match failure {
        Failure::Deleted => {
            assert!(server.delete("", "nodes", None, "n1"));
            // The node watch and the pod watch are separate streams: let the
            // deletion reach the loop before the replacement does.
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(server.delete("", "pods", Some("default"), "web-1"));
        }
        Failure::NotReady => {
            let mut n1 = node("n1", "4");
            n1["status"]["conditions"] = json!([{"type": "Ready", "status": "Unknown"}]);
            server.insert(n1).expect("n1 NotReady");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut web1 = pod("web-1", 0, Some("rs-web"), Some("n1"));
            web1["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            server.insert(web1).expect("web-1 terminating");
        }
    }
    // (It does not preempt: a higher priority may still preempt the replacement
    // once it runs, as kube-scheduler would.)
    let mut hog = pod("hog", 1000, None, None);
    hog["spec"]["preemptionPolicy"] = json!("Never");
    server.insert(hog).expect("hog");
    server
        .insert(pod("web-2", 0, Some("rs-web"), None))
        .expect("web-2");
    assert_eq!(
        node_of(&server, "hog"),
        None,
        "hog was scheduled before web-2 arrived"
    );
    wait_for("a binding", Duration::from_secs(20), || {
        node_of(&server, "web-2").is_some() || node_of(&server, "hog").is_some()
    })
    .await;
    assert_eq!(
        node_of(&server, "web-2").as_deref(),
        Some("n0"),
        "{:?}",
        server.get("", "pods", Some("default"), "web-2")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(node_of(&server, "hog"), None, "no room left for hog");
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_nodes_replacement_goes_before_higher_priority_work() {
    replacement_goes_first(Failure::Deleted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_ready_nodes_evicted_pods_replacement_goes_first() {
    replacement_goes_first(Failure::NotReady).await;
}
