//! Tier compiler semantics against the reference evaluation of the
//! compiled map (what the kernel does). Cases transcribed from the
//! network-policy-api conformance suite are marked "conformance".

use super::*;
use crate::policy::source::{Manifests, parse_text};
use crate::policy::{Inputs, compile};

const HOUSES: [&str; 4] = ["gryffindor", "slytherin", "hufflepuff", "ravenclaw"];
const PEOPLE: [&str; 4] = [
    "harry-potter",
    "draco-malfoy",
    "cedric-diggory",
    "luna-lovegood",
];

/// The conformance world: 4 namespaces `network-policy-conformance-<house>`
/// (label conformance-house=<house>), 2 pods each (`<person>-0/1`, same
/// label), all local. Pod i of house h: ifindex 10*h+i+1, 198.18.h.(i+2).
fn world(yaml: &str) -> (Inputs, Manifests) {
    let mut m = Manifests::default();
    let mut text = String::new();
    for h in HOUSES {
        text.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: network-policy-conformance-{h}, labels: {{conformance-house: {h}}}}}\n---\n"
        ));
    }
    text.push_str(yaml);
    parse_text(&text, "test.yaml", &mut m);
    let mut endpoints = Vec::new();
    for (h, house) in HOUSES.iter().enumerate() {
        for i in 0..2u32 {
            endpoints.push(LocalEndpoint {
                ifindex: 10 * h as u32 + i + 1,
                pod: PodInfo {
                    namespace: format!("network-policy-conformance-{house}"),
                    name: format!("{}-{i}", PEOPLE[h]),
                    labels: [("conformance-house".to_string(), house.to_string())].into(),
                    ips: vec![format!("198.18.{h}.{}", i + 2).parse().unwrap()],
                    ports: vec![NamedPort {
                        name: "web".into(),
                        port: 8080,
                        protocol: "TCP".into(),
                    }],
                },
            });
        }
    }
    let inputs = Inputs {
        endpoints,
        namespaces: m.namespaces.clone(),
        policies: m.policies.clone(),
        tiers: m.tiers.clone(),
        nodes: m.nodes.clone(),
        ..Default::default()
    };
    (inputs, m)
}

fn ep(name: &str) -> (u32, std::net::IpAddr) {
    let h = PEOPLE
        .iter()
        .position(|p| name.starts_with(p))
        .expect("person");
    let i: u32 = name.rsplit('-').next().unwrap().parse().unwrap();
    (
        10 * h as u32 + i + 1,
        format!("198.18.{h}.{}", i + 2).parse().unwrap(),
    )
}

/// Would a new connection `from` → `to` on (proto, port) pass both the
/// client's egress and the server's ingress?
fn conn(c: &Compiled, from: &str, to: &str, proto: u8, port: u16) -> bool {
    let (fi, fip) = ep(from);
    let (ti, tip) = ep(to);
    let one = |ifindex, dir, peer| match evaluate(c, ifindex, dir, peer, proto, port) {
        Some((ok, _)) => ok,
        None => crate::policy::evaluate(c, ifindex, dir, peer, proto, port),
    };
    one(fi, DIR_EGRESS, tip) && one(ti, DIR_INGRESS, fip)
}

fn tcp(c: &Compiled, from: &str, to: &str, port: u16) -> bool {
    conn(c, from, to, PROTO_TCP, port)
}

/// conformance: base/admin_tier/standard-ingress-tcp-rules.yaml
/// (v1alpha2 `protocols` form), rules in written order.
fn ingress_tcp(order: &[usize]) -> String {
    let rules = [
        "  - {name: allow-from-ravenclaw-everything, action: Accept, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: network-policy-conformance-ravenclaw}}}]}\n",
        "  - {name: deny-from-ravenclaw-everything, action: Deny, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: network-policy-conformance-ravenclaw}}}]}\n",
        "  - {name: pass-from-ravenclaw-everything, action: Pass, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: network-policy-conformance-ravenclaw}}}]}\n",
        "  - {name: deny-from-slytherin-at-port-80, action: Deny, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: network-policy-conformance-slytherin}}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}\n",
        "  - {name: pass-from-slytherin-at-port-80, action: Pass, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: network-policy-conformance-slytherin}}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}\n",
        "  - {name: allow-from-hufflepuff-at-port-80, action: Accept, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: network-policy-conformance-hufflepuff}}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}\n",
        "  - {name: deny-from-hufflepuff-everything-else, action: Deny, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: network-policy-conformance-hufflepuff}}}]}\n",
    ];
    let mut s = String::from(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: ingress-tcp}\nspec:\n  tier: Admin\n  priority: 3\n  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: network-policy-conformance-gryffindor}}}\n  ingress:\n",
    );
    for i in order {
        s.push_str(rules[*i]);
    }
    s
}

