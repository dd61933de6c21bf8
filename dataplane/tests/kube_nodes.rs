//! corral-agent with Kubernetes Node objects (test API server, real
//! REST/watch): this node's CNI config is written from its
//! `spec.podCIDRs` (dual stack), routes to the other nodes' pod CIDRs
//! follow Node creation and deletion.

mod common;
use common::*;
use std::net::TcpListener;

use corral_test_apiserver::{Options, TestApiServer};
use serde_json::{Value, json};

fn node_obj(name: &str, k: u8) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "spec": {"podCIDRs": [format!("198.19.{k}.0/24"), format!("2001:db8:{k}::/64")]},
        "status": {"addresses": [
            {"type": "InternalIP", "address": format!("192.0.2.{k}")},
            {"type": "InternalIP", "address": format!("2001:db8:ff::{k}")}]}})
}

fn routes(node: &Node) -> String {
    let mut s = String::new();
    for fam in ["-4", "-6"] {
        s += &String::from_utf8_lossy(
            &node
                .exec(&["ip", fam, "route", "show", "proto", "203"])
                .stdout,
        );
    }
    s
}

#[test]
fn node_watch_drives_cni_config_and_routes() {
    let Some(_g) = privileged("node_watch_drives_cni_config_and_routes") else {
        return;
    };
    let node = Node::new();
    // the underlay: this node's InternalIPs on a veth pair inside the node
    node.exec_ok(&[
        "ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ul1",
    ]);
    node.exec_ok(&["ip", "addr", "add", "192.0.2.1/24", "dev", "ul0"]);
    node.exec_ok(&[
        "ip",
        "addr",
        "add",
        "2001:db8:ff::1/64",
        "dev",
        "ul0",
        "nodad",
    ]);
    node.exec_ok(&["ip", "link", "set", "ul0", "up"]);
    node.exec_ok(&["ip", "link", "set", "ul1", "up"]);
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
    srv.insert(node_obj("n1", 1)).unwrap();
    srv.insert(node_obj("n2", 2)).unwrap();
    let kc = node.dir.path().join("kubeconfig");
    srv.write_kubeconfig(&kc).unwrap();
    let tpl = node.dir.path().join("tpl.conflist");
    let out = node.dir.path().join("10-corral.conflist");
    std::fs::write(
        &tpl,
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/cni/10-corral.conflist"),
        )
        .expect("deploy conflist"),
    )
    .expect("template");
    let _agent = Agent::start_kube(
        &node,
        &kc,
        &[
            "--node-name",
            "n1",
            "--routing",
            "native",
            "--cni-conf",
            &out.display().to_string(),
            "--cni-conf-template",
            &tpl.display().to_string(),
        ],
    );
    eventually("CNI config written", 15, || out.exists());
    let conf: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let ranges = &conf["plugins"][0]["ipam"]["ranges"];
    assert_eq!(ranges[0][0]["subnet"], "198.19.1.0/24", "{conf}");
    assert_eq!(ranges[1][0]["subnet"], "2001:db8:1::/64", "{conf}");
    eventually("routes to n2", 15, || {
        let r = routes(&node);
        r.contains("198.19.2.0/24 via 192.0.2.2")
            && r.contains("2001:db8:2::/64 via 2001:db8:ff::2")
    });
    assert!(
        !routes(&node).contains("198.19.1.0"),
        "no route to its own CIDR"
    );
    // a node joins: routes to it; a node leaves: its routes go
    srv.insert(node_obj("n3", 3)).unwrap();
    eventually("routes to n3", 15, || {
        routes(&node).contains("198.19.3.0/24 via 192.0.2.3")
    });
    let base = srv.url();
    let o = node.exec(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "DELETE",
        &format!("{base}/api/v1/nodes/n2"),
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "200");
    eventually("routes to n2 removed", 15, || {
        let r = routes(&node);
        !r.contains("198.19.2.0") && !r.contains("2001:db8:2::") && r.contains("198.19.3.0/24")
    });
    drop(srv);
    drop(rt);
}

