//! `corral-agent --kube-proxy-replacement`: established connections
//! through a ClusterIP across EndpointSlice changes, and terminating
//! endpoints, as kube-proxy handles them:
//! - a TCP connection keeps its backend while backends are added and
//!   removed, also after its own backend left the EndpointSlice (kube-proxy:
//!   the conntrack entry stays; the pod is still terminating);
//! - a UDP "connection" (one client socket) stays on its backend while that
//!   is a serving endpoint (also terminating, not chosen for new flows) and
//!   is re-balanced once it is removed or not serving: the next datagram
//!   reaches a current backend, still answered from the ClusterIP
//!   (kube-proxy's UDP conntrack cleanup, pkg/proxy/conntrack);
//! - endpoints that are `ready: false, serving: true, terminating: true` get
//!   no new flows while a ready endpoint exists, all new flows when none does;
//!   terminating and not serving: no new flows at all.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

const CIP: &str = "198.18.250.20";

/// TCP 8080: the id on accept, then the id for every byte received; UDP
/// 5353: the id for every datagram.
fn backend(netns: &str, id: u8) {
    in_netns(netns, move || {
        let l = TcpListener::bind(("0.0.0.0", 8080)).expect("bind tcp");
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    if s.write_all(&[id]).is_err() {
                        return;
                    }
                    let mut b = [0u8; 1];
                    while matches!(s.read(&mut b), Ok(1)) {
                        if s.write_all(&[id]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let u = UdpSocket::bind(("0.0.0.0", 5353)).expect("bind udp");
        std::thread::spawn(move || {
            let mut b = [0u8; 16];
            while let Ok((_, from)) = u.recv_from(&mut b) {
                let _ = u.send_to(&[id], from);
            }
        });
    });
}

/// A new TCP connection through the ClusterIP: the id it reads first.
fn tcp_id(from: &str) -> Option<u8> {
    let to: SocketAddr = format!("{CIP}:80").parse().expect("addr");
    in_netns(from, move || {
        let t = Duration::from_millis(400);
        let mut s = TcpStream::connect_timeout(&to, t).ok()?;
        let _ = s.set_read_timeout(Some(t));
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Ok(1)).then_some(b[0])
    })
}

/// `n` new TCP flows: answers per backend id, and failures.
fn spread(from: &str, n: usize) -> (BTreeMap<u8, usize>, usize) {
    let mut got = BTreeMap::new();
    let mut failed = 0;
    for _ in 0..n {
        match tcp_id(from) {
            Some(id) => *got.entry(id).or_insert(0) += 1,
            None => failed += 1,
        }
    }
    (got, failed)
}

/// One byte over the open connection: the backend id that answers.
fn ping(s: &mut TcpStream) -> Option<u8> {
    s.write_all(b"p").ok()?;
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(1)).then_some(b[0])
}

/// One datagram over the client socket: the answering id and its source.
fn udp_ping(u: &UdpSocket) -> Option<(u8, SocketAddr)> {
    u.send_to(b"q", (CIP.parse::<IpAddr>().expect("cip"), 53))
        .ok()?;
    let mut b = [0u8; 8];
    let (n, src) = u.recv_from(&mut b).ok()?;
    (n == 1).then_some((b[0], src))
}

/// The EndpointSlice of `web`: (pod index, ready, serving, terminating).
fn slice(node: &Node, eps: &[(usize, bool, bool, bool)]) -> String {
    let mut y = String::from(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: x, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}, {name: dns, port: 5353, protocol: UDP}]\nendpoints:\n",
    );
    if eps.is_empty() {
        y = y.replace("endpoints:\n", "endpoints: []\n");
    }
    for &(i, ready, serving, terminating) in eps {
        y += &format!(
            "- {{addresses: [\"{}\"], conditions: {{ready: {ready}, serving: {serving}, terminating: {terminating}}}}}\n",
            node.pods[i].ip4
        );
    }
    y
}