#[test]
fn conformance_admin_ingress_tcp_rule_order() {
    let (i, m) = world(&ingress_tcp(&[0, 1, 2, 3, 4, 5, 6]));
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let c = compile(&i);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    // allow before deny: ravenclaw allowed
    assert!(tcp(&c, "luna-lovegood-0", "harry-potter-0", 80));
    assert!(tcp(&c, "luna-lovegood-1", "harry-potter-0", 8080));
    // hufflepuff: 80 accepted, the rest denied
    assert!(tcp(&c, "cedric-diggory-0", "harry-potter-1", 80));
    assert!(!tcp(&c, "cedric-diggory-1", "harry-potter-1", 8080));
    // only ingress rules: egress of gryffindor unaffected
    assert!(tcp(&c, "harry-potter-0", "luna-lovegood-0", 80));
    assert!(tcp(&c, "harry-potter-1", "draco-malfoy-0", 80));
    // slytherin: 80 denied, 8080 matches nothing
    assert!(!tcp(&c, "draco-malfoy-0", "harry-potter-0", 80));
    assert!(tcp(&c, "draco-malfoy-1", "harry-potter-0", 8080));
    // the deciding rule is recorded
    let (hi, _) = ep("harry-potter-0");
    let (_, dip) = ep("draco-malfoy-0");
    let (ok, rule) = evaluate(&c, hi, DIR_INGRESS, dip, PROTO_TCP, 80).unwrap();
    assert!(!ok);
    assert!(
        c.tier_rules[rule as usize].contains("deny-from-slytherin-at-port-80"),
        "{}",
        c.tier_rules[rule as usize]
    );

    // swap rules 0 and 1: deny first
    let (i, _) = world(&ingress_tcp(&[1, 0, 2, 3, 4, 5, 6]));
    let c = compile(&i);
    assert!(!tcp(&c, "luna-lovegood-0", "harry-potter-1", 80));
    assert!(!tcp(&c, "luna-lovegood-1", "harry-potter-1", 8080));
    // then swap 0 and 2 of that: pass first -> no NP, no baseline -> allowed
    let (i, _) = world(&ingress_tcp(&[2, 0, 1, 3, 4, 5, 6]));
    let c = compile(&i);
    assert!(tcp(&c, "luna-lovegood-0", "harry-potter-0", 80));
    assert!(tcp(&c, "luna-lovegood-1", "harry-potter-0", 8080));
    // swap 3 and 4: pass before deny for slytherin:80
    let (i, _) = world(&ingress_tcp(&[0, 1, 2, 4, 3, 5, 6]));
    let c = compile(&i);
    assert!(tcp(&c, "draco-malfoy-0", "harry-potter-0", 80));
    assert!(tcp(&c, "draco-malfoy-1", "harry-potter-0", 8080));
}

const NP_GRYF: &str = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-gress-from-to-slytherin-to-gryffindor, namespace: network-policy-conformance-gryffindor}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n  ingress: [{from: [{namespaceSelector: {matchLabels: {conformance-house: slytherin}}}]}]\n  egress: [{to: [{namespaceSelector: {matchLabels: {conformance-house: slytherin}}}]}]\n";

