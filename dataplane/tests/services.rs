//! NetworkPolicy egress decided on the translated destination when a DNAT
//! (kube-proxy) sits in front of the pods: kube-proxy's iptables-mode rules
//! (KUBE-SERVICES → KUBE-SVC-* → KUBE-SEP-* DNAT) or its nftables-mode
//! ruleset (`table ip kube-proxy`, `service-ips` verdict map) are installed
//! in the node netns as its stand-in, every pod is probed through its Service's
//! ClusterIP, and the verdicts must equal the upstream NetworkPolicy e2e
//! expectations (test/e2e/network/netpol, the egress cases, transcribed as
//! data below, plus two ingress cases) — and equal probing the pod IPs
//! directly.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use corral_dataplane_abi::api::NamedPort;

const NAMESPACES: [&str; 2] = ["x", "y"];
const PODS: [&str; 3] = ["a", "b", "c"];

fn serve(netns: &str) {
    serve_ports(netns, &[80, 81], &[53]);
}

struct World {
    node: Node,
    agent: Agent,
    idx: BTreeMap<String, usize>,
    /// "x/a" -> ClusterIP of service "s-a" in x
    vip: BTreeMap<String, Ipv4Addr>,
}

/// Service port → (target port) for every Service: 80→80, 81→81, and
/// 90→81 (the e2e "serve-81-tcp" port through another Service port).
const SVC_PORTS: [(u16, u16); 3] = [(80, 80), (81, 81), (90, 81)];

/// Which kube-proxy mode's rules stand in for kube-proxy in the node netns.
#[derive(Clone, Copy, Debug)]
enum KubeProxy {
    /// iptables mode: KUBE-SERVICES → KUBE-SVC-* → KUBE-SEP-* DNAT chains
    Iptables,
    /// nftables mode: `table ip kube-proxy`, chain `services` with the
    /// `service-ips` verdict map (daddr . l4proto . dport), per-Service
    /// chains choosing an endpoint with `numgen random`, per-endpoint
    /// chains with `dnat to`
    Nftables,
}

/// (e2e name "ns/pod", ClusterIP, pod IP) of every Service's one endpoint.
type Backends = [(String, Ipv4Addr, Ipv4Addr)];

/// kube-proxy's iptables-mode chain layout with one endpoint per Service.
fn iptables_rules(backends: &Backends) -> String {
    let mut rules = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    for (i, (name, vip, ip)) in backends.iter().enumerate() {
        for (sp, tp) in SVC_PORTS {
            let svc = format!("KUBE-SVC-{i}-{sp}");
            let sep = format!("KUBE-SEP-{i}-{sp}");
            rules += &format!(":{svc} - [0:0]\n:{sep} - [0:0]\n");
            rules += &format!(
                "-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment \"{name}:p{sp} cluster IP\" -m tcp --dport {sp} -j {svc}\n"
            );
            rules += &format!("-A {svc} -j {sep}\n");
            rules += &format!("-A {sep} -p tcp -m tcp -j DNAT --to-destination {ip}:{tp}\n");
        }
        rules += &format!(
            "-A KUBE-SERVICES -d {vip}/32 -p udp -m udp --dport 53 -j DNAT --to-destination {ip}:53\n"
        );
    }
    rules + "COMMIT\n"
}

