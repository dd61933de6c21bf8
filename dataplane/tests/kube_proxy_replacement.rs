//! `corral-agent --kube-proxy-replacement`: Corral's own Service
//! translation with real netns pods and no kube-proxy. A client pod
//! reaches a ClusterIP (TCP and UDP, IPv4 and IPv6); the programs translate
//! it at the client's veth to the ready endpoints of the Service's
//! EndpointSlices (target ports), replies come back from the ClusterIP,
//! egress NetworkPolicy is decided on the backend pod and target port,
//! `sessionAffinity: ClientIP` keeps a client on one backend, and a backend
//! removed from the EndpointSlice gets no new flows.

mod common;
use common::multinode::{
    Pod as MnPod, PodNs, Underlay, add_pod, backend_peer, in_mode, start_nodes_with, tcp_peer,
    udp_peer, write_all,
};
use common::*;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

const CIP4: &str = "198.18.250.10";
const CIP6: &str = "2001:db8:250::10";
const CIP_STICKY: &str = "198.18.250.11";

/// Backend servers: TCP 8080 answers with `id`, UDP 5353 echoes `id`.
fn backend(netns: &str, id: u8) {
    in_netns(netns, move || {
        let l = TcpListener::bind(("::", 8080)).expect("bind tcp");
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let _ = s.write_all(&[id]);
            }
        });
        let u = UdpSocket::bind(("::", 5353)).expect("bind udp");
        std::thread::spawn(move || {
            let mut b = [0u8; 16];
            while let Ok((_, from)) = u.recv_from(&mut b) {
                let _ = u.send_to(&[id], from);
            }
        });
    });
}

/// The byte a TCP connection to `to:port` from `from` reads (None: no
/// connection or no answer within 400 ms).
fn tcp_id(from: &str, to: IpAddr, port: u16) -> Option<u8> {
    in_netns(from, move || {
        let t = Duration::from_millis(400);
        let mut s = TcpStream::connect_timeout(&SocketAddr::new(to, port), t).ok()?;
        let _ = s.set_read_timeout(Some(t));
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Ok(1)).then_some(b[0])
    })
}

/// The answer to one UDP datagram and the address it came from.
fn udp_id(from: &str, to: IpAddr, port: u16) -> Option<(u8, SocketAddr)> {
    in_netns(from, move || {
        let s = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
        let _ = s.set_read_timeout(Some(Duration::from_millis(400)));
        s.send_to(b"q", (to, port)).ok()?;
        let mut b = [0u8; 8];
        let (n, src) = s.recv_from(&mut b).ok()?;
        (n == 1).then_some((b[0], src))
    })
}

/// `n` TCP connections through `to:80`: answers per backend id, failures.
fn spread(from: &str, to: IpAddr, n: usize) -> (BTreeMap<u8, usize>, usize) {
    let mut got = BTreeMap::new();
    let mut failed = 0;
    for _ in 0..n {
        match tcp_id(from, to, 80) {
            Some(id) => *got.entry(id).or_insert(0) += 1,
            None => failed += 1,
        }
    }
    (got, failed)
}

fn slices(node: &Node, svc: &str, backends: &[usize]) -> String {
    let eps: Vec<SliceEndpoint> = backends
        .iter()
        .map(|&i| SliceEndpoint::of(&node.pods[i]))
        .collect();
    dual_stack_slices(
        "x",
        svc,
        "[{name: http, port: 8080, protocol: TCP}, {name: dns, port: 5353, protocol: UDP}]",
        &eps,
    )
}

