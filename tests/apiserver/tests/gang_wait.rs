//! A gang waiting for its member pods costs no write per member: the members are
//! gated (no attempt, no `PodScheduled=False` patch, no `FailedScheduling` Event);
//! after the grace period the PodGroup alone gets Volcano's condition
//! (`Unschedulable`, reason `NotEnoughTasks`) and one Event. The member that
//! completes the gang, or a PodGroup whose minMember is lowered, lets it go.
//! Counted at the test API server.

mod common;

use std::time::{Duration, Instant};

use corral_scheduler::k8s::{Handle, RunOptions, start};
use corral_test_apiserver::TestApiServer;
use serde_json::{Value, json};

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "8", "memory": "64Gi", "pods": "110"},
                   "capacity": {"cpu": "8", "memory": "64Gi", "pods": "110"}}})
}

fn member(name: &str, group: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
            "annotations": {"scheduling.k8s.io/group-name": group}},
        "spec": {"schedulerName": "corral", "containers": [{"name": "c", "image": "img",
            "resources": {"requests": {"cpu": "1", "memory": "100Mi"}}}]},
        "status": {"phase": "Pending"}})
}

fn group(name: &str, min: u32) -> Value {
    json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"minMember": min, "queue": "default"}})
}

async fn start_sched(server: &TestApiServer) -> Handle {
    let c = common::client(server).await;
    start(
        c,
        corral_scheduler::config::default_frameworks(),
        RunOptions::default(),
    )
    .expect("start")
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status(server: &TestApiServer, name: &str) -> Value {
    server
        .get("scheduling.volcano.sh", "podgroups", Some("default"), name)
        .map(|g| g["status"].clone())
        .unwrap_or(Value::Null)
}

fn is_bound(server: &TestApiServer, pod: &str) -> bool {
    server
        .get("", "pods", Some("default"), pod)
        .is_some_and(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
        })
}