/// kube-proxy's nftables-mode structure (pkg/proxy/nftables): a `nat`
/// chain at hook prerouting priority dstnat jumping to `services`, whose
/// `service-ips` verdict map sends ClusterIP . protocol . port to a
/// `service-<hash>-<ns>/<name>/<proto>/<port>` chain; that one picks an
/// endpoint with `numgen random mod N vmap`, and the
/// `endpoint-<hash>-...__<ip>/<port>` chain marks hairpin traffic for
/// masquerade (mark 0x4000, as kube-proxy) and DNATs.
fn nftables_rules(backends: &Backends) -> String {
    let mut chains = String::new();
    let mut elems = Vec::new();
    let ports = SVC_PORTS
        .iter()
        .map(|&(sp, tp)| ("tcp", sp, tp))
        .chain([("udp", 53, 53)]);
    for (i, (name, vip, ip)) in backends.iter().enumerate() {
        let (ns, pod) = name.split_once('/').expect("ns/pod");
        for (proto, sp, tp) in ports.clone() {
            let svc = format!("service-S{i:07}-{ns}/s-{pod}/{proto}/p{sp}");
            let ep = format!("endpoint-E{i:07}-{ns}/s-{pod}/{proto}/p{sp}__{ip}/{tp}");
            elems.push(format!("{vip} . {proto} . {sp} : goto {svc}"));
            chains += &format!(
                "  chain {svc} {{\n    numgen random mod 1 vmap {{ 0 : goto {ep} }}\n  }}\n"
            );
            chains += &format!(
                "  chain {ep} {{\n    ip saddr {ip} jump mark-for-masquerade\n    meta l4proto {proto} dnat to {ip}:{tp}\n  }}\n"
            );
        }
    }
    format!(
        "table ip kube-proxy {{\n  comment \"rules for kube-proxy\"\n  chain mark-for-masquerade {{\n    mark set mark or 0x4000\n  }}\n  map service-ips {{\n    type ipv4_addr . inet_proto . inet_service : verdict\n    comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\"\n  }}\n{chains}  chain services {{\n    ip daddr . meta l4proto . th dport vmap @service-ips\n  }}\n  chain nat-prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }}\n  chain nat-output {{\n    type nat hook output priority -100; policy accept;\n    jump services\n  }}\n}}\nadd element ip kube-proxy service-ips {{ {} }}\n",
        elems.join(", ")
    )
}

impl World {
    fn new(mode: KubeProxy) -> World {
        let mut node = Node::new();
        let mut idx = BTreeMap::new();
        let mut vip = BTreeMap::new();
        for ns in NAMESPACES {
            for p in PODS {
                let i = node.add_pod(ns, p);
                idx.insert(format!("{ns}/{p}"), i);
                vip.insert(
                    format!("{ns}/{p}"),
                    Ipv4Addr::new(198, 19, 200, 10 + i as u8),
                );
            }
        }
        // objects as the API server has them: namespaces, pods (labels,
        // named container ports, IPs), Services
        let mut m = String::new();
        for ns in NAMESPACES {
            m += &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n---\n"
            );
        }
        for (name, &i) in &idx {
            let pod = &node.pods[i];
            let (ns, p) = name.split_once('/').expect("ns/pod");
            m += &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {p}, namespace: {ns}, labels: {{pod: {p}}}}}\nspec:\n  containers:\n  - name: c\n    image: x\n    ports:\n    - {{name: serve-80-tcp, containerPort: 80}}\n    - {{name: serve-81-tcp, containerPort: 81}}\n    - {{name: serve-53-udp, containerPort: 53, protocol: UDP}}\nstatus: {{phase: Running, podIP: {}}}\n---\n",
                pod.ip4
            );
            let ports: Vec<String> = SVC_PORTS
                .iter()
                .map(|(sp, tp)| format!("{{name: p{sp}, port: {sp}, targetPort: {tp}}}"))
                .chain(["{name: dns, port: 53, protocol: UDP}".to_string()])
                .collect();
            m += &format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: s-{p}, namespace: {ns}}}\nspec: {{clusterIP: {}, selector: {{pod: {p}}}, ports: [{}]}}\n---\n",
                vip[name],
                ports.join(", ")
            );
        }
        std::fs::write(node.manifests().join("cluster.yaml"), m).expect("manifests");
        let backends: Vec<(String, Ipv4Addr, Ipv4Addr)> = idx
            .iter()
            .map(|(name, &i)| (name.clone(), vip[name], node.pods[i].ip4))
            .collect();
        match mode {
            KubeProxy::Iptables => {
                let path = node.dir.path().join("kube-proxy.rules");
                std::fs::write(&path, iptables_rules(&backends)).expect("rules");
                node.exec_ok(&["iptables-restore", &path.display().to_string()]);
            }
            KubeProxy::Nftables => {
                let path = node.dir.path().join("kube-proxy.nft");
                std::fs::write(&path, nftables_rules(&backends)).expect("rules");
                node.exec_ok(&["nft", "-f", &path.display().to_string()]);
            }
        }
        let agent = Agent::start(&node, &[]);
        for (name, &i) in &idx {
            let pod = &node.pods[i];
            serve(&pod.netns);
            let (_, p) = name.split_once('/').expect("ns/pod");
            let mut spec = pod.spec();
            spec.labels = [("pod".to_string(), p.to_string())].into();
            spec.ports = vec![
                NamedPort {
                    name: "serve-80-tcp".into(),
                    port: 80,
                    protocol: "TCP".into(),
                },
                NamedPort {
                    name: "serve-81-tcp".into(),
                    port: 81,
                    protocol: "TCP".into(),
                },
            ];
            agent.register(spec);
        }
        World {
            node,
            agent,
            idx,
            vip,
        }
    }

    fn netns(&self, n: &str) -> &str {
        &self.node.pods[self.idx[n]].netns
    }

    fn apply(&self, yaml: &str) {
        std::fs::write(self.node.manifests().join("policy.yaml"), yaml).expect("policy");
        self.agent.reconcile();
    }
}

