//! `corral-agent --kube-proxy-replacement`: UDP datagrams larger than the
//! path MTU through a ClusterIP (IPv4 and IPv6). The client's kernel
//! fragments the request and the backend's kernel the reply; the fragments
//! after the first carry no UDP header, so they get their datagram's
//! translation from the first fragment (recorded by fragment id): the
//! request must reassemble at the backend, the reply at the client, coming
//! from the ClusterIP — also with an egress policy on the client decided
//! on the backend.

mod common;
use common::*;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

const CIP4: &str = "198.18.250.30";
const CIP6: &str = "2001:db8:250::30";

/// UDP 5353 (IPv4 and IPv6): answers `id` followed by the datagram.
fn backend(netns: &str, id: u8) {
    in_netns(netns, move || {
        let u = UdpSocket::bind(("::", 5353)).expect("bind udp");
        std::thread::spawn(move || {
            let mut b = vec![0u8; 65536];
            while let Ok((n, from)) = u.recv_from(&mut b[1..]) {
                b[0] = id;
                let _ = u.send_to(&b[..n + 1], from);
            }
        });
    });
}

/// A `len`-byte datagram to `to:53` and its answer: (id, the echoed
/// payload is intact, the answer's source).
fn exchange(from: &str, to: IpAddr, len: usize) -> Option<(u8, bool, SocketAddr)> {
    in_netns(from, move || {
        let u = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
        u.set_read_timeout(Some(Duration::from_millis(800))).ok()?;
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        u.send_to(&payload, (to, 53)).ok()?;
        let mut b = vec![0u8; 65536];
        let (n, src) = u.recv_from(&mut b).ok()?;
        Some((b[0], n == len + 1 && b[1..n] == payload[..], src))
    })
}

#[test]
fn fragmented_udp_through_cluster_ip() {
    let Some(_g) = privileged("fragmented_udp_through_cluster_ip") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let b = node.add_pod("x", "b");
    backend(&node.pods[b].netns, b'b');
    let m = node.manifests();
    let mut y = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: x}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: dns, namespace: x}}\nspec:\n  clusterIP: {CIP4}\n  clusterIPs: [{CIP4}, \"{CIP6}\"]\n  ipFamilies: [IPv4, IPv6]\n  ports:\n  - {{name: dns, port: 53, protocol: UDP, targetPort: 5353}}\n"
    );
    y += &dual_stack_slices(
        "x",
        "dns",
        "[{name: dns, port: 5353, protocol: UDP}]",
        &[SliceEndpoint::of(&node.pods[b])],
    );
    std::fs::write(m.join("svc.yaml"), y).expect("write svc");
    let agent = Agent::start(&node, &["--kube-proxy-replacement"]);
    agent.register_apps(&node, &[(a, "a"), (b, "b")]);
    let client = node.pods[a].netns.clone();
    // the pods' MTU: 1500, so 4000- and 9000-byte datagrams are fragmented
    let mtu = node.pods[a].exec(&["cat", "/sys/class/net/eth0/mtu"]);
    let mtu = String::from_utf8_lossy(&mtu.stdout).trim().to_string();
    assert!(
        mtu.parse::<usize>().is_ok_and(|m| m < 4000),
        "pod MTU {mtu:?}"
    );
    let cips: [IpAddr; 2] = [CIP4.parse().unwrap(), CIP6.parse().unwrap()];
    let check = |what: &str| {
        for ip in cips {
            for len in [100, 4000, 9000] {
                assert_eq!(
                    exchange(&client, ip, len),
                    Some((b'b', true, SocketAddr::new(ip, 53))),
                    "{what}: {len}-byte datagram through {ip}:53"
                );
            }
        }
    };
    check("no policy");
    // egress policy on the client for the backend pod and target port:
    // later fragments belong to the admitted datagram
    std::fs::write(
        m.join("policy.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a-to-b, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: a}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{podSelector: {matchLabels: {app: b}}}]\n    ports: [{protocol: UDP, port: 5353}]\n",
    )
    .expect("write policy");
    agent.reconcile();
    check("egress allowed to b:5353");
    // the same policy naming the Service port instead: denied, whole or
    // fragmented
    std::fs::write(
        m.join("policy.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a-to-b, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: a}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{podSelector: {matchLabels: {app: b}}}]\n    ports: [{protocol: UDP, port: 53}]\n",
    )
    .expect("write policy");
    agent.reconcile();
    for ip in cips {
        for len in [100, 4000] {
            assert_eq!(exchange(&client, ip, len), None, "{len} bytes to {ip}");
        }
    }
}
