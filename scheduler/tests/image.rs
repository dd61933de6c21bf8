//! The scheduler image, offline: no registry is reachable here, so the test builds
//! the runtime stage of `deploy/images/scheduler.Containerfile` by hand — a minimal
//! rootfs holding the `corral-scheduler` binary and the shared libraries `ldd` names
//! (what the distroless `cc` base provides), with the Containerfile's own
//! ENTRYPOINT and USER — imports it into a private podman store, and runs it with
//! the args of `deploy/scheduler/deployment.yaml` and the config of
//! `deploy/common/configmap.yaml` against the test API server until a pod is bound.
//! Then every metric the shipped Grafana dashboard queries must be on the running
//! container's `/metrics`.
//!
//! Needs root, podman and runc (Debian packages installed by scripts/test.sh); with
//! `CI=true` it fails instead of skipping when they are missing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use corral_test_apiserver::TestApiServer;
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn can_run(test: &str) -> bool {
    let root = rustix_free_is_root();
    let tools = ["podman", "runc", "ldd", "tar"]
        .iter()
        .all(|b| Command::new(b).arg("--version").output().is_ok());
    if root && tools {
        return true;
    }
    let why = format!("{test}: needs root, podman, runc, ldd and tar (root={root} tools={tools})");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("SKIP {why}");
    false
}

/// Effective uid 0, read from /proc (no libc/unsafe in this crate).
fn rustix_free_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// podman with a private store (vfs) and run root under the test's directory;
/// removes its containers and images when dropped.
struct Podman {
    base: Vec<String>,
}

impl Podman {
    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("120")
            .args(&self.base)
            .args(args)
            .output()
            .expect("podman")
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-af", "-t", "0"]);
        let _ = self.cmd(&["rmi", "-af"]);
    }
}

/// `KEY value` of the Containerfile's last stage (the runtime image).
fn runtime_directives(containerfile: &str) -> (String, String) {
    let last = containerfile
        .rsplit_once("\nFROM ")
        .map(|(_, s)| s)
        .expect("Containerfile has stages");
    let get = |key: &str| {
        last.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("runtime stage has no {key}"))
    };
    (get("ENTRYPOINT "), get("USER "))
}

/// The shared libraries the dynamic loader needs for `bin` (absolute paths).
fn shared_libs(bin: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(bin).output().expect("ldd");
    assert!(out.status.success(), "ldd {}", bin.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Metric names a PromQL expression reads (`corral_*` identifiers).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(off) = expr[i..].find("corral_") {
        let start = i + off;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        names.push(expr[start..end].to_string());
        i = end;
    }
    names
}

/// Whether `/metrics` text exposes `name`: as a sample, or as a family (`# TYPE`)
/// whose samples carry the suffix (`_total`, `_bucket`, ...) but have none yet.
fn exposes(text: &str, name: &str) -> bool {
    if text.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|r| r.starts_with(['{', ' ']))
    }) {
        return true;
    }
    let base = ["_total", "_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    text.lines().any(|l| {
        l.strip_prefix("# TYPE ")
            .and_then(|r| r.split_whitespace().next())
            == Some(base)
    })
}

