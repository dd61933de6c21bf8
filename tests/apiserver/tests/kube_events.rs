//! kube-scheduler-compatible Events of `run`: `Scheduled` next to `FailedScheduling`,
//! through `events.k8s.io/v1` (core v1 when that is not served); PodGroup events.

mod common;

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
        .list("events.k8s.io", "events")
        .into_iter()
        .filter(|e| e["regarding"]["name"] == pod)
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
    let client = common::client(&server).await;
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
        assert_eq!(e["apiVersion"], "events.k8s.io/v1");
        assert_eq!(e["reason"], "Scheduled");
        assert_eq!(e["action"], "Binding");
        assert_eq!(e["type"], "Normal");
        assert_eq!(
            e["note"],
            format!("Successfully assigned default/{name} to {node}")
        );
        assert_eq!(e["regarding"]["uid"], format!("uid-{name}"));
        assert_eq!(e["regarding"]["kind"], "Pod");
        assert_eq!(e["reportingController"], "corral");
        assert!(
            e["reportingInstance"]
                .as_str()
                .is_some_and(|i| i.starts_with("corral-")),
            "{e}"
        );
        assert!(
            e["eventTime"].as_str().is_some_and(|t| t.contains('.')),
            "{e}"
        );
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
    assert_eq!(s["note"], "Successfully assigned default/big to n2");
    assert!(server.list("", "events").is_empty(), "no core v1 events");
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
    // One SLI observation per bound pod, labelled by its attempt count (the
    // watch may show a pod bound before its bind result: then its count is 1).
    let sli: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("scheduler_pod_scheduling_sli_duration_seconds_count{attempts=\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(sli, 6.0, "{text}");
    assert!(text.contains("scheduler_pending_pods{queue=\"gated\"} 0"));
    // Framework timings from the engine's hook: every evaluation's Filter (plugin
    // timings are sampled: covered by corral-engine's framework_timings test).
    let point = |status: &str| {
        value(&format!(
            "scheduler_framework_extension_point_duration_seconds_count{{extension_point=\"Filter\",status=\"{status}\",profile=\"corral\"}}"
        ))
    };
    assert!(point("Success") >= 6.0, "{text}");
    assert!(point("Unschedulable") >= 1.0, "{text}");
    h.stop();
}

/// Without `events.k8s.io/v1` (an older or restricted API server) the same Events
/// are written as core v1 Events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_v1_events_when_events_k8s_io_is_not_served() {
    let server = TestApiServer::start().await.expect("server");
    server.set_served("events.k8s.io", "events", false);
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    server.insert(node("n0", "4")).expect("node");
    server.insert(pod("p0", "100m")).expect("pod");
    server.insert(pod("p1", "100m")).expect("pod");
    server.insert(pod("big", "6")).expect("pod");
    let client = common::client(&server).await;
    let h = start(
        client,
        corral_scheduler::config::default_frameworks(),
        RunOptions::default(),
    )
    .expect("start");
    let core = |pod: &str| -> Vec<Value> {
        server
            .list("", "events")
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == pod)
            .collect()
    };
    wait_for("core v1 events", Duration::from_secs(20), || {
        !core("p0").is_empty() && !core("p1").is_empty() && !core("big").is_empty()
    })
    .await;
    for p in ["p0", "p1"] {
        let e = &core(p)[0];
        assert_eq!(e["reason"], "Scheduled");
        assert_eq!(e["source"]["component"], "corral");
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("Successfully assigned default/{p} to n0"))),
            "{e}"
        );
    }
    assert_eq!(core("big")[0]["reason"], "FailedScheduling");
    assert_eq!(core("big")[0]["type"], "Warning");
    // Probed once (the first write), then remembered.
    assert_eq!(server.unserved_requests(), 1);
    h.stop();
}

/// Volcano PodGroup Events: `Unschedulable` with the gang verdict while it cannot be
/// placed, `Scheduled` once it runs; one of each (transitions, not sessions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podgroup_events_follow_volcano() {
    let server = TestApiServer::start().await.expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    server.insert(node("n0", "2")).expect("node");
    server
        .insert(
            json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": "train", "namespace": "default", "uid": "pg-uid"},
            "spec": {"minMember": 3}}),
        )
        .expect("pg");
    for i in 0..3 {
        let mut p = pod(&format!("t{i}"), "1");
        p["metadata"]["annotations"] = json!({"scheduling.k8s.io/group-name": "train"});
        server.insert(p).expect("pod");
    }
    let client = common::client(&server).await;
    let h = start(
        client,
        corral_scheduler::config::default_frameworks(),
        RunOptions::default(),
    )
    .expect("start");
    let group_events = || -> Vec<Value> {
        server
            .list("events.k8s.io", "events")
            .into_iter()
            .filter(|e| e["regarding"]["kind"] == "PodGroup")
            .collect()
    };
    wait_for("Unschedulable", Duration::from_secs(20), || {
        group_events()
            .iter()
            .any(|e| e["reason"] == "Unschedulable")
    })
    .await;
    let e = group_events()
        .into_iter()
        .find(|e| e["reason"] == "Unschedulable")
        .expect("event");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["regarding"]["uid"], "pg-uid");
    assert_eq!(
        e["regarding"]["apiVersion"],
        "scheduling.volcano.sh/v1beta1"
    );
    assert!(
        e["note"]
            .as_str()
            .is_some_and(|n| n.contains("tasks in gang unschedulable")),
        "{e}"
    );
    // Room for the whole gang: it runs, one Scheduled event.
    server.insert(node("n1", "2")).expect("node");
    wait_for("Scheduled", Duration::from_secs(20), || {
        group_events().iter().any(|e| e["reason"] == "Scheduled")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ev = group_events();
    let reasons: Vec<&str> = ev.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == "Scheduled").count(),
        1,
        "{ev:?}"
    );
    let s = ev
        .iter()
        .find(|e| e["reason"] == "Scheduled")
        .expect("Scheduled");
    assert_eq!(s["type"], "Normal");
    assert!(
        s["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("pod group is ready")),
        "{s}"
    );
    h.stop();
}
