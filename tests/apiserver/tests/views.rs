//! `corral-scheduler queues` / `jobs` against the test API server: what `run` wrote
//! into Queue and PodGroup statuses, read back as an operator sees it.

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
            "spec": {"weight": 3, "capability": {"cpu": "64", "memory": "256Gi"}},
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
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kc).expect("kubeconfig");
    let client = corral_scheduler::k8s::client(Some(&kc))
        .await
        .expect("client");

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

    let t = views::jobs(client.clone(), Some("ml"), ViewFormat::Table)
        .await
        .expect("jobs");
    println!("{t}");
    let train = t.lines().find(|l| l.contains("train")).expect("train row");
    assert!(train.contains("Running") && train.contains("4/4"), "{t}");
    assert!(train.contains("high") && train.contains(" 90s"), "{t}");
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