fn admin_gryf(action: &str) -> String {
    format!(
        "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: pass-example}}\nspec:\n  tier: Admin\n  priority: 10\n  subject: {{namespaces: {{matchLabels: {{conformance-house: gryffindor}}}}}}\n  ingress: [{{name: x, action: {action}, from: [{{namespaces: {{matchLabels: {{conformance-house: slytherin}}}}}}]}}]\n  egress: [{{name: y, action: {action}, to: [{{namespaces: {{matchLabels: {{conformance-house: slytherin}}}}}}]}}]\n"
    )
}

fn baseline_gryf(action: &str) -> String {
    format!(
        "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: default}}\nspec:\n  tier: Baseline\n  priority: 10\n  subject: {{namespaces: {{matchLabels: {{conformance-house: gryffindor}}}}}}\n  ingress: [{{name: x, action: {action}, from: [{{namespaces: {{matchLabels: {{conformance-house: slytherin}}}}}}]}}]\n  egress: [{{name: y, action: {action}, to: [{{namespaces: {{matchLabels: {{conformance-house: slytherin}}}}}}]}}]\n"
    )
}

/// conformance: base/api_integration/standard-anp-np-banp.yaml and the
/// steps of its test (Admin Deny beats NP allow; Pass hands over to NP;
/// without NP the Baseline decides).
#[test]
fn conformance_admin_np_baseline_integration() {
    let check = |yaml: &str, want: bool, what: &str| {
        let (i, m) = world(yaml);
        assert!(m.errors.is_empty(), "{:?}", m.errors);
        let c = compile(&i);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        for (a, b) in [
            ("draco-malfoy-0", "harry-potter-0"),
            ("harry-potter-1", "draco-malfoy-1"),
        ] {
            assert_eq!(tcp(&c, a, b, 80), want, "{what}: {a} -> {b}");
        }
        // other houses: NP isolates gryffindor (when present)
        c
    };
    let all = format!("{}{NP_GRYF}{}", admin_gryf("Deny"), baseline_gryf("Deny"));
    check(&all, false, "admin deny beats NP allow");
    let all = format!("{}{NP_GRYF}{}", admin_gryf("Pass"), baseline_gryf("Deny"));
    let c = check(&all, true, "pass hands over to NP allow");
    assert!(
        !tcp(&c, "luna-lovegood-0", "harry-potter-0", 80),
        "NP isolation denies ravenclaw"
    );
    let all = format!("{}{}", admin_gryf("Pass"), baseline_gryf("Deny"));
    let c = check(&all, false, "no NP: baseline deny");
    assert!(
        tcp(&c, "luna-lovegood-0", "harry-potter-0", 80),
        "baseline matches only slytherin"
    );
    let all = format!("{}{}", admin_gryf("Pass"), baseline_gryf("Accept"));
    check(&all, true, "no NP: baseline accept");
    // Baseline applies only where no NP selects: NP in gryffindor allows
    // nothing from slytherin on 8080? it allows all ports: use deny NP
    let deny_np = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: network-policy-conformance-gryffindor}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n";
    let all = format!("{deny_np}{}", baseline_gryf("Accept"));
    let (i, _) = world(&all);
    let c = compile(&i);
    assert!(
        !tcp(&c, "draco-malfoy-0", "harry-potter-0", 80),
        "NP selects gryffindor ingress: baseline accept does not apply"
    );
    assert!(
        tcp(&c, "harry-potter-0", "draco-malfoy-0", 80),
        "gryffindor egress not selected by NP: baseline accept applies"
    );
}

