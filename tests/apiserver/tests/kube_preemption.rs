//! Preemption and reclaim carried out by corral-scheduler `run` against the
//! in-process test API server: victims evicted through the API (policy/v1 Eviction
//! or DELETE), preemptors nominated and bound only after their victims terminated,
//! disruption budgets honoured, gangs preempted and placed whole.

mod common;

use std::time::{Duration, Instant};

use corral_scheduler::k8s::evictor::EvictionMode;
use corral_scheduler::k8s::{Handle, RunOptions, start};
use corral_test_apiserver::{Options, TestApiServer};
use serde_json::{Value, json};

fn node(name: &str, cpu: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": cpu, "memory": "64Gi", "pods": "110"},
                   "capacity": {"cpu": cpu, "memory": "64Gi", "pods": "110"}}})
}

/// A pod with `spec.priority` set (as the Priority admission plugin would).
fn pod(name: &str, cpu: &str, priority: i32, node: Option<&str>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"schedulerName": "corral", "priority": priority,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "img",
            "resources": {"requests": {"cpu": cpu, "memory": "100Mi"}}}]},
        "status": {"phase": "Pending"}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
        p["status"]["phase"] = json!("Running");
    }
    p
}

fn gang_pod(name: &str, group: &str, cpu: &str, priority: i32, node: Option<&str>) -> Value {
    let mut p = pod(name, cpu, priority, node);
    p["metadata"]["annotations"] = json!({"scheduling.k8s.io/group-name": group});
    p
}