#[test]
fn cluster_ip_translated_with_policy_on_the_backend() {
    let Some(_g) = privileged("cluster_ip_translated_with_policy_on_the_backend") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let b = node.add_pod("x", "b");
    let c = node.add_pod("x", "c");
    backend(&node.pods[b].netns, b'b');
    backend(&node.pods[c].netns, b'c');
    let svc = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: x, labels: {{kubernetes.io/metadata.name: x}}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: x}}\nspec:\n  clusterIP: {CIP4}\n  clusterIPs: [{CIP4}, \"{CIP6}\"]\n  ipFamilies: [IPv4, IPv6]\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n  - {{name: dns, port: 53, protocol: UDP, targetPort: 5353}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: sticky, namespace: x}}\nspec:\n  clusterIP: {CIP_STICKY}\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 60}}}}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n"
    );
    let m = node.manifests();
    std::fs::write(m.join("svc.yaml"), &svc).expect("write svc");
    std::fs::write(
        m.join("slices.yaml"),
        slices(&node, "web", &[b, c]) + &slices(&node, "sticky", &[b, c]),
    )
    .expect("write slices");
    let agent = Agent::start(&node, &["--kube-proxy-replacement"]);
    agent.register_apps(&node, &[(a, "a"), (b, "b"), (c, "c")]);
    let errs = match agent.call(&corral_dataplane_abi::api::Request::List) {
        corral_dataplane_abi::api::Response::Endpoints { policy_errors, .. } => policy_errors,
        r => panic!("unexpected {r:?}"),
    };
    assert!(errs.is_empty(), "{errs:?}");
    let client = node.pods[a].netns.clone();
    let (cip4, cip6): (IpAddr, IpAddr) = (CIP4.parse().unwrap(), CIP6.parse().unwrap());

    // TCP through the ClusterIP reaches both backends (random choice per
    // flow: 24 flows all on one backend has probability 2^-23)
    let (got, failed) = spread(&client, cip4, 24);
    assert_eq!(failed, 0, "every flow answered: {got:?}");
    assert!(
        got.contains_key(&b'b') && got.contains_key(&b'c'),
        "{got:?}"
    );
    let (got6, failed6) = spread(&client, cip6, 8);
    assert_eq!(failed6, 0, "IPv6 ClusterIP answered: {got6:?}");
    // UDP: the answer comes from the ClusterIP:53 (reverse translation)
    for ip in [cip4, cip6] {
        let (id, src) = udp_id(&client, ip, 53).expect("UDP through the ClusterIP");
        assert!(id == b'b' || id == b'c', "{id}");
        assert_eq!(src, SocketAddr::new(ip, 53), "reply from the frontend");
    }
    // sessionAffinity ClientIP: every new flow of this client goes to the
    // backend its first flow got
    let (got, failed) = spread(&client, CIP_STICKY.parse().unwrap(), 16);
    assert_eq!(failed, 0, "{got:?}");
    assert_eq!(got.len(), 1, "one backend for the client: {got:?}");
    // the backend port is not reachable on the ClusterIP itself
    assert_eq!(tcp_id(&client, cip4, 8080), None);

    // egress policy on the client, written for the backend pod and the
    // target port: flows translated to b pass, flows translated to c drop
    std::fs::write(
        m.join("policy.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a-to-b, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: a}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{podSelector: {matchLabels: {app: b}}}]\n    ports: [{protocol: TCP, port: 8080}, {protocol: UDP, port: 5353}]\n",
    )
    .expect("write policy");
    agent.reconcile();
    let (got, failed) = spread(&client, cip4, 24);
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        vec![b'b'],
        "{got:?}"
    );
    assert!(failed > 0, "flows to c dropped by egress policy: {got:?}");
    assert!(
        tcp(&client, IpAddr::V4(node.pods[b].ip4), 8080),
        "b directly"
    );
    assert!(
        !tcp(&client, IpAddr::V4(node.pods[c].ip4), 8080),
        "c directly"
    );

    // c leaves the EndpointSlices: new flows only reach b, all answered
    std::fs::remove_file(m.join("policy.yaml")).expect("rm policy");
    std::fs::write(m.join("slices.yaml"), slices(&node, "web", &[b])).expect("write slices");
    agent.reconcile();
    let (got, failed) = spread(&client, cip4, 16);
    assert_eq!(failed, 0, "{got:?}");
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        vec![b'b'],
        "{got:?}"
    );
}