/// v1alpha1 AdminNetworkPolicy / BaselineAdminNetworkPolicy with the same
/// precedence, ports (number, named, range).
#[test]
fn v1alpha1_admin_and_baseline() {
    let yaml = "---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: anp}\nspec:\n  priority: 5\n  subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}\n  ingress:\n  - {name: web, action: Allow, from: [{namespaces: {}}], ports: [{namedPort: web}]}\n  - {name: range, action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {conformance-house: slytherin}}}}], ports: [{portRange: {protocol: TCP, start: 1, end: 1000}}]}\n  - {name: udp, action: Pass, from: [{namespaces: {}}], ports: [{portNumber: {protocol: UDP, port: 53}}]}\n---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: default}\nspec:\n  subject: {namespaces: {}}\n  ingress:\n  - {name: deny-all, action: Deny, from: [{namespaces: {}}]}\n";
    let (i, m) = world(yaml);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let c = compile(&i);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    // named port web = 8080 on the destination
    assert!(tcp(&c, "luna-lovegood-0", "harry-potter-0", 8080));
    assert!(
        !tcp(&c, "draco-malfoy-0", "harry-potter-0", 80),
        "range deny"
    );
    assert!(
        !tcp(&c, "draco-malfoy-0", "harry-potter-0", 1000),
        "range end"
    );
    assert!(
        !tcp(&c, "luna-lovegood-0", "harry-potter-0", 80),
        "baseline deny"
    );
    assert!(
        !tcp(&c, "harry-potter-0", "luna-lovegood-0", 8081),
        "baseline everywhere"
    );
    assert!(
        !conn(&c, "luna-lovegood-0", "harry-potter-0", PROTO_UDP, 53),
        "pass then baseline deny"
    );
    // a NetworkPolicy in ravenclaw overrides the baseline there
    let np = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: open, namespace: network-policy-conformance-ravenclaw}\nspec: {podSelector: {}, ingress: [{}]}\n";
    let (i, _) = world(&format!("{yaml}{np}"));
    let c = compile(&i);
    assert!(tcp(&c, "harry-potter-0", "luna-lovegood-0", 8081));
    assert!(!tcp(&c, "harry-potter-0", "draco-malfoy-0", 8081));
}

/// Security-group style: an ordered allow/deny list across priorities and
/// networks (CIDRs), the most specific prefix not winning by itself.
#[test]
fn security_group_priorities_and_networks() {
    let yaml = "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: sg-low}\nspec:\n  tier: Admin\n  priority: 20\n  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {conformance-house: ravenclaw}}}}\n  egress:\n  - {name: allow-host, action: Accept, to: [{networks: [198.18.0.2/32]}]}\n  - {name: deny-net, action: Deny, to: [{networks: [198.18.0.0/16, '2001:db8::/32']}]}\n---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: sg-high}\nspec:\n  tier: Admin\n  priority: 10\n  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {conformance-house: ravenclaw}}}}\n  egress:\n  - {name: allow-dns, action: Accept, to: [{networks: [0.0.0.0/0]}], protocols: [{udp: {destinationPort: {number: 53}}}, {tcp: {destinationPort: {number: 53}}}]}\n  - {name: allow-web-range, action: Accept, to: [{networks: [198.18.1.0/24]}], protocols: [{tcp: {destinationPort: {range: {start: 8000, end: 8100}}}}]}\n";
    let (i, m) = world(yaml);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let c = compile(&i);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert!(
        tcp(&c, "luna-lovegood-0", "harry-potter-0", 80),
        "host allow (prio 20, first)"
    );
    assert!(
        !tcp(&c, "luna-lovegood-0", "harry-potter-1", 80),
        "net deny"
    );
    assert!(
        conn(&c, "luna-lovegood-0", "harry-potter-1", PROTO_UDP, 53),
        "dns (prio 10)"
    );
    assert!(
        tcp(&c, "luna-lovegood-0", "draco-malfoy-1", 8080),
        "range (prio 10)"
    );
    assert!(
        !tcp(&c, "luna-lovegood-0", "draco-malfoy-1", 8101),
        "outside range"
    );
    // not subject: unaffected
    assert!(tcp(&c, "harry-potter-0", "draco-malfoy-1", 1));
    // IPv6 peer denied by the v6 network
    let (li, _) = ep("luna-lovegood-0");
    let (ok, _) = evaluate(
        &c,
        li,
        DIR_EGRESS,
        "2001:db8:1::2".parse().unwrap(),
        PROTO_TCP,
        80,
    )
    .unwrap();
    assert!(!ok);
    let (ok, _) = evaluate(
        &c,
        li,
        DIR_EGRESS,
        "192.0.2.1".parse().unwrap(),
        PROTO_TCP,
        80,
    )
    .unwrap();
    assert!(ok, "outside every network: default allow");
}