async fn start_sched(server: &TestApiServer, opts: RunOptions) -> Handle {
    let c = common::client(server).await;
    start(c, corral_scheduler::config::default_frameworks(), opts).expect("start")
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn get(server: &TestApiServer, name: &str) -> Option<Value> {
    server.get("", "pods", Some("default"), name)
}

fn node_of(server: &TestApiServer, name: &str) -> Option<String> {
    get(server, name).and_then(|p| {
        p["spec"]["nodeName"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    })
}

fn seed(server: &TestApiServer) {
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
}

fn assert_bound_at_most_once(server: &TestApiServer) {
    for (k, n) in server.bindings() {
        assert_eq!(n, 1, "pod {k} bound {n} times");
    }
}

fn graceful() -> Options {
    Options {
        termination_grace: Duration::from_millis(1500),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_pod_preempts_and_binds_only_after_its_victim_is_gone() {
    let server = TestApiServer::start_with(graceful()).await.expect("server");
    seed(&server);
    server.insert(node("n0", "4")).expect("node");
    server.insert(pod("low", "3", 0, Some("n0"))).expect("pod");
    server.insert(pod("high", "3", 1000, None)).expect("pod");
    let h = start_sched(&server, RunOptions::default()).await;
    // The victim is marked and evicted; the preemptor is nominated, not bound.
    wait_for("victim terminating", Duration::from_secs(20), || {
        get(&server, "low").is_some_and(|p| !p["metadata"]["deletionTimestamp"].is_null())
    })
    .await;
    let low = get(&server, "low").expect("low");
    let cond = low["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionTarget").cloned())
        .expect("DisruptionTarget condition");
    assert_eq!(cond["reason"], "PreemptionByScheduler", "{cond}");
    wait_for("nomination", Duration::from_secs(10), || {
        get(&server, "high").is_some_and(|p| p["status"]["nominatedNodeName"] == "n0")
    })
    .await;
    // A lower-priority pod arriving now must not take the capacity being freed.
    server.insert(pod("sneak", "2", 0, None)).expect("pod");
    let mut saw_high_bound_while_low_exists = false;
    wait_for("preemptor bound", Duration::from_secs(20), || {
        let high = node_of(&server, "high");
        if high.is_some() && get(&server, "low").is_some() {
            saw_high_bound_while_low_exists = true;
        }
        high.is_some()
    })
    .await;
    assert!(
        !saw_high_bound_while_low_exists,
        "preemptor bound before its victim terminated"
    );
    assert_eq!(node_of(&server, "high").as_deref(), Some("n0"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        node_of(&server, "sneak"),
        None,
        "sneak took the preemptor's room"
    );
    assert_eq!(server.evictions().get("default/low"), Some(&1));
    assert_eq!(server.evictions().len(), 1, "{:?}", server.evictions());
    assert_bound_at_most_once(&server);
    let events = server.list("events.k8s.io", "events");
    assert!(
        events.iter().any(|e| e["reason"] == "Preempted"
            && e["action"] == "Preempting"
            && e["regarding"]["name"] == "low"
            && e["note"]
                .as_str()
                .is_some_and(|m| m.contains("default/high"))),
        "{events:?}"
    );
    let text = h.metrics.encode();
    assert!(
        text.contains("corral_scheduler_preemption_victims_total{result=\"evicted\"} 1"),
        "{text}"
    );
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disruption_budget_is_honoured_and_another_victim_is_chosen() {
    let server = TestApiServer::start().await.expect("server");
    seed(&server);
    server.insert(node("n0", "4")).expect("node");
    server.insert(node("n1", "4")).expect("node");
    server
        .insert(pod("low-a", "3", 0, Some("n0")))
        .expect("pod");
    server
        .insert(pod("low-b", "3", 0, Some("n1")))
        .expect("pod");
    server.set_eviction_blocked("default/low-a", true);
    // preemptionPolicy Never: waits instead of evicting.
    let mut never = pod("never", "3", 5000, None);
    never["spec"]["preemptionPolicy"] = json!("Never");
    server.insert(never).expect("pod");
    let h = start_sched(&server, RunOptions::default()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(server.evictions().is_empty(), "{:?}", server.evictions());
    assert_eq!(node_of(&server, "never"), None);
    server.insert(pod("high", "3", 1000, None)).expect("pod");
    wait_for("preemptor bound", Duration::from_secs(30), || {
        node_of(&server, "high").is_some()
    })
    .await;
    assert_eq!(node_of(&server, "high").as_deref(), Some("n1"));
    assert_eq!(
        node_of(&server, "low-a").as_deref(),
        Some("n0"),
        "budget ignored"
    );
    assert!(get(&server, "low-b").is_none());
    assert_eq!(server.evictions().get("default/low-a"), None);
    assert_bound_at_most_once(&server);
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gang_preempts_a_lower_priority_gang_whole_with_delete() {
    let server = TestApiServer::start_with(graceful()).await.expect("server");
    seed(&server);
    for (name, value) in [("low", 10), ("high", 1000)] {
        server
            .insert(
                json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value}),
            )
            .expect("pc");
    }
    for n in ["n0", "n1"] {
        server.insert(node(n, "4")).expect("node");
    }
    for (name, pc) in [("lo", "low"), ("hi", "high")] {
        server
            .insert(
                json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"minMember": 2, "queue": "default", "priorityClassName": pc}}),
            )
            .expect("pg");
    }
    server
        .insert(gang_pod("lo-0", "lo", "3", 10, Some("n0")))
        .expect("pod");
    server
        .insert(gang_pod("lo-1", "lo", "3", 10, Some("n1")))
        .expect("pod");
    for i in 0..2 {
        server
            .insert(gang_pod(&format!("hi-{i}"), "hi", "3", 1000, None))
            .expect("pod");
    }
    let h = start_sched(
        &server,
        RunOptions {
            eviction: EvictionMode::Delete,
            ..RunOptions::default()
        },
    )
    .await;
    let mut partial = false;
    wait_for("high gang bound", Duration::from_secs(30), || {
        let n = (0..2)
            .filter(|i| node_of(&server, &format!("hi-{i}")).is_some())
            .count();
        let lows = ["lo-0", "lo-1"]
            .iter()
            .filter(|p| get(&server, p).is_some())
            .count();
        if n > 0 && lows > 0 {
            partial = true;
        }
        n == 2
    })
    .await;
    assert!(
        !partial,
        "a preemptor bound while victims were still terminating"
    );
    assert!(get(&server, "lo-0").is_none() && get(&server, "lo-1").is_none());
    let mut nodes: Vec<String> = (0..2)
        .filter_map(|i| node_of(&server, &format!("hi-{i}")))
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["n0", "n1"]);
    assert_eq!(server.evictions().len(), 2, "{:?}", server.evictions());
    assert_bound_at_most_once(&server);
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_below_its_share_reclaims_from_a_queue_above_it() {
    let server = TestApiServer::start().await.expect("server");
    seed(&server);
    for n in ["n0", "n1"] {
        server.insert(node(n, "4")).expect("node");
    }
    for q in ["research", "prod"] {
        server
            .insert(
                json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "Queue",
                "metadata": {"name": q}, "spec": {"weight": 1, "reclaimable": q == "research"}}),
            )
            .expect("queue");
    }
    let in_queue = |mut p: Value, q: &str| {
        p["metadata"]["annotations"] = json!({"scheduling.volcano.sh/queue-name": q});
        p
    };
    // research holds the whole cluster; both pods have the higher priority, so only
    // reclaim (fair share across queues) can make room, not preempt.
    server
        .insert(in_queue(pod("r0", "3", 100, Some("n0")), "research"))
        .expect("pod");
    server
        .insert(in_queue(pod("r1", "3", 100, Some("n1")), "research"))
        .expect("pod");
    server
        .insert(in_queue(pod("p0", "3", 0, None), "prod"))
        .expect("pod");
    let h = start_sched(&server, RunOptions::default()).await;
    wait_for("prod pod bound", Duration::from_secs(30), || {
        node_of(&server, "p0").is_some()
    })
    .await;
    let ev = server.evictions();
    assert_eq!(ev.len(), 1, "exactly one research pod reclaimed: {ev:?}");
    let gone: Vec<&String> = ev.keys().collect();
    assert!(
        gone[0] == "default/r0" || gone[0] == "default/r1",
        "{gone:?}"
    );
    // The other research pod keeps running: research is back at its share.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.evictions().len(), 1);
    assert_bound_at_most_once(&server);
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_runtime_evicts_pods_and_gangs_past_their_cap_only() {
    let server = TestApiServer::start().await.expect("server");
    seed(&server);
    server.insert(node("n0", "16")).expect("node");
    let ago = |secs: i64| {
        k8s_openapi::jiff::Timestamp::now()
            .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(secs))
            .expect("time")
            .round(k8s_openapi::jiff::Unit::Second)
            .expect("round")
            .to_string()
    };
    let started = |mut p: Value, secs: i64, cap: Option<&str>| {
        p["status"]["startTime"] = json!(ago(secs));
        if let Some(c) = cap {
            p["metadata"]["annotations"]["corral.io/max-runtime"] = json!(c);
        }
        p
    };
    server
        .insert(started(pod("old", "1", 0, Some("n0")), 7200, Some("1h")))
        .expect("pod");
    server
        .insert(started(pod("young", "1", 0, Some("n0")), 60, Some("1h")))
        .expect("pod");
    server
        .insert(started(
            pod("typo", "1", 0, Some("n0")),
            7200,
            Some("forever"),
        ))
        .expect("pod");
    server
        .insert(started(pod("free", "1", 0, Some("n0")), 7200, None))
        .expect("pod");
    server
        .insert(
            json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": "train", "namespace": "default",
                "annotations": {"corral.io/max-runtime": "30m"}},
            "spec": {"minMember": 2, "queue": "default"}}),
        )
        .expect("pg");
    for i in 0..2 {
        server
            .insert(started(
                gang_pod(&format!("train-{i}"), "train", "1", 0, Some("n0")),
                3600,
                None,
            ))
            .expect("pod");
    }
    let h = start_sched(&server, RunOptions::default()).await;
    wait_for("capped pods evicted", Duration::from_secs(20), || {
        ["old", "train-0", "train-1"]
            .iter()
            .all(|p| get(&server, p).is_none())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    for p in ["young", "typo", "free"] {
        assert!(get(&server, p).is_some(), "{p} was evicted");
    }
    let mut ev: Vec<String> = server.evictions().keys().cloned().collect();
    ev.sort();
    assert_eq!(ev, ["default/old", "default/train-0", "default/train-1"]);
    let events = server.list("events.k8s.io", "events");
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "RuntimeLimitExceeded" && e["regarding"]["name"] == "old"),
        "{events:?}"
    );
    let text = h.metrics.encode();
    assert!(
        text.contains("corral_scheduler_invalid_objects_total 1"),
        "{text}"
    );
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_gang_past_its_timeout_is_cleaned_up() {
    let server = TestApiServer::start().await.expect("server");
    seed(&server);
    server.insert(node("n0", "16")).expect("node");
    for (name, ann) in [("stuck", true), ("patient", false)] {
        let mut pg = json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"minMember": 3, "queue": "default"}});
        if ann {
            pg["metadata"]["annotations"] = json!({"corral.io/partial-timeout": "2s"});
        }
        server.insert(pg).expect("pg");
        // Two members run; the third can never fit.
        for i in 0..2 {
            server
                .insert(gang_pod(&format!("{name}-{i}"), name, "1", 0, Some("n0")))
                .expect("pod");
        }
        server
            .insert(gang_pod(&format!("{name}-2"), name, "100", 0, None))
            .expect("pod");
    }
    let h = start_sched(&server, RunOptions::default()).await;
    wait_for("stuck gang cleaned up", Duration::from_secs(30), || {
        get(&server, "stuck-0").is_none() && get(&server, "stuck-1").is_none()
    })
    .await;
    assert!(get(&server, "patient-0").is_some() && get(&server, "patient-1").is_some());
    assert!(
        get(&server, "stuck-2").is_some(),
        "pending member left to its controller"
    );
    let mut ev: Vec<String> = server.evictions().keys().cloned().collect();
    ev.sort();
    assert_eq!(ev, ["default/stuck-0", "default/stuck-1"]);
    h.stop();
}
