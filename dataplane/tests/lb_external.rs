//! `corral-agent --kube-proxy-replacement` beyond ClusterIP and NodePort,
//! on two simulated nodes (underlay bridge, corral-cni pods, one agent per
//! node) with a client outside the cluster on the underlay:
//!
//! - `spec.externalIPs` and load-balancer IPs
//!   (`status.loadBalancer.ingress[].ip`): served as kube-proxy serves
//!   them — from outside with `externalTrafficPolicy` (Cluster: any
//!   endpoint, source NATed to the node; Local: this node's endpoints,
//!   client address kept), from pods like a ClusterIP; `ipMode: Proxy` not
//!   captured; `loadBalancerSourceRanges` rejected by name (those LB IPs
//!   are not served).
//! - Host-network backends (EndpointSlice addresses that are node IPs,
//!   servers bound in a node's netns, no pod veth): reached through a
//!   ClusterIP from pods on the same and on the other node, and through
//!   NodePorts from outside (local host backend: delivered up the stack,
//!   its reply translated back at the uplink's egress; remote host
//!   backend: SNAT to the entry node), replies from the frontend.

mod common;
use common::multinode::{
    PodNs, Underlay, add_pod, backend_peer, in_mode, start_nodes_with, tcp_peer, udp_peer,
    write_all,
};
use common::*;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};

use corral_dataplane_abi::api::{Request, Response};

const N1: [&str; 2] = ["192.0.2.1", "2001:db8:ff::1"];
const N2: [&str; 2] = ["192.0.2.2", "2001:db8:ff::2"];
const CLIENT: [&str; 2] = ["192.0.2.100", "2001:db8:ff::100"];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn policy_errors(n: &common::multinode::SimNode) -> Vec<String> {
    match n.agent.call(&Request::List) {
        Response::Endpoints { policy_errors, .. } => policy_errors,
        r => panic!("unexpected {r:?}"),
    }
}

/// The global addresses of netns `ns`.
fn own_addrs(ns: &str) -> Vec<String> {
    let o = std::process::Command::new("ip")
        .args([
            "netns", "exec", ns, "ip", "-o", "addr", "show", "scope", "global",
        ])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.position(|x| x == "inet" || x == "inet6")?;
            Some(w.next()?.split('/').next()?.to_string())
        })
        .collect()
}

/// A dual-stack Service in namespace mn: ClusterIP 198.19.250.`cip` /
/// 2001:db8:250::`cip`, TCP 80 and UDP 53 → target 8080, `extra` YAML
/// lines appended to the spec (2-space indented) and `status` YAML.
fn service(name: &str, cip: u8, typ: &str, etp: &str, extra: &str, status: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: mn}}\nspec:\n  type: {typ}\n  clusterIP: 198.19.250.{cip}\n  clusterIPs: [198.19.250.{cip}, \"2001:db8:250::{cip}\"]\n  ipFamilies: [IPv4, IPv6]\n  externalTrafficPolicy: {etp}\n{extra}{status}"
    )
}

/// EndpointSlices (v4, v6) of Service `name`: (address v4, v6, node) on
/// TCP/UDP `port`.
fn slices(name: &str, port: u16, eps: &[(String, String, u8)]) -> String {
    let eps: Vec<SliceEndpoint> = eps
        .iter()
        .map(|(ip4, ip6, k)| SliceEndpoint {
            ip4: ip4.clone(),
            ip6: ip6.clone(),
            node: Some(*k),
        })
        .collect();
    dual_stack_slices(
        "mn",
        name,
        &format!(
            "[{{name: http, port: {port}, protocol: TCP}}, {{name: dns, port: {port}, protocol: UDP}}]"
        ),
        &eps,
    )
}

fn ports(np_tcp: Option<u16>, np_udp: Option<u16>) -> String {
    let np = |p: Option<u16>| p.map(|p| format!(", nodePort: {p}")).unwrap_or_default();
    format!(
        "  ports:\n  - {{name: http, port: 80, targetPort: 8080{}}}\n  - {{name: dns, port: 53, protocol: UDP, targetPort: 8080{}}}\n",
        np(np_tcp),
        np(np_udp)
    )
}

