//! Kubernetes-integration benchmarks against the in-process test API server.
//!
//! cargo bench -p corral-test-apiserver --bench k8s -- restart [NODES] [PODS]
//! cargo bench -p corral-test-apiserver --bench k8s -- e2e [NODES] [PODS] [RATE] [GANG] [RUNNING]
//!
//! `restart`: the API holds NODES nodes and PODS running pods plus 100 pending ones;
//! measures scheduler start → ready (initial lists applied) → first binding.
//! `e2e`: NODES fake nodes; corral-loadgen k8s creates PODS pods at RATE/s while the
//! scheduler runs; reports bound pods/s and creation→bind percentiles, plus where
//! the time goes (API request count, scheduler algorithm vs binding latency). With
//! GANG > 1 the pods come as Volcano gangs of that size (PodGroup minMember = GANG,
//! decided by batch sessions); RUNNING pods are prefilled as already running, so the
//! sessions work against a full-size cluster (e.g. 150,000).
//!
//! Options (anywhere on the line): `--latency-ms N` makes the test API server add N ms
//! to every request (`Options::latency`: a slower API server); `--json PATH` appends
//! the e2e result (loadgen report with its latency CDF and created/bound timeline,
//! plus the run's parameters and where the time went) as one JSON line to PATH, the
//! input of `cargo run -p corral-benches --bin plots`.

use std::time::{Duration, Instant};

use corral_scheduler::k8s::{RunOptions, start};
use corral_test_apiserver::{Options, TestApiServer};
use serde_json::{Value, json};

fn node(i: usize) -> Value {
    let name = format!("n{i}");
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("z{}", i % 10)}},
        "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                   "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"}}})
}

