//! `run` with a node whose GPU values are absurd (it used to abort the process on
//! every start): the node is skipped with a warning and counted in
//! `corral_scheduler_invalid_objects_total`, every other pod is still bound.

mod common;

use std::time::{Duration, Instant};

use corral_scheduler::k8s::{RunOptions, start};
use corral_test_apiserver::TestApiServer;
use serde_json::{Value, json};

fn node(name: &str, alloc: Value, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": alloc, "capacity": alloc}})
}

fn pod(name: &str, extra: Value) -> Value {
    let mut req = json!({"cpu": "100m", "memory": "100Mi"});
    if let (Some(r), Some(e)) = (req.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"schedulerName": "corral", "containers": [{"name": "c", "image": "img",
            "resources": {"requests": req, "limits": req}}]},
        "status": {"phase": "Pending"}})
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_skips_an_absurd_gpu_node_and_schedules_everything_else() {
    let server = TestApiServer::start().await.expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    let gpu = json!({"cpu": "32", "memory": "64Gi", "pods": "110",
        "tencent.com/vcuda-core": "200", "tencent.com/vcuda-memory": "32"});
    // The three cases from the fuzzing report.
    server
        .insert(node(
            "bad-label",
            gpu.clone(),
            json!({"nvidia.com/gpu.count": "100000000000000000"}),
        ))
        .expect("node");
    let mut huge = gpu.clone();
    huge["tencent.com/vcuda-core"] = json!("18446744073709551616");
    server
        .insert(node("bad-core", huge, json!({})))
        .expect("node");
    let mut spin = gpu.clone();
    spin["tencent.com/vcuda-core"] = json!("100000000000000");
    server
        .insert(node("bad-spin", spin, json!({})))
        .expect("node");
    server
        .insert(node(
            "good-gpu",
            gpu.clone(),
            json!({"nvidia.com/gpu.count": "2"}),
        ))
        .expect("node");
    server
        .insert(node(
            "good-cpu",
            json!({"cpu": "32", "memory": "64Gi", "pods": "110"}),
            json!({}),
        ))
        .expect("node");
    for i in 0..10 {
        server
            .insert(pod(&format!("p{i}"), json!({})))
            .expect("pod");
    }
    server
        .insert(pod(
            "gpu",
            json!({"tencent.com/vcuda-core": "50", "tencent.com/vcuda-memory": "4"}),
        ))
        .expect("pod");

    let c = common::client(&server).await;
    let h = start(
        c,
        corral_scheduler::config::default_frameworks(),
        RunOptions::default(),
    )
    .expect("start");
    let node_of = |name: &str| {
        server
            .get("", "pods", Some("default"), name)
            .and_then(|p| p["spec"]["nodeName"].as_str().map(String::from))
    };
    wait_for("11 bound pods", Duration::from_secs(20), || {
        (0..10).all(|i| node_of(&format!("p{i}")).is_some()) && node_of("gpu").is_some()
    })
    .await;
    assert_eq!(node_of("gpu").as_deref(), Some("good-gpu"));
    for i in 0..10 {
        let n = node_of(&format!("p{i}")).expect("bound");
        assert!(n.starts_with("good-"), "p{i} on {n}");
    }
    assert!(
        h.metrics
            .encode()
            .contains("corral_scheduler_invalid_objects_total 3"),
        "{}",
        h.metrics.encode()
    );
    h.stop();
}
