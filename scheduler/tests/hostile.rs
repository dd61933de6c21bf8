//! Hostile input (issue "hostile input never takes Corral down"): the cases found by
//! fuzzing and fault drills, as regression tests — through the real binary for
//! `simulate`, through raw TCP sockets for the extender's HTTP server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use corral_scheduler::extender::{Extender, router};
use corral_scheduler::http_server::{ServerLimits, serve};

fn simulate(files: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = Vec::new();
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        args.push(p);
    }
    let out = Command::new(PathBuf::from(env!("CARGO_BIN_EXE_corral-scheduler")))
        .arg("simulate")
        .args(&args)
        .args(["--output", "json"])
        .output()
        .expect("run corral-scheduler");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: ok}
status: {allocatable: {cpu: "16", memory: 64Gi, pods: "110"}}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: default}
spec:
  containers: [{name: c, image: i, resources: {requests: {cpu: "1"}}}]
"#;

fn gpu_node(name: &str, core: &str, count_label: Option<&str>) -> String {
    let labels = count_label
        .map(|c| format!("labels: {{nvidia.com/gpu.count: \"{c}\"}}"))
        .unwrap_or_default();
    format!(
        "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {name}, {labels}}}\nstatus: {{allocatable: {{cpu: \"16\", memory: 64Gi, pods: \"110\", tencent.com/vcuda-core: \"{core}\", tencent.com/vcuda-memory: \"32\"}}}}\n"
    )
}

/// Each absurd GPU node from the fuzzing report: `simulate` exits non-zero with an
/// error naming file, object and field (it used to abort with SIGABRT or spin).
#[test]
fn absurd_gpu_nodes_are_errors_naming_file_object_and_field() {
    for (core, label, field) in [
        (
            "18446744073709551616",
            None,
            "status.allocatable[tencent.com/vcuda-core]",
        ),
        (
            "200",
            Some("100000000000000000"),
            "metadata.labels[nvidia.com/gpu.count]",
        ),
        (
            "200",
            Some("18446744073709551616"),
            "metadata.labels[nvidia.com/gpu.count]",
        ),
        (
            "100000000000000",
            None,
            "status.allocatable[tencent.com/vcuda-core]",
        ),
    ] {
        let text = format!("{GOOD}{}", gpu_node("gpu-bad", core, label));
        let (code, _, err) = simulate(&[("cluster.yaml", &text)]);
        assert_ne!(code, 0, "{core} {label:?}: {err}");
        assert!(
            err.contains("cluster.yaml: document 3")
                && err.contains("Node gpu-bad")
                && err.contains(field)
                && err.contains("exceeds the limit"),
            "{core} {label:?}: {err}"
        );
    }
    // At the limits the node is accepted.
    let text = format!("{GOOD}{}", gpu_node("gpu-max", "102400", Some("128")));
    let (code, _, err) = simulate(&[("cluster.yaml", &text)]);
    assert_eq!(code, 0, "{err}");
}

/// 100,000 `[` (took ~24 s in the YAML parser): fails at the pre-scan with the limit.
#[test]
fn deep_nesting_fails_fast_with_the_limit() {
    let deep = format!("x: {}", "[".repeat(100_000));
    let (code, _, err) = simulate(&[("deep.yaml", &deep)]);
    assert_ne!(code, 0);
    assert!(
        err.contains("deep.yaml") && err.contains("nesting deeper than the limit of 100"),
        "{err}"
    );
    let e = corral_scheduler::config::KubeSchedulerConfiguration::from_yaml(&deep, "cfg.yaml")
        .unwrap_err();
    assert!(
        e.0.contains("cfg.yaml") && e.0.contains("limit of 100"),
        "{e}"
    );
    let e = corral_scheduler::extender::parse::<serde_json::Value>(
        format!("{{\"pod\": {}", "[".repeat(100_000)).as_bytes(),
        "ExtenderArgs",
    )
    .unwrap_err();
    assert!(e.contains("limit of 100"), "{e}");
}

