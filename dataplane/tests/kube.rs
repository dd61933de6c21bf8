//! corral-agent with the Kubernetes policy source: the real agent watches the
//! test API server (real REST/watch protocol) from inside the node netns;
//! NetworkPolicies created/deleted via REST are enforced on real TCP
//! connections between netns pods; a malformed policy is reported by name and
//! skipped; a forced relist (410) and an agent restart while the API server
//! is slow never drop enforcement; the node's `corral.io/health.net-*`
//! annotations follow real traffic.

mod common;
use common::*;
use std::net::{IpAddr, TcpListener};
use std::time::{Duration, Instant};

use corral_dataplane_abi::api::{Request, Response};
use corral_test_apiserver::{Fault, FaultKind, Options, TestApiServer};
use serde_json::{Value, json};

const NODE: &str = "node-1";

fn serve(netns: &str) {
    serve_ports(netns, &[80, 81], &[]);
}

fn pod_obj(ns: &str, name: &str, app: &str, ip: IpAddr) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": ip.to_string()}})
}

fn policy_errors(agent: &Agent) -> Vec<String> {
    match agent.call(&Request::List) {
        Response::Endpoints { policy_errors, .. } => policy_errors,
        r => panic!("unexpected {r:?}"),
    }
}

/// Polls `f` for up to `secs`.
#[test]
fn kubernetes_policy_source_and_node_health() {
    let Some(_g) = privileged("kubernetes_policy_source_and_node_health") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let b = node.add_pod("x", "b");
    let c = node.add_pod("y", "c");
    serve(&node.pods[a].netns);

    // the API server listens inside the node netns, like a cluster's
    // apiserver reachable from the node
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = in_netns(&node.netns, || {
        TcpListener::bind("127.0.0.1:0").expect("bind apiserver")
    });
    let srv = {
        let _e = rt.enter();
        TestApiServer::start_on_std(listener, Options::default()).unwrap()
    };
    let base = srv.url();
    srv.insert(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}))
        .unwrap();
    for (ns, team) in [("x", "xx"), ("y", "yy")] {
        srv.insert(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"team": team}}}))
            .unwrap();
    }
    for (i, app) in [(a, "a"), (b, "b"), (c, "c")] {
        let p = &node.pods[i];
        srv.insert(pod_obj(&p.namespace, &p.name, app, IpAddr::V4(p.ip4)))
            .unwrap();
    }
    let kc = node.dir.path().join("kubeconfig");
    srv.write_kubeconfig(&kc).unwrap();
    // not ready while a policy kind cannot be listed
    srv.set_served("networking.k8s.io", "networkpolicies", false);
    let mut agent = Agent::start_kube(
        &node,
        &kc,
        &[
            "--node-name",
            NODE,
            "--health-interval",
            "1s",
            "--uplink-rate",
            "200M",
            "--metrics-addr",
            "127.0.0.1:9465",
        ],
    );
    let probe = |path: &str| {
        let out = node.exec(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:9465{path}"),
        ]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    eventually("healthz answers", 10, || probe("/healthz") == "200");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(probe("/readyz"), "503", "not ready before the first sync");
    srv.set_served("networking.k8s.io", "networkpolicies", true);
    eventually("ready after the first sync", 30, || {
        probe("/readyz") == "200"
    });
    agent.register_apps(&node, &[(a, "a"), (b, "b"), (c, "c")]);
    let (na, nb, nc) = (&node.pods[a], &node.pods[b], &node.pods[c]);
    let a4 = IpAddr::V4(na.ip4);
    let a6 = IpAddr::V6(na.ip6);
    assert!(
        tcp(&nb.netns, a4, 80) && tcp(&nc.netns, a4, 81),
        "no policy: all allowed"
    );

    // x/a: ingress only from app=b pods, TCP 80 — created via REST
    let np = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "a-from-b", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}],
                         "ports": [{"protocol": "TCP", "port": 80}]}]}});
    let url = format!("{base}/apis/networking.k8s.io/v1/namespaces/x/networkpolicies");
    let (code, body) = rest(&node, "POST", &url, Some(&np));
    assert_eq!(code, 201, "{body}");
    // a malformed one (ports is not a list): reported by name, skipped
    let bad = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "broken", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"ports": "eighty"}]}});
    let (code, body) = rest(&node, "POST", &url, Some(&bad));
    assert_eq!(code, 201, "{body}");
    eventually("policy a-from-b enforced", 15, || {
        !tcp(&nc.netns, a4, 80) && !tcp(&nb.netns, a4, 81)
    });
    assert!(tcp(&nb.netns, a4, 80), "b -> a:80 allowed");
    assert!(tcp(&nb.netns, a6, 80), "b -> a:80 allowed (IPv6)");
    assert!(!tcp(&nc.netns, a6, 80), "c -> a:80 denied (IPv6)");
    let errs = policy_errors(&agent);
    assert!(
        errs.iter().any(|e| e.contains("networkpolicy x/broken")),
        "bad policy reported by name: {errs:?}"
    );

    // label change via merge patch: b becomes app=z -> denied, back -> allowed
    // (the API's labels win over the ones the CNI registered)
    let relabel = |app: &str| {
        let (code, body) = rest(
            &node,
            "PATCH",
            &format!("{base}/api/v1/namespaces/x/pods/b"),
            Some(&json!({"metadata": {"labels": {"app": app}}})),
        );
        assert_eq!(code, 200, "{body}");
    };
    relabel("z");
    eventually("b relabelled app=z is denied", 15, || {
        !tcp(&nb.netns, a4, 80)
    });
    relabel("b");
    eventually("b back to app=b is allowed", 15, || tcp(&nb.netns, a4, 80));

    // forced relist: history compacted + watches dropped -> 410 -> relist;
    // enforcement holds throughout
    srv.compact();
    srv.drop_watches();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        assert!(!tcp(&nc.netns, a4, 80), "policy dropped during relist");
    }
    assert!(
        tcp(&nb.netns, a4, 80),
        "allowed peer still allowed after relist"
    );

    // restart while the API server answers policy requests only after 8 s:
    // the cached inputs are enforced from the first moment
    agent.kill9();
    srv.inject(Fault {
        method: None,
        path_contains: "networkpolicies".into(),
        kind: FaultKind::Delay(Duration::from_secs(8)),
        count: 2,
    });
    agent.spawn();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(4) {
        assert!(!tcp(&nc.netns, a4, 80), "policy dropped across restart");
    }
    assert!(tcp(&nb.netns, a4, 80));

    // delete via REST -> allowed again
    let (code, body) = rest(&node, "DELETE", &format!("{url}/a-from-b"), None);
    assert_eq!(code, 200, "{body}");
    eventually("deleted policy no longer enforced", 20, || {
        tcp(&nc.netns, a4, 80) && tcp(&nb.netns, a4, 81)
    });
    let (code, _) = rest(&node, "DELETE", &format!("{url}/broken"), None);
    assert_eq!(code, 200);
    eventually("deleted bad policy no longer reported", 15, || {
        policy_errors(&agent).is_empty()
    });

    // node network health: bulk traffic b -> a at up to the 200M budget
    let ann = |k: &str| -> Option<f64> {
        srv.get("", "nodes", None, NODE)?["metadata"]["annotations"][k]
            .as_str()?
            .parse()
            .ok()
    };
    eventually("health annotations published", 10, || {
        ann("corral.io/health.net-util").is_some()
            && ann("corral.io/health.net-drops").is_some()
            && ann("corral.io/health.net-errors").is_some()
    });
    let (bns, ans) = (nb.netns.clone(), na.netns.clone());
    let ip = na.ip4;
    let traffic =
        std::thread::spawn(move || iperf(&bns, &ans, IpAddr::V4(ip), 5201, 5, None, false).bps);
    let mut max_util = 0.0f64;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(7) {
        if let Some(u) = ann("corral.io/health.net-util") {
            max_util = max_util.max(u);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let bps = traffic.join().unwrap();
    let want = bps / 200e6 * 100.0;
    eprintln!(
        "iperf {:.1} Mbit/s, max published net-util {max_util:.1} %",
        bps / 1e6
    );
    assert!(
        max_util >= want * 0.7 && max_util <= 100.0,
        "published utilization {max_util} % does not follow the traffic ({want:.1} %)"
    );
    eventually("utilization back to idle", 10, || {
        ann("corral.io/health.net-util").is_some_and(|u| u < 5.0)
    });
    assert!(ann("corral.io/health.net-errors").is_some_and(|e| e >= 0.0));
    // the same values as gauges for the scheduler's scrape source
    let out = node.exec(&["curl", "-s", "http://127.0.0.1:9465/metrics"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for g in [
        "corral_net_utilization_percent",
        "corral_net_drops_per_second",
        "corral_net_errors_per_second",
    ] {
        assert!(text.contains(g), "{g} missing from /metrics:\n{text}");
    }
    drop(agent);
    drop(srv);
}