/// The same translation from the Kubernetes source: Service and
/// EndpointSlices watched at the test API server (real REST/watch); an
/// EndpointSlice update via REST moves new flows to the remaining backend.
#[test]
fn translation_from_watched_endpoint_slices() {
    use corral_test_apiserver::{Options, TestApiServer};
    use serde_json::json;
    let Some(_g) = privileged("translation_from_watched_endpoint_slices") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let b = node.add_pod("x", "b");
    let c = node.add_pod("x", "c");
    backend(&node.pods[b].netns, b'b');
    backend(&node.pods[c].netns, b'c');
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
    srv.insert(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}))
        .unwrap();
    srv.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}))
        .unwrap();
    srv.insert(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "x"},
        "spec": {"clusterIP": CIP4, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))
        .unwrap();
    let slice = |ips: &[&Pod]| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "namespace": "x",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": ips.iter().map(|p| json!({"addresses": [p.ip4.to_string()],
                "conditions": {"ready": true}})).collect::<Vec<_>>()})
    };
    srv.insert(slice(&[&node.pods[b], &node.pods[c]])).unwrap();
    let kc = node.dir.path().join("kubeconfig");
    srv.write_kubeconfig(&kc).unwrap();
    let agent = Agent::start_kube(
        &node,
        &kc,
        &["--node-name", "n1", "--kube-proxy-replacement"],
    );
    for i in [a, b, c] {
        agent.register(node.pods[i].spec());
    }
    let client = node.pods[a].netns.clone();
    let cip4: IpAddr = CIP4.parse().unwrap();
    eventually("ClusterIP translated from the watched objects", 15, || {
        tcp_id(&client, cip4, 80).is_some()
    });
    let (got, failed) = spread(&client, cip4, 24);
    assert_eq!(failed, 0, "{got:?}");
    assert_eq!(got.len(), 2, "both backends: {got:?}");
    // c leaves the EndpointSlice (REST PUT)
    let mut upd = slice(&[&node.pods[b]]);
    upd["metadata"]["resourceVersion"] = srv
        .get("discovery.k8s.io", "endpointslices", Some("x"), "web-1")
        .unwrap()["metadata"]["resourceVersion"]
        .clone();
    let (code, body) = rest(
        &node,
        "PUT",
        &format!("{base}/apis/discovery.k8s.io/v1/namespaces/x/endpointslices/web-1"),
        Some(&upd),
    );
    assert_eq!(code, 200, "{body}");
    eventually("new flows only to b", 15, || {
        spread(&client, cip4, 8) == (BTreeMap::from([(b'b', 8)]), 0)
    });
    drop(agent);
    drop(srv);
    drop(rt);
}

fn np_service(name: &str, cip: u8, etp: &str, node_port: u16, udp_node_port: u16) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: mn}}\nspec:\n  type: NodePort\n  clusterIP: 198.19.250.{cip}\n  clusterIPs: [198.19.250.{cip}, \"2001:db8:250::{cip}\"]\n  ipFamilies: [IPv4, IPv6]\n  externalTrafficPolicy: {etp}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080, nodePort: {node_port}}}\n  - {{name: dns, port: 53, protocol: UDP, targetPort: 8080, nodePort: {udp_node_port}}}\n"
    )
}

fn np_slices(name: &str, eps: &[&MnPod]) -> String {
    let eps: Vec<SliceEndpoint> = eps
        .iter()
        .map(|p| SliceEndpoint {
            ip4: p.ip4.to_string(),
            ip6: p.ip6.to_string(),
            node: Some(p.node),
        })
        .collect();
    dual_stack_slices(
        "mn",
        name,
        "[{name: http, port: 8080, protocol: TCP}, {name: dns, port: 8080, protocol: UDP}]",
        &eps,
    )
}