/// Namespace isolation template: same namespace allowed, other namespaces
/// denied, DNS allowed. Three houses are tenants; ravenclaw plays the DNS
/// namespace (not isolated). Same-namespace traffic is Passed, so tenants'
/// NetworkPolicies could still restrict it.
#[test]
fn namespace_isolation_template() {
    let tenants = &HOUSES[..3];
    let mut yaml = String::new();
    for h in tenants {
        yaml.push_str(&format!("---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: isolate-{h}}}\nspec:\n  tier: Admin\n  priority: 50\n  subject: {{namespaces: {{matchLabels: {{conformance-house: {h}}}}}}}\n  ingress:\n  - {{name: same-ns, action: Pass, from: [{{namespaces: {{matchLabels: {{conformance-house: {h}}}}}}}]}}\n  - {{name: others, action: Deny, from: [{{namespaces: {{}}}}]}}\n  egress:\n  - {{name: dns, action: Accept, to: [{{namespaces: {{matchLabels: {{conformance-house: ravenclaw}}}}}}], protocols: [{{udp: {{destinationPort: {{number: 53}}}}}}, {{tcp: {{destinationPort: {{number: 53}}}}}}]}}\n  - {{name: same-ns, action: Pass, to: [{{namespaces: {{matchLabels: {{conformance-house: {h}}}}}}}]}}\n  - {{name: others, action: Deny, to: [{{namespaces: {{}}}}]}}\n"));
    }
    let (i, m) = world(&yaml);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let c = compile(&i);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    for (f, fp) in PEOPLE.iter().enumerate() {
        for (t, tp) in PEOPLE.iter().enumerate() {
            let (a, b) = (format!("{fp}-0"), format!("{tp}-1"));
            let dns_server = t == 3;
            let want_tcp = f == t || (f == 3 && t == 3);
            assert_eq!(tcp(&c, &a, &b, 80), want_tcp, "{a} -> {b}:80");
            let want_dns = f == t || dns_server;
            assert_eq!(
                conn(&c, &a, &b, PROTO_UDP, 53),
                want_dns,
                "{a} -> {b} udp/53"
            );
        }
    }
}