/// A pod with only limits (cpu 64, memory 256Gi) on a 16-CPU node: the API server
/// would default requests to limits, so the pod does not fit.
#[test]
fn limits_only_pod_gets_requests_from_limits() {
    let text = r#"
apiVersion: v1
kind: Node
metadata: {name: n16}
status: {allocatable: {cpu: "16", memory: 512Gi, pods: "110"}}
---
apiVersion: v1
kind: Pod
metadata: {name: big, namespace: default}
spec:
  schedulerName: corral
  containers: [{name: c, image: i, resources: {limits: {cpu: "64", memory: 256Gi}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: small, namespace: default}
spec:
  schedulerName: corral
  initContainers: [{name: init, image: i, resources: {limits: {cpu: "2"}}}]
  containers: [{name: c, image: i, resources: {limits: {cpu: "8"}}}]
"#;
    let (code, out, err) = simulate(&[("c.yaml", text)]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let un = v["unschedulable"].as_array().expect("unschedulable");
    assert_eq!(un.len(), 1, "{v}");
    assert_eq!(un[0]["pod"], "default/big");
    assert!(un[0].to_string().contains("Insufficient cpu"), "{v}");
    let placed = v["placements"].as_array().expect("placements");
    assert!(
        placed
            .iter()
            .any(|p| p["pod"] == "default/small" && p["node"] == "n16"),
        "{v}"
    );
}

/// PriorityClass defaulting: globalDefault gives its value and preemptionPolicy.
#[test]
fn global_default_priority_class_applies_to_file_pods() {
    let text = r#"
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: batch-default}
value: 500
globalDefault: true
preemptionPolicy: Never
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers: [{name: c, image: i}]
"#;
    let inp = corral_scheduler::input::load_str(text, "pc.yaml", &[]).expect("load");
    let p = &inp.pods[0].0;
    assert_eq!(p.priority, 500);
    let spec = p.spec().expect("spec");
    assert_eq!(spec.preemption_policy.as_deref(), Some("Never"));
    assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
}

// ---- the extender's HTTP server over raw sockets ----

fn test_limits() -> ServerLimits {
    ServerLimits {
        header_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(800),
        max_connections: 8,
        max_body_bytes: corral_limits::MAX_EXTENDER_BODY_BYTES,
        ..ServerLimits::default()
    }
}

/// Starts the extender (default profile) on a loopback port in its own runtime.
fn start_extender(lim: ServerLimits) -> (std::net::SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ext = Arc::new(Extender::new(
        corral_scheduler::config::default_frameworks()
            .into_iter()
            .next()
            .expect("profile"),
    ));
    let addr = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(serve(l, router(ext), lim));
        addr
    });
    (addr, rt)
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// Reads until the server closes the connection (EOF or reset); an error when it is
/// still open after 5 s.
fn read_until_closed(s: &mut TcpStream) -> Result<Vec<u8>, String> {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "connection still open after 5 s (read so far: {:?})",
                    String::from_utf8_lossy(&out)
                ));
            }
            Err(_) => return Ok(out),
        }
    }
}

/// One request on a fresh connection; returns the whole response.
fn request(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut s = connect(addr);
    s.write_all(raw).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn post(path: &str, ctype: Option<&str>, body: &str) -> Vec<u8> {
    let ct = ctype
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn filter_body(bad_node: &str) -> String {
    serde_json::json!({
        "Pod": {"metadata": {"name": "p", "namespace": "default"},
                "spec": {"containers": [{"name": "c", "image": "i",
                    "resources": {"requests": {"cpu": "1"}}}]}},
        "Nodes": {"items": [
            {"metadata": {"name": "good"},
             "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"}}},
            serde_json::from_str::<serde_json::Value>(bad_node).expect("node")
        ]}
    })
    .to_string()
}