/// NodePort and externalTrafficPolicy on two simulated nodes (underlay
/// bridge, corral-cni pods, one agent per node with
/// --kube-proxy-replacement) and a client outside the cluster on the
/// underlay: Cluster — the NodePort on n1's address is served by the only
/// backend, on n2 (SNAT to n1's address, reply from n1:nodePort), TCP and
/// UDP, IPv4 and IPv6; Local — only the node's own backend serves, and it
/// sees the client's address; a node without a local backend serves
/// nothing. A pod reaches the NodePort too.
fn node_port(mode: &str) {
    let under = Underlay::new();
    let nodes = start_nodes_with(&under, mode, 2, &["--kube-proxy-replacement"]);
    let client = PodNs::new();
    under.attach_ns(&client.0, 100);
    let b1 = add_pod(&nodes[0], "b1");
    let b2 = add_pod(&nodes[1], "b2");
    backend_peer(&b1.ns.0, 1, 8080);
    backend_peer(&b2.ns.0, 2, 8080);
    let mut y = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: mn}\n");
    y += &np_service("cluster", 10, "Cluster", 30080, 30053);
    y += &np_slices("cluster", &[&b2]);
    y += &np_service("local", 11, "Local", 30081, 30054);
    y += &np_slices("local", &[&b1, &b2]);
    y += &np_service("remote", 12, "Local", 30082, 30055);
    y += &np_slices("remote", &[&b2]);
    write_all(&nodes, "svc.yaml", &y);
    for n in &nodes {
        let errs = match n.agent.call(&corral_dataplane_abi::api::Request::List) {
            corral_dataplane_abi::api::Response::Endpoints { policy_errors, .. } => policy_errors,
            r => panic!("unexpected {r:?}"),
        };
        assert!(errs.is_empty(), "n{}: {errs:?}", n.k);
    }
    let c = client.0.clone();
    let n1: [IpAddr; 2] = [
        "192.0.2.1".parse().unwrap(),
        "2001:db8:ff::1".parse().unwrap(),
    ];
    let n2: [IpAddr; 2] = [
        "192.0.2.2".parse().unwrap(),
        "2001:db8:ff::2".parse().unwrap(),
    ];
    let me: [&str; 2] = ["192.0.2.100", "2001:db8:ff::100"];
    for f in 0..2 {
        // Cluster: n1's NodePort, served on n2, source NATed to n1
        for _ in 0..4 {
            let got = tcp_peer(&c, SocketAddr::new(n1[f], 30080));
            assert_eq!(
                got,
                Some((2, n1[f].to_string())),
                "{mode}: TCP to n1:30080 (eTP Cluster) served by b2 on n2, seen from n1"
            );
        }
        let u = udp_peer(&c, SocketAddr::new(n1[f], 30053));
        assert_eq!(
            u,
            Some((2, n1[f].to_string(), SocketAddr::new(n1[f], 30053))),
            "{mode}: UDP to n1:30053 (eTP Cluster), reply from the NodePort"
        );
        // Local: only the node's own backend, client address kept
        for (node, id) in [(n1[f], 1u8), (n2[f], 2u8)] {
            for _ in 0..6 {
                let got = tcp_peer(&c, SocketAddr::new(node, 30081));
                assert_eq!(
                    got,
                    Some((id, me[f].to_string())),
                    "{mode}: TCP to {node}:30081 (eTP Local)"
                );
            }
            let u = udp_peer(&c, SocketAddr::new(node, 30054));
            assert_eq!(
                u,
                Some((id, me[f].to_string(), SocketAddr::new(node, 30054))),
                "{mode}: UDP to {node}:30054 (eTP Local)"
            );
        }
        // Local without a local backend: nothing on n1, served on n2
        assert_eq!(tcp_peer(&c, SocketAddr::new(n1[f], 30082)), None, "{mode}");
        assert_eq!(
            tcp_peer(&c, SocketAddr::new(n2[f], 30082)).map(|g| g.0),
            Some(2),
            "{mode}"
        );
    }
    // a pod on n1 reaches n1's NodePort (translated at its veth, as a
    // ClusterIP: backend on n2, pod address kept)
    let got = tcp_peer(&b1.ns.0, SocketAddr::new(n1[0], 30080));
    assert_eq!(
        got,
        Some((2, b1.ip4.to_string())),
        "{mode}: pod -> NodePort"
    );
    // the port is not open on the node without translation
    assert_eq!(tcp_peer(&c, SocketAddr::new(n1[0], 8080)), None, "{mode}");
    drop(b1);
    drop(b2);
    drop(nodes);
    drop(client);
    drop(under);
}

#[test]
fn node_port_native() {
    in_mode("node_port_native", "native", node_port);
}

#[test]
fn node_port_vxlan() {
    in_mode("node_port_vxlan", "vxlan", node_port);
}

