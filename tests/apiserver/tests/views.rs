//! `corral-scheduler queues` / `jobs` against the test API server: what `run` wrote
//! into Queue and PodGroup statuses, read back as an operator sees it.

mod common;

use corral_scheduler::views::{self, ViewFormat};
use corral_test_apiserver::TestApiServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_and_jobs_views() {
    let server = TestApiServer::start().await.expect("server");
    server
        .insert(
            json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "Queue",
            "metadata": {"name": "gold"},
            "spec": {"weight": 3, "capability": {"cpu": "64", "memory": "256Gi"},
                "deserved": {"cpu": "32", "memory": "137438953472"}},
            "status": {"state": "Open", "pending": 1, "running": 2, "inqueue": 0,
                "completed": 4, "allocated": {"cpu": "2500m", "memory": "68719476736"}}}),
        )
        .expect("queue");
    server
        .insert(
            json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": "train", "namespace": "ml",
                "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"minMember": 4, "queue": "gold", "priorityClassName": "high"},
            "status": {"phase": "Running", "running": 4, "conditions": [{"type": "Scheduled",
                "status": "True", "lastTransitionTime": "2026-01-01T00:01:30Z"}]}}),
        )
        .expect("pg");
    server
        .insert(json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": "wait", "namespace": "ml",
                "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"minMember": 8, "queue": "gold"},
            "status": {"phase": "Pending", "running": 0, "conditions": [{"type": "Unschedulable",
                "status": "True", "message": "8/8 tasks in gang unschedulable: 0/2 nodes are available"}]}}))
        .expect("pg");
    // A PriorityClass for `train`'s class and a globalDefault one for `wait`; a
    // node with one running member of `train` for the session's shares.
    server
        .insert_all([
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": "high"}, "value": 1000}),
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": "normal"}, "value": 10, "globalDefault": true}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}}),
            node("n1", "8"),
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "train-0", "namespace": "ml", "uid": "uid-train-0",
                    "annotations": {"scheduling.k8s.io/group-name": "train"}},
                "spec": {"schedulerName": "corral", "nodeName": "n1",
                    "containers": [{"name": "c", "image": "img",
                    "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}]},
                "status": {"phase": "Running"}}),
        ])
        .expect("objects");
    let client = common::client(&server).await;

    let t = views::queues(client.clone(), ViewFormat::Table)
        .await
        .expect("queues");
    println!("{t}");
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("ALLOCATED"),
        "{t}"
    );
    assert!(lines[1].starts_with("gold"), "{t}");
    assert!(lines[1].contains("cpu=2500m,memory=64Gi"), "{t}");
    assert!(lines[1].contains("cpu=64,memory=256Gi"), "{t}");
    assert!(
        lines[0].contains("DESERVED") && lines[1].contains("cpu=32,memory=128Gi"),
        "{t}"
    );
    let j: serde_json::Value = serde_json::from_str(
        &views::queues(client.clone(), ViewFormat::Json)
            .await
            .unwrap(),
    )
    .expect("json");
    assert_eq!(j[0]["name"], "gold");
    assert_eq!(j[0]["weight"], 3);
    assert_eq!(j[0]["running"], 2);
    assert_eq!(j[0]["allocated"]["memory"], "64Gi");
    assert_eq!(j[0]["deserved"]["memory"], "128Gi");
    // The session's view: the running member counts in gold's allocation.
    assert_eq!(j[0]["sessionAllocated"]["cpu"], "2", "{j}");
    assert_eq!(j[0]["sessionAllocated"]["memory"], "1Gi", "{j}");
    assert!(j[0]["sessionDeserved"].is_object(), "{j}");
    assert!(lines[0].contains("SESSION DESERVED"), "{t}");

    let t = views::jobs(client.clone(), Some("ml"), ViewFormat::Table)
        .await
        .expect("jobs");
    println!("{t}");
    let train = t.lines().find(|l| l.contains("train")).expect("train row");
    assert!(train.contains("Running") && train.contains("4/4"), "{t}");
    assert!(
        train.contains("high (1000)") && train.contains(" 90s"),
        "{t}"
    );
    let wait = t.lines().find(|l| l.contains("wait")).expect("wait row");
    assert!(
        wait.contains("0/8") && wait.contains("8/8 tasks in gang unschedulable"),
        "{t}"
    );
    let y = views::jobs(client.clone(), None, ViewFormat::Yaml)
        .await
        .expect("yaml");
    let v: serde_json::Value = serde_yaml_ng::from_str(&y).expect("yaml parses");
    assert_eq!(v[0]["timeToStartSeconds"], 90);
    assert_eq!(v[0]["priority"], 1000);
    // No class: the globalDefault class's value.
    assert_eq!(v[1]["priority"], 10);
    assert!(v[1]["priorityClass"].is_null());
    assert_eq!(
        v[1]["reason"],
        "8/8 tasks in gang unschedulable: 0/2 nodes are available"
    );
    assert!(
        views::jobs(client, Some("other"), ViewFormat::Json)
            .await
            .unwrap()
            .trim()
            .eq("[]")
    );
}

