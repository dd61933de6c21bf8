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
