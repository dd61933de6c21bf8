//! `corral-scheduler run` honours or rejects its KubeSchedulerConfiguration's process
//! settings (the binary against the test API server).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_test_apiserver::{Fault, FaultKind, TestApiServer};
use serde_json::json;

const HEAD: &str = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- schedulerName: corral\n";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corral-scheduler"))
}

/// Runs to completion within 20 s (killed and failed otherwise).
fn output_within(cmd: &mut Command) -> std::process::Output {
    let mut child = Proc(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let t0 = Instant::now();
    while child.0.try_wait().expect("try_wait").is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{cmd:?} did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = std::mem::replace(&mut child.0, Command::new("true").spawn().expect("true"));
    c.wait_with_output().expect("output")
}

#[test]
fn unsupported_fields_are_errors_naming_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (extra, field, extender_too) in [
        (
            "clientConnection:\n  contentType: application/vnd.kubernetes.protobuf\n",
            "clientConnection.contentType",
            true,
        ),
        (
            "leaderElection:\n  resourceLock: endpoints\n",
            "leaderElection.resourceLock",
            false,
        ),
        ("enableProfiling: true\n", "enableProfiling", true),
        ("podMaxBackoffSeconds: 0\n", "podMaxBackoffSeconds", true),
        (
            "clientConnection:\n  qps: 20\n",
            "clientConnection.qps",
            true,
        ),
    ] {
        let p = dir.path().join("config.yaml");
        std::fs::write(&p, format!("{HEAD}{extra}")).unwrap();
        let out = output_within(
            bin()
                .args(["run", "--listen", "127.0.0.1:0", "--config"])
                .arg(&p)
                .env("KUBECONFIG", dir.path().join("missing"))
                .env_remove("KUBERNETES_SERVICE_HOST"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        if field == "clientConnection.qps" {
            // Honoured by run (it then fails connecting to the missing kubeconfig).
            assert!(!err.contains(field), "{err}");
        } else {
            assert_eq!(out.status.code(), Some(1), "{extra}: {err}");
            assert!(
                err.contains(field) && err.contains("config.yaml"),
                "{extra}: {err}"
            );
        }
        if !extender_too {
            continue;
        }
        // The extender rejects what it cannot honour too.
        let out = output_within(
            bin()
                .args(["extender", "--listen", "127.0.0.1:0", "--config"])
                .arg(&p)
                .env_remove("KUBERNETES_SERVICE_HOST"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "extender {extra}: {err}");
        assert!(err.contains(field), "extender {extra}: {err}");
    }
}

/// Four throttled binds, then success: retries after 1 + 2 + 2 + 2 s with
/// `podMaxBackoffSeconds: 2` (the default 10 s cap would give 1 + 2 + 4 + 8 s).
#[test]
fn pod_max_backoff_seconds_bounds_the_retry_interval() {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let server = rt.block_on(TestApiServer::start()).expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .unwrap();
    server
        .insert(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
            "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                       "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"}}}))
        .unwrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kc).unwrap();
    let cfg = dir.path().join("config.yaml");
    // The kubeconfig comes from clientConnection, leader election is off by the file.
    std::fs::write(
        &cfg,
        format!(
            "{HEAD}podInitialBackoffSeconds: 1\npodMaxBackoffSeconds: 2\n\
             leaderElection:\n  leaderElect: false\n\
             clientConnection:\n  kubeconfig: {}\n  contentType: application/json\n",
            kc.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("run.log");
    let _p = Proc(
        bin()
            .args([
                "run",
                "--listen",
                "127.0.0.1:0",
                "--logging-format=json",
                "--config",
            ])
            .arg(&cfg)
            .env_remove("RUST_LOG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn run"),
    );
    // Let it sync first (the retries, not the start-up, are measured).
    let t0 = Instant::now();
    while server.requests() < 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "run never connected"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    server.inject(Fault {
        method: None,
        path_contains: "/binding".into(),
        kind: FaultKind::Throttle,
        count: 4,
    });
    server
        .insert(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p1", "namespace": "default"},
            "spec": {"schedulerName": "corral", "containers": [{"name": "c", "image": "img",
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]},
            "status": {"phase": "Pending"}}))
        .unwrap();
    let t0 = Instant::now();
    let bound = || {
        server
            .get("", "pods", Some("default"), "p1")
            .is_some_and(|p| p["spec"]["nodeName"] == "n1")
    };
    while !bound() {
        assert!(
            t0.elapsed() < Duration::from_secs(12),
            "not bound within 12 s:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(6500) && took < Duration::from_secs(11),
        "bound after {took:?}; expected about 7 s (1+2+2+2)"
    );
    assert_eq!(server.bindings().get("default/p1"), Some(&1));

    // Logs: JSON lines at info by default, with the start-up summary showing the
    // settings in effect.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let start = lines
        .iter()
        .find(|l| l["fields"]["message"] == "corral-scheduler run starting")
        .unwrap_or_else(|| panic!("no start-up summary:\n{text}"));
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["fields"]["backoff"], "1s..2s", "{start}");
    assert_eq!(start["fields"]["leader_election"], "off", "{start}");
    assert_eq!(
        start["fields"]["kubeconfig"],
        kc.display().to_string(),
        "{start}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "caches synced: ready"),
        "{text}"
    );
}