/// One transcribed e2e case: the policy, the service ports probed and the
/// expected reachability (from, to, target port) → allowed.
struct Case {
    name: &'static str,
    policy: &'static str,
    /// (service port, target port)
    ports: &'static [(u16, u16)],
    allowed: fn(&str, &str, u16) -> bool,
}

const NP: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n";

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "should deny egress from pods based on PodSelector",
            policy: "metadata: {name: deny-egress-a, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n",
            ports: &[(80, 80)],
            allowed: |f, _, _| f != "x/a",
        },
        Case {
            name: "should deny egress from all pods in a namespace",
            policy: "metadata: {name: deny-egress-x, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n",
            ports: &[(80, 80)],
            allowed: |f, _, _| !f.starts_with("x/"),
        },
        Case {
            name: "should enforce egress policy allowing traffic to a server in a specific namespace based on PodSelector and NamespaceSelector",
            policy: "metadata: {name: allow-to-y-a, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}]\n",
            ports: &[(80, 80)],
            allowed: |f, t, _| f != "x/a" || t == "y/a",
        },
        Case {
            name: "should allow egress access on one named port",
            policy: "metadata: {name: allow-egress-named, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - ports: [{port: serve-81-tcp}]\n",
            // 90 → 81: the named port is resolved on the backend
            ports: &[(80, 80), (81, 81), (90, 81)],
            allowed: |f, _, tp| f != "x/a" || tp == 81,
        },
        Case {
            name: "should allow egress access to server in CIDR block",
            policy: "metadata: {name: allow-cidr, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{ipBlock: {cidr: 198.18.5.0/24}}]\n",
            // y/b is pod 5 (198.18.5.2)
            ports: &[(80, 80)],
            allowed: |f, t, _| f != "x/a" || t == "y/b",
        },
        Case {
            name: "should enforce except clause while egress access to server in CIDR block",
            policy: "metadata: {name: except-cidr, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{ipBlock: {cidr: 198.18.0.0/16, except: [198.18.5.2/32]}}]\n",
            ports: &[(80, 80)],
            allowed: |f, t, _| f != "x/a" || t != "y/b",
        },
        Case {
            name: "should enforce multiple egress policies with egress allow-all policy taking precedence",
            policy: "metadata: {name: only-80, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress: [{ports: [{port: 80}]}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-all, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress: [{}]\n",
            ports: &[(80, 80), (81, 81)],
            allowed: |_, _, _| true,
        },
        Case {
            name: "should support a 'default-deny-ingress' policy",
            policy: "metadata: {name: deny-ingress, namespace: x}\nspec:\n  podSelector: {}\n",
            ports: &[(80, 80)],
            allowed: |_, t, _| !t.starts_with("x/"),
        },
        Case {
            name: "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
            policy: "metadata: {name: from-y, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]\n",
            ports: &[(80, 80)],
            allowed: |f, t, _| t != "x/a" || f.starts_with("y/"),
        },
        Case {
            name: "should work with Ingress, Egress specified together",
            policy: "metadata: {name: both, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress, Egress]\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]\n  egress: [{to: [{podSelector: {matchLabels: {pod: b}}}]}]\n",
            ports: &[(80, 80)],
            allowed: |f, t, _| (f != "x/a" || t == "x/b") && (t != "x/a" || f == "x/b"),
        },
    ]
}

