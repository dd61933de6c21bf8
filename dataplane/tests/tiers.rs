//! Policy tiers (ClusterNetworkPolicy v1alpha2, AdminNetworkPolicy and
//! BaselineAdminNetworkPolicy v1alpha1) enforced by the real agent + eBPF,
//! checked with real TCP/UDP/SCTP connections between netns pods (SCTP
//! by user-space endpoints on raw sockets: INIT answered by INIT-ACK). The world is
//! the network-policy-api conformance one: four "houses" (namespaces
//! network-policy-conformance-<house>, label conformance-house=<house>),
//! two pods each; cases transcribed from its conformance tests as data.

mod common;
use common::*;
use std::net::IpAddr;
use std::time::Duration;

use corral_dataplane_abi::api::{Request, Response};

const HOUSES: [&str; 4] = ["gryffindor", "slytherin", "hufflepuff", "ravenclaw"];
const PEOPLE: [&str; 4] = [
    "harry-potter",
    "draco-malfoy",
    "cedric-diggory",
    "luna-lovegood",
];

/// TCP 80/8080, UDP 53/5353 and SCTP 9003/9005 servers on all addresses
/// of `netns` (the conformance pods' agnhost servers).
fn serve(netns: &str) {
    serve_ports(netns, &[80, 8080], &[53, 5353]);
    serve_sctp(netns, &[9003, 9005]);
}

struct World {
    node: Node,
    agent: Agent,
}

impl World {
    fn new() -> World {
        let mut node = Node::new();
        let mut ns_yaml = String::new();
        for (h, house) in HOUSES.iter().enumerate() {
            ns_yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: network-policy-conformance-{house}, labels: {{conformance-house: {house}}}}}\n"
            ));
            for i in 0..2 {
                node.add_pod(
                    &format!("network-policy-conformance-{house}"),
                    &format!("{}-{i}", PEOPLE[h]),
                );
            }
        }
        std::fs::write(node.manifests().join("namespaces.yaml"), ns_yaml).expect("write");
        let agent = Agent::start(&node, &[]);
        for (i, pod) in node.pods.iter().enumerate() {
            serve(&pod.netns);
            let mut spec = pod.spec();
            spec.labels = [("conformance-house".to_string(), HOUSES[i / 2].to_string())].into();
            agent.register(spec);
        }
        World { node, agent }
    }
    fn pod(&self, name: &str) -> &Pod {
        self.node
            .pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }
    fn tcp(&self, from: &str, to: &str, port: u16) -> bool {
        tcp(&self.pod(from).netns, IpAddr::V4(self.pod(to).ip4), port)
    }
    fn tcp6(&self, from: &str, to: &str, port: u16) -> bool {
        tcp(&self.pod(from).netns, IpAddr::V6(self.pod(to).ip6), port)
    }
    fn udp(&self, from: &str, to: &str, port: u16) -> bool {
        udp(&self.pod(from).netns, IpAddr::V4(self.pod(to).ip4), port)
    }
    fn sctp(&self, from: &str, to: &str, port: u16) -> bool {
        sctp(&self.pod(from).netns, IpAddr::V4(self.pod(to).ip4), port)
    }
    fn sctp6(&self, from: &str, to: &str, port: u16) -> bool {
        sctp(&self.pod(from).netns, IpAddr::V6(self.pod(to).ip6), port)
    }
    fn apply(&self, yaml: &str) {
        std::fs::write(self.node.manifests().join("policy.yaml"), yaml).expect("write policy");
        self.agent.reconcile();
    }
    fn problems(&self) -> Vec<String> {
        match self.agent.call(&Request::List) {
            Response::Endpoints { policy_errors, .. } => policy_errors,
            r => panic!("{r:?}"),
        }
    }
    /// Checks (from, to, TCP port, allowed) cases, one thread per case.
    fn expect(&self, what: &str, cases: &[(&str, &str, u16, bool)]) {
        self.expect_proto(what, "tcp", cases)
    }
    /// Checks (from, to, port, allowed) cases over `proto` (tcp, udp,
    /// sctp), one thread per case.
    fn expect_proto(&self, what: &str, proto: &str, cases: &[(&str, &str, u16, bool)]) {
        let bad: Vec<String> = std::thread::scope(|sc| {
            let hs: Vec<_> = cases
                .iter()
                .map(|&(f, t, port, want)| {
                    sc.spawn(move || {
                        let got = match proto {
                            "tcp" => self.tcp(f, t, port),
                            "udp" => self.udp(f, t, port),
                            "sctp" => self.sctp(f, t, port),
                            p => panic!("no prober for {p}"),
                        };
                        (got != want).then(|| {
                            format!(
                                "{f} -> {t} {proto}/{port} want {}",
                                if want { "allow" } else { "deny" }
                            )
                        })
                    })
                })
                .collect();
            hs.into_iter()
                .filter_map(|h| h.join().expect("prober"))
                .collect()
        });
        assert!(
            bad.is_empty(),
            "{what}: {bad:#?}\nagent log:\n{}",
            self.agent.log_text()
        );
    }
}

const CNP: &str = "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n";

fn sel(house: &str) -> String {
    format!("{{matchLabels: {{kubernetes.io/metadata.name: network-policy-conformance-{house}}}}}")
}

