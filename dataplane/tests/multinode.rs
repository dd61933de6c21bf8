//! Multi-node pod networking on one machine: three "nodes" (a netns each,
//! running its own corral-agent with its own socket, pin dir and state
//! dir) joined by an "underlay" bridge in a netns of its own. Each agent
//! reads the Node objects (manifests), writes its node's CNI config with
//! the node's pod CIDRs and routes to the other nodes (native or VXLAN);
//! pods are wired by the real corral-cni from that config. Checked: TCP
//! and UDP (IPv4 and IPv6) across nodes, the overlay MTU, NetworkPolicy
//! across nodes, node removal updating routes while an established
//! connection between the remaining nodes keeps working, and cleanup.

mod common;
use common::multinode::{
    Pod, SimNode, Underlay, add_pod, in_mode, node_yaml, routing, start_nodes, write_all,
};
use common::*;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static PORT: AtomicU32 = AtomicU32::new(7400);

/// TCP listener + connect + one byte echoed, bounded (~1.5 s when blocked).
fn tcp(from: &Pod, to: &Pod, v6: bool) -> bool {
    let port = PORT.fetch_add(1, Ordering::SeqCst) as u16;
    let (ip, any): (IpAddr, IpAddr) = if v6 {
        (to.ip6, "::".parse().unwrap())
    } else {
        (to.ip4, "0.0.0.0".parse().unwrap())
    };
    let l = in_netns(&to.ns.0, move || {
        TcpListener::bind(SocketAddr::new(any, port))
    })
    .expect("listener");
    l.set_nonblocking(true).expect("nonblocking");
    let srv = std::thread::spawn(move || {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if let Ok((mut s, _)) = l.accept() {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_ok() {
                    let _ = s.write_all(&b);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let ok = in_netns(&from.ns.0, move || {
        let Ok(mut s) =
            TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_millis(1500))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut b = [0u8; 1];
        s.write_all(b"x").is_ok() && s.read_exact(&mut b).is_ok() && &b == b"x"
    });
    let _ = srv.join();
    ok
}

/// UDP datagram echoed back, 1.2 kB (above nothing, below the overlay MTU).
fn udp(from: &Pod, to: &Pod, v6: bool) -> bool {
    let port = PORT.fetch_add(1, Ordering::SeqCst) as u16;
    let (ip, any): (IpAddr, IpAddr) = if v6 {
        (to.ip6, "::".parse().unwrap())
    } else {
        (to.ip4, "0.0.0.0".parse().unwrap())
    };
    let s = in_netns(&to.ns.0, move || {
        UdpSocket::bind(SocketAddr::new(any, port))
    })
    .expect("udp");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let srv = std::thread::spawn(move || {
        let mut b = [0u8; 2000];
        if let Ok((n, peer)) = s.recv_from(&mut b) {
            let _ = s.send_to(&b[..n], peer);
        }
    });
    let ok = in_netns(&from.ns.0, move || {
        let c = UdpSocket::bind(SocketAddr::new(any, 0)).expect("client");
        c.set_read_timeout(Some(Duration::from_millis(1500)))
            .expect("timeout");
        let msg = vec![7u8; 1200];
        if c.send_to(&msg, SocketAddr::new(ip, port)).is_err() {
            return false;
        }
        let mut b = [0u8; 2000];
        matches!(c.recv_from(&mut b), Ok((n, _)) if b[..n] == msg[..])
    });
    let _ = srv.join();
    ok
}

fn corral_routes(n: &SimNode) -> String {
    let mut s = String::new();
    for fam in ["-4", "-6"] {
        let o = n.node.exec(&["ip", fam, "route", "show", "proto", "203"]);
        s += &String::from_utf8_lossy(&o.stdout);
    }
    s
}

fn pods_yaml(pods: &[(&str, &Pod)]) -> String {
    let mut s = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: mn}\n---\n");
    for (name, p) in pods {
        s += &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: mn, labels: {{app: {name}}}}}\nspec: {{nodeName: n{}, containers: [{{name: c, image: x}}]}}\nstatus: {{phase: Running, podIP: {}, podIPs: [{{ip: {}}}, {{ip: \"{}\"}}]}}\n---\n",
            p.node, p.ip4, p.ip4, p.ip6
        );
    }
    s
}

fn multinode(mode: &str) {
    let under = Underlay::new();
    let nodes = start_nodes(&under, mode, 3);
    let names: Vec<String> = nodes.iter().map(|n| n.node.netns.clone()).collect();
    let pin_dirs: Vec<PathBuf> = nodes.iter().map(|n| n.agent.pin_dir.clone()).collect();
    // routes to the two other nodes' pod CIDRs on every node
    for n in &nodes {
        let st = routing(n);
        assert!(st.problems.is_empty(), "n{}: {:?}", n.k, st.problems);
        assert_eq!(st.routes.len(), 2, "n{}: {st:?}", n.k);
        let r = corral_routes(n);
        for j in (1..=3u8).filter(|j| *j != n.k) {
            assert!(r.contains(&format!("198.19.{j}.0/24")), "n{}: {r}", n.k);
            assert!(r.contains(&format!("2001:db8:{j}::/64")), "n{}: {r}", n.k);
        }
    }
    let p1 = add_pod(&nodes[0], "p1");
    let p2 = add_pod(&nodes[1], "p2");
    let p3 = add_pod(&nodes[2], "p3");
    // the pods' MTU: the overlay's in VXLAN mode, the template's otherwise
    let want_mtu = if mode == "vxlan" {
        "mtu 1450"
    } else {
        "mtu 1500"
    };
    let l = sh(&[
        "ip", "netns", "exec", &p1.ns.0, "ip", "link", "show", "eth0",
    ]);
    let l = String::from_utf8_lossy(&l.stdout).to_string();
    assert!(l.contains(want_mtu), "{mode}: {l}");
    if mode == "vxlan" {
        let d = nodes[0]
            .node
            .exec(&["ip", "-d", "link", "show", "corral.vx"]);
        let d = String::from_utf8_lossy(&d.stdout).to_string();
        assert!(d.contains("vxlan id 7331") && d.contains("mtu 1450"), "{d}");
        assert_eq!(routing(&nodes[0]).mtu, Some(1450));
    }
    // TCP and UDP, IPv4 and IPv6, across nodes both ways
    for (a, b) in [(&p1, &p2), (&p2, &p3), (&p3, &p1)] {
        for v6 in [false, true] {
            assert!(
                tcp(a, b, v6),
                "{mode}: TCP n{} -> n{} v6={v6}",
                a.node,
                b.node
            );
            assert!(
                udp(a, b, v6),
                "{mode}: UDP n{} -> n{} v6={v6}",
                a.node,
                b.node
            );
        }
    }
    // NetworkPolicy across nodes: p2 accepts only p1 (another node); p1
    // may send only to p2
    let mut man = pods_yaml(&[("p1", &p1), ("p2", &p2), ("p3", &p3)]);
    man += "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p2-from-p1, namespace: mn}\nspec:\n  podSelector: {matchLabels: {app: p2}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: p1}}}]}]\n---\n";
    man += "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p1-to-p2, namespace: mn}\nspec:\n  podSelector: {matchLabels: {app: p1}}\n  policyTypes: [Egress]\n  egress: [{to: [{podSelector: {matchLabels: {app: p2}}}]}]\n";
    write_all(&nodes, "policy.yaml", &man);
    assert!(tcp(&p1, &p2, false), "{mode}: p1 -> p2 allowed");
    assert!(tcp(&p1, &p2, true), "{mode}: p1 -> p2 allowed (v6)");
    assert!(
        !tcp(&p3, &p2, false),
        "{mode}: p3 -> p2 denied by p2's ingress"
    );
    assert!(
        !tcp(&p1, &p3, false),
        "{mode}: p1 -> p3 denied by p1's egress"
    );
    assert!(tcp(&p3, &p1, false), "{mode}: p3 -> p1 not selected");
    // the same through Services behind kube-proxy's DNAT (iptables-mode
    // stand-in on n1): p1's egress is decided on the backend on the other
    // node (checked at n1's underlay/overlay egress), not on the ClusterIP
    let mut svc = man.clone();
    for (name, vip) in [("p2", "198.19.250.2"), ("p3", "198.19.250.3")] {
        svc += &format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s-{name}, namespace: mn}}\nspec: {{clusterIP: {vip}, selector: {{app: {name}}}, ports: [{{port: 8080, targetPort: PORT}}]}}\n"
        );
    }
    let port = PORT.fetch_add(1, Ordering::SeqCst) as u16;
    let svc = svc.replace("PORT", &port.to_string());
    write_all(&nodes, "policy.yaml", &svc);
    for (vip, to) in [("198.19.250.2", &p2), ("198.19.250.3", &p3)] {
        nodes[0].node.exec_ok(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            vip,
            "-p",
            "tcp",
            "--dport",
            "8080",
            "-j",
            "DNAT",
            "--to-destination",
            &format!("{}:{port}", to.ip4),
        ]);
    }
    let via = |to: &Pod, vip: &str| {
        let l = in_netns(&to.ns.0, move || TcpListener::bind(("0.0.0.0", port))).expect("listen");
        l.set_nonblocking(true).expect("nonblocking");
        let vip: IpAddr = vip.parse().expect("vip");
        let ok = in_netns(&p1.ns.0, move || {
            let Ok(mut s) = TcpStream::connect_timeout(
                &SocketAddr::new(vip, 8080),
                Duration::from_millis(1500),
            ) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            s.write_all(b"x").is_ok()
        });
        // accepted by the backend (not only by a SYN cookie somewhere)
        std::thread::sleep(Duration::from_millis(50));
        ok && l.accept().is_ok()
    };
    assert!(
        via(&p2, "198.19.250.2"),
        "{mode}: p1 -> Service of p2 (other node) allowed"
    );
    assert!(
        !via(&p3, "198.19.250.3"),
        "{mode}: p1 -> Service of p3 (other node) denied"
    );
    let pol = |n: &SimNode| {
        n.agent
            .list()
            .into_iter()
            .find(|e| e.spec.name == "p1")
            .map(|e| e.egress.drop_policy)
    };
    assert!(
        pol(&nodes[0]).unwrap_or(0) > 0,
        "{mode}: dropped as p1's egress"
    );
    write_all(&nodes, "policy.yaml", &pods_yaml(&[]));

    // an established p1 <-> p2 connection across the node removal
    let port = PORT.fetch_add(1, Ordering::SeqCst) as u16;
    let l = in_netns(&p2.ns.0, move || TcpListener::bind(("0.0.0.0", port))).expect("listen");
    let srv = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() {
            if s.write_all(&b).is_err() {
                break;
            }
        }
    });
    let to = SocketAddr::new(p2.ip4, port);
    let mut conn = in_netns(&p1.ns.0, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(2))
    })
    .expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(3))).ok();
    let echo = |c: &mut TcpStream, v: u8| {
        let mut b = [0u8; 1];
        c.write_all(&[v]).is_ok() && c.read_exact(&mut b).is_ok() && b[0] == v
    };
    assert!(echo(&mut conn, 1));
    // node 3 leaves: its routes go on n1 and n2, the rest stays
    let mut nodes_yaml = String::new();
    for j in 1..=2 {
        nodes_yaml += &node_yaml(j);
        nodes_yaml += "---\n";
    }
    write_all(&nodes[..2], "nodes.yaml", &nodes_yaml);
    for n in &nodes[..2] {
        let r = corral_routes(n);
        assert!(
            !r.contains("198.19.3.0/24") && !r.contains("2001:db8:3::"),
            "n{}: {r}",
            n.k
        );
        let other = if n.k == 1 { 2 } else { 1 };
        assert!(r.contains(&format!("198.19.{other}.0/24")), "n{}: {r}", n.k);
        assert_eq!(routing(n).routes.len(), 1, "n{}", n.k);
        if mode == "vxlan" {
            let f = n.node.exec(&["bridge", "fdb", "show", "dev", "corral.vx"]);
            let f = String::from_utf8_lossy(&f.stdout).to_string();
            assert!(!f.contains("0e:c5:c0:00:02:03"), "n{}: {f}", n.k);
            assert!(
                f.contains(&format!("0e:c5:c0:00:02:0{other}")),
                "n{}: {f}",
                n.k
            );
        }
    }
    assert!(echo(&mut conn, 2), "{mode}: established connection kept");
    assert!(
        !tcp(&p1, &p3, false),
        "{mode}: no route to the removed node"
    );
    assert!(
        tcp(&p1, &p2, false),
        "{mode}: remaining nodes still connected"
    );
    drop(conn);
    let _ = srv.join();
    // node 3 back: routes again
    write_all(&nodes[..2], "nodes.yaml", &{
        let mut s = String::new();
        for j in 1..=3 {
            s += &node_yaml(j);
            s += "---\n";
        }
        s
    });
    assert!(tcp(&p1, &p3, false), "{mode}: node 3 re-added");

    // cleanup: every netns, veth, vxlan device, route and pin goes
    drop(p1);
    drop(p2);
    drop(p3);
    drop(nodes);
    drop(under);
    let list = String::from_utf8_lossy(&sh(&["ip", "netns", "list"]).stdout).to_string();
    for n in &names {
        assert!(!list.contains(n.as_str()), "netns {n} left: {list}");
    }
    for p in &pin_dirs {
        assert!(!p.exists(), "pin dir {} left", p.display());
    }
}

#[test]
fn three_nodes_native_routing() {
    in_mode("three_nodes_native_routing", "native", multinode);
}

#[test]
fn three_nodes_vxlan() {
    in_mode("three_nodes_vxlan", "vxlan", multinode);
}