#[test]
fn malformed_policy_is_named_and_skipped() {
    let bad = [
        ("tier: Middle", "spec.tier"),
        ("priority: 1001", "spec.priority"),
        ("bogus: 1", "bogus"),
    ];
    for (mutation, field) in bad {
        let good = admin_gryf("Deny");
        let broken = "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: broken}\nspec:\n  tier: Admin\n  priority: 1\n  subject: {namespaces: {}}\n  ingress: [{action: Deny, from: [{namespaces: {}}]}]\n"
            .replace("tier: Admin", if mutation.starts_with("tier") { mutation } else { "tier: Admin" })
            .replace("priority: 1\n", &if mutation.starts_with("priority") { format!("{mutation}\n") } else if mutation.starts_with("bogus") { format!("priority: 1\n  {mutation}\n") } else { "priority: 1\n".into() });
        let (i, m) = world(&format!("{good}{broken}"));
        let c = compile(&i);
        let errs: Vec<&String> = m.errors.iter().chain(c.errors.iter()).collect();
        assert_eq!(errs.len(), 1, "{mutation}: {errs:?}");
        assert!(
            errs[0].contains("broken") && errs[0].contains(field),
            "{mutation}: {}",
            errs[0]
        );
        // the good one still applies; the broken deny-all does not
        assert!(
            !tcp(&c, "draco-malfoy-0", "harry-potter-0", 80),
            "{mutation}"
        );
        assert!(
            tcp(&c, "luna-lovegood-0", "harry-potter-0", 80),
            "{mutation}"
        );
    }
    // semantic errors from the compiler
    for (spec, field) in [
        (
            "ingress: [{action: Deny, from: [{namespaces: {}, pods: {podSelector: {}}}]}]",
            "spec.ingress[0].from[0]",
        ),
        (
            "ingress: [{action: Drop, from: [{namespaces: {}}]}]",
            "spec.ingress[0].action",
        ),
        (
            "egress: [{action: Deny, to: [{networks: [10.0.0.0/33]}]}]",
            "spec.egress[0].to[0].networks[0]",
        ),
        (
            "egress: [{action: Deny, to: [{domainNames: [example.org]}]}]",
            "domainNames",
        ),
        (
            "egress: [{action: Deny, to: [{networks: [192.0.2.0/24]}], protocols: [{destinationNamedPort: web}]}]",
            "named ports",
        ),
        (
            "ingress: [{action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {range: {start: 9, end: 9}}}}]}]",
            "range",
        ),
    ] {
        let yaml = format!(
            "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: semantic}}\nspec:\n  tier: Admin\n  priority: 1\n  subject: {{namespaces: {{}}}}\n  {spec}\n"
        );
        let (i, m) = world(&yaml);
        let c = compile(&i);
        let errs: Vec<&String> = m.errors.iter().chain(c.errors.iter()).collect();
        assert_eq!(errs.len(), 1, "{spec}: {errs:?}");
        assert!(
            errs[0].contains("clusternetworkpolicy semantic") || errs[0].contains("semantic"),
            "{}",
            errs[0]
        );
        assert!(errs[0].contains(field), "{spec}: {}", errs[0]);
        assert!(c.tier_entries.is_empty(), "{spec}: skipped policy compiled");
    }
    // wrong version of a known kind is named; other groups are not ours
    let (_, m) = world(
        "---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: ClusterNetworkPolicy\nmetadata: {name: old}\nspec: {}\n---\napiVersion: crd.antrea.io/v1beta1\nkind: ClusterNetworkPolicy\nmetadata: {name: antrea}\nspec: {}\n",
    );
    assert_eq!(m.errors.len(), 1, "{:?}", m.errors);
    assert!(
        m.errors[0].contains("old") && m.errors[0].contains("v1alpha2"),
        "{:?}",
        m.errors
    );
    // a BANP not named default
    let (i, _) = world(
        "---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: other}\nspec: {subject: {namespaces: {}}}\n",
    );
    let c = compile(&i);
    assert!(
        c.errors
            .iter()
            .any(|e| e.contains("baselineadminnetworkpolicy other") && e.contains("metadata.name")),
        "{:?}",
        c.errors
    );
}

/// Entries per endpoint-direction do not grow with rules that do not add
/// peers, and the kernel's work per packet (one lookup, <= 32 ranges) is
/// the same at 10 and 10,000 rules.
#[test]
fn entry_count_and_ranges_bounded_at_scale() {
    for n in [10usize, 1000, 10_000] {
        let mut yaml = String::new();
        let per = 25;
        for p in 0..n.div_ceil(per) {
            yaml.push_str(&format!("---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: scale-{p}}}\nspec:\n  tier: Admin\n  priority: {}\n  subject: {{namespaces: {{matchLabels: {{conformance-house: gryffindor}}}}}}\n  ingress:\n", p % 1000));
            for r in 0..per.min(n - p * per) {
                let port = 1000 + ((p * per + r) % 20) as u16;
                yaml.push_str(&format!("  - {{action: Deny, from: [{{namespaces: {{matchLabels: {{conformance-house: slytherin}}}}}}], protocols: [{{tcp: {{destinationPort: {{number: {port}}}}}}}]}}\n"));
            }
        }
        let (i, _) = world(&yaml);
        let t = std::time::Instant::now();
        let c = compile(&i);
        eprintln!(
            "{n} rules: compiled in {:?}, {} tier entries",
            t.elapsed(),
            c.tier_entries.len()
        );
        assert!(
            c.errors.iter().all(|e| e.contains("priority")),
            "{:?}",
            c.errors.first()
        );
        // 2 gryffindor pods x (::/0 + 2 slytherin hosts)
        assert_eq!(c.tier_entries.len(), 2 * 3, "{n}");
        assert!(
            c.tier_entries
                .values()
                .all(|v| v.nranges as usize <= MAX_TIER_RANGES)
        );
        assert!(!tcp(&c, "draco-malfoy-0", "harry-potter-0", 1000));
        assert!(tcp(&c, "draco-malfoy-0", "harry-potter-0", 1020));
    }
}