/// With `--routing` and `--node-peers` together the agent opens one Node
/// watch whose events feed both views; the tier CRDs are served by the
/// API server: a ClusterNetworkPolicy created via REST denies pod egress
/// to a node (a `nodes` peer, matched by the Node's labels), a relabelled
/// Node is no longer denied, a malformed one is reported by name, and
/// routes follow the same watch.
#[test]
fn one_node_watch_for_routing_and_tier_node_peers() {
    let Some(_g) = privileged("one_node_watch_for_routing_and_tier_node_peers") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    // underlay (this node 192.0.2.1) and node n3's ExternalIP as a local
    // address of the node netns, with a server on it
    node.exec_ok(&[
        "ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ul1",
    ]);
    node.exec_ok(&["ip", "addr", "add", "192.0.2.1/24", "dev", "ul0"]);
    node.exec_ok(&[
        "ip",
        "addr",
        "add",
        "2001:db8:ff::1/64",
        "dev",
        "ul0",
        "nodad",
    ]);
    node.exec_ok(&["ip", "addr", "add", "198.19.200.1/32", "dev", "ul1"]);
    node.exec_ok(&["ip", "link", "set", "ul0", "up"]);
    node.exec_ok(&["ip", "link", "set", "ul1", "up"]);
    serve_ports(&node.netns, &[8080], &[]);
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
    srv.insert(node_obj("n1", 1)).unwrap();
    srv.insert(node_obj("n2", 2)).unwrap();
    let mut n3 = node_obj("n3", 3);
    n3["metadata"]["labels"] = json!({"role": "blocked"});
    n3["status"]["addresses"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "ExternalIP", "address": "198.19.200.1"}));
    srv.insert(n3).unwrap();
    srv.insert(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "x", "labels": {"kubernetes.io/metadata.name": "x"}}}))
        .unwrap();
    let p = &node.pods[a];
    srv.insert(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "a", "namespace": "x"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": p.ip4.to_string()}}))
        .unwrap();
    let kc = node.dir.path().join("kubeconfig");
    srv.write_kubeconfig(&kc).unwrap();
    let agent = Agent::start_kube(
        &node,
        &kc,
        &["--node-name", "n1", "--routing", "native", "--node-peers"],
    );
    agent.register(node.pods[a].spec());
    let (pns, ext) = (node.pods[a].netns.clone(), "198.19.200.1".parse().unwrap());
    eventually("routes to n2 and n3", 15, || {
        let r = routes(&node);
        r.contains("198.19.2.0/24 via 192.0.2.2") && r.contains("198.19.3.0/24 via 192.0.2.3")
    });
    assert!(tcp(&pns, ext, 8080), "no policy: pod reaches n3");

    let url = format!("{base}/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies");
    let cnp = json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "no-blocked-nodes"},
        "spec": {"tier": "Admin", "priority": 10,
            "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "x"}}},
            "egress": [{"name": "deny-blocked", "action": "Deny",
                "to": [{"nodes": {"matchLabels": {"role": "blocked"}}}]}]}});
    let (code, body) = rest(&node, "POST", &url, Some(&cnp));
    assert_eq!(code, 201, "{body}");
    let bad = json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "broken"},
        "spec": {"tier": "Admin", "priority": 11, "subject": {"namespaces": {}},
            "egress": [{"action": "Deny", "to": [{"domainNames": ["example.org"]}]}]}});
    let (code, body) = rest(&node, "POST", &url, Some(&bad));
    assert_eq!(code, 201, "{body}");
    eventually("egress to the blocked node denied", 15, || {
        !tcp(&pns, ext, 8080)
    });
    let errs = match agent.call(&corral_dataplane_abi::api::Request::List) {
        corral_dataplane_abi::api::Response::Endpoints { policy_errors, .. } => policy_errors,
        r => panic!("unexpected {r:?}"),
    };
    assert!(
        errs.iter()
            .any(|e| e.contains("clusternetworkpolicy broken") && e.contains("domainNames")),
        "malformed tier policy named: {errs:?}"
    );
    // the policy view follows Node label changes through the same watch
    let (code, body) = rest(
        &node,
        "PATCH",
        &format!("{base}/api/v1/nodes/n3"),
        Some(&json!({"metadata": {"labels": {"role": "open"}}})),
    );
    assert_eq!(code, 200, "{body}");
    eventually("relabelled node no longer denied", 15, || {
        tcp(&pns, ext, 8080)
    });
    // and the routing view follows a Node deletion
    let (code, _) = rest(&node, "DELETE", &format!("{base}/api/v1/nodes/n2"), None);
    assert_eq!(code, 200);
    eventually("routes to n2 removed", 15, || {
        !routes(&node).contains("198.19.2.0")
    });
    assert_eq!(
        srv.watch_requests("", "nodes"),
        1,
        "one Node watch for routing and node peers"
    );
    drop(agent);
    drop(srv);
    drop(rt);
}
