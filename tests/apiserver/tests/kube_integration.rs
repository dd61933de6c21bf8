//! corral-scheduler `run` against the in-process test API server.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_scheduler::k8s::leader::LeaderOptions;
use corral_scheduler::k8s::{Handle, RunOptions, start};
use corral_test_apiserver::{Fault, FaultKind, TestApiServer};
use serde_json::{Value, json};

fn node(name: &str, cpu: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": cpu, "memory": "64Gi", "pods": "110"},
                   "capacity": {"cpu": cpu, "memory": "64Gi", "pods": "110"}}})
}

fn pod(name: &str, cpu: &str, node: Option<&str>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"schedulerName": "corral", "containers": [{"name": "c", "image": "img",
            "resources": {"requests": {"cpu": cpu, "memory": "100Mi"}}}]},
        "status": {"phase": "Pending"}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
        p["status"]["phase"] = json!("Running");
    }
    p
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

async fn start_sched(server: &TestApiServer, opts: RunOptions) -> Handle {
    let c = common::client(server).await;
    start(c, corral_scheduler::config::default_frameworks(), opts).expect("start")
}

fn bound(server: &TestApiServer) -> usize {
    server
        .list("", "pods")
        .iter()
        .filter(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
        })
        .count()
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_bound_at_most_once(server: &TestApiServer) {
    for (k, n) in server.bindings() {
        assert_eq!(n, 1, "pod {k} bound {n} times");
    }
}