/// conformance base/admin_tier/standard-ingress-tcp-rules.yaml (rules in
/// the given order).
fn ingress_tcp(order: &[usize]) -> String {
    let (r, s, h) = (sel("ravenclaw"), sel("slytherin"), sel("hufflepuff"));
    let p80 = "protocols: [{tcp: {destinationPort: {number: 80}}}]";
    let rules = [
        format!(
            "  - {{name: allow-from-ravenclaw-everything, action: Accept, from: [{{namespaces: {r}}}]}}\n"
        ),
        format!(
            "  - {{name: deny-from-ravenclaw-everything, action: Deny, from: [{{namespaces: {r}}}]}}\n"
        ),
        format!(
            "  - {{name: pass-from-ravenclaw-everything, action: Pass, from: [{{namespaces: {r}}}]}}\n"
        ),
        format!(
            "  - {{name: deny-from-slytherin-at-port-80, action: Deny, from: [{{namespaces: {s}}}], {p80}}}\n"
        ),
        format!(
            "  - {{name: pass-from-slytherin-at-port-80, action: Pass, from: [{{namespaces: {s}}}], {p80}}}\n"
        ),
        format!(
            "  - {{name: allow-from-hufflepuff-at-port-80, action: Accept, from: [{{namespaces: {h}}}], {p80}}}\n"
        ),
        format!(
            "  - {{name: deny-from-hufflepuff-everything-else, action: Deny, from: [{{namespaces: {h}}}]}}\n"
        ),
    ];
    let mut y = format!(
        "{CNP}metadata: {{name: ingress-tcp}}\nspec:\n  tier: Admin\n  priority: 3\n  subject: {{namespaces: {}}}\n  ingress:\n",
        sel("gryffindor")
    );
    for i in order {
        y.push_str(&rules[*i]);
    }
    y
}

#[test]
fn conformance_admin_tier_ingress_tcp() {
    let Some(_serial) = privileged("conformance_admin_tier_ingress_tcp") else {
        return;
    };
    let w = World::new();
    w.expect(
        "no policy",
        &[("luna-lovegood-0", "harry-potter-0", 80, true)],
    );
    w.apply(&ingress_tcp(&[0, 1, 2, 3, 4, 5, 6]));
    assert!(w.problems().is_empty(), "{:?}", w.problems());
    w.expect(
        "written order",
        &[
            ("luna-lovegood-0", "harry-potter-0", 80, true),
            ("luna-lovegood-1", "harry-potter-0", 8080, true),
            ("cedric-diggory-0", "harry-potter-1", 80, true),
            ("cedric-diggory-1", "harry-potter-1", 8080, false),
            ("harry-potter-0", "luna-lovegood-0", 80, true),
            ("harry-potter-1", "draco-malfoy-0", 80, true),
            ("draco-malfoy-0", "harry-potter-0", 80, false),
            ("draco-malfoy-1", "harry-potter-0", 8080, true),
        ],
    );
    assert!(
        w.tcp6("cedric-diggory-0", "harry-potter-1", 80)
            && !w.tcp6("draco-malfoy-0", "harry-potter-0", 80),
        "IPv6 gets the same verdicts"
    );
    w.apply(&ingress_tcp(&[1, 0, 2, 3, 4, 5, 6]));
    w.expect(
        "deny before allow",
        &[
            ("luna-lovegood-0", "harry-potter-1", 80, false),
            ("luna-lovegood-1", "harry-potter-1", 8080, false),
        ],
    );
    w.apply(&ingress_tcp(&[2, 0, 1, 3, 4, 5, 6]));
    w.expect(
        "pass first",
        &[
            ("luna-lovegood-0", "harry-potter-0", 80, true),
            ("luna-lovegood-1", "harry-potter-0", 8080, true),
        ],
    );
    w.apply(&ingress_tcp(&[0, 1, 2, 4, 3, 5, 6]));
    w.expect(
        "pass before deny at port 80",
        &[
            ("draco-malfoy-0", "harry-potter-0", 80, true),
            ("draco-malfoy-1", "harry-potter-0", 8080, true),
        ],
    );
    // status names the selecting policy; the deciding rule is compiled in
    let eps = w.agent.list();
    let hp = eps
        .iter()
        .find(|e| e.spec.name == "harry-potter-0")
        .expect("endpoint");
    assert!(
        hp.policies
            .iter()
            .any(|p| p.contains("clusternetworkpolicy ingress-tcp (Admin 3)")),
        "{:?}",
        hp.policies
    );
    assert!(hp.policy_ingress && !hp.policy_egress);
    // removing the policy lifts enforcement
    w.apply("");
    w.expect("removed", &[("draco-malfoy-0", "harry-potter-0", 80, true)]);
}

fn gress(name: &str, tier: &str, action: &str) -> String {
    format!(
        "---\n{CNP}metadata: {{name: {name}}}\nspec:\n  tier: {tier}\n  priority: 10\n  subject: {{namespaces: {{matchLabels: {{conformance-house: gryffindor}}}}}}\n  ingress: [{{name: in, action: {action}, from: [{{namespaces: {{matchLabels: {{conformance-house: slytherin}}}}}}]}}]\n  egress: [{{name: out, action: {action}, to: [{{namespaces: {{matchLabels: {{conformance-house: slytherin}}}}}}]}}]\n"
    )
}

const NP_GRYF: &str = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-gress-from-to-slytherin-to-gryffindor, namespace: network-policy-conformance-gryffindor}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n  ingress: [{from: [{namespaceSelector: {matchLabels: {conformance-house: slytherin}}}]}]\n  egress: [{to: [{namespaceSelector: {matchLabels: {conformance-house: slytherin}}}]}]\n";

