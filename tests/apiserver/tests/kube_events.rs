//! kube-scheduler-compatible Events of `run`: `Scheduled` next to `FailedScheduling`.

use std::time::{Duration, Instant};

use corral_scheduler::k8s::{RunOptions, start};
use corral_test_apiserver::TestApiServer;
use serde_json::{Value, json};

fn node(name: &str, cpu: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": cpu, "memory": "64Gi", "pods": "110"},
                   "capacity": {"cpu": cpu, "memory": "64Gi", "pods": "110"}}})
}

fn pod(name: &str, cpu: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"schedulerName": "corral", "containers": [{"name": "c", "image": "img",
            "resources": {"requests": {"cpu": cpu, "memory": "100Mi"}}}]},
        "status": {"phase": "Pending"}})
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn events_of(server: &TestApiServer, pod: &str) -> Vec<Value> {
    server
        .list("", "events")
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == pod)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_events_name_the_node_and_follow_failed_scheduling() {
    let server = TestApiServer::start().await.expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    server.insert(node("n0", "4")).expect("node");
    server.insert(node("n1", "4")).expect("node");
    for i in 0..5 {
        server.insert(pod(&format!("p{i}"), "100m")).expect("pod");
    }
    server.insert(pod("big", "6")).expect("pod");
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kc).expect("kubeconfig");
    let client = corral_scheduler::k8s::client(Some(&kc))
        .await
        .expect("client");
    let h = start(
        client,
        corral_scheduler::config::default_frameworks(),
        RunOptions::default(),
    )
    .expect("start");
    wait_for("5 Scheduled events", Duration::from_secs(20), || {
        (0..5).all(|i| !events_of(&server, &format!("p{i}")).is_empty())
    })
    .await;
    for i in 0..5 {
        let name = format!("p{i}");
        let p = server.get("", "pods", Some("default"), &name).expect("pod");
        let node = p["spec"]["nodeName"].as_str().expect("bound");
        let ev = events_of(&server, &name);
        assert_eq!(ev.len(), 1, "one event per bound pod: {ev:?}");
        let e = &ev[0];
        assert_eq!(e["reason"], "Scheduled");
        assert_eq!(e["type"], "Normal");
        assert_eq!(
            e["message"],
            format!("Successfully assigned default/{name} to {node}")
        );
        assert_eq!(e["involvedObject"]["uid"], format!("uid-{name}"));
        assert_eq!(e["source"]["component"], "corral");
    }
    // A pod that does not fit gets FailedScheduling; once a node fits it, Scheduled.
    wait_for("FailedScheduling for big", Duration::from_secs(10), || {
        events_of(&server, "big")
            .iter()
            .any(|e| e["reason"] == "FailedScheduling")
    })
    .await;
    server.insert(node("n2", "8")).expect("node");
    wait_for("Scheduled for big", Duration::from_secs(20), || {
        events_of(&server, "big")
            .iter()
            .any(|e| e["reason"] == "Scheduled")
    })
    .await;
    let ev = events_of(&server, "big");
    let reasons: Vec<&str> = ev.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(reasons.len(), 2, "{ev:?}");
    assert!(reasons.contains(&"FailedScheduling"), "{ev:?}");
    let s = ev
        .iter()
        .find(|e| e["reason"] == "Scheduled")
        .expect("Scheduled");
    assert_eq!(s["message"], "Successfully assigned default/big to n2");
    // kube-scheduler's metric names and labels for the same story.
    let text = h.metrics.encode();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
    };
    assert_eq!(
        value("scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"corral\"}"),
        6.0
    );
    assert!(
        value("scheduler_schedule_attempts_total{result=\"unschedulable\",profile=\"corral\"}")
            >= 1.0
    );
    assert_eq!(
        value("scheduler_queue_incoming_pods_total{queue=\"active\",event=\"PodAdd\"}"),
        6.0
    );
    assert_eq!(value("scheduler_pod_scheduling_attempts_count"), 6.0);
    // `big` needed more than one attempt.
    assert!(
        text.lines().any(|l| l
            .starts_with("scheduler_pod_scheduling_sli_duration_seconds_count{attempts=\"")
            && !l.contains("attempts=\"1\"")),
        "{text}"
    );
    assert!(text.contains("scheduler_pending_pods{queue=\"gated\"} 0"));
    h.stop();
}