fn external_addresses(mode: &str) {
    let under = Underlay::new();
    let nodes = start_nodes_with(&under, mode, 2, &["--kube-proxy-replacement"]);
    let client = PodNs::new();
    under.attach_ns(&client.0, 100);
    // the external addresses are routed to n1 (as a router or an L2
    // announcement would)
    for (net, via) in [
        ("198.19.251.0/24", N1[0]),
        ("198.19.252.0/24", N1[0]),
        ("2001:db8:251::/64", N1[1]),
        ("2001:db8:252::/64", N1[1]),
    ] {
        must(&[
            "ip", "netns", "exec", &client.0, "ip", "route", "add", net, "via", via,
        ]);
    }
    let b1 = add_pod(&nodes[0], "b1");
    let b2 = add_pod(&nodes[1], "b2");
    backend_peer(&b1.ns.0, 1, 8080);
    backend_peer(&b2.ns.0, 2, 8080);
    let ep = |p: &common::multinode::Pod| (p.ip4.to_string(), p.ip6.to_string(), p.node);
    let mut y = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: mn}\n");
    // Cluster: externalIPs and LB IPs (VIP, unset, Proxy), backend on n2
    y += &service(
        "ext",
        20,
        "LoadBalancer",
        "Cluster",
        &(ports(Some(30180), Some(30153)) + "  externalIPs: [198.19.251.1, \"2001:db8:251::1\"]\n"),
        "status:\n  loadBalancer:\n    ingress:\n    - {ip: 198.19.252.1}\n    - {ip: \"2001:db8:252::1\", ipMode: VIP}\n    - {ip: 198.19.252.2, ipMode: Proxy}\n",
    );
    y += &slices("ext", 8080, &[ep(&b2)]);
    // Local: endpoints on both nodes; from outside only n1's serves
    y += &service(
        "extl",
        21,
        "LoadBalancer",
        "Local",
        &(ports(Some(30181), Some(30154)) + "  externalIPs: [198.19.251.2, \"2001:db8:251::2\"]\n"),
        "status:\n  loadBalancer:\n    ingress:\n    - {ip: 198.19.252.3}\n",
    );
    y += &slices("extl", 8080, &[ep(&b1), ep(&b2)]);
    // source ranges: not enforced by Corral, so its LB IP is rejected
    y += &service(
        "ranged",
        22,
        "LoadBalancer",
        "Cluster",
        &(ports(Some(30182), Some(30155)) + "  loadBalancerSourceRanges: [192.0.2.0/24]\n"),
        "status:\n  loadBalancer:\n    ingress:\n    - {ip: 198.19.252.4}\n",
    );
    y += &slices("ranged", 8080, &[ep(&b2)]);
    write_all(&nodes, "svc.yaml", &y);
    for n in &nodes {
        let errs = policy_errors(n);
        assert_eq!(errs.len(), 1, "n{}: {errs:?}", n.k);
        assert!(
            errs[0].contains("mn/ranged")
                && errs[0].contains("spec.loadBalancerSourceRanges")
                && errs[0].contains("not translated"),
            "{errs:?}"
        );
    }
    let c = client.0.clone();
    // Cluster SNAT source of an external address: n1's source address
    // on its route to the backend (as MASQUERADE): the underlay address
    // natively; with VXLAN whichever n1 address the kernel selects
    let n1_addrs = own_addrs(&nodes[0].node.netns);
    for f in 0..2 {
        let ext = [ip("198.19.251.1"), ip("2001:db8:251::1")][f];
        let lb = [ip("198.19.252.1"), ip("2001:db8:252::1")][f];
        for a in [ext, lb] {
            // Cluster: served by b2 on n2, source NATed to n1
            let snat_ok = |peer: &str| {
                n1_addrs.iter().any(|x| x == peer) && (mode != "native" || peer == N1[f])
            };
            for _ in 0..3 {
                let got = tcp_peer(&c, SocketAddr::new(a, 80));
                assert!(
                    matches!(&got, Some((2, peer)) if snat_ok(peer)),
                    "{mode}: TCP to {a}:80 (eTP Cluster) served by b2 on n2, seen from n1 {n1_addrs:?}: {got:?}"
                );
            }
            let got = udp_peer(&c, SocketAddr::new(a, 53));
            assert!(
                matches!(&got, Some((2, peer, from)) if snat_ok(peer) && *from == SocketAddr::new(a, 53)),
                "{mode}: UDP to {a}:53, answered from the external address: {got:?}"
            );
            // only the Service port: not the target or node port
            assert_eq!(tcp_peer(&c, SocketAddr::new(a, 8080)), None, "{mode} {a}");
        }
        // Local: n1's own endpoint, the client's address kept
        let extl = [ip("198.19.251.2"), ip("2001:db8:251::2")][f];
        for _ in 0..6 {
            assert_eq!(
                tcp_peer(&c, SocketAddr::new(extl, 80)),
                Some((1, CLIENT[f].to_string())),
                "{mode}: TCP to {extl}:80 (eTP Local)"
            );
        }
        assert_eq!(
            udp_peer(&c, SocketAddr::new(extl, 53)),
            Some((1, CLIENT[f].to_string(), SocketAddr::new(extl, 53))),
            "{mode}: UDP to {extl}:53 (eTP Local)"
        );
    }
    let lbl = SocketAddr::new(ip("198.19.252.3"), 80);
    assert_eq!(
        tcp_peer(&c, lbl).map(|g| g.0),
        Some(1),
        "{mode}: LB IP, eTP Local"
    );
    // ipMode Proxy and the rejected source-ranged LB IP: not captured
    for a in ["198.19.252.2", "198.19.252.4"] {
        assert_eq!(
            tcp_peer(&c, SocketAddr::new(ip(a), 80)),
            None,
            "{mode}: {a}"
        );
    }
    // from a pod on n1: translated at its veth like a ClusterIP (any
    // endpoint, the pod's address kept), eTP Local too (kube-proxy's
    // short-circuit for pods)
    for a in ["198.19.251.1", "198.19.252.1"] {
        assert_eq!(
            tcp_peer(&b1.ns.0, SocketAddr::new(ip(a), 80)),
            Some((2, b1.ip4.to_string())),
            "{mode}: pod -> {a}"
        );
    }
    assert_eq!(
        udp_peer(&b1.ns.0, SocketAddr::new(ip("2001:db8:251::1"), 53)),
        Some((
            2,
            b1.ip6.to_string(),
            SocketAddr::new(ip("2001:db8:251::1"), 53)
        )),
        "{mode}: pod -> externalIP (UDP, IPv6)"
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..16 {
        if let Some((id, _)) = tcp_peer(&b2.ns.0, SocketAddr::new(ip("198.19.251.2"), 80)) {
            seen.insert(id);
        }
    }
    assert_eq!(
        seen,
        [1u8, 2].into_iter().collect(),
        "{mode}: a pod reaches every endpoint of an eTP Local externalIP"
    );
    drop(b1);
    drop(b2);
    drop(nodes);
    drop(client);
    drop(under);
}