/// A POST /filter with an absurd GPU node is answered (the node is reported failed,
/// the others evaluated), and the extender answers the next request and /healthz.
#[test]
fn extender_survives_absurd_gpu_node_and_answers_the_next_request() {
    let (addr, _rt) = start_extender(test_limits());
    let bad = r#"{"metadata": {"name": "gpu-bad", "labels": {"nvidia.com/gpu.count": "100000000000000000"}},
        "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110",
            "tencent.com/vcuda-core": "18446744073709551616", "tencent.com/vcuda-memory": "8"}}}"#;
    for _ in 0..2 {
        let r = request(
            addr,
            &post("/filter", Some("application/json"), &filter_body(bad)),
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let body: serde_json::Value =
            serde_json::from_str(r.split("\r\n\r\n").nth(1).expect("body")).expect("json");
        let names: Vec<&str> = body["nodes"]["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["good"], "{body}");
        let why = body["failedAndUnresolvableNodes"]["gpu-bad"]
            .as_str()
            .expect("reason");
        assert!(
            why.contains("invalid node") && why.contains("exceeds the limit"),
            "{why}"
        );
    }
    let r = request(addr, HEALTHZ);
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok"), "{r}");
    let r = request(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        r.contains("corral_scheduler_invalid_objects_total 2"),
        "{r}"
    );
}

#[test]
fn extender_requires_json_content_type() {
    let (addr, _rt) = start_extender(test_limits());
    let body = filter_body(r#"{"metadata": {"name": "x"}}"#);
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let r = request(addr, &post("/filter", ct, &body));
        assert!(r.starts_with("HTTP/1.1 415"), "{ct:?}: {r}");
        assert!(r.contains("Content-Type must be application/json"), "{r}");
    }
    let r = request(
        addr,
        &post("/filter", Some("application/json; charset=utf-8"), &body),
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

/// A slowloris connection (header bytes trickling in) does not block /healthz and is
/// closed at the header timeout; an idle keep-alive connection is closed too; a
/// request whose body never completes gets 408.
#[test]
fn slow_and_idle_connections_are_cut_off_without_blocking_healthz() {
    let lim = test_limits();
    let (addr, _rt) = start_extender(lim);
    let mut slow = connect(addr);
    slow.write_all(b"POST /filter HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let idle = connect(addr);
    let t0 = std::time::Instant::now();
    // Keep trickling; /healthz answers meanwhile.
    let mut closed = false;
    for i in 0..40 {
        if slow.write_all(format!("X-{i}: y\r\n").as_bytes()).is_err() {
            closed = true;
            break;
        }
        let r = request(addr, HEALTHZ);
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The server closed the slowloris connection: reading gives EOF (or a reset),
    // within a bound of the header timeout (the loop above ran ≥ 2 s).
    if !closed {
        let got = read_until_closed(&mut slow)
            .unwrap_or_else(|e| panic!("slowloris after {:?}: {e}", t0.elapsed()));
        let got = String::from_utf8_lossy(&got);
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");
    }
    let mut idle = idle;
    let got = read_until_closed(&mut idle).expect("idle connection closed");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // Headers complete, body never arrives: 408 after the request timeout.
    let mut s = connect(addr);
    s.write_all(
        b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    )
    .expect("write");
    let out = read_until_closed(&mut s).expect("closed after the 408");
    let r = String::from_utf8_lossy(&out);
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
}

/// Connections beyond the limit are closed at accept; once the idle ones time out
/// the server takes new connections again.
#[test]
fn connection_limit() {
    let lim = ServerLimits {
        max_connections: 2,
        ..test_limits()
    };
    let (addr, _rt) = start_extender(lim);
    let _a = connect(addr);
    let _b = connect(addr);
    std::thread::sleep(Duration::from_millis(100));
    let mut c = connect(addr);
    let _ = c.write_all(HEALTHZ);
    let out = read_until_closed(&mut c).expect("closed at accept");
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    // The two idle connections hit the header timeout and free their slots.
    std::thread::sleep(lim.header_timeout + Duration::from_millis(400));
    let r = request(addr, HEALTHZ);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

/// Bodies above the limit are refused before they are buffered.
#[test]
fn oversized_body_is_refused() {
    let (addr, _rt) = start_extender(test_limits());
    let mut s = connect(addr);
    s.write_all(
        format!(
            "POST /filter HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            corral_limits::MAX_EXTENDER_BODY_BYTES + 1
        )
        .as_bytes(),
    )
    .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let r = String::from_utf8_lossy(&out);
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
}