#[test]
fn netpol_egress_e2e_through_services_with_kube_proxy_dnat() {
    let Some(_g) = privileged("netpol_egress_e2e_through_services_with_kube_proxy_dnat") else {
        return;
    };
    run(KubeProxy::Iptables);
}

#[test]
fn netpol_egress_e2e_through_services_with_kube_proxy_nftables() {
    let test = "netpol_egress_e2e_through_services_with_kube_proxy_nftables";
    let Some(_g) = privileged(test) else {
        return;
    };
    if std::process::Command::new("nft")
        .arg("-v")
        .output()
        .is_err()
    {
        let why = format!("{test}: needs nft (package nftables)");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("SKIP {why}");
        return;
    }
    run(KubeProxy::Nftables);
}

/// One reachability probe. A connection that should be allowed is tried up to three
/// times: under CI load a 400 ms connect or echo can time out although nothing
/// dropped it (seen once: one allowed Service flow of hundreds read as blocked). A
/// connection that should be denied is tried once: a denied flow never connects, so
/// a success is always a real failure.
fn probe(want: bool, mut f: impl FnMut() -> bool) -> bool {
    let mut got = f();
    for _ in 0..2 {
        if got || !want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        got = f();
    }
    got
}

/// The e2e cases through Services with `mode`'s rules in front.
fn run(mode: KubeProxy) {
    let w = World::new(mode);
    // the stand-in is the one translating: its table/chains are in place
    let listed = match mode {
        KubeProxy::Iptables => w
            .node
            .exec(&["iptables", "-t", "nat", "-S", "KUBE-SERVICES"]),
        KubeProxy::Nftables => {
            w.node
                .exec(&["nft", "list", "map", "ip", "kube-proxy", "service-ips"])
        }
    };
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&w.vip["y/b"].to_string()),
        "{mode:?} rules: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let names: Vec<String> = w.idx.keys().cloned().collect();
    // sanity: the stand-in translates (no policy: everything through VIPs)
    assert!(tcp(w.netns("x/a"), IpAddr::V4(w.vip["y/b"]), 90));
    let mut bad = Vec::new();
    for c in cases() {
        w.apply(&format!("{NP}{}", c.policy));
        // probes from the sources the cases are about, in parallel
        let found: Vec<String> = std::thread::scope(|sc| {
            let hs: Vec<_> = ["x/a", "x/b", "y/a"]
                .into_iter()
                .map(|f| {
                    let (w, names, c) = (&w, &names, &c);
                    sc.spawn(move || {
                        let mut bad = Vec::new();
                        for t in names.iter().filter(|t| *t != f) {
                            for &(sp, tp) in c.ports {
                                let want = (c.allowed)(f, t, tp);
                                let pod_ip = IpAddr::V4(w.node.pods[w.idx[t.as_str()]].ip4);
                                let via_svc =
                                    probe(want, || tcp(w.netns(f), IpAddr::V4(w.vip[t.as_str()]), sp));
                                let direct = probe(want, || tcp(w.netns(f), pod_ip, tp));
                                if via_svc != want || direct != want {
                                    bad.push(format!(
                                        "[{}] {f} -> {t} svc port {sp} (target {tp}): want {want}, via Service {via_svc}, direct {direct}",
                                        c.name
                                    ));
                                }
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
        bad.extend(found);
    }
    assert!(bad.is_empty(), "{bad:#?}");
    // the denied Service flows were dropped by Corral as x/a's egress
    let xa = w
        .agent
        .list()
        .into_iter()
        .find(|e| e.spec.namespace == "x" && e.spec.name == "a")
        .expect("x/a");
    assert!(xa.egress.drop_policy > 0, "{xa:?}");
    // UDP through a Service: egress allowed only to y on UDP 53
    w.apply(&format!(
        "{NP}metadata: {{name: dns-to-y, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}]\n    ports: [{{protocol: UDP, port: 53}}]\n"
    ));
    assert!(
        udp(w.netns("x/a"), IpAddr::V4(w.vip["y/c"]), 53),
        "UDP to y via Service"
    );
    assert!(
        !udp(w.netns("x/a"), IpAddr::V4(w.vip["x/c"]), 53),
        "UDP to x via Service"
    );
    assert!(
        !tcp(w.netns("x/a"), IpAddr::V4(w.vip["y/c"]), 80),
        "TCP to y via Service"
    );
    // a fragmented datagram (4000 bytes over a 1500-byte MTU): the DNAT
    // reassembles and re-fragments; the deferred verdict still decides it
    assert_eq!(
        big_udp(w.netns("x/a"), IpAddr::V4(w.vip["y/c"])),
        Some(64),
        "fragmented UDP to y via Service"
    );
    assert_eq!(
        big_udp(w.netns("x/a"), IpAddr::V4(w.vip["x/c"])),
        None,
        "fragmented UDP to x via Service"
    );
    // A tier policy through a Service: the deferred verdict is the source's
    // tier decision on the backend's target port (Service port 90 → 81).
    let drops = |w: &World| {
        w.agent
            .list()
            .into_iter()
            .find(|e| e.spec.namespace == "x" && e.spec.name == "a")
            .expect("x/a")
            .egress
            .drop_policy
    };
    w.apply("apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: x-no-81-to-y}\nspec:\n  tier: Admin\n  priority: 10\n  subject: {namespaces: {matchLabels: {ns: x}}}\n  egress:\n  - {name: no-81, action: Deny, to: [{namespaces: {matchLabels: {ns: y}}}], protocols: [{tcp: {destinationPort: {number: 81}}}]}\n");
    let before = drops(&w);
    assert!(
        !tcp(w.netns("x/a"), IpAddr::V4(w.vip["y/b"]), 90),
        "tier Deny of target port 81 via Service port 90"
    );
    assert!(
        tcp(w.netns("x/a"), IpAddr::V4(w.vip["y/b"]), 80),
        "port 80 to y via Service (no tier rule)"
    );
    assert!(
        tcp(w.netns("x/a"), IpAddr::V4(w.vip["x/b"]), 90),
        "port 81 to x via Service (no tier rule)"
    );
    assert!(
        drops(&w) > before,
        "the deferred tier drop is x/a's egress drop"
    );
}

/// A 4000-byte datagram to `to:53`: the length of the answer (the servers
/// echo the first 64 bytes), None without one within 800 ms.
fn big_udp(from: &str, to: IpAddr) -> Option<usize> {
    in_netns(from, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        s.set_read_timeout(Some(std::time::Duration::from_millis(800)))
            .ok()?;
        s.send_to(&[7u8; 4000], (to, 53)).ok()?;
        let mut b = [0u8; 128];
        let (n, src) = s.recv_from(&mut b).ok()?;
        (src == std::net::SocketAddr::new(to, 53)).then_some(n)
    })
}