/// SCTP ClusterIP Services (the kernel has no SCTP: the user-space
/// endpoint on raw sockets answers INIT with INIT-ACK and both sides check
/// the CRC32c). The NAT changes the port (132 → 8132): the CRC32c covers
/// the ports but no IP pseudo-header, so the programs update it for the
/// port change and leave it for the address change; a same-port Service
/// checks the address-only path. IPv4 and IPv6; the INIT-ACK comes from the
/// ClusterIP; egress policy on the backend's SCTP target port decides.
#[test]
fn sctp_cluster_ip() {
    let Some(_g) = privileged("sctp_cluster_ip") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let b = node.add_pod("x", "b");
    serve_sctp(&node.pods[b].netns, &[8132, 9132]);
    let mut y = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: x, labels: {{kubernetes.io/metadata.name: x}}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: x}}\nspec:\n  clusterIP: {CIP4}\n  clusterIPs: [{CIP4}, \"{CIP6}\"]\n  ipFamilies: [IPv4, IPv6]\n  ports:\n  - {{name: nat, port: 132, protocol: SCTP, targetPort: 8132}}\n  - {{name: same, port: 9132, protocol: SCTP, targetPort: 9132}}\n"
    );
    y += &dual_stack_slices(
        "x",
        "s",
        "[{name: nat, port: 8132, protocol: SCTP}, {name: same, port: 9132, protocol: SCTP}]",
        &[SliceEndpoint::of(&node.pods[b])],
    );
    let m = node.manifests();
    std::fs::write(m.join("svc.yaml"), &y).expect("write svc");
    let agent = Agent::start(&node, &["--kube-proxy-replacement"]);
    agent.register_apps(&node, &[(a, "a"), (b, "b")]);
    let client = node.pods[a].netns.clone();
    let (cip4, cip6): (IpAddr, IpAddr) = (CIP4.parse().unwrap(), CIP6.parse().unwrap());
    for ip in [cip4, cip6] {
        assert!(sctp(&client, ip, 132), "SCTP {ip}:132 -> b:8132");
        assert!(sctp(&client, ip, 9132), "SCTP {ip}:9132 -> b:9132");
        assert!(!sctp(&client, ip, 8132), "not a Service port of {ip}");
    }
    // egress policy for the backend's SCTP port 9132 only
    std::fs::write(
        m.join("policy.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a-out, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: a}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{podSelector: {matchLabels: {app: b}}}]\n    ports: [{protocol: SCTP, port: 9132}]\n",
    )
    .expect("write policy");
    agent.reconcile();
    for ip in [cip4, cip6] {
        assert!(sctp(&client, ip, 9132), "{ip}:9132 allowed");
        assert!(
            !sctp(&client, ip, 132),
            "{ip}:132 -> b:8132 denied on the target port"
        );
    }
    let drops = agent
        .list()
        .into_iter()
        .find(|e| e.spec.name == "a")
        .map(|e| e.egress.drop_policy);
    assert!(drops.unwrap_or(0) > 0, "a's egress policy drops: {drops:?}");
}

/// Hairpin: a pod reaches itself through its own Service (it is the only
/// backend). The flow comes back into the pod from the hairpin address
/// (169.254.42.1 / fd00:c0:ffee:42::1), the answer leaves the pod to it and
/// returns from the ClusterIP, TCP and UDP, IPv4 and IPv6. The pod's
/// egress policy decides on itself as the backend.
#[test]
fn hairpin_through_own_service() {
    let Some(_g) = privileged("hairpin_through_own_service") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let b = node.add_pod("x", "b");
    backend_peer(&node.pods[a].netns, 1, 8080);
    backend_peer(&node.pods[b].netns, 2, 8080);
    let mut y = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: x, labels: {{kubernetes.io/metadata.name: x}}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: self, namespace: x}}\nspec:\n  clusterIP: {CIP4}\n  clusterIPs: [{CIP4}, \"{CIP6}\"]\n  ipFamilies: [IPv4, IPv6]\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n  - {{name: dns, port: 53, protocol: UDP, targetPort: 8080}}\n"
    );
    y += &dual_stack_slices(
        "x",
        "self",
        "[{name: http, port: 8080, protocol: TCP}, {name: dns, port: 8080, protocol: UDP}]",
        &[SliceEndpoint::of(&node.pods[a])],
    );
    let m = node.manifests();
    std::fs::write(m.join("svc.yaml"), &y).expect("write svc");
    let agent = Agent::start(&node, &["--kube-proxy-replacement"]);
    agent.register_apps(&node, &[(a, "a"), (b, "b")]);
    let pa = node.pods[a].netns.clone();
    let pb = node.pods[b].netns.clone();
    let (cip4, cip6): (IpAddr, IpAddr) = (CIP4.parse().unwrap(), CIP6.parse().unwrap());
    let hairpin = ["169.254.42.1", "fd00:c0:ffee:42::1"];
    for (f, ip) in [cip4, cip6].into_iter().enumerate() {
        for _ in 0..3 {
            assert_eq!(
                tcp_peer(&pa, SocketAddr::new(ip, 80)),
                Some((1, hairpin[f].to_string())),
                "a -> its own Service {ip}:80 (TCP)"
            );
        }
        assert_eq!(
            udp_peer(&pa, SocketAddr::new(ip, 53)),
            Some((1, hairpin[f].to_string(), SocketAddr::new(ip, 53))),
            "a -> its own Service {ip}:53 (UDP), answer from the ClusterIP"
        );
        // another pod through the same Service: plain translation
        let own = if f == 0 {
            node.pods[b].ip4.to_string()
        } else {
            node.pods[b].ip6.to_string()
        };
        assert_eq!(tcp_peer(&pb, SocketAddr::new(ip, 80)), Some((1, own)));
    }
    // a's egress policy allows only b: the hairpin flow (backend a) drops,
    // then allowing a itself on 8080 lets it through again
    let pol = |to: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: a-out, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{app: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{podSelector: {{matchLabels: {{app: {to}}}}}}}]\n    ports: [{{protocol: TCP, port: 8080}}, {{protocol: UDP, port: 8080}}]\n"
        )
    };
    std::fs::write(m.join("policy.yaml"), pol("b")).expect("write policy");
    agent.reconcile();
    assert_eq!(tcp_peer(&pa, SocketAddr::new(cip4, 80)), None, "denied");
    assert_eq!(udp_peer(&pa, SocketAddr::new(cip4, 53)), None, "denied");
    std::fs::write(m.join("policy.yaml"), pol("a")).expect("write policy");
    agent.reconcile();
    for ip in [cip4, cip6] {
        assert_eq!(
            tcp_peer(&pa, SocketAddr::new(ip, 80)).map(|g| g.0),
            Some(1),
            "allowed to itself: {ip}"
        );
        assert_eq!(
            udp_peer(&pa, SocketAddr::new(ip, 53)).map(|g| g.0),
            Some(1),
            "allowed to itself: {ip}"
        );
    }
}