/// More disjoint ranges than the value holds: reported, fail closed.
#[test]
fn range_overflow_fails_closed() {
    let mut yaml = String::from(
        "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: many}\nspec:\n  tier: Admin\n  priority: 1\n  subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}\n  ingress:\n",
    );
    for p in 0..25u16 {
        yaml.push_str(&format!("  - {{action: Deny, from: [{{namespaces: {{}}}}], protocols: [{{tcp: {{destinationPort: {{number: {}}}}}}}, {{udp: {{destinationPort: {{number: {}}}}}}}]}}\n", 100 + 2 * p, 100 + 2 * p));
    }
    let (i, _) = world(&yaml);
    let c = compile(&i);
    assert!(
        c.errors
            .iter()
            .any(|e| e.contains("harry-potter-0") && e.contains("port ranges")),
        "{:?}",
        c.errors
    );
    assert!(
        !tcp(&c, "draco-malfoy-0", "harry-potter-0", 101),
        "fail closed"
    );
    assert!(
        !tcp(&c, "draco-malfoy-0", "harry-potter-0", 100),
        "denied stays denied"
    );
}

/// deploy/examples/cluster-network-policies.yaml parses and compiles.
#[test]
fn deploy_example_compiles() {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/examples/cluster-network-policies.yaml"
    );
    let text = std::fs::read_to_string(p).expect("example");
    let mut m = Manifests::default();
    parse_text(&text, p, &mut m);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    assert_eq!(m.tiers.len(), 4);
    let mut i = Inputs {
        tiers: m.tiers,
        ..Default::default()
    };
    i.endpoints.push(LocalEndpoint {
        ifindex: 1,
        pod: PodInfo {
            namespace: "payments".into(),
            name: "api-0".into(),
            labels: [("app".to_string(), "api".to_string())].into(),
            ips: vec!["198.18.5.2".parse().unwrap()],
            ports: vec![],
        },
    });
    let c = compile(&i);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let ok = |ip: &str, port| evaluate(&c, 1, DIR_EGRESS, ip.parse().unwrap(), PROTO_TCP, port);
    assert_eq!(ok("192.0.2.1", 443).map(|v| v.0), Some(true));
    assert_eq!(ok("192.0.2.1", 80).map(|v| v.0), Some(false));
    assert_eq!(ok("198.18.10.7", 9150).map(|v| v.0), Some(true));
    assert_eq!(ok("2001:db8::1", 443).map(|v| v.0), Some(false));
}

fn house_pods(h: &str) -> String {
    format!(
        "{{pods: {{namespaceSelector: {{matchLabels: {{conformance-house: {h}}}}}, podSelector: {{matchLabels: {{conformance-house: {h}}}}}}}}}"
    )
}

/// conformance: base/admin_tier/standard-priority-field.yaml (priority 50
/// Deny, priority 60 Pass, Baseline Accept; the test then moves the Pass
/// policy to priority 40).
fn priority_field(pass_priority: u32) -> String {
    let (g, s) = (house_pods("gryffindor"), house_pods("slytherin"));
    let cnp = |name: &str, tier: &str, prio: u32, action: &str| {
        format!(
            "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n  tier: {tier}\n  priority: {prio}\n  subject: {g}\n  ingress: [{{name: in, action: {action}, from: [{s}]}}]\n  egress: [{{name: out, action: {action}, to: [{s}]}}]\n"
        )
    };
    format!(
        "{}{}{}",
        cnp("priority-50-example", "Admin", 50, "Deny"),
        cnp(
            "old-priority-60-new-priority-40-example",
            "Admin",
            pass_priority,
            "Pass"
        ),
        cnp("default", "Baseline", 10, "Accept")
    )
}

#[test]
fn conformance_admin_priority_field() {
    let (i, m) = world(&priority_field(60));
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let c = compile(&i);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert!(
        !tcp(&c, "draco-malfoy-0", "harry-potter-0", 80),
        "50 deny before 60 pass"
    );
    assert!(!tcp(&c, "harry-potter-1", "draco-malfoy-1", 8080));
    let (i, _) = world(&priority_field(40));
    let c = compile(&i);
    assert!(
        tcp(&c, "draco-malfoy-0", "harry-potter-0", 80),
        "40 pass, baseline accept"
    );
    assert!(tcp(&c, "harry-potter-1", "draco-malfoy-1", 8080));
}

