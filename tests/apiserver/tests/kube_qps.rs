//! `clientConnection.qps`/`burst` bound `run`'s write rate (bindings, events, status
//! patches), counted at the API server.

mod common;

use std::time::{Duration, Instant};

use corral_scheduler::k8s::{RunOptions, start};
use corral_test_apiserver::TestApiServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qps_bounds_the_write_rate_at_the_api_server() {
    const PODS: usize = 30;
    const QPS: f64 = 20.0;
    const BURST: u32 = 4;
    let server = TestApiServer::start().await.expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n0", "labels": {"kubernetes.io/hostname": "n0"}},
            "status": {"allocatable": {"cpu": "64", "memory": "64Gi", "pods": "110"},
                       "capacity": {"cpu": "64", "memory": "64Gi", "pods": "110"}}}))
        .expect("node");
    for i in 0..PODS {
        server
            .insert(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p{i}"), "namespace": "default", "uid": format!("u{i}")},
                "spec": {"schedulerName": "corral", "containers": [{"name": "c", "image": "i",
                    "resources": {"requests": {"cpu": "100m"}}}]},
                "status": {"phase": "Pending"}}))
            .expect("pod");
    }
    let client = common::client(&server).await;
    let w0 = server.write_requests();
    let t0 = Instant::now();
    let h = start(
        client,
        corral_scheduler::config::default_frameworks(),
        RunOptions {
            qps: QPS,
            burst: BURST,
            ..RunOptions::default()
        },
    )
    .expect("start");
    // (seconds since start, writes so far), sampled until every pod is bound and
    // has its Scheduled event (2 writes per pod).
    let mut samples: Vec<(f64, u64)> = Vec::new();
    loop {
        let w = server.write_requests() - w0;
        samples.push((t0.elapsed().as_secs_f64(), w));
        if server.bindings().len() == PODS && w >= 2 * PODS as u64 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out: {samples:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = samples.last().expect("samples").1;
    let elapsed = samples.last().expect("samples").0;
    // A token bucket lets through at most burst + qps × t in any window of length t
    // (+1 for a request in flight at the window's edge).
    for (i, (ta, wa)) in samples.iter().enumerate() {
        for (tb, wb) in &samples[i + 1..] {
            let allowed = f64::from(BURST) + QPS * (tb - ta + 0.05) + 1.0;
            assert!(
                (wb - wa) as f64 <= allowed,
                "{} writes in {:.2} s (allowed {allowed:.1})",
                wb - wa,
                tb - ta
            );
        }
    }
    // And the run really was limited: 60 writes cannot finish faster than the bucket.
    let min_secs = (total as f64 - f64::from(BURST)) / QPS;
    assert!(
        elapsed >= min_secs * 0.9,
        "{total} writes in {elapsed:.2} s, faster than qps {QPS} allows"
    );
    println!("{total} writes in {elapsed:.2} s at qps {QPS}, burst {BURST}");
    h.stop();
}
