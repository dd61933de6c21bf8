use super::*;
use crate::abi::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};

fn pod(ns: &str, name: &str, labels: &[(&str, &str)], ip: &str) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ips: vec![ip.parse().unwrap()],
        ports: vec![],
    }
}

fn np(yaml: &str) -> NetworkPolicy {
    serde_yaml_ng::from_str(yaml).unwrap()
}

/// x/a (1), x/b (2), y/a (3) are local; z/c is remote.
fn inputs(policies: &[&str]) -> Inputs {
    let mut xa = pod("x", "a", &[("app", "a")], "198.18.1.2");
    xa.ports.push(NamedPort {
        name: "http".into(),
        port: 8080,
        protocol: "TCP".into(),
    });
    xa.ips.push("2001:db8:1::2".parse().unwrap());
    Inputs {
        endpoints: vec![
            LocalEndpoint {
                ifindex: 1,
                pod: xa,
            },
            LocalEndpoint {
                ifindex: 2,
                pod: pod("x", "b", &[("app", "b")], "198.18.2.2"),
            },
            LocalEndpoint {
                ifindex: 3,
                pod: pod("y", "a", &[("app", "a")], "198.18.3.2"),
            },
        ],
        pods: vec![{
            let mut c = pod("z", "c", &[("app", "c")], "198.18.9.2");
            c.ports.push(NamedPort {
                name: "dns".into(),
                port: 53,
                protocol: "UDP".into(),
            });
            c
        }],
        namespaces: [(
            "y".to_string(),
            [("team".to_string(), "yy".to_string())].into(),
        )]
        .into(),
        policies: policies.iter().map(|p| np(p)).collect(),
        ..Default::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const XA: &str = "198.18.1.2";
const XB: &str = "198.18.2.2";
const YA: &str = "198.18.3.2";
const ZC: &str = "198.18.9.2";

fn ing(c: &Compiled, ep: u32, from: &str, proto: u8, port: u16) -> bool {
    evaluate(c, ep, DIR_INGRESS, ip(from), proto, port)
}
fn eg(c: &Compiled, ep: u32, to: &str, proto: u8, port: u16) -> bool {
    evaluate(c, ep, DIR_EGRESS, ip(to), proto, port)
}

const DENY_ALL_X: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}}
"#;

#[test]
fn no_policy_allows_everything() {
    let c = compile(&inputs(&[]));
    assert!(c.errors.is_empty());
    assert!(c.entries.is_empty());
    assert!(ing(&c, 1, "192.0.2.1", PROTO_TCP, 80));
    assert!(eg(&c, 1, "192.0.2.1", PROTO_UDP, 53));
}

#[test]
fn default_deny_ingress_isolates_only_ingress_of_selected_namespace() {
    let c = compile(&inputs(&[DENY_ALL_X]));
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert_eq!(c.flags[&1], EP_POLICY_INGRESS);
    assert_eq!(c.flags[&3], 0);
    assert!(!ing(&c, 1, XB, PROTO_TCP, 80));
    assert!(!ing(&c, 2, XA, PROTO_TCP, 80));
    assert!(eg(&c, 1, XB, PROTO_TCP, 80), "egress not isolated");
    assert!(ing(&c, 3, XA, PROTO_TCP, 80), "namespace y not selected");
}

#[test]
fn egress_only_policy_type() {
    let c = compile(&inputs(&[r#"
metadata: {name: e, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: b}}}]
    ports: [{protocol: TCP, port: 80}]
"#]));
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert_eq!(c.flags[&1], EP_POLICY_EGRESS);
    assert!(eg(&c, 1, XB, PROTO_TCP, 80));
    assert!(!eg(&c, 1, XB, PROTO_TCP, 81));
    assert!(!eg(&c, 1, XB, PROTO_UDP, 80));
    assert!(
        !eg(&c, 1, YA, PROTO_TCP, 80),
        "podSelector alone = same namespace"
    );
    assert!(ing(&c, 1, YA, PROTO_TCP, 1), "ingress not isolated");
    assert_eq!(c.flags[&2], 0, "b not selected");
}