/// conformance: base/admin_tier/standard-egress-inline-cidr-rules.yaml
/// (Accept slytherin pods, Deny 0.0.0.0/0 and ::/0; the test then inserts
/// an Accept for two pod IPs in front).
fn inline_cidr(allow_ips: &[&str]) -> String {
    let mut rules = String::new();
    if !allow_ips.is_empty() {
        let nets: Vec<String> = allow_ips.iter().map(|ip| format!("{ip}/32")).collect();
        rules.push_str(&format!(
            "  - {{name: allow-egress-to-specific-podIPs, action: Accept, to: [{{networks: [{}]}}]}}\n",
            nets.join(", ")
        ));
    }
    rules.push_str(&format!(
        "  - {{name: allow-egress-to-slytherin, action: Accept, to: [{}]}}\n  - {{name: deny-egress-to-internet, action: Deny, to: [{{networks: [0.0.0.0/0, '::/0']}}]}}\n",
        house_pods("slytherin")
    ));
    format!(
        "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: inline-cidr-as-peers-example}}\nspec:\n  tier: Admin\n  priority: 85\n  subject: {}\n  egress:\n{rules}",
        house_pods("gryffindor")
    )
}

#[test]
fn conformance_admin_egress_inline_cidr() {
    let (i, m) = world(&inline_cidr(&[]));
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let c = compile(&i);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert!(tcp(&c, "harry-potter-0", "draco-malfoy-0", 80));
    assert!(
        !tcp(&c, "harry-potter-0", "luna-lovegood-0", 80),
        "pods are inside 0.0.0.0/0"
    );
    assert!(!conn(
        &c,
        "harry-potter-1",
        "cedric-diggory-0",
        PROTO_UDP,
        53
    ));
    let (_, luna0) = ep("luna-lovegood-0");
    let (_, cedric0) = ep("cedric-diggory-0");
    let (l, c0) = (luna0.to_string(), cedric0.to_string());
    let (i, _) = world(&inline_cidr(&[&l, &c0]));
    let c = compile(&i);
    assert!(tcp(&c, "harry-potter-0", "luna-lovegood-0", 80));
    assert!(tcp(&c, "harry-potter-1", "cedric-diggory-0", 8080));
    assert!(!tcp(&c, "harry-potter-0", "luna-lovegood-1", 80));
    assert!(tcp(&c, "harry-potter-0", "draco-malfoy-1", 80));
}

/// `nodes` egress peers select Node objects by label (their InternalIP /
/// ExternalIP addresses); without any Node known the policy is reported.
#[test]
fn nodes_peers_from_node_objects() {
    let cnp = "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: no-infra}\nspec:\n  tier: Admin\n  priority: 1\n  subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}\n  egress: [{name: infra, action: Deny, to: [{nodes: {matchLabels: {role: infra}}}]}]\n";
    let nodes = "---\napiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {role: infra}}\nstatus: {addresses: [{type: InternalIP, address: 192.0.2.10}, {type: Hostname, address: n1}]}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n2, labels: {role: worker}}\nstatus: {addresses: [{type: InternalIP, address: 192.0.2.11}]}\n";
    let (i, m) = world(&format!("{cnp}{nodes}"));
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    assert_eq!(m.nodes.len(), 2);
    let c = compile(&i);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let (hi, _) = ep("harry-potter-0");
    let v =
        |ip: &str| evaluate(&c, hi, DIR_EGRESS, ip.parse().unwrap(), PROTO_TCP, 10250).map(|v| v.0);
    assert_eq!(v("192.0.2.10"), Some(false), "infra node denied");
    assert_eq!(v("192.0.2.11"), Some(true), "worker node allowed");
    let (i, _) = world(cnp);
    let c = compile(&i);
    assert!(
        c.errors
            .iter()
            .any(|e| e.contains("no-infra") && e.contains("--node-peers")),
        "{:?}",
        c.errors
    );
}