#[test]
fn scheduler_image_runs_the_deployment_and_binds_a_pod() {
    let t = "scheduler_image_runs_the_deployment_and_binds_a_pod";
    if !can_run(t) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let s = |p: &str| d.join(p).display().to_string();

    // The runtime stage, from the Containerfile's own directives.
    let cf = std::fs::read_to_string(root().join("deploy/images/scheduler.Containerfile"))
        .expect("deploy/images/scheduler.Containerfile");
    let (entrypoint, user) = runtime_directives(&cf);
    let ep: Vec<String> = serde_json::from_str(&entrypoint).expect("ENTRYPOINT is exec form");
    let rootfs = d.join("rootfs");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_corral-scheduler"));
    let dst = rootfs.join(ep[0].trim_start_matches('/'));
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(&bin, &dst).expect("copy binary");
    for lib in shared_libs(&bin) {
        let to = rootfs.join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&lib, &to).unwrap_or_else(|e| panic!("copy {}: {e}", lib.display()));
    }
    // The distroless base ships the CA bundle; kube's rustls client refuses to
    // start without system roots (seen here: "No CA certificates were loaded").
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    assert!(ca.exists(), "{}: install ca-certificates", ca.display());
    std::fs::create_dir_all(rootfs.join("etc/ssl/certs")).unwrap();
    std::fs::copy(ca, rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    let tar = Command::new("tar")
        .args([
            "-C",
            &rootfs.display().to_string(),
            "-cf",
            &s("rootfs.tar"),
            ".",
        ])
        .status()
        .expect("tar");
    assert!(tar.success());

    // The deployment's container args and the shipped scheduler configuration.
    let dep: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("deploy/scheduler/deployment.yaml")).unwrap(),
    )
    .expect("deployment.yaml");
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "corral/corral-scheduler:0.1.0");
    let cm: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("deploy/common/configmap.yaml")).unwrap(),
    )
    .expect("configmap.yaml");
    let etc = d.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    for (k, v) in cm["data"].as_object().expect("configmap data") {
        std::fs::write(etc.join(k), v.as_str().unwrap()).unwrap();
    }

    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let server = rt
        .block_on(TestApiServer::start())
        .expect("test API server");
    server.write_kubeconfig(&etc.join("kubeconfig")).unwrap();
    // The image runs as USER (non-root): make the mounted files readable.
    for p in [&etc, &etc.join("kubeconfig"), &etc.join("config.yaml")] {
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .unwrap();
    server
        .insert(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
            "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                       "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"}}}))
        .unwrap();
    server
        .insert(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p1", "namespace": "default"},
            "spec": {"schedulerName": "corral", "containers": [{"name": "c", "image": "img",
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]},
            "status": {"phase": "Pending"}}))
        .unwrap();

    let port = free_port();
    let mut args: Vec<String> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .filter(|a| !a.starts_with("--config=") && !a.starts_with("--listen="))
        .collect();
    args.push("--config=/etc/corral/config.yaml".into());
    args.push(format!("--listen=127.0.0.1:{port}"));
    args.push("--kubeconfig=/etc/corral/kubeconfig".into());

    let pm = Podman {
        base: vec![
            "podman".into(),
            "--root".into(),
            s("root"),
            "--runroot".into(),
            s("runroot"),
            "--storage-driver".into(),
            "vfs".into(),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
            "--events-backend".into(),
            "none".into(),
        ],
    };
    let change_ep = format!("ENTRYPOINT {entrypoint}");
    let change_user = format!("USER {user}");
    pm.ok(&[
        "import",
        "--change",
        &change_ep,
        "--change",
        &change_user,
        &s("rootfs.tar"),
        "corral/corral-scheduler:0.1.0",
    ]);
    let mount = format!("{}:/etc/corral:ro", etc.display());
    let mut run = vec![
        "run",
        "-d",
        "--name",
        "corral-scheduler",
        "--network",
        "host",
        // rootful podman raises nofile/nproc beyond this VM's hard limits
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--read-only",
        "-e",
        "POD_NAME=corral-scheduler-0",
        "-v",
        &mount,
        "corral/corral-scheduler:0.1.0",
    ];
    run.extend(args.iter().map(String::as_str));
    pm.ok(&run);

    let t0 = Instant::now();
    let bound = loop {
        let node = server.list("", "pods")[0]["spec"]["nodeName"].clone();
        if node.is_string() {
            break node;
        }
        let running = pm.ok(&[
            "inspect",
            "corral-scheduler",
            "--format",
            "{{.State.Running}}",
        ]);
        if running != "true" || t0.elapsed() > Duration::from_secs(60) {
            let logs = pm.cmd(&["logs", "corral-scheduler"]);
            panic!(
                "pod not bound (container running: {running}, {:?}); container logs:\n{}{}",
                t0.elapsed(),
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(bound, "n1");
    let user_in = pm.ok(&[
        "inspect",
        "corral-scheduler",
        "--format",
        "{{.Config.User}}",
    ]);
    assert_eq!(
        user_in, user,
        "the container runs as the Containerfile's USER"
    );

    // Every metric the shipped dashboard queries exists on the live /metrics.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/monitoring/corral-scheduler-dashboard.json"))
            .unwrap(),
    )
    .expect("dashboard JSON");
    let metrics = http_get(port, "/metrics").expect("GET /metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let mut names: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .flat_map(|t| metric_names(t["expr"].as_str().unwrap()))
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 10, "dashboard queries {names:?}");
    let missing: Vec<_> = names.iter().filter(|n| !exposes(&metrics, n)).collect();
    assert!(
        missing.is_empty(),
        "dashboard metrics missing from /metrics: {missing:?}"
    );

    pm.ok(&["rm", "-f", "-t", "0", "corral-scheduler"]);
    drop(pm);
    drop(server);
}
