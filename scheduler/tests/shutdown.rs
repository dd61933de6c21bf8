//! Graceful shutdown of `corral-scheduler run` and `extender`: a real SIGTERM to the
//! binary, a standby scheduler in this process, both against the test API server.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use corral_scheduler::k8s::leader::LeaderOptions;
use corral_scheduler::k8s::{RunOptions, start};
use corral_test_apiserver::TestApiServer;
use serde_json::{Value, json};

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "64", "memory": "64Gi", "pods": "110"},
                   "capacity": {"cpu": "64", "memory": "64Gi", "pods": "110"}}})
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"schedulerName": "corral", "containers": [{"name": "c", "image": "img",
            "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}}]},
        "status": {"phase": "Pending"}})
}

fn bound(server: &TestApiServer, prefix: &str) -> usize {
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

fn holder(server: &TestApiServer) -> Option<String> {
    server
        .get(
            "coordination.k8s.io",
            "leases",
            Some("default"),
            "corral-scheduler",
        )
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Kills the child on drop (a failed assertion must not leak the process).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    async fn exit_within(&mut self, timeout: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.0.try_wait().expect("try_wait") {
                return s;
            }
            assert!(t0.elapsed() < timeout, "did not exit within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn stderr_of(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_lease_to_the_standby_at_once_without_double_binds() {
    let server = TestApiServer::start().await.expect("server");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    for i in 0..4 {
        server.insert(node(&format!("n{i}"))).expect("node");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kc).expect("kubeconfig");
    let log = dir.path().join("leader.log");

    // The leader: the real binary, with a 15 s lease (the standby could not take over
    // by expiry within the test's 2 s bound).
    let mut leader = Proc(
        Command::new(env!("CARGO_BIN_EXE_corral-scheduler"))
            .args(["run", "--kubeconfig"])
            .arg(&kc)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--leader-elect-resource-namespace",
                "default",
                "--leader-elect-identity",
                "a",
                "--leader-elect-lease-duration=15s",
                "--leader-elect-renew-deadline=10s",
                "--leader-elect-retry-period=1s",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn corral-scheduler run"),
    );
    wait_for("a leads", Duration::from_secs(20), || {
        holder(&server).as_deref() == Some("a")
    })
    .await;
    for i in 0..20 {
        server.insert(pod(&format!("a{i}"))).expect("pod");
    }
    wait_for("20 bound by a", Duration::from_secs(20), || {
        bound(&server, "a") == 20
    })
    .await;

    // The standby, retrying every 500 ms.
    let client = corral_scheduler::k8s::client(Some(&kc))
        .await
        .expect("client");
    let b = start(
        client,
        corral_scheduler::config::default_frameworks(),
        RunOptions {
            leader: Some(LeaderOptions {
                lease_duration: Duration::from_secs(15),
                renew_deadline: Duration::from_secs(10),
                retry_period: Duration::from_millis(500),
                ..LeaderOptions::new("default", "corral-scheduler", "b")
            }),
            ..RunOptions::default()
        },
    )
    .expect("start standby");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !b.leader.load(std::sync::atomic::Ordering::Relaxed),
        "b is the standby"
    );

    // Pods arriving just before the signal: some binds are in flight when it lands.
    for i in 0..30 {
        server.insert(pod(&format!("m{i}"))).expect("pod");
    }
    leader.sigterm();
    let t0 = Instant::now();
    for i in 0..20 {
        server.insert(pod(&format!("z{i}"))).expect("pod");
    }
    wait_for("b binds every pod", Duration::from_secs(10), || {
        bound(&server, "m") == 30 && bound(&server, "z") == 20
    })
    .await;
    let took = t0.elapsed();
    eprintln!("SIGTERM to all 50 new pods bound by the standby: {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "the standby bound the pods {took:?} after SIGTERM (lease duration 15 s):\n{}",
        stderr_of(&log)
    );
    let status = leader.exit_within(Duration::from_secs(10)).await;
    assert!(status.success(), "exit {status:?}:\n{}", stderr_of(&log));
    assert_eq!(holder(&server).as_deref(), Some("b"));
    assert!(b.leader.load(std::sync::atomic::Ordering::Relaxed));
    let bindings = server.bindings();
    assert_eq!(bindings.len(), 70, "{bindings:?}");
    for (k, n) in &bindings {
        assert_eq!(*n, 1, "pod {k} bound {n} times");
    }
    let text = stderr_of(&log);
    assert!(text.contains("SIGTERM"), "{text}");
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extender_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("extender.log");
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let addr = l.local_addr().expect("addr");
    drop(l);
    let mut ext = Proc(
        Command::new(env!("CARGO_BIN_EXE_corral-scheduler"))
            .args(["extender", "--listen", &addr.to_string()])
            .env("RUST_LOG", "info")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn corral-scheduler extender"),
    );
    wait_for("extender listening", Duration::from_secs(20), || {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .await;
    // An idle keep-alive connection must not hold the shutdown for the grace period.
    let _idle = std::net::TcpStream::connect(addr).expect("connect");
    ext.sigterm();
    let status = ext.exit_within(Duration::from_secs(5)).await;
    assert!(status.success(), "exit {status:?}:\n{}", stderr_of(&log));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer listening"
    );
}