/// conformance api_integration (Admin → NetworkPolicy → Baseline) and the
/// precedence cases of the issue.
#[test]
fn conformance_admin_networkpolicy_baseline_precedence() {
    let Some(_serial) = privileged("conformance_admin_networkpolicy_baseline_precedence") else {
        return;
    };
    let w = World::new();
    let both = |want: bool| {
        vec![
            ("draco-malfoy-0", "harry-potter-0", 80, want),
            ("harry-potter-1", "draco-malfoy-1", 8080, want),
        ]
    };
    // Admin Deny beats a NetworkPolicy allow
    w.apply(&format!(
        "{}{NP_GRYF}{}",
        gress("pass-example", "Admin", "Deny"),
        gress("default", "Baseline", "Deny")
    ));
    w.expect("admin deny beats NP allow", &both(false));
    // Pass hands over to the NetworkPolicy (which allows slytherin and
    // isolates gryffindor from everyone else)
    w.apply(&format!(
        "{}{NP_GRYF}{}",
        gress("pass-example", "Admin", "Pass"),
        gress("default", "Baseline", "Deny")
    ));
    let mut c = both(true);
    c.push(("luna-lovegood-0", "harry-potter-0", 80, false));
    w.expect("pass hands over to NP", &c);
    // no NetworkPolicy: the Baseline decides, only for what it selects
    w.apply(&format!(
        "{}{}",
        gress("pass-example", "Admin", "Pass"),
        gress("default", "Baseline", "Deny")
    ));
    let mut c = both(false);
    c.push(("luna-lovegood-0", "harry-potter-0", 80, true));
    w.expect("baseline deny without NP", &c);
    // Baseline applies only where no NetworkPolicy selects: an NP that
    // isolates gryffindor ingress (allowing slytherin) overrides the
    // baseline for ingress; egress (not selected by the NP) keeps it
    w.apply(&format!(
        "{}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: in-only, namespace: network-policy-conformance-gryffindor}}\nspec:\n  podSelector: {{}}\n  policyTypes: [Ingress]\n  ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{conformance-house: slytherin}}}}}}]}}]\n",
        gress("default", "Baseline", "Deny")
    ));
    w.expect(
        "baseline only where no NP selects",
        &[
            ("draco-malfoy-0", "harry-potter-0", 80, true),
            ("harry-potter-1", "draco-malfoy-1", 80, false),
        ],
    );
    // v1alpha1 objects take part in the same tiers: a BANP denying
    // slytherin -> gryffindor everywhere the NP does not decide, and an
    // ANP allowing hufflepuff on 8080 only
    w.apply(
        "---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: anp}\nspec:\n  priority: 1\n  subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}\n  ingress:\n  - {name: web, action: Allow, from: [{namespaces: {matchLabels: {conformance-house: hufflepuff}}}], ports: [{portNumber: {protocol: TCP, port: 8080}}]}\n  - {name: rest, action: Deny, from: [{namespaces: {matchLabels: {conformance-house: hufflepuff}}}]}\n---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: default}\nspec:\n  subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}\n  ingress: [{name: no-slytherin, action: Deny, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}]\n",
    );
    assert!(w.problems().is_empty(), "{:?}", w.problems());
    w.expect(
        "v1alpha1 ANP + BANP",
        &[
            ("cedric-diggory-0", "harry-potter-0", 8080, true),
            ("cedric-diggory-0", "harry-potter-0", 80, false),
            ("draco-malfoy-0", "harry-potter-1", 80, false),
            ("luna-lovegood-0", "harry-potter-1", 80, true),
        ],
    );
}

