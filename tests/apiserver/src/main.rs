//! `corral-test-apiserver`: the test API server as a process, for end-to-end runs
//! with separate `corral-scheduler run` and `corral-loadgen k8s` processes:
//!
//! ```sh
//! corral-test-apiserver --kubeconfig-out /tmp/kc --nodes 5000 --running 150000 --latency-ms 2 &
//! corral-scheduler run --kubeconfig /tmp/kc &
//! corral-loadgen k8s --kubeconfig /tmp/kc --pods 20000 --rate 4000 --gang-size 8
//! ```
//!
//! Serves on 127.0.0.1 (`--port`, 0 = ephemeral) until SIGINT/SIGTERM. `--nodes`
//! fake nodes (64 CPU / 256 Gi / 110 pods, 10 zones) and `--running` pods bound
//! round-robin to them are inserted first, plus the `default` namespace.

use std::process::ExitCode;
use std::time::Duration;

use corral_test_apiserver::{Options, TestApiServer};
use serde_json::json;

struct Args {
    port: u16,
    latency_ms: f64,
    nodes: usize,
    running: usize,
    kubeconfig_out: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        port: 0,
        latency_ms: 0.0,
        nodes: 0,
        running: 0,
        kubeconfig_out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--port" => a.port = val("--port")?.parse().map_err(|e| format!("--port: {e}"))?,
            "--latency-ms" => {
                let v = val("--latency-ms")?;
                a.latency_ms = v
                    .parse()
                    .ok()
                    .filter(|m: &f64| m.is_finite() && *m >= 0.0)
                    .ok_or(format!("--latency-ms: not a number of milliseconds: {v:?}"))?;
            }
            "--nodes" => {
                a.nodes = val("--nodes")?
                    .parse()
                    .map_err(|e| format!("--nodes: {e}"))?
            }
            "--running" => {
                a.running = val("--running")?
                    .parse()
                    .map_err(|e| format!("--running: {e}"))?
            }
            "--kubeconfig-out" => a.kubeconfig_out = Some(val("--kubeconfig-out")?),
            "-h" | "--help" => {
                return Err("usage: corral-test-apiserver [--port P] [--latency-ms MS] [--nodes N] [--running R] [--kubeconfig-out PATH]".into());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.running > 0 && a.nodes == 0 {
        return Err("--running needs --nodes".into());
    }
    Ok(a)
}

fn node(i: usize) -> serde_json::Value {
    let name = format!("n{i}");
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("z{}", i % 10)}},
        "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                   "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"}}})
}

fn running_pod(i: usize, nodes: usize) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("r{i}"), "namespace": "default", "labels": {"app": "running"}},
        "spec": {"schedulerName": "corral", "nodeName": format!("n{}", i % nodes),
            "containers": [{"name": "c", "image": "img",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
        "status": {"phase": "Running"}})
}

async fn serve(a: Args) -> Result<(), String> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", a.port))
        .map_err(|e| format!("listen 127.0.0.1:{}: {e}", a.port))?;
    let server = TestApiServer::start_on_std(
        listener,
        Options {
            latency: Duration::from_secs_f64(a.latency_ms / 1000.0),
            ..Options::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let ins = |v| server.insert(v).map_err(|e| e.to_string());
    ins(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))?;
    for i in 0..a.nodes {
        ins(node(i))?;
    }
    for i in 0..a.running {
        ins(running_pod(i, a.nodes))?;
    }
    if let Some(p) = &a.kubeconfig_out {
        server
            .write_kubeconfig(std::path::Path::new(p))
            .map_err(|e| format!("{p}: {e}"))?;
    }
    eprintln!(
        "corral-test-apiserver: {} ({} nodes, {} running pods, latency {} ms)",
        server.url(),
        a.nodes,
        a.running,
        a.latency_ms
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!(
        "corral-test-apiserver: {} requests, {} bindings",
        server.requests(),
        server.bindings().len()
    );
    Ok(())
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("corral-test-apiserver: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corral-test-apiserver: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral-test-apiserver: {e}");
            ExitCode::FAILURE
        }
    }
}