/// Events about pods (any reason but `Scheduled`) and pod status patches.
fn pod_failure_writes(server: &TestApiServer) -> (Vec<Value>, Vec<String>) {
    let events: Vec<Value> = server
        .list("events.k8s.io", "events")
        .into_iter()
        .chain(server.list("", "events"))
        .filter(|e| {
            let kind = e["regarding"]["kind"]
                .as_str()
                .or(e["involvedObject"]["kind"].as_str());
            kind == Some("Pod") && e["reason"] != "Scheduled"
        })
        .collect();
    let patches: Vec<String> = server
        .status_patches()
        .into_keys()
        .filter(|k| k.starts_with("pods/"))
        .collect();
    (events, patches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_gang_members_get_no_failure_writes_only_a_podgroup_condition() {
    let server = TestApiServer::start().await.expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    server.insert(node("n0")).expect("node");
    server.insert(node("n1")).expect("node");
    server.insert(group("pg", 3)).expect("pg");
    server.insert(member("g0", "pg")).expect("pod");
    server.insert(member("g1", "pg")).expect("pod");
    let h = start_sched(&server).await;
    wait_for("ready", Duration::from_secs(20), || {
        h.ready.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    // Past the grace period: the PodGroup says why, the pods are untouched.
    wait_for("NotEnoughTasks condition", Duration::from_secs(20), || {
        status(&server, "pg")["conditions"][0]["reason"] == "NotEnoughTasks"
    })
    .await;
    let st = status(&server, "pg");
    assert_eq!(st["conditions"][0]["type"], "Unschedulable", "{st}");
    assert_eq!(
        st["conditions"][0]["message"],
        "Not enough valid tasks for gang-scheduling, valid: 2, min: 3",
        "{st}"
    );
    assert_eq!(st["phase"], "Pending", "{st}");
    // A few backoff windows later still no write about the members.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (events, patches) = pod_failure_writes(&server);
    assert!(events.is_empty(), "failure events about pods: {events:?}");
    assert!(patches.is_empty(), "pod status patches: {patches:?}");
    assert!(server.bindings().is_empty(), "partial gang bound");
    // One PodGroup status patch and one Unschedulable Event for the whole wait.
    let (n, noop) = server.status_patches()["podgroups/default/pg"];
    assert_eq!((n, noop), (1, 0), "PodGroup status patches");
    let group_events: Vec<Value> = server
        .list("events.k8s.io", "events")
        .into_iter()
        .filter(|e| e["regarding"]["kind"] == "PodGroup")
        .collect();
    assert_eq!(group_events.len(), 1, "{group_events:?}");
    assert_eq!(group_events[0]["reason"], "Unschedulable");
    // The gated members show in the pending metric as gated.
    let m = h.metrics.encode();
    assert!(
        m.contains("scheduler_pending_pods{queue=\"gated\"} 2"),
        "{}",
        m.lines()
            .filter(|l| l.contains("pending_pods"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !m.contains("scheduler_schedule_attempts_total{result=\"unschedulable\""),
        "waiting is not a failed attempt"
    );

    // The third member completes the gang: all three bind, each once.
    server.insert(member("g2", "pg")).expect("pod");
    wait_for("gang bound", Duration::from_secs(20), || {
        (0..3).all(|i| is_bound(&server, &format!("g{i}")))
    })
    .await;
    for (k, n) in server.bindings() {
        assert_eq!(n, 1, "{k} bound {n} times");
    }
    wait_for("Scheduled condition", Duration::from_secs(10), || {
        status(&server, "pg")["conditions"][0]["type"] == "Scheduled"
    })
    .await;
    let (events, patches) = pod_failure_writes(&server);
    assert!(events.is_empty(), "failure events about pods: {events:?}");
    assert!(patches.is_empty(), "pod status patches: {patches:?}");
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_min_member_releases_a_waiting_gang() {
    let server = TestApiServer::start().await.expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    server.insert(node("n0")).expect("node");
    server.insert(group("pg", 4)).expect("pg");
    server.insert(member("a0", "pg")).expect("pod");
    server.insert(member("a1", "pg")).expect("pod");
    let h = start_sched(&server).await;
    wait_for("NotEnoughTasks condition", Duration::from_secs(20), || {
        status(&server, "pg")["conditions"][0]["reason"] == "NotEnoughTasks"
    })
    .await;
    assert!(server.bindings().is_empty());
    // minMember 4 → 2: no new pod, the spec change alone lets the members go.
    let mut pg = server
        .get("scheduling.volcano.sh", "podgroups", Some("default"), "pg")
        .expect("pg");
    pg["spec"]["minMember"] = json!(2);
    server.insert(pg).expect("pg update");
    wait_for("gang bound", Duration::from_secs(20), || {
        is_bound(&server, "a0") && is_bound(&server, "a1")
    })
    .await;
    let (events, patches) = pod_failure_writes(&server);
    assert!(events.is_empty(), "failure events about pods: {events:?}");
    assert!(patches.is_empty(), "pod status patches: {patches:?}");
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_gang_has_all_its_bindings_in_flight_at_once() {
    // Every request takes 300 ms: bound one after another, 8 members would take
    // ≥ 2.4 s from the first binding to the last; in flight together, about one
    // round trip.
    const LATENCY: Duration = Duration::from_millis(300);
    let server = TestApiServer::start_with(corral_test_apiserver::Options {
        latency: LATENCY,
        ..Default::default()
    })
    .await
    .expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    server.insert(node("n0")).expect("node");
    server.insert(group("pg", 8)).expect("pg");
    for i in 0..8 {
        server.insert(member(&format!("m{i}"), "pg")).expect("pod");
    }
    let h = start_sched(&server).await;
    let t0 = Instant::now();
    let first = loop {
        if !server.bindings().is_empty() {
            break t0.elapsed();
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no binding");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    wait_for("all 8 bound", Duration::from_secs(60), || {
        server.bindings().len() == 8
    })
    .await;
    let spread = t0.elapsed() - first;
    assert!(
        spread < LATENCY * 7,
        "first to last binding took {spread:?}: the members were bound one after another"
    );
    for (k, n) in server.bindings() {
        assert_eq!(n, 1, "{k} bound {n} times");
    }
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_appears_already_bound_releases_its_gated_gang_mates() {
    let server = TestApiServer::start().await.expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    server.insert(node("n0")).expect("node");
    server.insert(group("pg", 3)).expect("pg");
    server.insert(member("b0", "pg")).expect("pod");
    server.insert(member("b1", "pg")).expect("pod");
    let h = start_sched(&server).await;
    wait_for("members gated", Duration::from_secs(20), || {
        h.metrics
            .encode()
            .contains("scheduler_pending_pods{queue=\"gated\"} 2")
    })
    .await;
    // The third member arrives bound (another scheduler, or bound before a restart).
    let mut b2 = member("b2", "pg");
    b2["spec"]["nodeName"] = json!("n0");
    b2["status"]["phase"] = json!("Running");
    server.insert(b2).expect("pod");
    wait_for("gang-mates bound", Duration::from_secs(20), || {
        is_bound(&server, "b0") && is_bound(&server, "b1")
    })
    .await;
    let (events, patches) = pod_failure_writes(&server);
    assert!(events.is_empty(), "failure events about pods: {events:?}");
    assert!(patches.is_empty(), "pod status patches: {patches:?}");
    h.stop();
}
