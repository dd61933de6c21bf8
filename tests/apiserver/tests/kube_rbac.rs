//! `run` without RBAC permission for a volume kind: the test API server answers
//! the claim list/watch with kube-apiserver's 403 Forbidden; the scheduler's log
//! names the missing permission (verb, resource, API group) instead of silently
//! never scheduling, and no pod is bound meanwhile. (Own test binary: it installs
//! the process-wide log subscriber it reads.)

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::Method;
use corral_scheduler::k8s::{RunOptions, start};
use corral_test_apiserver::{FORBIDDEN_USER, Fault, FaultKind, TestApiServer};
use serde_json::json;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_claim_list_names_the_missing_permission() {
    let buf = Buf::default();
    let w = buf.clone();
    tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();

    let server = TestApiServer::start().await.expect("server");
    server.inject(Fault {
        method: Some(Method::GET),
        path_contains: "/persistentvolumeclaims".into(),
        kind: FaultKind::Forbidden,
        count: u64::MAX,
    });
    server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .expect("ns");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
        .expect("node");
    server
        .insert(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"schedulerName": "corral",
                "containers": [{"name": "c", "image": "img", "resources": {"requests": {"cpu": "100m"}}}]},
            "status": {"phase": "Pending"}}))
        .expect("pod");

    let c = common::client(&server).await;
    let h = start(
        c,
        corral_scheduler::config::default_frameworks(),
        RunOptions::default(),
    )
    .expect("start");

    let want = "missing RBAC permission: the scheduler may not list persistentvolumeclaims (API group \"\" (core))";
    let t0 = Instant::now();
    while !buf.text().contains(want) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no log naming the permission; log:\n{}",
            buf.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = buf.text();
    let line = log.lines().find(|l| l.contains(want)).unwrap();
    // The API server's own denial (user, verb, resource, scope) is quoted.
    assert!(line.contains(" ERROR "), "{line}");
    assert!(
        line.contains(&format!("User {FORBIDDEN_USER:?} cannot list resource \"persistentvolumeclaims\" in API group \"\" at the cluster scope")),
        "{line}"
    );
    assert!(line.contains("no pod is scheduled"), "{line}");
    // Reported once, not once per retry.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(buf.text().matches(want).count(), 1, "{}", buf.text());
    // Scheduling waits for the claims: the pod is not bound.
    let pod = server.get("", "pods", Some("default"), "p").expect("pod");
    assert!(pod["spec"]["nodeName"].is_null(), "{pod}");
    assert!(server.bindings().is_empty());
    drop(h);
}
