//! corral-scheduler `run` with GpuShare against the in-process test API server: the
//! card assignment annotation is written before the Binding and bindings respect
//! per-card capacity.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use corral_scheduler::k8s::{RunOptions, start};
use corral_scheduler::plugins::gpu_share::{
    ANNOTATION_ASSIGNED, ANNOTATION_IDX_PREFIX, ANNOTATION_NODE, ANNOTATION_TIME,
};
use corral_test_apiserver::TestApiServer;
use serde_json::{Value, json};

fn gpu_node(name: &str) -> Value {
    // Two cards of 16 × 256 MiB.
    let alloc = json!({"cpu": "32", "memory": "64Gi", "pods": "110",
        "tencent.com/vcuda-core": "200", "tencent.com/vcuda-memory": "32"});
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": alloc, "capacity": alloc}})
}

fn gpu_pod(name: &str, core: &str, node: Option<(&str, &str)>) -> Value {
    let res =
        json!({"cpu": "100m", "tencent.com/vcuda-core": core, "tencent.com/vcuda-memory": "4"});
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"schedulerName": "corral", "containers": [{"name": "c", "image": "img",
            "resources": {"requests": res, "limits": res}}]},
        "status": {"phase": "Pending"}});
    if let Some((n, card)) = node {
        p["spec"]["nodeName"] = json!(n);
        p["status"]["phase"] = json!("Running");
        p["metadata"]["annotations"] = json!({format!("{ANNOTATION_IDX_PREFIX}0"): card});
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

fn bound(server: &TestApiServer) -> Vec<Value> {
    server
        .list("", "pods")
        .into_iter()
        .filter(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_writes_card_assignment_and_respects_card_capacity() {
    let server = TestApiServer::start().await.expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    server.insert(gpu_node("g0")).expect("node");
    server.insert(gpu_node("g1")).expect("node");
    // Card 1 of g0 already holds a 40 % share: a 70 % share no longer fits there.
    server
        .insert(gpu_pod("running", "40", Some(("g0", "1"))))
        .expect("pod");
    for i in 0..5 {
        server
            .insert(gpu_pod(&format!("share{i}"), "70", None))
            .expect("pod");
    }
    let c = common::client(&server).await;
    let h = start(
        c,
        corral_scheduler::config::default_frameworks(),
        RunOptions::default(),
    )
    .expect("start");
    // Three free cards for five 70 % shares.
    wait_for("3 shares bound", Duration::from_secs(20), || {
        bound(&server).len() == 4
    })
    .await;
    // The two others are reported unschedulable with GpuShare's reason.
    wait_for(
        "2 FailedScheduling conditions",
        Duration::from_secs(20),
        || {
            server
                .list("", "pods")
                .iter()
                .filter(|p| {
                    p["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c["type"] == "PodScheduled"
                                && c["status"] == "False"
                                && c["message"]
                                    .as_str()
                                    .is_some_and(|m| m.contains("Insufficient GPU share"))
                        })
                    })
                })
                .count()
                == 2
        },
    )
    .await;
    let mut cards = HashSet::new();
    cards.insert(("g0".to_string(), "1".to_string()));
    for p in bound(&server) {
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        if name == "running" {
            continue;
        }
        let node = p["spec"]["nodeName"].as_str().expect("node").to_string();
        let ann = &p["metadata"]["annotations"];
        let card = ann[format!("{ANNOTATION_IDX_PREFIX}0")]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no card annotation: {p}"))
            .to_string();
        assert_eq!(ann[ANNOTATION_NODE], json!(node), "{p}");
        assert_eq!(ann[ANNOTATION_ASSIGNED], "false", "{p}");
        assert!(
            ann[ANNOTATION_TIME]
                .as_str()
                .is_some_and(|t| t.parse::<u128>().is_ok()),
            "{p}"
        );
        assert!(
            cards.insert((node.clone(), card.clone())),
            "card {card} of {node} given twice (or over the running share)"
        );
    }
    assert_eq!(cards.len(), 4);
    for (k, n) in server.bindings() {
        assert_eq!(n, 1, "pod {k} bound {n} times");
    }
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gang_members_placed_by_a_batch_session_get_their_cards_written_too() {
    let server = TestApiServer::start().await.expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    server.insert(gpu_node("g0")).expect("node");
    server
        .insert(
            json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": "train", "namespace": "default"},
            "spec": {"minMember": 2, "queue": "default"}}),
        )
        .expect("pg");
    for i in 0..2 {
        let mut p = gpu_pod(&format!("w{i}"), "60", None);
        p["metadata"]["annotations"] = json!({"scheduling.k8s.io/group-name": "train"});
        server.insert(p).expect("pod");
    }
    let c = common::client(&server).await;
    let h = start(
        c,
        corral_scheduler::config::default_frameworks(),
        RunOptions::default(),
    )
    .expect("start");
    wait_for("gang bound", Duration::from_secs(20), || {
        bound(&server).len() == 2
    })
    .await;
    let mut cards = HashSet::new();
    for p in bound(&server) {
        let card = p["metadata"]["annotations"][format!("{ANNOTATION_IDX_PREFIX}0")]
            .as_str()
            .unwrap_or_else(|| panic!("no card annotation: {p}"))
            .to_string();
        assert!(cards.insert(card), "two 60 % shares on one card: {p}");
    }
    h.stop();
}
