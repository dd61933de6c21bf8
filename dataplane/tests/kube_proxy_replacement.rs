//! `corral-agent --kube-proxy-replacement`: Corral's own Service
//! translation with real netns pods and no kube-proxy. A client pod
//! reaches a ClusterIP (TCP and UDP, IPv4 and IPv6); the programs translate
//! it at the client's veth to the ready endpoints of the Service's
//! EndpointSlices (target ports), replies come back from the ClusterIP,
//! egress NetworkPolicy is decided on the backend pod and target port,
//! `sessionAffinity: ClientIP` keeps a client on one backend, and a backend
//! removed from the EndpointSlice gets no new flows.

mod common;
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
    let mut y = String::new();
    for (fam, v6) in [("IPv4", false), ("IPv6", true)] {
        y.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {svc}-{}, namespace: x, labels: {{kubernetes.io/service-name: {svc}}}}}\naddressType: {fam}\nports: [{{name: http, port: 8080, protocol: TCP}}, {{name: dns, port: 5353, protocol: UDP}}]\nendpoints:\n",
            fam.to_lowercase()
        ));
        for &i in backends {
            let p = &node.pods[i];
            let ip = if v6 {
                p.ip6.to_string()
            } else {
                p.ip4.to_string()
            };
            y.push_str(&format!(
                "- {{addresses: [\"{ip}\"], conditions: {{ready: true}}}}\n"
            ));
        }
    }
    y
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
    for (i, app) in [(a, "a"), (b, "b"), (c, "c")] {
        let mut s = node.pods[i].spec();
        s.labels.insert("app".into(), app.into());
        agent.register(s);
    }
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
