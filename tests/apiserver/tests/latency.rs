//! `Options::latency`: every request (read, write, the start of a watch) is served
//! no sooner than the configured latency after it arrived, and requests are delayed
//! concurrently (a slower server, not a serialized one).

mod common;

use std::time::{Duration, Instant};

use corral_test_apiserver::{Options, TestApiServer};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::{PostParams, WatchParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_waits_the_configured_latency_concurrently() {
    const LATENCY: Duration = Duration::from_millis(400);
    let server = TestApiServer::start_with(Options {
        latency: LATENCY,
        ..Options::default()
    })
    .await
    .expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    let c = common::client(&server).await;
    let ns: Api<Namespace> = Api::all(c.clone());
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");

    // A read.
    let t = Instant::now();
    ns.get("default").await.expect("get");
    assert!(t.elapsed() >= LATENCY, "GET served after {:?}", t.elapsed());

    // A write.
    let p: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p0", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}))
    .expect("pod");
    let t = Instant::now();
    pods.create(&PostParams::default(), &p)
        .await
        .expect("create");
    assert!(
        t.elapsed() >= LATENCY,
        "POST served after {:?}",
        t.elapsed()
    );
    assert!(server.get("", "pods", Some("default"), "p0").is_some());

    // The start of a watch: its first event comes no sooner than the latency.
    let t = Instant::now();
    let mut w = pods
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watch")
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(30), w.next())
        .await
        .expect("watch event in time");
    assert!(first.is_some(), "watch stream ended");
    assert!(
        t.elapsed() >= LATENCY,
        "watch started after {:?}",
        t.elapsed()
    );

    // Concurrent requests are delayed side by side: 8 of them take far less than
    // 8 × the latency (each still at least the latency).
    let t = Instant::now();
    let gets = (0..8).map(|_| {
        let ns = ns.clone();
        async move {
            let t = Instant::now();
            ns.get("default").await.expect("get");
            t.elapsed()
        }
    });
    let each = futures::future::join_all(gets).await;
    let all = t.elapsed();
    for e in &each {
        assert!(*e >= LATENCY, "a concurrent GET served after {e:?}");
    }
    assert!(
        all < LATENCY * 8,
        "8 concurrent GETs took {all:?}: the latency serialized them"
    );
    let before = server.requests();
    ns.get("default").await.expect("get");
    assert_eq!(server.requests(), before + 1, "each request counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_latency_by_default() {
    let server = TestApiServer::start().await.expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    let ns: Api<Namespace> = Api::all(common::client(&server).await);
    assert_eq!(Options::default().latency, Duration::ZERO);
    // 20 sequential reads well under 20 × the 400 ms used above.
    let t = Instant::now();
    for _ in 0..20 {
        ns.get("default").await.expect("get");
    }
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_binary_prefills_and_serves_with_its_latency() {
    let bin = env!("CARGO_BIN_EXE_corral-test-apiserver");
    // Bad input: non-zero exit naming the flag.
    for (args, want) in [
        (&["--latency-ms", "soon"][..], "--latency-ms"),
        (&["--running", "5"], "--running needs --nodes"),
        (&["--bogus"], "\"--bogus\""),
    ] {
        let out = std::process::Command::new(bin)
            .args(args)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kc");
    let mut child = tokio::process::Command::new(bin)
        .args(["--nodes", "3", "--running", "5", "--latency-ms", "100"])
        .arg("--kubeconfig-out")
        .arg(&kc)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let t0 = Instant::now();
    while !kc.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no kubeconfig written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = corral_scheduler::k8s::client(Some(&kc))
        .await
        .expect("client");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.clone());
    let t = Instant::now();
    let list = nodes.list(&Default::default()).await.expect("list");
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(list.items.len(), 3);
    let pods: Api<Pod> = Api::namespaced(c, "default");
    let bound: Vec<String> = pods
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    assert_eq!(bound, ["n0", "n1", "n2", "n0", "n1"]);
    child.start_kill().expect("kill");
    let _ = child.wait().await;
}