/// The namespace-isolation template (same namespace allowed, other
/// namespaces denied, DNS allowed; ravenclaw is the DNS namespace) and a
/// security-group style allow/deny list with priorities and CIDRs; a
/// malformed ClusterNetworkPolicy is reported by name and skipped while the
/// rest applies.
#[test]
fn namespace_isolation_security_groups_and_malformed() {
    let Some(_serial) = privileged("namespace_isolation_security_groups_and_malformed") else {
        return;
    };
    let w = World::new();
    let mut y = String::new();
    for h in &HOUSES[..3] {
        y.push_str(&format!(
            "---\n{CNP}metadata: {{name: isolate-{h}}}\nspec:\n  tier: Admin\n  priority: 50\n  subject: {{namespaces: {{matchLabels: {{conformance-house: {h}}}}}}}\n  ingress:\n  - {{name: same-ns, action: Pass, from: [{{namespaces: {{matchLabels: {{conformance-house: {h}}}}}}}]}}\n  - {{name: others, action: Deny, from: [{{namespaces: {{}}}}]}}\n  egress:\n  - {{name: dns, action: Accept, to: [{{namespaces: {{matchLabels: {{conformance-house: ravenclaw}}}}}}], protocols: [{{udp: {{destinationPort: {{number: 53}}}}}}]}}\n  - {{name: same-ns, action: Pass, to: [{{namespaces: {{matchLabels: {{conformance-house: {h}}}}}}}]}}\n  - {{name: others, action: Deny, to: [{{namespaces: {{}}}}]}}\n"
        ));
    }
    // malformed: named and skipped (it would deny everything)
    y.push_str(&format!(
        "---\n{CNP}metadata: {{name: broken-deny-all}}\nspec:\n  tier: Admin\n  priority: 0\n  subject: {{namespaces: {{}}}}\n  ingress: [{{action: Drop, from: [{{namespaces: {{}}}}]}}]\n"
    ));
    w.apply(&y);
    let problems = w.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("clusternetworkpolicy broken-deny-all")
                && p.contains("spec.ingress[0].action")),
        "{problems:?}"
    );
    w.expect(
        "namespace isolation",
        &[
            ("harry-potter-0", "harry-potter-1", 80, true),
            ("draco-malfoy-1", "draco-malfoy-0", 8080, true),
            ("harry-potter-0", "draco-malfoy-0", 80, false),
            ("cedric-diggory-0", "harry-potter-0", 80, false),
            ("harry-potter-0", "luna-lovegood-0", 80, false),
            ("luna-lovegood-0", "cedric-diggory-1", 80, false),
            ("luna-lovegood-0", "luna-lovegood-1", 80, true),
        ],
    );
    assert!(
        w.udp("harry-potter-0", "luna-lovegood-0", 53),
        "DNS allowed"
    );
    assert!(
        w.udp("cedric-diggory-1", "luna-lovegood-1", 53),
        "DNS allowed"
    );
    assert!(
        !w.udp("harry-potter-0", "draco-malfoy-0", 53),
        "no DNS to tenants"
    );

    // security groups on ravenclaw's egress: priority 10 list before
    // priority 20 list; CIDRs, a single host, a port range
    let (h0, h1) = (w.pod("harry-potter-0").ip4, w.pod("draco-malfoy-1").ip4);
    w.apply(&format!(
        "---\n{CNP}metadata: {{name: sg-low}}\nspec:\n  tier: Admin\n  priority: 20\n  subject: {{namespaces: {{matchLabels: {{conformance-house: ravenclaw}}}}}}\n  egress:\n  - {{name: allow-host, action: Accept, to: [{{networks: [{h0}/32]}}]}}\n  - {{name: deny-all-test-nets, action: Deny, to: [{{networks: [198.18.0.0/15, '2001:db8::/32']}}]}}\n---\n{CNP}metadata: {{name: sg-high}}\nspec:\n  tier: Admin\n  priority: 10\n  subject: {{namespaces: {{matchLabels: {{conformance-house: ravenclaw}}}}}}\n  egress:\n  - {{name: dns, action: Accept, to: [{{networks: [0.0.0.0/0]}}], protocols: [{{udp: {{destinationPort: {{number: 53}}}}}}]}}\n  - {{name: web-range, action: Accept, to: [{{networks: ['{h1}/32']}}], protocols: [{{tcp: {{destinationPort: {{range: {{start: 8000, end: 8100}}}}}}}}]}}\n"
    ));
    assert!(w.problems().is_empty(), "{:?}", w.problems());
    w.expect(
        "security groups",
        &[
            ("luna-lovegood-0", "harry-potter-0", 80, true),
            ("luna-lovegood-0", "harry-potter-1", 80, false),
            ("luna-lovegood-1", "draco-malfoy-1", 8080, true),
            ("luna-lovegood-1", "draco-malfoy-1", 80, false),
            ("luna-lovegood-0", "luna-lovegood-1", 80, false),
            ("harry-potter-1", "luna-lovegood-0", 80, true),
        ],
    );
    assert!(
        w.udp("luna-lovegood-0", "cedric-diggory-0", 53),
        "dns accepted at priority 10"
    );
    assert!(
        !w.tcp6("luna-lovegood-0", "harry-potter-0", 80),
        "the /32 allow is IPv4 only; 2001:db8::/32 denied"
    );
}