#[test]
fn established_flows_across_endpoint_changes_and_terminating_endpoints() {
    let Some(_g) =
        privileged("established_flows_across_endpoint_changes_and_terminating_endpoints")
    else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let b = node.add_pod("x", "b");
    let c = node.add_pod("x", "c");
    let d = node.add_pod("x", "d");
    for (i, id) in [(b, b'b'), (c, b'c'), (d, b'd')] {
        backend(&node.pods[i].netns, id);
    }
    let m = node.manifests();
    std::fs::write(
        m.join("svc.yaml"),
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: x}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: x}}\nspec:\n  clusterIP: {CIP}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n  - {{name: dns, port: 53, protocol: UDP, targetPort: 5353}}\n"
        ),
    )
    .expect("write svc");
    let set = |eps: &[(usize, bool, bool, bool)], agent: &Agent| {
        std::fs::write(m.join("slice.yaml"), slice(&node, eps)).expect("write slice");
        agent.reconcile();
    };
    std::fs::write(
        m.join("slice.yaml"),
        slice(&node, &[(b, true, true, false)]),
    )
    .expect("write slice");
    let agent = Agent::start(&node, &["--kube-proxy-replacement"]);
    for i in [a, b, c, d] {
        agent.register(node.pods[i].spec());
    }
    let client = node.pods[a].netns.clone();
    let frontend_udp: SocketAddr = format!("{CIP}:53").parse().expect("addr");

    // one long TCP connection and one UDP client socket, both on b
    let (mut conn, first) = in_netns(&client, || {
        let mut s = TcpStream::connect_timeout(
            &format!("{CIP}:80").parse().expect("addr"),
            Duration::from_secs(2),
        )
        .expect("TCP through the ClusterIP");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).expect("first byte");
        (s, b[0])
    });
    assert_eq!(first, b'b');
    let udp = in_netns(&client, || {
        let u = UdpSocket::bind("0.0.0.0:0").expect("bind");
        u.set_read_timeout(Some(Duration::from_millis(800)))
            .expect("timeout");
        u
    });
    assert_eq!(udp_ping(&udp), Some((b'b', frontend_udp)));

    // c added: both flows stay on b, new flows reach b and c
    set(&[(b, true, true, false), (c, true, true, false)], &agent);
    assert_eq!(ping(&mut conn), Some(b'b'), "TCP kept after an add");
    assert_eq!(
        udp_ping(&udp),
        Some((b'b', frontend_udp)),
        "UDP kept after an add"
    );
    let (got, failed) = spread(&client, 24);
    assert_eq!(failed, 0, "{got:?}");
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![b'b', b'c']);

    // b removed (its pod still runs, as while terminating): the TCP
    // connection stays on b; the UDP socket's next datagram goes to c and
    // is answered from the ClusterIP; new flows only to c
    set(&[(c, true, true, false)], &agent);
    for _ in 0..3 {
        assert_eq!(ping(&mut conn), Some(b'b'), "TCP kept after its removal");
    }
    assert_eq!(
        udp_ping(&udp),
        Some((b'c', frontend_udp)),
        "UDP re-balanced"
    );
    assert_eq!(udp_ping(&udp), Some((b'c', frontend_udp)), "UDP stays on c");
    assert_eq!(spread(&client, 12), (BTreeMap::from([(b'c', 12)]), 0));

    // c terminating (still serving) and d ready: new flows only to d; the
    // UDP flow stays on c (kube-proxy keeps UDP flows to serving endpoints)
    set(&[(c, false, true, true), (d, true, true, false)], &agent);
    assert_eq!(spread(&client, 12), (BTreeMap::from([(b'd', 12)]), 0));
    assert_eq!(ping(&mut conn), Some(b'b'));
    assert_eq!(
        udp_ping(&udp),
        Some((b'c', frontend_udp)),
        "UDP kept on a serving terminating endpoint"
    );

    // only the terminating, serving c left: new flows fall back to it
    set(&[(c, false, true, true)], &agent);
    assert_eq!(spread(&client, 12), (BTreeMap::from([(b'c', 12)]), 0));
    assert_eq!(udp_ping(&udp), Some((b'c', frontend_udp)));

    // c terminating and no longer serving: no endpoint for new flows, the
    // UDP flow is forgotten (no answer); the TCP connection is untouched
    set(&[(c, false, false, true)], &agent);
    assert_eq!(spread(&client, 4), (BTreeMap::new(), 4));
    assert_eq!(udp_ping(&udp), None, "UDP to a non-serving endpoint");
    assert_eq!(ping(&mut conn), Some(b'b'), "TCP kept with no endpoints");

    // the Service's endpoints back: new flows again, the UDP socket too
    set(&[(d, true, true, false)], &agent);
    assert_eq!(spread(&client, 6), (BTreeMap::from([(b'd', 6)]), 0));
    assert_eq!(udp_ping(&udp), Some((b'd', frontend_udp)));
}
