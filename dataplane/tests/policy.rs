//! NetworkPolicy enforced by the real agent + eBPF, checked with real TCP
//! and UDP connections between netns pods (x,y,z × a,b,c on one node).

mod common;
use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use corral_dataplane_abi::api::NamedPort;

const TCP_PORTS: [u16; 2] = [80, 81];
const UDP_PORT: u16 = 53;

/// TCP (80, 81) and UDP (53) echo servers on all addresses of `netns`.
fn serve(netns: &str) {
    serve_ports(netns, &TCP_PORTS, &[UDP_PORT]);
}

struct World {
    node: Node,
    agent: Agent,
    /// "x/a" -> pod index
    idx: BTreeMap<String, usize>,
}

impl World {
    fn new() -> World {
        let mut node = Node::new();
        let mut idx = BTreeMap::new();
        for ns in ["x", "y", "z"] {
            for p in ["a", "b", "c"] {
                let i = node.add_pod(ns, p);
                idx.insert(format!("{ns}/{p}"), i);
            }
        }
        std::fs::write(
            node.manifests().join("namespaces.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {team: xx}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: y, labels: {team: yy}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: z, labels: {team: zz}}\n",
        )
        .expect("write");
        let agent = Agent::start(&node, &[]);
        for (name, &i) in &idx {
            let pod = &node.pods[i];
            serve(&pod.netns);
            let mut spec = pod.spec();
            spec.labels = [("app".to_string(), pod.name.clone())].into();
            if name == "x/a" {
                spec.ports = vec![NamedPort {
                    name: "web".into(),
                    port: 81,
                    protocol: "TCP".into(),
                }];
            }
            agent.register(spec);
        }
        World { node, agent, idx }
    }
    fn pod(&self, n: &str) -> &Pod {
        &self.node.pods[self.idx[n]]
    }
    fn tcp(&self, from: &str, to: &str, port: u16) -> bool {
        tcp(&self.pod(from).netns, IpAddr::V4(self.pod(to).ip4), port)
    }
    fn tcp6(&self, from: &str, to: &str, port: u16) -> bool {
        tcp(&self.pod(from).netns, IpAddr::V6(self.pod(to).ip6), port)
    }
    fn udp(&self, from: &str, to: &str) -> bool {
        udp(
            &self.pod(from).netns,
            IpAddr::V4(self.pod(to).ip4),
            UDP_PORT,
        )
    }
    fn apply(&self, yaml: &str) {
        std::fs::write(self.node.manifests().join("policy.yaml"), yaml).expect("write policy");
        self.agent.reconcile();
    }
    /// Checks TCP:80 over the full 9x9 matrix against `allowed(from, to)`
    /// (one thread per source pod).
    fn matrix(&self, what: &str, allowed: impl Fn(&str, &str) -> bool + Sync) {
        let names: Vec<String> = self.idx.keys().cloned().collect();
        let bad: Vec<String> = std::thread::scope(|sc| {
            let hs: Vec<_> = names
                .iter()
                .map(|f| {
                    let (names, allowed) = (&names, &allowed);
                    sc.spawn(move || {
                        let mut bad = Vec::new();
                        for t in names {
                            if f == t {
                                continue;
                            }
                            let want = allowed(f, t);
                            if self.tcp(f, t, 80) != want {
                                bad.push(format!(
                                    "{f} -> {t}:80 want {}",
                                    if want { "allow" } else { "deny" }
                                ));
                            }
                        }
                        bad
                    })
                })
                .collect();
            hs.into_iter()
                .flat_map(|h| h.join().expect("prober"))
                .collect()
        });
        assert!(bad.is_empty(), "{what}: {bad:#?}");
    }
}

const NP: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n";

#[test]
fn network_policy_matrix_with_real_connections() {
    let Some(_serial) = privileged("network_policy_matrix_with_real_connections") else {
        return;
    };
    let w = World::new();

    // 1. no policy: everything allowed, v4 and v6, TCP and UDP
    w.matrix("no policy", |_, _| true);
    assert!(w.tcp6("x/a", "y/b", 81));
    assert!(w.udp("y/b", "x/a"));

    // 2. default deny ingress in x
    w.apply(&format!(
        "{NP}metadata: {{name: deny, namespace: x}}\nspec: {{podSelector: {{}}}}\n"
    ));
    w.matrix("default-deny x", |_, t| !t.starts_with("x/"));
    assert!(!w.udp("y/a", "x/b"));
    assert!(!w.tcp6("y/a", "x/b", 80));
    assert!(
        w.tcp("x/a", "y/a", 80),
        "egress of x not isolated; replies pass"
    );

    // 3. namespace isolation template in x (same namespace + DNS anywhere)
    w.apply(&format!(
        "{NP}metadata: {{name: isolate, namespace: x}}
spec:
  podSelector: {{}}
  policyTypes: [Ingress, Egress]
  ingress: [{{from: [{{podSelector: {{}}}}]}}]
  egress:
  - to: [{{podSelector: {{}}}}]
  - to: [{{namespaceSelector: {{}}}}]
    ports: [{{protocol: UDP, port: 53}}, {{protocol: TCP, port: 53}}]
"
    ));
    w.matrix("namespace isolation", |f, t| {
        let (fx, tx) = (f.starts_with("x/"), t.starts_with("x/"));
        (fx && tx) || (!fx && !tx)
    });
    assert!(
        w.udp("x/a", "y/a"),
        "DNS (udp 53) to another namespace allowed"
    );
    assert!(!w.udp("y/a", "x/a"), "ingress from y denied");
    assert!(w.tcp6("x/a", "x/b", 81));

    // 4. ipBlock with except + ports, and named port, on x/a only
    w.apply(&format!(
        "{NP}metadata: {{name: blocks, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: a}}}}
  ingress:
  - from: [{{ipBlock: {{cidr: 198.18.0.0/16, except: [198.18.2.0/24]}}}}]
    ports: [{{port: 80}}]
  - from: [{{namespaceSelector: {{matchLabels: {{team: yy}}}}, podSelector: {{matchLabels: {{app: b}}}}}}]
    ports: [{{port: web}}]
"
    ));
    let xb = "x/b";
    assert_eq!(w.pod(xb).ip4.octets()[2], 2, "x/b is in the excepted /24");
    assert!(!w.tcp(xb, "x/a", 80), "except");
    assert!(w.tcp("y/a", "x/a", 80));
    assert!(!w.tcp("y/a", "x/a", 81));
    assert!(w.tcp("y/b", "x/a", 81), "named port web=81 for y/b");
    assert!(!w.tcp6("y/a", "x/a", 80), "IPv4 block does not allow IPv6");
    assert!(w.tcp("x/a", "x/b", 80), "x/b not selected");

    // 5. egress rule: x/a may only reach y/b on 80; conntrack lets replies in
    w.apply(&format!(
        "{NP}metadata: {{name: egress, namespace: x}}
spec:
  podSelector: {{matchLabels: {{app: a}}}}
  policyTypes: [Egress, Ingress]
  egress: [{{to: [{{namespaceSelector: {{matchLabels: {{team: yy}}}}, podSelector: {{matchLabels: {{app: b}}}}}}], ports: [{{port: 80}}]}}]
"
    ));
    assert!(
        w.tcp("x/a", "y/b", 80),
        "allowed egress, reply passes ingress-isolated x/a"
    );
    assert!(w.tcp6("x/a", "y/b", 80));
    assert!(!w.tcp("x/a", "y/b", 81));
    assert!(!w.tcp("x/a", "y/a", 80));
    assert!(!w.udp("x/a", "y/b"));
    assert!(!w.tcp("y/b", "x/a", 80), "ingress isolated with no rules");
    let st = w.agent.list();
    let xa = st
        .iter()
        .find(|e| e.spec.namespace == "x" && e.spec.name == "a")
        .expect("x/a");
    assert!(xa.policy_egress && xa.policy_ingress);
    assert!(
        xa.egress.drop_policy > 0 && xa.ingress.drop_policy > 0,
        "{xa:?}"
    );

    // 6. the manifest dir is watched: removing the policy reopens traffic
    std::fs::remove_file(w.node.manifests().join("policy.yaml")).expect("rm");
    let t = std::time::Instant::now();
    while !w.tcp("y/b", "x/a", 80) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "watcher did not re-apply"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    w.matrix("policy removed", |_, _| true);
}

#[test]
fn bad_policy_is_reported_and_others_apply() {
    let Some(_serial) = privileged("bad_policy_is_reported_and_others_apply") else {
        return;
    };
    let w = World::new();
    w.apply(&format!(
        "{NP}metadata: {{name: broken, namespace: x}}
spec: {{podSelector: {{}}, ingress: [{{from: [{{ipBlock: {{cidr: 300.1.0.0/16}}}}]}}]}}
---
{NP}metadata: {{name: deny-y, namespace: y}}
spec: {{podSelector: {{}}}}
"
    ));
    match w.agent.call(&corral_dataplane_abi::api::Request::List) {
        corral_dataplane_abi::api::Response::Endpoints { policy_errors, .. } => {
            assert!(
                policy_errors
                    .iter()
                    .any(|e| e.contains("x/broken") && e.contains("ipBlock.cidr")),
                "{policy_errors:?}"
            );
        }
        r => panic!("{r:?}"),
    }
    w.matrix("deny-y applies, broken skipped", |_, t| {
        !t.starts_with("y/")
    });
}

/// TCP conntrack entries of a pinned ct map: (dport, state).
fn ct_tcp(pin: &std::path::Path) -> Vec<(u64, u64)> {
    let out = sh(&[
        "bpftool",
        "-j",
        "map",
        "dump",
        "pinned",
        &pin.display().to_string(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|e| &e["formatted"])
        .filter(|f| f["key"]["proto"].as_u64() == Some(6))
        .map(|f| {
            (
                f["key"]["dport"].as_u64().unwrap_or(0),
                f["value"]["state"].as_u64().unwrap_or(99),
            )
        })
        .collect()
}

#[test]
fn conntrack_follows_tcp_state_and_admits_replies() {
    let Some(_serial) = privileged("conntrack_follows_tcp_state_and_admits_replies") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    // a: ingress fully isolated, egress only to port 8080 -> replies of
    // a's outgoing connection must pass its isolated ingress
    std::fs::write(
        node.manifests().join("p.yaml"),
        format!(
            "{NP}metadata: {{name: out-only, namespace: x}}\nspec:\n  podSelector: {{}}\n  policyTypes: [Ingress, Egress]\n  egress: [{{ports: [{{port: 8080}}]}}]\n"
        ),
    )
    .expect("write");
    let agent = Agent::start(&node, &[]);
    let pod = &node.pods[a];
    agent.register(pod.spec());
    let gw = pod.gw4;
    let listener = in_netns(&node.netns, move || {
        TcpListener::bind((gw, 8080)).expect("bind node:8080")
    });
    let ct = agent.pin_dir.join("maps").join("corral_ct");
    let mut c = in_netns(&pod.netns, move || {
        TcpStream::connect_timeout(
            &SocketAddr::new(IpAddr::V4(gw), 8080),
            Duration::from_secs(2),
        )
        .expect("a -> node:8080 allowed, SYN-ACK must pass isolated ingress")
    });
    let (mut srv, _) = listener.accept().expect("accept");
    c.write_all(b"ping").expect("write");
    let mut b = [0u8; 4];
    srv.read_exact(&mut b).expect("server read");
    srv.write_all(b"pong").expect("reply");
    c.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    c.read_exact(&mut b)
        .expect("reply passes ingress isolation via conntrack");
    assert_eq!(&b, b"pong");
    assert_eq!(ct_tcp(&ct), vec![(8080, 1)], "one ESTABLISHED entry");
    drop(c);
    drop(srv);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(ct_tcp(&ct), vec![(8080, 2)], "CLOSING after FIN");
    // the node cannot open a connection to a (ingress isolated)
    let pip = pod.ip4;
    let l2 = in_netns(&pod.netns, move || {
        TcpListener::bind((pip, 8080)).expect("bind pod")
    });
    let ok = in_netns(&node.netns, move || {
        TcpStream::connect_timeout(
            &SocketAddr::new(IpAddr::V4(pip), 8080),
            Duration::from_millis(500),
        )
        .is_ok()
    });
    assert!(!ok, "new inbound connection must be denied");
    drop(l2);
    // and a may not open other ports (the node listens there)
    let _l3 = in_netns(&node.netns, move || {
        TcpListener::bind((gw, 8081)).expect("bind node:8081")
    });
    let ok = in_netns(&pod.netns, move || {
        TcpStream::connect_timeout(
            &SocketAddr::new(IpAddr::V4(gw), 8081),
            Duration::from_millis(500),
        )
        .is_ok()
    });
    assert!(!ok, "egress to a port outside the policy must be denied");
}