/// `corral-agent monitor` streams a policy drop with pod, direction,
/// 5-tuple and the deciding rule (tier rule, and NetworkPolicy isolation);
/// with no client connected the programs emit nothing.
#[test]
fn monitor_shows_policy_drop_with_deciding_rule() {
    let Some(_serial) = privileged("monitor_shows_policy_drop_with_deciding_rule") else {
        return;
    };
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let w = World::new();
    w.apply(&format!(
        "---\n{CNP}metadata: {{name: no-slytherin}}\nspec:\n  tier: Admin\n  priority: 7\n  subject: {{namespaces: {}}}\n  ingress:\n  - {{name: deny-slytherin-80, action: Deny, from: [{{namespaces: {}}}], protocols: [{{tcp: {{destinationPort: {{number: 80}}}}}}]}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny-all, namespace: network-policy-conformance-hufflepuff}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress]}}\n",
        sel("gryffindor"),
        sel("slytherin")
    ));
    let monitor_on = |w: &World| -> u64 {
        let out = sh(&[
            "bpftool",
            "map",
            "dump",
            "pinned",
            &w.agent
                .pin_dir
                .join("maps/corral_monitor")
                .display()
                .to_string(),
            "-j",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
        v[0]["formatted"]["value"].as_u64().unwrap_or(u64::MAX)
    };
    assert_eq!(monitor_on(&w), 0, "no client: events off");
    let mut child = Command::new(env!("CARGO_BIN_EXE_corral-agent"))
        .args(["monitor", "--output", "json", "--socket"])
        .arg(&w.agent.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("monitor");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    // the client is registered when the switch is on
    let t = std::time::Instant::now();
    while monitor_on(&w) != 1 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "monitor switch not on"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!w.tcp("draco-malfoy-0", "harry-potter-0", 80));
    assert!(!w.tcp("luna-lovegood-0", "cedric-diggory-1", 8080));
    let (d0, h0) = (w.pod("draco-malfoy-0").ip4, w.pod("harry-potter-0").ip4);
    let mut got: Vec<serde_json::Value> = Vec::new();
    let want_tier = |e: &serde_json::Value| {
        e["pod"] == "network-policy-conformance-gryffindor/harry-potter-0"
            && e["direction"] == "ingress"
            && e["reason"] == "policy"
            && e["protocol"] == "TCP"
            && e["dst"] == format!("{h0}:80")
            && e["src"]
                .as_str()
                .is_some_and(|s| s.starts_with(&format!("{d0}:")))
            && e["rule"].as_str().is_some_and(|r| {
                r.contains("clusternetworkpolicy no-slytherin") && r.contains("deny-slytherin-80")
            })
    };
    let want_np = |e: &serde_json::Value| {
        e["pod"] == "network-policy-conformance-hufflepuff/cedric-diggory-1"
            && e["rule"]
                .as_str()
                .is_some_and(|r| r.contains("NetworkPolicy"))
            && e["dst"].as_str().is_some_and(|d| d.ends_with(":8080"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(got.iter().any(want_tier) && got.iter().any(want_np)) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "events missing: {got:#?}");
        if let Ok(l) = rx.recv_timeout(left) {
            got.push(serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}")));
        }
    }
    assert!(
        got.iter()
            .all(|e| e["time"].as_f64().unwrap_or(0.0) > 1.6e9),
        "{got:#?}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let t = std::time::Instant::now();
    while monitor_on(&w) != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "switch stays on after the last client left"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn house_pods(h: &str) -> String {
    format!(
        "{{pods: {{namespaceSelector: {{matchLabels: {{conformance-house: {h}}}}}, podSelector: {{matchLabels: {{conformance-house: {h}}}}}}}}}"
    )
}

/// conformance base/admin_tier/standard-priority-field.yaml and
/// standard-egress-inline-cidr-rules.yaml, with their test steps.
#[test]
fn conformance_priority_field_and_inline_cidr() {
    let Some(_serial) = privileged("conformance_priority_field_and_inline_cidr") else {
        return;
    };
    let w = World::new();
    let (g, s) = (house_pods("gryffindor"), house_pods("slytherin"));
    let prio = |pass: u32| {
        let cnp = |name: &str, tier: &str, p: u32, action: &str| {
            format!(
                "---\n{CNP}metadata: {{name: {name}}}\nspec:\n  tier: {tier}\n  priority: {p}\n  subject: {g}\n  ingress: [{{name: in, action: {action}, from: [{s}]}}]\n  egress: [{{name: out, action: {action}, to: [{s}]}}]\n"
            )
        };
        format!(
            "{}{}{}",
            cnp("priority-50-example", "Admin", 50, "Deny"),
            cnp(
                "old-priority-60-new-priority-40-example",
                "Admin",
                pass,
                "Pass"
            ),
            cnp("default", "Baseline", 10, "Accept")
        )
    };
    w.apply(&prio(60));
    assert!(w.problems().is_empty(), "{:?}", w.problems());
    w.expect(
        "priority 50 deny before 60 pass",
        &[
            ("draco-malfoy-0", "harry-potter-0", 80, false),
            ("harry-potter-1", "draco-malfoy-1", 8080, false),
        ],
    );
    w.apply(&prio(40));
    w.expect(
        "priority 40 pass, baseline accept",
        &[
            ("draco-malfoy-0", "harry-potter-0", 80, true),
            ("harry-potter-1", "draco-malfoy-1", 8080, true),
        ],
    );
    let inline = |ips: &[String]| {
        let mut rules = String::new();
        if !ips.is_empty() {
            let nets: Vec<String> = ips.iter().map(|ip| format!("{ip}/32")).collect();
            rules.push_str(&format!(
                "  - {{name: allow-egress-to-specific-podIPs, action: Accept, to: [{{networks: [{}]}}]}}\n",
                nets.join(", ")
            ));
        }
        rules.push_str(&format!(
            "  - {{name: allow-egress-to-slytherin, action: Accept, to: [{s}]}}\n  - {{name: deny-egress-to-internet, action: Deny, to: [{{networks: [0.0.0.0/0, '::/0']}}]}}\n"
        ));
        format!(
            "---\n{CNP}metadata: {{name: inline-cidr-as-peers-example}}\nspec:\n  tier: Admin\n  priority: 85\n  subject: {g}\n  egress:\n{rules}"
        )
    };
    w.apply(&inline(&[]));
    w.expect(
        "inline cidr: deny internet (pods included)",
        &[
            ("harry-potter-0", "draco-malfoy-0", 80, true),
            ("harry-potter-0", "luna-lovegood-0", 80, false),
            ("harry-potter-1", "cedric-diggory-0", 80, false),
        ],
    );
    assert!(
        !w.tcp6("harry-potter-0", "luna-lovegood-0", 80),
        "::/0 denied"
    );
    let ips = vec![
        w.pod("luna-lovegood-0").ip4.to_string(),
        w.pod("cedric-diggory-0").ip4.to_string(),
    ];
    w.apply(&inline(&ips));
    w.expect(
        "inline cidr: pod IPs accepted first",
        &[
            ("harry-potter-0", "luna-lovegood-0", 80, true),
            ("harry-potter-1", "cedric-diggory-0", 8080, true),
            ("harry-potter-0", "luna-lovegood-1", 80, false),
            ("harry-potter-0", "draco-malfoy-1", 80, true),
        ],
    );
}

/// (client, server, port, allowed)
type Probe<'a> = (&'a str, &'a str, u16, bool);

/// conformance base/admin_tier/standard-egress-udp-rules.yaml and the six
/// steps of its test (rules swapped by the test given as written order).
#[test]
fn conformance_admin_tier_egress_udp() {
    let Some(_serial) = privileged("conformance_admin_tier_egress_udp") else {
        return;
    };
    let w = World::new();
    let (r, s, g) = (sel("ravenclaw"), sel("slytherin"), sel("gryffindor"));
    let rules = [
        format!(
            "  - {{name: allow-to-ravenclaw-everything, action: Accept, to: [{{namespaces: {r}}}]}}\n"
        ),
        format!(
            "  - {{name: deny-to-ravenclaw-everything, action: Deny, to: [{{namespaces: {r}}}]}}\n"
        ),
        format!(
            "  - {{name: pass-to-ravenclaw-everything, action: Pass, to: [{{namespaces: {r}}}]}}\n"
        ),
        format!(
            "  - {{name: deny-to-slytherin-at-port-5353, action: Deny, to: [{{namespaces: {s}}}], protocols: [{{udp: {{destinationPort: {{number: 5353}}}}}}]}}\n"
        ),
        format!(
            "  - {{name: pass-to-slytherin-at-port-5353, action: Pass, to: [{{namespaces: {s}}}], protocols: [{{udp: {{destinationPort: {{number: 5353}}}}}}]}}\n"
        ),
        format!(
            "  - {{name: allow-to-gryffindor-at-port-53, action: Accept, to: [{{namespaces: {g}}}], protocols: [{{udp: {{destinationPort: {{number: 53}}}}}}]}}\n"
        ),
        format!(
            "  - {{name: deny-to-gryffindor-everything-else, action: Deny, to: [{{namespaces: {g}}}]}}\n"
        ),
    ];
    let policy = |order: [usize; 7]| {
        let mut y = format!(
            "{CNP}metadata: {{name: egress-udp}}\nspec:\n  tier: Admin\n  priority: 7\n  subject: {{namespaces: {}}}\n  egress:\n",
            sel("hufflepuff")
        );
        for i in order {
            y.push_str(&rules[i]);
        }
        y
    };
    // (rule order, [(client, server, udp port, allowed)])
    let steps: [([usize; 7], &[Probe]); 4] = [
        (
            [0, 1, 2, 3, 4, 5, 6],
            &[
                ("cedric-diggory-0", "luna-lovegood-0", 53, true),
                ("cedric-diggory-1", "luna-lovegood-0", 5353, true),
                ("cedric-diggory-0", "harry-potter-1", 53, true),
                ("cedric-diggory-1", "harry-potter-1", 5353, false),
                ("cedric-diggory-0", "draco-malfoy-0", 5353, false),
                ("cedric-diggory-1", "draco-malfoy-0", 53, true),
            ],
        ),
        (
            [1, 0, 2, 3, 4, 5, 6],
            &[
                ("cedric-diggory-0", "luna-lovegood-1", 53, false),
                ("cedric-diggory-1", "luna-lovegood-1", 5353, false),
            ],
        ),
        (
            [2, 0, 1, 3, 4, 5, 6],
            &[
                ("cedric-diggory-0", "luna-lovegood-1", 5353, true),
                ("cedric-diggory-1", "luna-lovegood-1", 53, true),
            ],
        ),
        (
            [0, 1, 2, 4, 3, 5, 6],
            &[
                ("cedric-diggory-0", "draco-malfoy-0", 5353, true),
                ("cedric-diggory-1", "draco-malfoy-0", 53, true),
            ],
        ),
    ];
    for (order, cases) in steps {
        w.apply(&policy(order));
        assert!(w.problems().is_empty(), "{:?}", w.problems());
        let bad: Vec<String> = cases
            .iter()
            .filter(|(f, t, port, want)| w.udp(f, t, *port) != *want)
            .map(|(f, t, port, want)| {
                format!(
                    "{f} -> {t} udp/{port} want {}",
                    if *want { "allow" } else { "deny" }
                )
            })
            .collect();
        assert!(bad.is_empty(), "order {order:?}: {bad:#?}");
    }
}

/// The rules of conformance base/admin_tier/standard-{ingress,egress}-
/// sctp-rules.yaml as data: (verb, peer and what, action, peer house, SCTP
/// destination port or all traffic). The Baseline tier files
/// (base/baseline_tier/standard-*-sctp-rules.yaml) hold the same rules
/// without the Pass ones: indices 0, 1, 3, 5, 6.
const SCTP_RULES: [(&str, &str, &str, &str, Option<u16>); 7] = [
    (
        "allow",
        "gryffindor-everything",
        "Accept",
        "gryffindor",
        None,
    ),
    ("deny", "gryffindor-everything", "Deny", "gryffindor", None),
    ("pass", "gryffindor-everything", "Pass", "gryffindor", None),
    (
        "deny",
        "slytherin-at-port-9003",
        "Deny",
        "slytherin",
        Some(9003),
    ),
    (
        "pass",
        "slytherin-at-port-9003",
        "Pass",
        "slytherin",
        Some(9003),
    ),
    (
        "allow",
        "hufflepuff-at-port-9003",
        "Accept",
        "hufflepuff",
        Some(9003),
    ),
    (
        "deny",
        "hufflepuff-everything-else",
        "Deny",
        "hufflepuff",
        None,
    ),
];

/// A ClusterNetworkPolicy on ravenclaw with `SCTP_RULES[order]` as its
/// ingress (from) or egress (to) rules.
fn sctp_cnp(name: &str, tier: &str, priority: u32, egress: bool, order: &[usize]) -> String {
    let (dir, peer) = if egress {
        ("egress", "to")
    } else {
        ("ingress", "from")
    };
    let mut y = format!(
        "{CNP}metadata: {{name: {name}}}\nspec:\n  tier: {tier}\n  priority: {priority}\n  subject: {{namespaces: {}}}\n  {dir}:\n",
        sel("ravenclaw")
    );
    for &i in order {
        let (verb, what, action, house, port) = SCTP_RULES[i];
        let protocols = port
            .map(|p| format!(", protocols: [{{sctp: {{destinationPort: {{number: {p}}}}}}}]"))
            .unwrap_or_default();
        y.push_str(&format!(
            "  - {{name: {verb}-{peer}-{what}, action: {action}, {peer}: [{{namespaces: {}}}]{protocols}}}\n",
            sel(house)
        ));
    }
    y
}

/// The same rules as a v1alpha1 AdminNetworkPolicy (`ingress-sctp` /
/// `egress-sctp`, priority 5 / 8) or BaselineAdminNetworkPolicy (`default`)
/// with `ports: [{portNumber: {protocol: SCTP, port}}]`: conformance
/// base/admin_network_policy/core-*-sctp-rules.yaml and
/// base/baseline_admin_network_policy/core-*-sctp-rules.yaml (their extra
/// hogwarts-staff rules are left out: that namespace is not in this world).
fn sctp_v1alpha1(baseline: bool, egress: bool, order: &[usize]) -> String {
    let (dir, peer) = if egress {
        ("egress", "to")
    } else {
        ("ingress", "from")
    };
    let head = if baseline {
        "kind: BaselineAdminNetworkPolicy\nmetadata: {name: default}\nspec:\n".to_string()
    } else {
        format!(
            "kind: AdminNetworkPolicy\nmetadata: {{name: {dir}-sctp}}\nspec:\n  priority: {}\n",
            if egress { 8 } else { 5 }
        )
    };
    let mut y = format!(
        "apiVersion: policy.networking.k8s.io/v1alpha1\n{head}  subject: {{namespaces: {}}}\n  {dir}:\n",
        sel("ravenclaw")
    );
    for &i in order {
        let (verb, what, action, house, port) = SCTP_RULES[i];
        let action = if action == "Accept" { "Allow" } else { action };
        let ports = port
            .map(|p| format!(", ports: [{{portNumber: {{protocol: SCTP, port: {p}}}}}]"))
            .unwrap_or_default();
        y.push_str(&format!(
            "  - {{name: {verb}-{peer}-{what}, action: {action}, {peer}: [{{namespaces: {}}}]{ports}}}\n",
            sel(house)
        ));
    }
    y
}

/// Applies each step's v1alpha1 policy and checks its SCTP probes.
fn sctp_steps_v1alpha1(w: &World, baseline: bool, egress: bool, steps: &[SctpStep]) {
    for (order, cases) in steps {
        w.apply(&sctp_v1alpha1(baseline, egress, order));
        assert!(w.problems().is_empty(), "{:?}", w.problems());
        let what = format!("v1alpha1 baseline={baseline} egress={egress} order {order:?}");
        w.expect_proto(&what, "sctp", cases);
    }
}

/// (rule order, SCTP probes) of one conformance step; the test patches the
/// policy between steps (swaps accumulate, as in the conformance tests).
type SctpStep<'a> = (&'a [usize], &'a [Probe<'a>]);

/// CNPAdminTierIngressSCTP: luna-lovegood-* serve, the others connect.
const ADMIN_INGRESS_SCTP: [SctpStep<'static>; 4] = [
    (
        &[0, 1, 2, 3, 4, 5, 6],
        &[
            ("harry-potter-0", "luna-lovegood-0", 9003, true),
            ("harry-potter-1", "luna-lovegood-0", 9005, true),
            ("cedric-diggory-0", "luna-lovegood-1", 9003, true),
            ("cedric-diggory-1", "luna-lovegood-1", 9005, false),
            ("draco-malfoy-0", "luna-lovegood-0", 9003, false),
            ("draco-malfoy-1", "luna-lovegood-0", 9005, true),
        ],
    ),
    (
        &[1, 0, 2, 3, 4, 5, 6],
        &[
            ("harry-potter-0", "luna-lovegood-1", 9003, false),
            ("harry-potter-1", "luna-lovegood-1", 9005, false),
        ],
    ),
    (
        &[2, 0, 1, 3, 4, 5, 6],
        &[
            ("harry-potter-0", "luna-lovegood-1", 9003, true),
            ("harry-potter-1", "luna-lovegood-1", 9005, true),
        ],
    ),
    (
        &[2, 0, 1, 4, 3, 5, 6],
        &[
            ("draco-malfoy-0", "luna-lovegood-0", 9003, true),
            ("draco-malfoy-1", "luna-lovegood-0", 9005, true),
        ],
    ),
];

/// CNPAdminTierEgressSCTP: luna-lovegood-* connect to the others.
const ADMIN_EGRESS_SCTP: [SctpStep<'static>; 4] = [
    (
        &[0, 1, 2, 3, 4, 5, 6],
        &[
            ("luna-lovegood-0", "harry-potter-0", 9003, true),
            ("luna-lovegood-1", "harry-potter-0", 9005, true),
            ("luna-lovegood-0", "cedric-diggory-1", 9003, true),
            ("luna-lovegood-1", "cedric-diggory-1", 9005, false),
            ("luna-lovegood-0", "draco-malfoy-0", 9003, false),
            ("luna-lovegood-1", "draco-malfoy-0", 9005, true),
        ],
    ),
    (
        &[1, 0, 2, 3, 4, 5, 6],
        &[
            ("luna-lovegood-0", "harry-potter-1", 9003, false),
            ("luna-lovegood-1", "harry-potter-1", 9005, false),
        ],
    ),
    (
        &[2, 0, 1, 3, 4, 5, 6],
        &[
            ("luna-lovegood-0", "harry-potter-1", 9003, true),
            ("luna-lovegood-1", "harry-potter-1", 9005, true),
        ],
    ),
    (
        &[2, 0, 1, 4, 3, 5, 6],
        &[
            ("luna-lovegood-0", "draco-malfoy-0", 9003, true),
            ("luna-lovegood-1", "draco-malfoy-0", 9005, true),
        ],
    ),
];

/// Applies each step's policy and checks its SCTP probes.
fn sctp_steps(w: &World, name: &str, tier: &str, priority: u32, egress: bool, steps: &[SctpStep]) {
    for (order, cases) in steps {
        w.apply(&sctp_cnp(name, tier, priority, egress, order));
        assert!(w.problems().is_empty(), "{:?}", w.problems());
        w.expect_proto(&format!("{name} {tier} order {order:?}"), "sctp", cases);
    }
}

/// The SCTP checksum: CRC32c check value, and a packet that parses back.
#[test]
fn sctp_crc32c_and_packet_roundtrip() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    let p = sctp_packet(40001, 9003, 0, &sctp_init_chunk(1, 0xabcd));
    assert_eq!(
        sctp_parse(&p),
        Some(SctpSeen {
            sport: 40001,
            dport: 9003,
            vtag: 0,
            chunk: 1,
            init_tag: 0xabcd
        })
    );
    let mut bad = p.clone();
    bad[20] ^= 1;
    assert_eq!(sctp_parse(&bad), None, "a corrupted packet fails the CRC");
}

/// conformance CNPAdminTierIngressSCTP and CNPAdminTierEgressSCTP
/// (base/admin_tier/standard-{ingress,egress}-sctp-rules.yaml) with real
/// SCTP INIT / INIT-ACK exchanges, then the v1alpha1 AdminNetworkPolicy
/// form of the same steps.
#[test]
fn conformance_admin_tier_sctp() {
    let Some(_serial) = privileged("conformance_admin_tier_sctp") else {
        return;
    };
    let w = World::new();
    let all: Vec<Probe> = ADMIN_INGRESS_SCTP[0]
        .1
        .iter()
        .chain(ADMIN_EGRESS_SCTP[0].1)
        .map(|&(f, t, p, _)| (f, t, p, true))
        .collect();
    w.expect_proto("no policy: every SCTP server answers", "sctp", &all);
    // TCP and UDP servers on 9003 too: the SCTP rule must not touch them
    serve_ports(&w.pod("luna-lovegood-0").netns, &[9003], &[9003]);

    sctp_steps(
        &w,
        "ingress-sctp",
        "Admin",
        5,
        false,
        &ADMIN_INGRESS_SCTP[..1],
    );
    assert!(
        w.tcp("draco-malfoy-0", "luna-lovegood-0", 9003)
            && w.udp("draco-malfoy-0", "luna-lovegood-0", 9003),
        "an SCTP deny at 9003 leaves TCP and UDP 9003 alone"
    );
    assert!(
        !w.sctp6("draco-malfoy-0", "luna-lovegood-0", 9003)
            && w.sctp6("cedric-diggory-0", "luna-lovegood-1", 9003),
        "IPv6 SCTP gets the same verdicts"
    );
    sctp_steps(
        &w,
        "ingress-sctp",
        "Admin",
        5,
        false,
        &ADMIN_INGRESS_SCTP[1..],
    );
    // status names the selecting policy
    let eps = w.agent.list();
    let luna = eps
        .iter()
        .find(|e| e.spec.name == "luna-lovegood-0")
        .expect("endpoint");
    assert!(
        luna.policies
            .iter()
            .any(|p| p.contains("clusternetworkpolicy ingress-sctp (Admin 5)")),
        "{:?}",
        luna.policies
    );

    sctp_steps(&w, "egress-sctp", "Admin", 8, true, &ADMIN_EGRESS_SCTP);
    // v1alpha1 AdminNetworkPolicy (AdminNetworkPolicyIngressSCTP /
    // AdminNetworkPolicyEgressSCTP): the same steps and verdicts
    sctp_steps_v1alpha1(&w, false, false, &ADMIN_INGRESS_SCTP);
    sctp_steps_v1alpha1(&w, false, true, &ADMIN_EGRESS_SCTP);
    w.apply("");
    w.expect_proto(
        "removed",
        "sctp",
        &[("luna-lovegood-1", "cedric-diggory-1", 9005, true)],
    );
}

/// conformance CNPBaselineTierIngressSCTP and CNPBaselineTierEgressSCTP
/// (base/baseline_tier/standard-{ingress,egress}-sctp-rules.yaml: the
/// Admin rules without Pass, tier Baseline, name default, priority 10),
/// then the v1alpha1 BaselineAdminNetworkPolicy form of the same steps.
#[test]
fn conformance_baseline_tier_sctp() {
    let Some(_serial) = privileged("conformance_baseline_tier_sctp") else {
        return;
    };
    let w = World::new();
    for (egress, admin) in [(false, &ADMIN_INGRESS_SCTP), (true, &ADMIN_EGRESS_SCTP)] {
        let steps: [SctpStep; 2] = [
            (&[0, 1, 3, 5, 6], admin[0].1),
            (&[1, 0, 3, 5, 6], admin[1].1),
        ];
        sctp_steps(&w, "default", "Baseline", 10, egress, &steps);
        // v1alpha1 BaselineAdminNetworkPolicy (BaselineAdminNetworkPolicy
        // IngressSCTP / EgressSCTP)
        sctp_steps_v1alpha1(&w, true, egress, &steps);
    }
}