#[test]
fn external_ips_and_load_balancer_ips_native() {
    in_mode(
        "external_ips_and_load_balancer_ips_native",
        "native",
        external_addresses,
    );
}

#[test]
fn external_ips_and_load_balancer_ips_vxlan() {
    in_mode(
        "external_ips_and_load_balancer_ips_vxlan",
        "vxlan",
        external_addresses,
    );
}

/// A host-network backend server in node netns `netns`: TCP and UDP
/// `port` answer `id` and the peer address, bound to each of the node's
/// addresses in `addrs` (a UDP server bound to the wildcard address would
/// answer from the address the kernel picks for the route back — on a
/// node with several addresses, not the one it was reached at; real ones
/// use IP_PKTINFO, as e.g. CoreDNS does).
fn host_backend(netns: &str, id: u8, port: u16, addrs: &[&str]) {
    let addrs: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
    common::in_netns(netns, move || {
        for a in addrs {
            let l = TcpListener::bind((a, port)).expect("bind tcp");
            std::thread::spawn(move || {
                for mut s in l.incoming().flatten() {
                    let peer = s.peer_addr().map(|a| a.ip().to_canonical().to_string());
                    let _ = s.write_all(format!("{} {}", id, peer.unwrap_or_default()).as_bytes());
                }
            });
            let u = UdpSocket::bind((a, port)).expect("bind udp");
            std::thread::spawn(move || {
                let mut b = [0u8; 16];
                while let Ok((_, from)) = u.recv_from(&mut b) {
                    let _ = u.send_to(
                        format!("{} {}", id, from.ip().to_canonical()).as_bytes(),
                        from,
                    );
                }
            });
        }
    });
}