#[test]
fn namespace_selector_and_combined_selectors() {
    let c = compile(&inputs(&[
        r#"
metadata: {name: ns-only, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: yy}}}]
"#,
        r#"
metadata: {name: both, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
  - from:
    - namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [z, y]}]}
      podSelector: {matchLabels: {app: c}}
"#,
    ]));
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert!(ing(&c, 1, YA, PROTO_TCP, 80), "y is team=yy");
    assert!(
        !ing(&c, 1, XB, PROTO_TCP, 80),
        "x not selected by namespaceSelector"
    );
    assert!(!ing(&c, 1, ZC, PROTO_TCP, 80));
    // both: pods app=c in namespaces z or y
    assert!(ing(&c, 2, ZC, PROTO_TCP, 80));
    assert!(!ing(&c, 2, YA, PROTO_TCP, 80), "y/a is not app=c");
    assert!(!ing(&c, 2, XA, PROTO_TCP, 80));
}

#[test]
fn ipblock_with_except_and_overlaps() {
    let c = compile(&inputs(&[r#"
metadata: {name: blocks, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress:
  - from: [{ipBlock: {cidr: 198.18.0.0/15, except: [198.18.2.0/24, 198.18.3.0/25]}}]
    ports: [{port: 80}]
  - from: [{ipBlock: {cidr: 198.18.3.0/24}}]
    ports: [{port: 443}]
  - from: [{ipBlock: {cidr: "2001:db8::/32", except: ["2001:db8:2::/48"]}}]
"#]));
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert!(ing(&c, 1, "198.18.7.7", PROTO_TCP, 80));
    assert!(!ing(&c, 1, "198.18.7.7", PROTO_TCP, 443));
    assert!(!ing(&c, 1, XB, PROTO_TCP, 80), "except 198.18.2.0/24");
    // 198.18.3.5 is in the except of rule 1 but allowed by rule 2 on 443
    assert!(!ing(&c, 1, "198.18.3.5", PROTO_TCP, 80));
    assert!(ing(&c, 1, "198.18.3.5", PROTO_TCP, 443));
    // 198.18.3.200 is outside the /25 except: both rules apply
    assert!(ing(&c, 1, "198.18.3.200", PROTO_TCP, 80));
    assert!(ing(&c, 1, "198.18.3.200", PROTO_TCP, 443));
    assert!(!ing(&c, 1, "192.0.2.1", PROTO_TCP, 80), "outside cidr");
    assert!(ing(&c, 1, "2001:db8:5::1", PROTO_UDP, 9), "v6 all ports");
    assert!(!ing(&c, 1, "2001:db8:2::1", PROTO_UDP, 9), "v6 except");
    // blocks of one family never match the other family
    assert!(!ing(&c, 1, "2001:db9::1", PROTO_TCP, 80));
    assert!(!ing(&c, 1, "192.0.2.77", PROTO_UDP, 9));
}

#[test]
fn ports_protocols_endport_and_named_ports() {
    let c = compile(&inputs(&[r#"
metadata: {name: ports, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports:
    - {protocol: TCP, port: 1000, endPort: 1010}
    - {protocol: UDP, port: 53}
    - {protocol: SCTP, port: 9}
    - {protocol: TCP, port: http}
  egress:
  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]
    ports: [{protocol: UDP, port: dns}]
"#]));
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert!(ing(&c, 1, "192.0.2.9", PROTO_TCP, 1000));
    assert!(ing(&c, 1, "192.0.2.9", PROTO_TCP, 1010));
    assert!(!ing(&c, 1, "192.0.2.9", PROTO_TCP, 1011));
    assert!(ing(&c, 1, "192.0.2.9", PROTO_UDP, 53));
    assert!(!ing(&c, 1, "192.0.2.9", PROTO_TCP, 53));
    assert!(ing(&c, 1, "192.0.2.9", PROTO_SCTP, 9));
    assert!(
        ing(&c, 1, "2001:db8::9", PROTO_SCTP, 9),
        "no peers = v6 too"
    );
    // named port "http" resolves against the destination pod x/a only
    assert!(ing(&c, 1, "192.0.2.9", PROTO_TCP, 8080));
    assert!(
        !ing(&c, 2, "192.0.2.9", PROTO_TCP, 8080),
        "x/b has no port named http"
    );
    // egress named port resolves against the peer pod z/c
    assert!(eg(&c, 1, ZC, PROTO_UDP, 53));
    assert!(!eg(&c, 1, ZC, PROTO_UDP, 54));
    assert!(!eg(&c, 1, "192.0.2.1", PROTO_UDP, 53));
}

#[test]
fn union_of_policies_and_empty_rule_lists() {
    let c = compile(&inputs(&[
        DENY_ALL_X,
        r#"
metadata: {name: allow-b, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress: [{from: [{podSelector: {matchLabels: {app: b}}}]}]
"#,
        r#"
metadata: {name: allow-all-egress-deny-ingress, namespace: y}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  egress: [{}]
"#,
    ]));
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert!(ing(&c, 1, XB, PROTO_TCP, 5));
    assert!(!ing(&c, 1, YA, PROTO_TCP, 5));
    assert!(
        !ing(&c, 3, XA, PROTO_TCP, 5),
        "ingress type without rules = deny"
    );
    assert!(
        eg(&c, 3, "192.0.2.1", PROTO_UDP, 1),
        "egress [{{}}] = allow all"
    );
    assert_eq!(c.flags[&3], EP_POLICY_INGRESS | EP_POLICY_EGRESS);
}

#[test]
fn namespace_isolation_template_with_dns() {
    let c = compile(&inputs(&[r#"
metadata: {name: isolate, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress: [{from: [{podSelector: {}}]}]
  egress:
  - to: [{podSelector: {}}]
  - to: [{namespaceSelector: {}}]
    ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
"#]));
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert!(ing(&c, 1, XB, PROTO_TCP, 80));
    assert!(!ing(&c, 1, YA, PROTO_TCP, 80));
    assert!(eg(&c, 1, XB, PROTO_TCP, 80));
    assert!(!eg(&c, 1, YA, PROTO_TCP, 80));
    assert!(eg(&c, 1, ZC, PROTO_UDP, 53), "DNS to any namespace");
    assert!(!eg(&c, 1, "192.0.2.1", PROTO_UDP, 53), "not a pod");
}

#[test]
fn bad_policies_are_reported_by_name_and_skipped() {
    let c = compile(&inputs(&[
        r#"
metadata: {name: bad-cidr, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 198.18.0.0/40}}]}]
"#,
        r#"
metadata: {name: bad-except, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 198.18.0.0/16, except: [10.0.0.0/8]}}]}]
"#,
        r#"
metadata: {name: bad-proto, namespace: x}
spec:
  podSelector: {}
  ingress: [{ports: [{protocol: ICMP, port: 1}]}]
"#,
        r#"
metadata: {name: bad-endport, namespace: x}
spec:
  podSelector: {}
  ingress: [{ports: [{port: 90, endPort: 80}]}]
"#,
        r#"
metadata: {name: bad-op, namespace: x}
spec:
  podSelector: {matchExpressions: [{key: a, operator: Near}]}
"#,
        r#"
metadata: {name: good, namespace: y}
spec: {podSelector: {}}
"#,
    ]));
    assert_eq!(c.errors.len(), 5, "{:#?}", c.errors);
    for (name, field) in [
        ("bad-cidr", "ipBlock.cidr"),
        ("bad-except", "except[0]"),
        ("bad-proto", "protocol"),
        ("bad-endport", "endPort"),
        ("bad-op", "matchExpressions[0]"),
    ] {
        assert!(
            c.errors
                .iter()
                .any(|e| e.contains(&format!("x/{name}")) && e.contains(field)),
            "no error naming {name}/{field}: {:#?}",
            c.errors
        );
    }
    assert_eq!(c.flags[&1], 0, "bad policies must not isolate");
    assert_eq!(c.flags[&3], EP_POLICY_INGRESS, "good policy still applies");
}

#[test]
fn selector_operators() {
    let l: Labels = [("a".to_string(), "1".to_string())].into();
    let sel = |y: &str| Selector::parse(&serde_yaml_ng::from_str(y).unwrap(), "s").unwrap();
    assert!(sel("{}").matches(&l));
    assert!(sel("{matchExpressions: [{key: a, operator: In, values: ['1','2']}]}").matches(&l));
    assert!(!sel("{matchExpressions: [{key: a, operator: NotIn, values: ['1']}]}").matches(&l));
    assert!(sel("{matchExpressions: [{key: b, operator: NotIn, values: ['1']}]}").matches(&l));
    assert!(sel("{matchExpressions: [{key: a, operator: Exists}]}").matches(&l));
    assert!(sel("{matchExpressions: [{key: b, operator: DoesNotExist}]}").matches(&l));
    assert!(!sel("{matchLabels: {a: '2'}}").matches(&l));
}

#[test]
fn prefixes() {
    let p = Prefix::parse("198.18.0.0/15").unwrap();
    assert_eq!(p.len, 96 + 15);
    assert!(Prefix::host(ip("198.19.255.255")).within(&p));
    assert!(!Prefix::host(ip("198.20.0.0")).within(&p));
    assert!(Prefix::parse("198.18.0.0").is_err());
    assert!(Prefix::parse("2001:db8::/129").is_err());
    assert!(Prefix::host(ip("2001:db8::1")).within(&Prefix::parse("::/0").unwrap()));
}

#[test]
fn many_rules_compile_fast_and_correct() {
    let mut peers = String::new();
    for i in 0..10_000u32 {
        peers.push_str(&format!(
            "  - from: [{{ipBlock: {{cidr: 192.0.2.{}/32}}}}]\n    ports: [{{port: {}}}]\n",
            i % 256,
            1000 + i
        ));
    }
    let y = format!(
        "metadata: {{name: big, namespace: y}}\nspec:\n  podSelector: {{}}\n  ingress:\n{peers}"
    );
    let t = std::time::Instant::now();
    let c = compile(&inputs(&[&y]));
    assert!(t.elapsed().as_secs() < 20);
    assert_eq!(c.entries.len(), 256);
    // 192.0.2.7 got ports 1007, 1263, ... (39 ranges > 16: reported)
    assert!(ing(&c, 3, "192.0.2.7", PROTO_TCP, 1007));
    assert!(!ing(&c, 3, "192.0.2.7", PROTO_TCP, 1008));
    assert!(
        c.errors
            .iter()
            .any(|e| e.contains("y/a") && e.contains("exceed"))
    );
}

#[test]
fn manifests_parse_with_errors_named() {
    let mut m = source::Manifests::default();
    source::parse_text(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {team: yy}}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: z, labels: {app: c}}
spec: {containers: [{name: c, image: i, ports: [{name: dns, containerPort: 53, protocol: UDP}]}]}
status: {podIP: 198.18.9.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: broken, namespace: x}
spec: {podSelector: 5}
"#,
        "f.yaml",
        &mut m,
    );
    assert_eq!(m.policies.len(), 1);
    assert_eq!(m.pods.len(), 1);
    assert_eq!(m.pods[0].ports[0].port, 53);
    assert_eq!(m.pods[0].ips, vec![ip(ZC)]);
    assert_eq!(m.namespaces["y"]["team"], "yy");
    assert_eq!(m.errors.len(), 1);
    assert!(
        m.errors[0].contains("NetworkPolicy broken"),
        "{:?}",
        m.errors
    );
}

#[test]
fn pod_object_labels_win_over_registration() {
    // x/a admits only app=b; the API says x/b is now app=z
    let p = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-b, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress: [{from: [{podSelector: {matchLabels: {app: b}}}]}]
"#;
    let mut i = inputs(&[p]);
    let c = compile(&i);
    assert!(
        ing(&c, 1, XB, PROTO_TCP, 80),
        "registered labels: b allowed"
    );
    i.pods.push(pod("x", "b", &[("app", "z")], "198.18.77.2"));
    let c = compile(&i);
    assert!(!ing(&c, 1, XB, PROTO_TCP, 80), "API labels win: b denied");
    assert!(
        !ing(&c, 1, "198.18.77.2", PROTO_TCP, 80),
        "the registered IPs stay the endpoint's"
    );
    // relabelling the selected pod itself: x/a no longer selected
    i.pods.push(pod("x", "a", &[("app", "other")], XA));
    let c = compile(&i);
    assert!(ing(&c, 1, YA, PROTO_TCP, 80), "x/a not selected any more");
}