/// One TCP connection from `from`'s source port `sport` to `to`, closed
/// with RST (the client can re-use the port at once): the answer byte.
fn tcp_from_port(from: &str, to: SocketAddr, sport: u16) -> Option<u8> {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket, sockopt};
    in_netns(from, move || {
        let fd = socket(AddressFamily::INET, SocketType::STREAM, None).ok()?;
        sockopt::set_socket_reuseaddr(&fd, true).ok()?;
        // below the SYN retransmission time (1 s): the first SYN counts
        let t = Some(Duration::from_millis(800));
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, t).ok()?;
        bind(&fd, &SocketAddr::new("0.0.0.0".parse().unwrap(), sport)).ok()?;
        connect(&fd, &to).ok()?;
        let mut s = TcpStream::from(fd);
        let _ = s.set_read_timeout(t);
        let mut b = [0u8; 1];
        let got = matches!(s.read(&mut b), Ok(1)).then_some(b[0]);
        let _ = rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO));
        got
    })
}

/// A client port re-used for a new connection to another Service with the
/// same backend, then to the first again: each connection is answered
/// (the reverse entry follows the newest flow on a re-used tuple; before,
/// the third connection's SYN-ACK came back from the second Service).
#[test]
fn client_port_reused_across_services() {
    let Some(_g) = privileged("client_port_reused_across_services") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let b = node.add_pod("x", "b");
    backend(&node.pods[b].netns, b'b');
    let mut y = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {kubernetes.io/metadata.name: x}}\n",
    );
    for (name, cip) in [("s1", "198.18.250.21"), ("s2", "198.18.250.22")] {
        y += &format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: x}}\nspec:\n  clusterIP: {cip}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: x, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n- {{addresses: [\"{}\"], conditions: {{ready: true}}}}\n",
            node.pods[b].ip4
        );
    }
    std::fs::write(node.manifests().join("svc.yaml"), &y).expect("write svc");
    let agent = Agent::start(&node, &["--kube-proxy-replacement"]);
    for i in [a, b] {
        agent.register(node.pods[i].spec());
    }
    let client = node.pods[a].netns.clone();
    let s1: SocketAddr = "198.18.250.21:80".parse().unwrap();
    let s2: SocketAddr = "198.18.250.22:80".parse().unwrap();
    for (k, to) in [s1, s2, s1, s2, s1].into_iter().enumerate() {
        assert_eq!(
            tcp_from_port(&client, to, 45678),
            Some(b'b'),
            "connection {k} from port 45678 to {to}"
        );
    }
}