fn host_network_backends(mode: &str) {
    let under = Underlay::new();
    let nodes = start_nodes_with(&under, mode, 2, &["--kube-proxy-replacement"]);
    let client = PodNs::new();
    under.attach_ns(&client.0, 100);
    let p1 = add_pod(&nodes[0], "p1");
    let p2 = add_pod(&nodes[1], "p2");
    // host-network servers: bound in the node netns (no pod veth)
    host_backend(&nodes[0].node.netns, 11, 8080, &[N1[0], N1[1]]);
    host_backend(&nodes[1].node.netns, 12, 8080, &[N2[0], N2[1]]);
    let host = |k: u8| (format!("192.0.2.{k}"), format!("2001:db8:ff::{k}"), k);
    let mut y = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: mn}\n");
    // only n1's host: Cluster and Local
    y += &service(
        "here",
        30,
        "NodePort",
        "Cluster",
        &ports(Some(30280), Some(30253)),
        "",
    );
    y += &slices("here", 8080, &[host(1)]);
    y += &service(
        "herel",
        31,
        "NodePort",
        "Local",
        &ports(Some(30281), Some(30254)),
        "",
    );
    y += &slices("herel", 8080, &[host(1)]);
    // only n2's host, Cluster
    y += &service(
        "there",
        32,
        "NodePort",
        "Cluster",
        &ports(Some(30282), Some(30255)),
        "",
    );
    y += &slices("there", 8080, &[host(2)]);
    write_all(&nodes, "svc.yaml", &y);
    for n in &nodes {
        let errs = policy_errors(n);
        assert!(errs.is_empty(), "n{}: {errs:?}", n.k);
    }
    let cip = |k: u8, f: usize| {
        if f == 0 {
            ip(&format!("198.19.250.{k}"))
        } else {
            ip(&format!("2001:db8:250::{k}"))
        }
    };
    for f in 0..2 {
        let pip = |p: &common::multinode::Pod| if f == 0 { p.ip4 } else { p.ip6 };
        // pods -> ClusterIP -> a host backend on the same and on the
        // other node: the backend sees the pod, the reply comes from the
        // ClusterIP (translated back at the pod's veth)
        for (pod, svc, id) in [
            (&p1, 30u8, 11u8),
            (&p2, 30, 11),
            (&p1, 32, 12),
            (&p2, 32, 12),
        ] {
            assert_eq!(
                tcp_peer(&pod.ns.0, SocketAddr::new(cip(svc, f), 80)),
                Some((id, pip(pod).to_string())),
                "{mode}: pod on n{} -> ClusterIP {} -> host of n{}",
                pod.node,
                cip(svc, f),
                id - 10
            );
            let to = SocketAddr::new(cip(svc, f), 53);
            assert_eq!(
                udp_peer(&pod.ns.0, to),
                Some((id, pip(pod).to_string(), to)),
                "{mode}: UDP pod on n{} -> {to}",
                pod.node
            );
        }
        let n1 = ip(N1[f]);
        // outside -> n1's NodePort -> n1's own host backend: delivered up
        // n1's stack (no SNAT, in Cluster too: the client address is
        // kept), the reply gets the NodePort back at n1's uplink egress
        for (np, udp) in [(30280u16, 30253u16), (30281, 30254)] {
            for _ in 0..3 {
                assert_eq!(
                    tcp_peer(&client.0, SocketAddr::new(n1, np)),
                    Some((11, CLIENT[f].to_string())),
                    "{mode}: outside -> {n1}:{np} -> n1's host"
                );
            }
            let to = SocketAddr::new(n1, udp);
            assert_eq!(
                udp_peer(&client.0, to),
                Some((11, CLIENT[f].to_string(), to)),
                "{mode}: UDP outside -> {to} -> n1's host"
            );
        }
        // outside -> n1's NodePort -> n2's host: SNAT to n1, the reply
        // comes back through n1
        assert_eq!(
            tcp_peer(&client.0, SocketAddr::new(n1, 30282)),
            Some((12, N1[f].to_string())),
            "{mode}: outside -> {n1}:30282 -> n2's host"
        );
        let to = SocketAddr::new(n1, 30255);
        assert_eq!(
            udp_peer(&client.0, to),
            Some((12, N1[f].to_string(), to)),
            "{mode}: UDP outside -> {to} -> n2's host"
        );
        // a NodePort of n2 with its own host as backend, from n1's pod
        let n2 = ip(N2[f]);
        assert_eq!(
            tcp_peer(&p1.ns.0, SocketAddr::new(n2, 30282)).map(|g| g.0),
            Some(12),
            "{mode}: pod on n1 -> {n2}:30282"
        );
    }
    drop(p1);
    drop(p2);
    drop(nodes);
    drop(client);
    drop(under);
}

#[test]
fn host_network_backends_native() {
    in_mode(
        "host_network_backends_native",
        "native",
        host_network_backends,
    );
}

#[test]
fn host_network_backends_vxlan() {
    in_mode(
        "host_network_backends_vxlan",
        "vxlan",
        host_network_backends,
    );
}