fn node(name: &str, cpu: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": cpu, "memory": "64Gi", "pods": "110"},
                   "capacity": {"cpu": cpu, "memory": "64Gi", "pods": "110"}}})
}

fn pod(name: &str, cpu: &str, node: Option<&str>) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"schedulerName": "corral", "nodeName": node,
            "containers": [{"name": "c", "image": "img",
            "resources": {"requests": {"cpu": cpu, "memory": "100Mi"}}}]},
        "status": {"phase": if node.is_some() { "Running" } else { "Pending" }}})
}

/// `corral-scheduler explain NS/POD`: simulate's explanation on the cluster as
/// listed from the API — a pending pod (why not the small node), a bound pod
/// (evaluated again without itself), a missing pod (error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_view_on_a_live_snapshot() {
    let server = TestApiServer::start().await.expect("server");
    for o in [
        node("small", "1"),
        node("big", "8"),
        pod("web", "2", None),
        pod("db", "7", Some("big")),
    ] {
        server.insert(o).expect("insert");
    }
    let client = common::client(&server).await;

    // web (2 CPU) fits nowhere: small has 1 CPU, big has 1 left beside db.
    let t = views::explain(client.clone(), "default/web", None, ViewFormat::Table)
        .await
        .expect("explain");
    println!("{t}");
    assert!(
        t.starts_with("EXPLAIN default/web -> (unschedulable)"),
        "{t}"
    );
    let small = t.lines().find(|l| l.contains("small")).expect("small row");
    assert!(
        small.contains("infeasible") && small.contains("Insufficient cpu"),
        "{t}"
    );
    let j: serde_json::Value = serde_json::from_str(
        &views::explain(client.clone(), "default/web", None, ViewFormat::Json)
            .await
            .expect("json"),
    )
    .expect("json");
    assert_eq!(j["pod"], "default/web");
    assert!(j["selected"].is_null(), "{j}");
    assert!(j["boundTo"].is_null(), "{j}");
    assert_eq!(j["nodes"].as_array().map(Vec::len), Some(2), "{j}");

    // db is bound to big: taken off it, it fits only there again.
    let y = views::explain(client.clone(), "default/db", None, ViewFormat::Yaml)
        .await
        .expect("yaml");
    let v: serde_json::Value = serde_yaml_ng::from_str(&y).expect("yaml");
    assert_eq!(v["boundTo"], "big", "{y}");
    assert_eq!(v["selected"], "big", "{y}");

    let e = views::explain(client.clone(), "default/nope", None, ViewFormat::Table)
        .await
        .expect_err("missing pod");
    assert!(e.to_string().contains("pod default/nope not found"), "{e}");
    let e = views::explain(client, "nope", None, ViewFormat::Table)
        .await
        .expect_err("bad name");
    assert!(e.to_string().contains("expected NAMESPACE/NAME"), "{e}");
}