fn seed(server: &TestApiServer, nodes: usize, pending: usize) {
    server.insert(namespace("default")).expect("ns");
    for i in 0..nodes {
        server.insert(node(&format!("n{i}"), "8")).expect("node");
    }
    for i in 0..pending {
        server
            .insert(pod(&format!("p{i}"), "100m", None))
            .expect("pod");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_plain_pods_once_and_reports_ready() {
    let server = TestApiServer::start().await.expect("server");
    seed(&server, 4, 40);
    let h = start_sched(&server, RunOptions::default()).await;
    wait_for("40 bound pods", Duration::from_secs(20), || {
        bound(&server) == 40
    })
    .await;
    assert!(h.ready.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(server.bindings().len(), 40);
    assert_bound_at_most_once(&server);
    // A pod created later is bound too, with PodScheduled=True set by the binding.
    server.insert(pod("late", "100m", None)).expect("pod");
    wait_for("late pod", Duration::from_secs(10), || {
        server
            .get("", "pods", Some("default"), "late")
            .is_some_and(|p| p["spec"]["nodeName"].is_string())
    })
    .await;
    // The API shows the binding before the binder's result reaches the loop.
    wait_for("binds_total 41", Duration::from_secs(10), || {
        h.metrics
            .encode()
            .contains("corral_scheduler_binds_total 41")
    })
    .await;
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_409_is_not_retried_in_a_storm() {
    let server = TestApiServer::start().await.expect("server");
    seed(&server, 2, 0);
    // Every binding request is delayed so "another scheduler" binds first.
    server.inject(Fault {
        method: None,
        path_contains: "/binding".into(),
        kind: FaultKind::Delay(Duration::from_millis(800)),
        count: 1,
    });
    let h = start_sched(&server, RunOptions::default()).await;
    wait_for("ready", Duration::from_secs(10), || {
        h.ready.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    server.insert(pod("contested", "100m", None)).expect("pod");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Another scheduler wins the race.
    server
        .insert(pod("contested", "100m", Some("n1")))
        .expect("bind elsewhere");
    wait_for("409", Duration::from_secs(5), || {
        server.binding_conflicts() == 1
    })
    .await;
    // No retry storm: the watch shows the pod bound; nothing is retried.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(server.binding_conflicts(), 1);
    assert!(server.bindings().is_empty());
    let text = h.metrics.encode();
    assert!(
        text.contains("bind_errors_total{result=\"conflict\"} 1"),
        "{text}"
    );
    // The cache keeps working: a new pod is bound.
    server.insert(pod("next", "100m", None)).expect("pod");
    wait_for("next bound", Duration::from_secs(10), || {
        server.bindings().contains_key("default/next")
    })
    .await;
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_drop_and_410_relist_without_double_bind() {
    let server = TestApiServer::start().await.expect("server");
    seed(&server, 3, 30);
    let h = start_sched(&server, RunOptions::default()).await;
    wait_for("30 bound", Duration::from_secs(20), || bound(&server) == 30).await;
    // Transient API errors first, so the reconnects after the cut fail (and are
    // counted) deterministically; meanwhile 30 pods arrive and the history is
    // compacted past them: the resumed watch answers 410 Gone and the watchers relist.
    server.inject(Fault {
        method: None,
        path_contains: "/api/v1/pods".into(),
        kind: FaultKind::InternalError,
        count: 2,
    });
    server.drop_watches();
    for i in 30..60 {
        server
            .insert(pod(&format!("p{i}"), "100m", None))
            .expect("pod");
    }
    server.compact();
    wait_for("60 bound", Duration::from_secs(30), || bound(&server) == 60).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.bindings().len(), 60);
    assert_bound_at_most_once(&server);
    assert_eq!(
        server.binding_conflicts(),
        0,
        "no pod was bound twice by mistake"
    );
    let text = h.metrics.encode();
    // (the series exists from the start with 0; the 410 must have counted)
    let errors: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("corral_scheduler_watch_errors_total{resource=\"pods\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        errors >= 1.0,
        "the 410 was seen and answered with a relist: {text}"
    );
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_binds_every_pod_once() {
    let server = TestApiServer::start().await.expect("server");
    seed(&server, 4, 0);
    let lo = |id: &str| LeaderOptions {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
        ..LeaderOptions::new("default", "corral-scheduler", id)
    };
    let a = start_sched(
        &server,
        RunOptions {
            leader: Some(lo("a")),
            ..RunOptions::default()
        },
    )
    .await;
    wait_for("a leads", Duration::from_secs(10), || {
        a.leader.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    let b = start_sched(
        &server,
        RunOptions {
            leader: Some(lo("b")),
            ..RunOptions::default()
        },
    )
    .await;
    for i in 0..20 {
        server
            .insert(pod(&format!("p{i}"), "100m", None))
            .expect("pod");
    }
    wait_for("20 bound by a", Duration::from_secs(20), || {
        bound(&server) == 20
    })
    .await;
    assert!(
        !b.leader.load(std::sync::atomic::Ordering::Relaxed),
        "standby"
    );
    let b_leader = b.leader.clone();
    a.stop();
    for i in 20..40 {
        server
            .insert(pod(&format!("p{i}"), "100m", None))
            .expect("pod");
    }
    let t0 = Instant::now();
    wait_for("b takes over", Duration::from_secs(10), || {
        b_leader.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    assert!(
        t0.elapsed() <= Duration::from_secs(4),
        "within the lease duration"
    );
    wait_for("40 bound", Duration::from_secs(20), || bound(&server) == 40).await;
    assert_eq!(server.bindings().len(), 40);
    assert_bound_at_most_once(&server);
    let lease = server
        .get(
            "coordination.k8s.io",
            "leases",
            Some("default"),
            "corral-scheduler",
        )
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_scheduling_events_are_aggregated() {
    let server = TestApiServer::start().await.expect("server");
    seed(&server, 2, 0);
    server.insert(pod("huge", "100", None)).expect("pod");
    let h = start_sched(&server, RunOptions::default()).await;
    wait_for("condition", Duration::from_secs(10), || {
        server
            .get("", "pods", Some("default"), "huge")
            .is_some_and(|p| {
                p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "PodScheduled" && c["status"] == "False")
                })
            })
    })
    .await;
    // Node events re-queue the pod repeatedly; each retry fails again.
    for i in 0..20 {
        // Allocatable changes are relevant cluster events.
        let cpu = if i % 4 < 2 { "8" } else { "9" };
        server
            .insert(node(&format!("n{}", i % 2), cpu))
            .expect("node");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events: Vec<Value> = server
        .list("events.k8s.io", "events")
        .into_iter()
        .filter(|e| e["regarding"]["name"] == "huge")
        .collect();
    assert_eq!(events.len(), 1, "one aggregated event: {events:?}");
    let e = &events[0];
    assert_eq!(e["reason"], "FailedScheduling");
    assert_eq!(e["type"], "Warning");
    assert!(
        e["note"]
            .as_str()
            .is_some_and(|m| m.starts_with("0/2 nodes are available")),
        "{e}"
    );
    let text = h.metrics.encode();
    let written: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("corral_scheduler_events_written_total "))
        .and_then(|v| v.parse().ok())
        .expect("events_written");
    // Attempts over ~3.5 s with backoff 1, 2, 4 s: at most 3 writes.
    assert!(written <= 3.0, "event writes {written}");
    let pod = server
        .get("", "pods", Some("default"), "huge")
        .expect("pod");
    let conds = pod["status"]["conditions"].as_array().expect("conditions");
    let ps: Vec<&Value> = conds
        .iter()
        .filter(|c| c["type"] == "PodScheduled")
        .collect();
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0]["reason"], "Unschedulable");
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_prefilled_api_binds_quickly() {
    let server = TestApiServer::start().await.expect("server");
    server.insert(namespace("default")).expect("ns");
    let nodes = 100;
    let mut objs = Vec::new();
    for i in 0..nodes {
        objs.push(node(&format!("n{i}"), "64"));
    }
    for i in 0..3000 {
        objs.push(pod(
            &format!("r{i}"),
            "100m",
            Some(&format!("n{}", i % nodes)),
        ));
    }
    for i in 0..20 {
        objs.push(pod(&format!("p{i}"), "100m", None));
    }
    server.insert_all(objs).expect("prefill");
    let t0 = Instant::now();
    let h = start_sched(&server, RunOptions::default()).await;
    wait_for("first bind", Duration::from_secs(20), || {
        !server.bindings().is_empty()
    })
    .await;
    let first = t0.elapsed();
    wait_for("all bound", Duration::from_secs(20), || {
        server.bindings().len() == 20
    })
    .await;
    assert_bound_at_most_once(&server);
    assert!(first < Duration::from_secs(20));
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_binds_are_retried_after_backoff() {
    let server = Arc::new(TestApiServer::start().await.expect("server"));
    seed(&server, 2, 5);
    server.inject(Fault {
        method: None,
        path_contains: "/binding".into(),
        kind: FaultKind::Throttle,
        count: 3,
    });
    let h = start_sched(&server, RunOptions::default()).await;
    wait_for("5 bound", Duration::from_secs(20), || bound(&server) == 5).await;
    assert_bound_at_most_once(&server);
    h.stop();
}

fn loadgen_args(pods: u64, gang: u32) -> corral_loadgen::k8s::Args {
    corral_loadgen::k8s::Args {
        kubeconfig: None,
        pods,
        rate: 2000.0,
        gang_size: gang,
        nodes: 10,
        fake_nodes: true,
        namespace: "default".into(),
        scheduler_name: "corral".into(),
        prefix: "lg".into(),
        concurrency: 32,
        timeout_seconds: 30,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_k8s_measures_creation_to_bind_latency() {
    let server = TestApiServer::start().await.expect("server");
    server.insert(namespace("default")).expect("ns");
    let h = start_sched(&server, RunOptions::default()).await;
    let c = common::client(&server).await;
    let r = corral_loadgen::k8s::run_with_client(c, &loadgen_args(200, 4))
        .await
        .expect("loadgen");
    assert_eq!(r.created, 200);
    assert_eq!(r.bound, 200, "{r:?}");
    assert!(!r.timed_out);
    assert!(r.creation_to_bind_ms.p99 >= r.creation_to_bind_ms.p50);
    assert!(r.bound_per_second > 0.0);
    assert_eq!(server.list("", "nodes").len(), 10);
    // Gang members carry both group markers; one PodGroup per gang.
    assert_eq!(server.list("scheduling.volcano.sh", "podgroups").len(), 50);
    let p = server
        .get("", "pods", Some("default"), "lg-5")
        .expect("pod");
    assert_eq!(
        p["metadata"]["annotations"]["scheduling.k8s.io/group-name"],
        "lg-gang-1"
    );
    assert_bound_at_most_once(&server);
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_profiles_and_foreign_pods() {
    let server = TestApiServer::start().await.expect("server");
    seed(&server, 2, 0);
    let cfg = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- schedulerName: corral\n- schedulerName: corral-b\n";
    let fws = corral_scheduler::config::KubeSchedulerConfiguration::from_yaml(cfg, "test")
        .expect("config")
        .build()
        .expect("profiles");
    let mut a = pod("a", "100m", None);
    let mut b = pod("b", "100m", None);
    let mut other = pod("other", "100m", None);
    a["spec"]["schedulerName"] = json!("corral");
    b["spec"]["schedulerName"] = json!("corral-b");
    other["spec"]["schedulerName"] = json!("default-scheduler");
    server.insert_all([a, b, other]).expect("pods");
    let h = start(common::client(&server).await, fws, RunOptions::default()).expect("start");
    wait_for("a and b bound", Duration::from_secs(10), || {
        let b = server.bindings();
        b.contains_key("default/a") && b.contains_key("default/b")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!server.bindings().contains_key("default/other"), "not ours");
    // Only the pods bound here have events: a `Scheduled` each; none for "other".
    let events = server.list("events.k8s.io", "events");
    let mut about: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["regarding"]["name"].as_str().unwrap_or("").to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    about.sort();
    assert_eq!(
        about,
        [
            ("a".into(), "Scheduled".into()),
            ("b".into(), "Scheduled".into())
        ],
        "{events:?}"
    );
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_paginate_with_continue_tokens() {
    use kube::api::ListParams;
    let server = TestApiServer::start().await.expect("server");
    seed(&server, 5, 0);
    let api: kube::Api<k8s_openapi::api::core::v1::Node> =
        kube::Api::all(common::client(&server).await);
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(2);
    let mut pages = 0;
    let mut rv = None;
    loop {
        let page = api.list(&lp).await.expect("list");
        pages += 1;
        names.extend(page.items.iter().filter_map(|n| n.metadata.name.clone()));
        let first_rv = rv.get_or_insert(page.metadata.resource_version.clone());
        assert_eq!(
            *first_rv, page.metadata.resource_version,
            "one list resourceVersion"
        );
        // A node added mid-list with a later key shows up; nothing repeats.
        if pages == 1 {
            server.insert(node("n9", "8")).expect("node");
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = ListParams::default().limit(2).continue_token(&c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["n0", "n1", "n2", "n3", "n4", "n9"]);
}

// ---- Gangs, queues, quotas, priority classes, topology through the API ----

fn gang_pod(name: &str, group: &str, cpu: &str) -> Value {
    let mut p = pod(name, cpu, None);
    p["metadata"]["annotations"] = json!({"scheduling.k8s.io/group-name": group});
    p
}

fn volcano_group(name: &str, min: u32, extra: Value) -> Value {
    let mut spec = json!({"minMember": min, "queue": "default"});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            spec[k] = v;
        }
    }
    json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

fn pods_bound(server: &TestApiServer, prefix: &str) -> usize {
    server
        .list("", "pods")
        .iter()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(prefix))
                && p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
        })
        .count()
}

fn group_status(server: &TestApiServer, name: &str) -> Value {
    server
        .get("scheduling.volcano.sh", "podgroups", Some("default"), name)
        .map(|g| g["status"].clone())
        .unwrap_or(Value::Null)
}

fn assert_no_noop_status_patches(server: &TestApiServer) {
    for (k, (n, noop)) in server.status_patches() {
        assert_eq!(noop, 0, "{k}: {noop} of {n} status patches changed nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gang_binds_fully_or_not_at_all_and_status_is_patched_once_per_change() {
    let server = TestApiServer::start().await.expect("server");
    seed(&server, 2, 0);
    server
        .insert(
            json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "Queue",
            "metadata": {"name": "default"}, "spec": {"weight": 1}}),
        )
        .expect("queue");
    server
        .insert(volcano_group("pg", 3, json!({})))
        .expect("pg");
    // Two nodes with 8 cpu: only two 5-cpu members fit, the gang needs three.
    for i in 0..3 {
        server
            .insert(gang_pod(&format!("g{i}"), "pg", "5"))
            .expect("pod");
    }
    let h = start_sched(&server, RunOptions::default()).await;
    wait_for("Unschedulable condition", Duration::from_secs(20), || {
        group_status(&server, "pg")["conditions"][0]["type"] == "Unschedulable"
    })
    .await;
    let st = group_status(&server, "pg");
    assert_eq!(st["phase"], "Inqueue", "{st}");
    let msg = st["conditions"][0]["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with("1/3 tasks in gang unschedulable:") && msg.contains("Insufficient cpu"),
        "{msg}"
    );
    // Re-tries on cluster events give the same verdict: no member bound, no patch.
    for i in 0..3 {
        let mut n = node("n0", "8");
        n["metadata"]["labels"]["round"] = json!(i.to_string());
        server.insert(n).expect("node update");
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    assert_eq!(pods_bound(&server, "g"), 0, "partial gang bound");
    assert!(server.bindings().is_empty());
    // A third node: the whole gang binds, each member once.
    server.insert(node("n2", "8")).expect("node");
    wait_for("gang bound", Duration::from_secs(20), || {
        pods_bound(&server, "g") == 3
    })
    .await;
    assert_bound_at_most_once(&server);
    wait_for("Running status", Duration::from_secs(10), || {
        let st = group_status(&server, "pg");
        st["phase"] == "Running" && st["running"] == 3
    })
    .await;
    let st = group_status(&server, "pg");
    assert_eq!(st["conditions"][0]["type"], "Scheduled", "{st}");
    // The Queue status counts the group and the allocation.
    wait_for("queue status", Duration::from_secs(10), || {
        server
            .get("scheduling.volcano.sh", "queues", None, "default")
            .is_some_and(|q| q["status"]["running"] == 1 && q["status"]["allocated"]["cpu"] == "15")
    })
    .await;
    // Member completion updates the counts (one more patch), nothing else.
    let patches = server.status_patches();
    let (n_before, _) = patches["podgroups/default/pg"];
    assert!(n_before <= 4, "{n_before} PodGroup patches for 3 changes");
    let mut done = server.get("", "pods", Some("default"), "g0").expect("pod");
    done["status"]["phase"] = json!("Succeeded");
    server.insert(done).expect("pod update");
    wait_for("succeeded count", Duration::from_secs(10), || {
        group_status(&server, "pg")["succeeded"] == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (n_after, _) = server.status_patches()["podgroups/default/pg"];
    assert_eq!(n_after, n_before + 1);
    assert_no_noop_status_patches(&server);
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gang_member_bind_failure_is_retried_so_the_gang_is_not_left_partial() {
    let server = TestApiServer::start().await.expect("server");
    seed(&server, 3, 0);
    server
        .insert(volcano_group("pg", 3, json!({})))
        .expect("pg");
    // The first two binding attempts of g1 fail with 500.
    server.inject(Fault {
        method: None,
        path_contains: "/pods/g1/binding".into(),
        kind: FaultKind::InternalError,
        count: 2,
    });
    for i in 0..3 {
        server
            .insert(gang_pod(&format!("g{i}"), "pg", "5"))
            .expect("pod");
    }
    let h = start_sched(&server, RunOptions::default()).await;
    wait_for("gang bound", Duration::from_secs(20), || {
        pods_bound(&server, "g") == 3
    })
    .await;
    assert_bound_at_most_once(&server);
    let text = h.metrics.encode();
    assert!(
        text.contains("corral_scheduler_bind_errors_total{result=\"error\"} 2"),
        "{text}"
    );
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_and_priority_class_watches_gate_gang_admission() {
    let server = TestApiServer::start().await.expect("server");
    seed(&server, 4, 0);
    server
        .insert(json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "rq", "namespace": "default"},
            "spec": {"hard": {"requests.cpu": "4"}}}))
        .expect("quota");
    // The group names a PriorityClass that does not exist yet.
    server
        .insert(volcano_group(
            "pg",
            2,
            json!({"priorityClassName": "high", "minResources": {"cpu": "6"}}),
        ))
        .expect("pg");
    for i in 0..2 {
        server
            .insert(gang_pod(&format!("g{i}"), "pg", "3"))
            .expect("pod");
    }
    let h = start_sched(&server, RunOptions::default()).await;
    // Unknown PriorityClass: as in Volcano the group is not rejected (it gets the
    // default priority); the quota (4 cpu < minResources 6) keeps it from being
    // enqueued.
    let quota_verdict = || {
        group_status(&server, "pg")["conditions"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("exceeded quota: rq"))
    };
    wait_for("quota verdict", Duration::from_secs(20), quota_verdict).await;
    assert!(
        !h.metrics
            .encode()
            .contains("corral_scheduler_invalid_objects_total 1"),
        "a missing PriorityClass does not make the PodGroup invalid"
    );
    server
        .insert(
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": "high"}, "value": 1000}),
        )
        .expect("pc");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(quota_verdict());
    assert_eq!(group_status(&server, "pg")["phase"], "Pending");
    assert_eq!(pods_bound(&server, "g"), 0);
    // Raising the hard limit admits and binds the whole gang.
    server
        .insert(json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "rq", "namespace": "default"},
            "spec": {"hard": {"requests.cpu": "8"}}}))
        .expect("quota");
    wait_for("gang bound", Duration::from_secs(20), || {
        pods_bound(&server, "g") == 2
    })
    .await;
    assert_bound_at_most_once(&server);
    assert_no_noop_status_patches(&server);
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_topology_crd_is_discovered_later_without_error_spam() {
    let server = TestApiServer::start().await.expect("server");
    server.set_served("topology.node.k8s.io", "noderesourcetopologies", false);
    seed(&server, 1, 1);
    let h = start_sched(
        &server,
        RunOptions {
            crd_retry: Duration::from_millis(300),
            ..RunOptions::default()
        },
    )
    .await;
    wait_for("plain pod bound", Duration::from_secs(10), || {
        bound(&server) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // One discovery list per retry interval, no watch retries.
    let misses = server.unserved_requests();
    assert!(
        (2..=8).contains(&misses),
        "{misses} requests to the absent CRD"
    );
    // The absent CRD counts as listed and empty (scheduling does not wait for it).
    let m = h.metrics.encode();
    assert!(
        !m.contains("noderesourcetopologies")
            || m.contains(
                "corral_scheduler_watched_objects{resource=\"noderesourcetopologies\"} 0"
            ),
        "{m}"
    );
    server.set_served("topology.node.k8s.io", "noderesourcetopologies", true);
    server
        .insert(json!({"apiVersion": "topology.node.k8s.io/v1alpha2",
            "kind": "NodeResourceTopology", "metadata": {"name": "n0"},
            "topologyPolicies": ["SingleNUMANodeContainerLevel"],
            "zones": [{"name": "node-0", "type": "Node",
                "resources": [{"name": "cpu", "capacity": "8", "allocatable": "8", "available": "8"}]}]}))
        .expect("nrt");
    wait_for("topology watched", Duration::from_secs(10), || {
        h.metrics
            .encode()
            .contains("corral_scheduler_watched_objects{resource=\"noderesourcetopologies\"} 1")
    })
    .await;
    // The CRD going away again empties the cache quietly.
    server.set_served("topology.node.k8s.io", "noderesourcetopologies", false);
    wait_for("topology forgotten", Duration::from_secs(10), || {
        h.metrics
            .encode()
            .contains("corral_scheduler_watched_objects{resource=\"noderesourcetopologies\"} 0")
    })
    .await;
    assert!(
        !h.metrics
            .encode()
            .contains("watch_errors_total{resource=\"noderesourcetopologies\"}")
    );
    h.stop();
}

/// A NodeResourceTopology for `name`: single-numa-node, container scope, zones with
/// 16 allocatable CPUs each and the given available CPUs.
fn nrt(name: &str, available: &[u32]) -> Value {
    let zones: Vec<Value> = available
        .iter()
        .enumerate()
        .map(|(i, a)| {
            json!({"name": format!("node-{i}"), "type": "Node", "resources": [
                {"name": "cpu", "capacity": "16", "allocatable": "16", "available": a.to_string()},
                {"name": "memory", "capacity": "32Gi", "allocatable": "32Gi", "available": "30Gi"}]})
        })
        .collect();
    json!({"apiVersion": "topology.node.k8s.io/v1alpha2", "kind": "NodeResourceTopology",
        "metadata": {"name": name},
        "attributes": [{"name": "topologyManagerPolicy", "value": "single-numa-node"},
                       {"name": "topologyManagerScope", "value": "container"}],
        "zones": zones})
}

fn guaranteed_pod(name: &str, cpu: &str) -> Value {
    let r = json!({"cpu": cpu, "memory": "1Gi"});
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"schedulerName": "corral", "containers": [{"name": "c", "image": "img",
            "resources": {"requests": r, "limits": r}}]},
        "status": {"phase": "Pending"}})
}

fn node_of(server: &TestApiServer, pod: &str) -> Option<String> {
    server
        .get("", "pods", Some("default"), pod)
        .and_then(|p| p["spec"]["nodeName"].as_str().map(String::from))
        .filter(|n| !n.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guaranteed_pod_goes_to_the_node_whose_numa_zones_fit_it() {
    let server = TestApiServer::start().await.expect("server");
    server.insert(namespace("default")).expect("ns");
    // wide: more CPUs in total (NodeResourcesFit prefers it) but 6 free per zone.
    server.insert(node("wide", "32")).expect("node");
    server.insert(node("narrow", "24")).expect("node");
    server.insert(nrt("wide", &[6, 6])).expect("nrt");
    server.insert(nrt("narrow", &[10, 2])).expect("nrt");
    let h = start_sched(&server, RunOptions::default()).await;
    wait_for("topologies watched", Duration::from_secs(10), || {
        h.metrics
            .encode()
            .contains("corral_scheduler_watched_objects{resource=\"noderesourcetopologies\"} 2")
    })
    .await;
    // Two 8-CPU Guaranteed pods: only narrow's zone 0 can hold one; the second must
    // not be bound before the node agent reports more room (same-batch accounting).
    server.insert(guaranteed_pod("g0", "8")).expect("pod");
    server.insert(guaranteed_pod("g1", "8")).expect("pod");
    wait_for("one pod bound", Duration::from_secs(10), || {
        bound(&server) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(bound(&server), 1, "the second pod must wait for NUMA room");
    let first = if node_of(&server, "g0").is_some() {
        "g0"
    } else {
        "g1"
    };
    let second = if first == "g0" { "g1" } else { "g0" };
    assert_eq!(node_of(&server, first).as_deref(), Some("narrow"));
    // The agent reports the first pod in zone 0 and frees zone 1: the waiting pod
    // is retried and lands on narrow's zone 1, never on wide.
    server.insert(nrt("narrow", &[2, 10])).expect("nrt update");
    wait_for("second pod bound", Duration::from_secs(20), || {
        bound(&server) == 2
    })
    .await;
    assert_eq!(node_of(&server, second).as_deref(), Some("narrow"));
    assert_bound_at_most_once(&server);
    h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extender_admits_gang_members_from_watched_podgroups_and_pods() {
    use corral_scheduler::extender::{Extender, ExtenderArgs};
    let server = TestApiServer::start().await.expect("server");
    seed(&server, 2, 0);
    server
        .insert(volcano_group("pg", 3, json!({})))
        .expect("pg");
    let member = |i: usize| {
        let mut p = gang_pod(&format!("m{i}"), "pg", "5");
        p["spec"]["schedulerName"] = json!("default-scheduler");
        p
    };
    for i in 0..3 {
        server.insert(member(i)).expect("pod");
    }
    let fw = corral_scheduler::config::default_frameworks()
        .into_iter()
        .next()
        .expect("profile");
    let mut ext = Extender::new(fw);
    let c = common::client(&server).await;
    ext.client = Some(c.clone());
    ext.gangs.lock().expect("gangs").active = true;
    let ext = Arc::new(ext);
    let mut tasks = corral_scheduler::extender::cache::spawn_snapshot_cache(c.clone(), ext.clone());
    tasks.extend(corral_scheduler::extender::cache::spawn_gang_watches(
        c,
        ext.clone(),
    ));
    let filter = |names: &[&str]| {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(member(0)).expect("pod");
        let args = ExtenderArgs {
            pod: Some(pod),
            nodes: None,
            nodenames: Some(names.iter().map(|s| s.to_string()).collect()),
        };
        serde_json::to_value(ext.filter(args)).expect("json")
    };
    // Two 8-cpu nodes hold one 5-cpu member each: the gang of 3 is not admitted.
    wait_for(
        "gang verdict from the watches",
        Duration::from_secs(20),
        || {
            filter(&["n0", "n1"])["failedNodes"]["n0"]
                .as_str()
                .is_some_and(|m| m.starts_with("gang default/pg cannot be placed as a whole"))
        },
    )
    .await;
    server.insert(node("n2", "8")).expect("node");
    wait_for(
        "member admitted on one node",
        Duration::from_secs(20),
        || {
            filter(&["n0", "n1", "n2"])["nodenames"]
                .as_array()
                .is_some_and(|a| a.len() == 1)
        },
    )
    .await;
    for t in tasks {
        t.abort();
    }
}