fn pod(name: &str, node: Option<String>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "bench"}},
        "spec": {"schedulerName": "corral", "containers": [{"name": "c", "image": "img",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
        "status": {"phase": "Pending"}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
        p["status"]["phase"] = json!("Running");
    }
    p
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn kube_client(server: &TestApiServer) -> kube::Client {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("kubeconfig");
    server.write_kubeconfig(&p).expect("kubeconfig");
    corral_scheduler::k8s::client(Some(&p))
        .await
        .expect("client")
}

async fn restart(nodes: usize, pods: usize) {
    let server = TestApiServer::start().await.expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    let t = Instant::now();
    for i in 0..nodes {
        server.insert(node(i)).expect("node");
    }
    for i in 0..pods {
        server
            .insert(pod(&format!("r{i}"), Some(format!("n{}", i % nodes))))
            .expect("pod");
    }
    for i in 0..100 {
        server.insert(pod(&format!("p{i}"), None)).expect("pod");
    }
    eprintln!("prefilled {nodes} nodes + {pods} pods in {:?}", t.elapsed());
    let c = kube_client(&server).await;
    let t0 = Instant::now();
    let h = start(
        c,
        corral_scheduler::config::default_frameworks(),
        RunOptions::default(),
    )
    .expect("start");
    let mut ready = None;
    let first = loop {
        if ready.is_none() && h.ready.load(std::sync::atomic::Ordering::Relaxed) {
            ready = Some(t0.elapsed());
        }
        if !server.bindings().is_empty() {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no binding in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    while server.bindings().len() < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all = t0.elapsed();
    println!(
        "restart: nodes={nodes} running_pods={pods} ready_s={:.3} first_bind_s={:.3} all_100_bound_s={:.3}",
        ready.unwrap_or(first).as_secs_f64(),
        first.as_secs_f64(),
        all.as_secs_f64()
    );
    h.stop();
}

/// `--latency-ms` and `--json` of the command line.
#[derive(Default, Clone)]
struct Extra {
    latency: Duration,
    json: Option<String>,
}

async fn e2e(nodes: usize, pods: u64, rate: f64, gang: u32, running: usize, extra: Extra) {
    let server = TestApiServer::start_with(Options {
        latency: extra.latency,
        ..Options::default()
    })
    .await
    .expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    for i in 0..nodes {
        server.insert(node(i)).expect("node");
    }
    for i in 0..running {
        server
            .insert(pod(
                &format!("r{i}"),
                Some(format!("n{}", i % nodes.max(1))),
            ))
            .expect("pod");
    }
    let c = kube_client(&server).await;
    let mut opts = RunOptions::default();
    if std::env::var_os("CORRAL_BENCH_NO_EVICT").is_some() {
        use corral_scheduler::batch::session::Action;
        opts.session.actions = Some(vec![Action::Enqueue, Action::Allocate, Action::Backfill]);
    }
    // A/B of the `Scheduled` Event written per binding (one more write each, under
    // the same QPS limiter).
    opts.scheduled_events = std::env::var_os("CORRAL_BENCH_NO_SCHEDULED_EVENTS").is_none();
    let h = start(
        c.clone(),
        corral_scheduler::config::default_frameworks(),
        opts,
    )
    .expect("start");
    while !h.ready.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let req0 = server.requests();
    let args = corral_loadgen::k8s::Args {
        kubeconfig: None,
        pods,
        rate,
        gang_size: gang.max(1),
        nodes: 0,
        fake_nodes: false,
        namespace: "default".into(),
        scheduler_name: "corral".into(),
        prefix: "lg".into(),
        concurrency: 256,
        timeout_seconds: 120,
    };
    let r = corral_loadgen::k8s::run_with_client(c, &args)
        .await
        .expect("loadgen");
    let requests = server.requests() - req0;
    let m = h.metrics.encode();
    // Wall time of all scheduling work on the loop thread (plain batches and batch
    // sessions), not the per-pod histogram's sum.
    let algo_sum = metric(&m, "corral_scheduler_scheduling_algorithm_seconds_total ");
    let bind_sum = metric(&m, "corral_scheduler_binding_duration_seconds_sum ");
    let bind_n = metric(&m, "corral_scheduler_binding_duration_seconds_count ");
    let double_binds = server.bindings().values().filter(|n| **n > 1).count();
    // Writes by kind, counted at the server when the last pod was bound.
    let patches = server.status_patches();
    let sum = |prefix: &str| -> u64 {
        patches
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, (n, _))| *n)
            .sum()
    };
    let (pod_status_patches, podgroup_patches) = (sum("pods/"), sum("podgroups/"));
    let events: Vec<Value> = server
        .list("events.k8s.io", "events")
        .into_iter()
        .chain(server.list("", "events"))
        .collect();
    let failed_events = events
        .iter()
        .filter(|e| e["reason"] == "FailedScheduling")
        .count();
    let ms = extra.latency.as_secs_f64() * 1000.0;
    if let Some(path) = &extra.json {
        let mut line = serde_json::to_value(&r).expect("json");
        line["bench"] = json!("e2e");
        line["build"] = json!(if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        });
        line["nodes"] = json!(nodes);
        line["rate"] = json!(rate);
        line["gang"] = json!(gang);
        line["running"] = json!(running);
        line["api_latency_ms"] = json!(ms);
        line["api_requests"] = json!(requests);
        line["sched_algorithm_s_total"] = json!(algo_sum);
        line["double_binds"] = json!(double_binds);
        line["pod_status_patches"] = json!(pod_status_patches);
        line["failed_scheduling_events"] = json!(failed_events);
        line["podgroup_status_patches"] = json!(podgroup_patches);
        line["unix_time"] = json!(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        );
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("--json file");
        writeln!(f, "{line}").expect("write --json");
    }
    println!(
        "e2e: nodes={nodes} pods={pods} rate={rate} gang={gang} running={running} api_latency_ms={ms} created_per_s={:.0} bound_per_s={:.0} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} api_requests={requests} sched_algorithm_s_total={:.3} bind_latency_ms_mean={:.2} double_binds={double_binds} pod_status_patches={pod_status_patches} failed_scheduling_events={failed_events} podgroup_status_patches={podgroup_patches}",
        r.created_per_second,
        r.bound_per_second,
        r.creation_to_bind_ms.p50,
        r.creation_to_bind_ms.p99,
        r.creation_to_bind_ms.max,
        algo_sum,
        1000.0 * bind_sum / bind_n.max(1.0),
    );
    h.stop();
}

fn main() {
    let mut extra = Extra::default();
    let mut args: Vec<String> = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--latency-ms" => {
                let v = it.next().unwrap_or_default();
                let ms: f64 = v
                    .parse()
                    .ok()
                    .filter(|m: &f64| m.is_finite() && *m >= 0.0)
                    .unwrap_or_else(|| panic!("--latency-ms: not a number of ms: {v:?}"));
                extra.latency = Duration::from_secs_f64(ms / 1000.0);
            }
            "--json" => extra.json = it.next(),
            a if a.starts_with("--") => {}
            _ => args.push(a),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let num = |i: usize, d: f64| args.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(d);
    match args.first().map(String::as_str) {
        Some("restart") => {
            rt.block_on(restart(num(1, 5000.0) as usize, num(2, 150_000.0) as usize))
        }
        Some("e2e") => rt.block_on(e2e(
            num(1, 5000.0) as usize,
            num(2, 20_000.0) as u64,
            num(3, 4000.0),
            num(4, 1.0) as u32,
            num(5, 0.0) as usize,
            extra,
        )),
        _ => {
            // Small smoke run of both (what `cargo bench` with no filter does).
            rt.block_on(restart(100, 2000));
            rt.block_on(e2e(100, 500, 1000.0, 1, 0, extra.clone()));
            rt.block_on(e2e(100, 400, 1000.0, 8, 2000, extra));
        }
    }
}
