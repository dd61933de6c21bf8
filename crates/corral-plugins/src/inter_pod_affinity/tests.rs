//! Unit tests of InterPodAffinity.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::filtering::{existing_anti_affinity_counts, incoming_counts, values_kept_by_string};
use super::*;
use crate::framework::{
    Code, CycleState, FilterPlugin, NodeScore, NormalizeScorePlugin, PreFilterExtensions,
    PreFilterPlugin, PreScorePlugin, ScorePlugin,
};
use crate::labels::Labels;
use crate::snapshot::{LABEL_HOSTNAME, LABEL_ZONE};
use crate::testutil::{node, pod};

const HOST: &str = LABEL_HOSTNAME;
const ZONE: &str = LABEL_ZONE;

fn term(labels: Value, key: &str) -> Value {
    json!({"labelSelector": {"matchLabels": labels}, "topologyKey": key})
}
fn weighted(w: i32, t: Value) -> Value {
    json!({"weight": w, "podAffinityTerm": t})
}
fn req_affinity(terms: Vec<Value>) -> Value {
    json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": terms}})
}
fn req_anti(terms: Vec<Value>) -> Value {
    json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": terms}})
}

/// Nodes: a1, a2 in zone a; b1, b2 in zone b; c1 in zone c without a `rack` label.
fn nodes() -> Vec<NodeInfo> {
    vec![
        node("a1").zone("a").label("rack", "r1").info(),
        node("a2").zone("a").label("rack", "r1").info(),
        node("b1").zone("b").label("rack", "r2").info(),
        node("b2").zone("b").label("rack", "r2").info(),
        node("c1").zone("c").info(),
    ]
}

fn snapshot(pods: Vec<(PodInfo, &str)>) -> Snapshot {
    let mut s = Snapshot::new();
    for n in nodes() {
        s.upsert_node(n);
    }
    for (p, n) in pods {
        s.add_pod(Arc::new(p), n);
    }
    s
}

/// Runs PreFilter + Filter on every node: node name → (code, reason).
fn filter_all(
    pl: &InterPodAffinity,
    p: &PodInfo,
    snap: &Snapshot,
) -> (Code, BTreeMap<String, (Code, String)>) {
    let mut st = CycleState::new();
    let (_, s) = pl.pre_filter(&mut st, p, snap);
    (s.code, filter_with(pl, &st, p, snap))
}

fn filter_with(
    pl: &InterPodAffinity,
    st: &CycleState,
    p: &PodInfo,
    snap: &Snapshot,
) -> BTreeMap<String, (Code, String)> {
    snap.nodes()
        .iter()
        .map(|n| {
            let s = pl.filter(st, p, n, snap);
            (n.name.to_string(), (s.code, s.message()))
        })
        .collect()
}

fn feasible(r: &BTreeMap<String, (Code, String)>) -> Vec<&str> {
    r.iter()
        .filter(|(_, (c, _))| *c == Code::Success)
        .map(|(n, _)| n.as_str())
        .collect()
}

fn pl() -> InterPodAffinity {
    InterPodAffinity::default()
}

#[test]
fn skip_without_terms_or_matching_existing_anti_affinity() {
    let existing = pod("e")
        .label("app", "web")
        .affinity(req_anti(vec![term(json!({"app": "db"}), HOST)]))
        .info();
    let snap = snapshot(vec![(existing, "a1")]);
    let mut st = CycleState::new();
    let plain = pod("p").label("app", "web").info();
    assert_eq!(pl().pre_filter(&mut st, &plain, &snap).1.code, Code::Skip);
    // A pod the existing anti-affinity selects is not skipped.
    let db = pod("d").label("app", "db").info();
    assert_eq!(pl().pre_filter(&mut st, &db, &snap).1.code, Code::Success);
}

#[test]
fn required_anti_affinity_hostname_and_zone() {
    let web = pod("w").label("app", "web").info();
    let snap = snapshot(vec![(web, "a1")]);
    let p = pod("p")
        .affinity(req_anti(vec![term(json!({"app": "web"}), HOST)]))
        .info();
    let (code, r) = filter_all(&pl(), &p, &snap);
    assert_eq!(code, Code::Success);
    assert_eq!(
        r["a1"],
        (Code::Unschedulable, ERR_REASON_ANTI_AFFINITY.to_string())
    );
    assert_eq!(feasible(&r), ["a2", "b1", "b2", "c1"]);

    let pz = pod("p")
        .affinity(req_anti(vec![term(json!({"app": "web"}), ZONE)]))
        .info();
    let (_, r) = filter_all(&pl(), &pz, &snap);
    assert_eq!(feasible(&r), ["b1", "b2", "c1"]);
    assert_eq!(r["a2"].0, Code::Unschedulable);
}

#[test]
fn existing_pods_anti_affinity_is_symmetric() {
    let existing = pod("e")
        .label("app", "web")
        .affinity(req_anti(vec![term(json!({"app": "db"}), ZONE)]))
        .info();
    let snap = snapshot(vec![(existing, "b1")]);
    let db = pod("d").label("app", "db").info();
    let (code, r) = filter_all(&pl(), &db, &snap);
    assert_eq!(code, Code::Success);
    assert_eq!(
        r["b2"],
        (
            Code::Unschedulable,
            ERR_REASON_EXISTING_ANTI_AFFINITY.to_string()
        )
    );
    assert_eq!(feasible(&r), ["a1", "a2", "c1"]);
    // Not selected by the existing term: everything feasible (and skipped).
    let other = pod("o").label("app", "cache").info();
    let (code, _) = filter_all(&pl(), &other, &snap);
    assert_eq!(code, Code::Skip);
}

#[test]
fn required_affinity_zone_and_missing_topology_key() {
    let cache = pod("c").label("app", "cache").info();
    let snap = snapshot(vec![(cache, "a1")]);
    let p = pod("p")
        .affinity(req_affinity(vec![term(json!({"app": "cache"}), ZONE)]))
        .info();
    let (_, r) = filter_all(&pl(), &p, &snap);
    assert_eq!(feasible(&r), ["a1", "a2"]);
    assert_eq!(
        r["b1"],
        (
            Code::UnschedulableAndUnresolvable,
            ERR_REASON_AFFINITY.to_string()
        )
    );

    // Key `rack`: c1 lacks it → affinity fails there; anti-affinity passes there.
    let pr = pod("p")
        .affinity(req_affinity(vec![term(json!({"app": "cache"}), "rack")]))
        .info();
    let (_, r) = filter_all(&pl(), &pr, &snap);
    assert_eq!(feasible(&r), ["a1", "a2"]);
    assert_eq!(r["c1"].0, Code::UnschedulableAndUnresolvable);
    let pa = pod("p")
        .affinity(req_anti(vec![term(json!({"app": "cache"}), "rack")]))
        .info();
    let (_, r) = filter_all(&pl(), &pa, &snap);
    assert_eq!(feasible(&r), ["b1", "b2", "c1"]);
}

#[test]
fn affinity_requires_one_pod_matching_all_terms() {
    // Two pods each matching one term: no pod matches both → not satisfied
    // (and not the "first pod" case because counts are empty but the pod doesn't
    // match its own terms).
    let x = pod("x").label("a", "1").info();
    let y = pod("y").label("b", "1").info();
    let snap = snapshot(vec![(x, "a1"), (y, "a1")]);
    let p = pod("p")
        .affinity(req_affinity(vec![
            term(json!({"a": "1"}), ZONE),
            term(json!({"b": "1"}), HOST),
        ]))
        .info();
    let (_, r) = filter_all(&pl(), &p, &snap);
    assert!(feasible(&r).is_empty());
    // A pod matching both terms on a2 satisfies them where both pairs match.
    let xy = pod("xy").label("a", "1").label("b", "1").info();
    let snap = snapshot(vec![(xy, "a2")]);
    let (_, r) = filter_all(&pl(), &p, &snap);
    assert_eq!(feasible(&r), ["a2"]);
}

#[test]
fn first_pod_of_self_affine_group() {
    let snap = snapshot(vec![(pod("other").label("app", "z").info(), "b1")]);
    let p = pod("p")
        .label("app", "x")
        .affinity(req_affinity(vec![term(json!({"app": "x"}), "rack")]))
        .info();
    let (_, r) = filter_all(&pl(), &p, &snap);
    // Allowed everywhere the topology key exists.
    assert_eq!(feasible(&r), ["a1", "a2", "b1", "b2"]);
    assert_eq!(r["c1"].0, Code::UnschedulableAndUnresolvable);
    // A pod not matching its own terms is not the first of a group.
    let q = pod("q")
        .label("app", "y")
        .affinity(req_affinity(vec![term(json!({"app": "x"}), "rack")]))
        .info();
    let (_, r) = filter_all(&pl(), &q, &snap);
    assert!(feasible(&r).is_empty());
    // Once a matching pod exists, only its topology domain is allowed.
    let snap = snapshot(vec![(pod("x1").label("app", "x").info(), "b2")]);
    let (_, r) = filter_all(&pl(), &p, &snap);
    assert_eq!(feasible(&r), ["b1", "b2"]);
}

#[test]
fn namespaces_list_selector_and_default() {
    let mut snap = snapshot(vec![
        (pod("w1").ns("team-a").label("app", "web").info(), "a1"),
        (pod("w2").ns("team-b").label("app", "web").info(), "b1"),
        (pod("w3").ns("ghost").label("app", "web").info(), "c1"),
    ]);
    snap.namespaces.insert(
        "team-a".into(),
        [("tier".to_string(), "gold".to_string())].into(),
    );
    snap.namespaces.insert("team-b".into(), Labels::new());
    snap.namespaces.insert("default".into(), Labels::new());
    let anti = |t: Value| pod("p").affinity(req_anti(vec![t])).info();
    let base = term(json!({"app": "web"}), HOST);

    // nil namespaces + nil selector: own namespace ("default") only.
    let (code, r) = filter_all(&pl(), &anti(base.clone()), &snap);
    assert_eq!(code, Code::Success);
    assert_eq!(feasible(&r).len(), 5);

    let mut t = base.clone();
    t["namespaces"] = json!(["team-b"]);
    let (_, r) = filter_all(&pl(), &anti(t), &snap);
    assert_eq!(feasible(&r), ["a1", "a2", "b2", "c1"]);

    // {} selects every namespace, known or not.
    let mut t = base.clone();
    t["namespaceSelector"] = json!({});
    let (_, r) = filter_all(&pl(), &anti(t), &snap);
    assert_eq!(feasible(&r), ["a2", "b2"]);

    // A label selector selects known namespaces by labels; an unknown namespace
    // is never selected, even by a negative selector.
    let mut t = base.clone();
    t["namespaceSelector"] = json!({"matchLabels": {"tier": "gold"}});
    let (_, r) = filter_all(&pl(), &anti(t), &snap);
    assert_eq!(feasible(&r), ["a2", "b1", "b2", "c1"]);
    let mut t = base.clone();
    t["namespaceSelector"] =
        json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]});
    let (_, r) = filter_all(&pl(), &anti(t), &snap);
    assert_eq!(feasible(&r), ["a1", "a2", "b2", "c1"]);

    // namespaces ∪ selector.
    let mut t = base;
    t["namespaces"] = json!(["team-b"]);
    t["namespaceSelector"] = json!({"matchLabels": {"tier": "gold"}});
    let (_, r) = filter_all(&pl(), &anti(t), &snap);
    assert_eq!(feasible(&r), ["a2", "b2", "c1"]);
}

#[test]
fn existing_term_namespace_selector_uses_incoming_namespace_labels() {
    let mut t = term(json!({"app": "db"}), HOST);
    t["namespaceSelector"] = json!({"matchLabels": {"env": "prod"}});
    let existing = pod("e").affinity(req_anti(vec![t])).info();
    let mut snap = snapshot(vec![(existing, "a1")]);
    snap.namespaces.insert(
        "prod".into(),
        [("env".to_string(), "prod".to_string())].into(),
    );
    let in_prod = pod("d").ns("prod").label("app", "db").info();
    let (_, r) = filter_all(&pl(), &in_prod, &snap);
    assert_eq!(r["a1"].0, Code::Unschedulable);
    let in_dev = pod("d").ns("dev").label("app", "db").info();
    let (code, _) = filter_all(&pl(), &in_dev, &snap);
    assert_eq!(code, Code::Skip);
}

#[test]
fn match_label_keys_use_incoming_pod_values() {
    let snap = snapshot(vec![
        (pod("v1").label("app", "web").label("ver", "1").info(), "a1"),
        (pod("v2").label("app", "web").label("ver", "2").info(), "b1"),
    ]);
    let mut t = term(json!({"app": "web"}), HOST);
    t["matchLabelKeys"] = json!(["ver"]);
    let p = pod("p")
        .label("app", "web")
        .label("ver", "2")
        .affinity(req_anti(vec![t.clone()]))
        .info();
    let (_, r) = filter_all(&pl(), &p, &snap);
    assert_eq!(feasible(&r), ["a1", "a2", "b2", "c1"]);
    let mut t2 = term(json!({"app": "web"}), HOST);
    t2["mismatchLabelKeys"] = json!(["ver"]);
    let p = pod("p")
        .label("app", "web")
        .label("ver", "2")
        .affinity(req_anti(vec![t2]))
        .info();
    let (_, r) = filter_all(&pl(), &p, &snap);
    assert_eq!(feasible(&r), ["a2", "b1", "b2", "c1"]);
}

#[test]
fn filter_without_prefilter_state_is_an_error() {
    let snap = snapshot(vec![]);
    let n = &snap.nodes()[0];
    let s = pl().filter(&CycleState::new(), &pod("p").info(), n, &snap);
    assert_eq!(s.code, Code::Error);
}

/// Pods exercising every kind of match, added to/removed from every node.
fn candidates() -> Vec<PodInfo> {
    vec![
        pod("c-web").label("app", "web").info(),
        pod("c-db").label("app", "db").info(),
        pod("c-web-other-ns").ns("x").label("app", "web").info(),
        pod("c-anti-web-host")
            .label("app", "cache")
            .affinity(req_anti(vec![term(json!({"app": "web"}), HOST)]))
            .info(),
        pod("c-anti-web-zone")
            .affinity(req_anti(vec![
                term(json!({"app": "web"}), ZONE),
                term(json!({"app": "web"}), "rack"),
            ]))
            .info(),
        pod("c-anti-db-rack")
            .label("app", "web")
            .affinity(req_anti(vec![term(json!({"app": "db"}), "rack")]))
            .info(),
    ]
}

/// Incoming pods with various requirements.
fn incoming() -> Vec<PodInfo> {
    vec![
        pod("i-plain").label("app", "web").info(),
        pod("i-plain-db").label("app", "db").info(),
        pod("i-anti-host")
            .label("app", "web")
            .affinity(req_anti(vec![term(json!({"app": "web"}), HOST)]))
            .info(),
        pod("i-aff-zone")
            .label("app", "db")
            .affinity(req_affinity(vec![term(json!({"app": "web"}), ZONE)]))
            .info(),
        pod("i-self-aff-rack")
            .label("app", "db")
            .affinity(req_affinity(vec![term(json!({"app": "db"}), "rack")]))
            .info(),
        pod("i-both")
            .label("app", "web")
            .affinity(json!({
                "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    [term(json!({"app": "db"}), ZONE)]},
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    [term(json!({"app": "web"}), "rack")]}
            }))
            .info(),
    ]
}

#[test]
fn add_pod_and_remove_pod_match_a_fresh_prefilter() {
    let base = vec![
        (pod("b-web").label("app", "web").info(), "a1"),
        (
            pod("b-anti")
                .label("app", "db")
                .affinity(req_anti(vec![term(json!({"app": "web"}), HOST)]))
                .info(),
            "b2",
        ),
    ];
    let mut checked = 0;
    let mut turned_on = 0;
    for p in incoming() {
        for cand in candidates() {
            for target in ["a1", "a2", "b1", "b2", "c1"] {
                let snap = snapshot(base.clone());
                let mut st = CycleState::new();
                let (_, s0) = pl().pre_filter(&mut st, &p, &snap);
                let before = filter_with(&pl(), &st, &p, &snap);

                let mut after_snap = snap.clone();
                after_snap.add_pod(Arc::new(cand.clone()), target);
                let node = after_snap.node(target).unwrap().clone();
                let s = pl().add_pod(&mut st, &p, &cand, &node, &after_snap);
                assert!(s.is_success());
                let (fresh_code, fresh) = filter_all(&pl(), &p, &after_snap);
                let ctx = format!("{} + {} on {}", p.name, cand.name, target);
                let updated = filter_with(&pl(), &st, &p, &after_snap);
                if fresh_code == Code::Skip {
                    // Skip means every node passes; the updated state agrees.
                    assert_eq!(feasible(&updated).len(), 5, "{ctx}");
                } else {
                    assert_eq!(updated, fresh, "{ctx}");
                }
                if s0.is_skip() && fresh_code != Code::Skip {
                    turned_on += 1;
                }

                let s = pl().remove_pod(&mut st, &p, &cand, &node, &snap);
                assert!(s.is_success());
                assert_eq!(filter_with(&pl(), &st, &p, &snap), before, "undo {ctx}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 6 * 6 * 5);
    // Some commits make the plugin apply to a pod it skipped (symmetry).
    assert!(turned_on > 0);
}

#[test]
fn add_pod_changes_decisions() {
    let snap = snapshot(vec![]);
    let p = pod("p")
        .label("app", "web")
        .affinity(req_anti(vec![term(json!({"app": "web"}), ZONE)]))
        .info();
    let mut st = CycleState::new();
    pl().pre_filter(&mut st, &p, &snap);
    assert_eq!(feasible(&filter_with(&pl(), &st, &p, &snap)).len(), 5);
    let web = pod("w").label("app", "web").info();
    let a1 = snap.node("a1").unwrap().clone();
    pl().add_pod(&mut st, &p, &web, &a1, &snap);
    let r = filter_with(&pl(), &st, &p, &snap);
    assert_eq!(feasible(&r), ["b1", "b2", "c1"]);
    // Removing twice drives the count negative, which must not block anything.
    pl().remove_pod(&mut st, &p, &web, &a1, &snap);
    pl().remove_pod(&mut st, &p, &web, &a1, &snap);
    assert_eq!(feasible(&filter_with(&pl(), &st, &p, &snap)).len(), 5);
}

/// PreScore + Score + NormalizeScore over all nodes.
fn scores(pl: &InterPodAffinity, p: &PodInfo, snap: &Snapshot) -> Option<Vec<(String, i64)>> {
    let mut st = CycleState::new();
    let nodes: Vec<&NodeInfo> = snap.nodes().iter().map(|n| &**n).collect();
    let s = pl.pre_score(&mut st, p, snap, &nodes);
    if s.is_skip() {
        return None;
    }
    assert!(s.is_success());
    let mut out: Vec<NodeScore> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| NodeScore {
            node: i,
            score: pl.score(&st, p, n, snap).unwrap(),
        })
        .collect();
    assert!(pl.normalize_score(&st, p, &mut out).is_success());
    let mut v: Vec<(String, i64)> = out
        .iter()
        .map(|s| (nodes[s.node].name.to_string(), s.score))
        .collect();
    v.sort();
    Some(v)
}

fn raw_scores(pl: &InterPodAffinity, p: &PodInfo, snap: &Snapshot) -> Vec<(String, i64)> {
    let mut st = CycleState::new();
    let nodes: Vec<&NodeInfo> = snap.nodes().iter().map(|n| &**n).collect();
    pl.pre_score(&mut st, p, snap, &nodes);
    let mut v: Vec<_> = nodes
        .iter()
        .map(|n| (n.name.to_string(), pl.score(&st, p, n, snap).unwrap()))
        .collect();
    v.sort();
    v
}

fn named(v: &[(&str, i64)]) -> Vec<(String, i64)> {
    v.iter().map(|(n, s)| (n.to_string(), *s)).collect()
}

#[test]
fn preferred_terms_of_incoming_pod() {
    let snap = snapshot(vec![
        (pod("w").label("app", "web").info(), "a1"),
        (pod("d").label("app", "db").info(), "b1"),
    ]);
    let p = pod("p")
        .affinity(json!({
            "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
                [weighted(10, term(json!({"app": "web"}), HOST))]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
                [weighted(5, term(json!({"app": "db"}), ZONE))]}
        }))
        .info();
    assert_eq!(
        raw_scores(&pl(), &p, &snap),
        named(&[("a1", 10), ("a2", 0), ("b1", -5), ("b2", -5), ("c1", 0)])
    );
    // min -5, max 10: (0 + 5) / 15 * 100 = 33.3 → 33.
    assert_eq!(
        scores(&pl(), &p, &snap).unwrap(),
        named(&[("a1", 100), ("a2", 33), ("b1", 0), ("b2", 0), ("c1", 33)])
    );
}

#[test]
fn existing_pods_preferred_and_required_terms() {
    let snap = snapshot(vec![
        (
            pod("likes-x")
                .affinity(json!({"podAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution":
                        [weighted(20, term(json!({"app": "x"}), ZONE))]}}))
                .info(),
            "a1",
        ),
        (
            pod("hates-x")
                .affinity(json!({"podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution":
                        [weighted(7, term(json!({"app": "x"}), HOST))]}}))
                .info(),
            "b1",
        ),
        (
            pod("needs-x")
                .affinity(req_affinity(vec![term(json!({"app": "x"}), HOST)]))
                .info(),
            "c1",
        ),
    ]);
    let x = pod("p").label("app", "x").info();
    assert_eq!(
        raw_scores(&pl(), &x, &snap),
        named(&[("a1", 20), ("a2", 20), ("b1", -7), ("b2", 0), ("c1", 1)])
    );
    let heavy = InterPodAffinity {
        hard_pod_affinity_weight: 100,
        ..pl()
    };
    assert_eq!(
        raw_scores(&heavy, &x, &snap),
        named(&[("a1", 20), ("a2", 20), ("b1", -7), ("b2", 0), ("c1", 100)])
    );
    // min -7, max 100 → b2: 7/107*100 = 6.54 → 6; a1: 27/107*100 = 25.2 → 25.
    assert_eq!(
        scores(&heavy, &x, &snap).unwrap(),
        named(&[("a1", 25), ("a2", 25), ("b1", 0), ("b2", 6), ("c1", 100)])
    );
    let none = InterPodAffinity {
        hard_pod_affinity_weight: 0,
        ..pl()
    };
    assert_eq!(raw_scores(&none, &x, &snap)[4], ("c1".to_string(), 0));
    // Ignoring existing pods' preferences: the pod has none of its own → Skip.
    let ignore = InterPodAffinity {
        ignore_preferred_terms_of_existing_pods: true,
        ..pl()
    };
    assert!(scores(&ignore, &x, &snap).is_none());
    // A pod no term selects: no entry at all → Skip.
    assert!(scores(&pl(), &pod("q").label("app", "y").info(), &snap).is_none());
}

#[test]
fn hard_weight_only_counts_matching_pods_and_zero_weight_skips() {
    let snap = snapshot(vec![(
        pod("needs-x")
            .affinity(req_affinity(vec![term(json!({"app": "x"}), HOST)]))
            .info(),
        "a2",
    )]);
    let x = pod("p").label("app", "x").info();
    assert_eq!(
        scores(&pl(), &x, &snap).unwrap(),
        named(&[("a1", 0), ("a2", 100), ("b1", 0), ("b2", 0), ("c1", 0)])
    );
    let zero = InterPodAffinity {
        hard_pod_affinity_weight: 0,
        ..pl()
    };
    assert!(scores(&zero, &x, &snap).is_none());
}

#[test]
fn all_equal_scores_normalize_to_zero() {
    // Every node is in region r1: all nodes get the same non-zero score.
    let mut s = Snapshot::new();
    for n in ["n1", "n2", "n3"] {
        s.upsert_node(node(n).label("region", "r1").info());
    }
    s.add_pod(Arc::new(pod("w").label("app", "web").info()), "n1");
    let p = pod("p")
        .affinity(
            json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
            [weighted(50, term(json!({"app": "web"}), "region"))]}}),
        )
        .info();
    assert_eq!(raw_scores(&pl(), &p, &s)[1].1, 50);
    let v = scores(&pl(), &p, &s).unwrap();
    assert!(v.iter().all(|(_, sc)| *sc == 0), "{v:?}");
    // Affinity and anti-affinity cancelling out still count as an entry (no Skip).
    let q = pod("q")
        .affinity(json!({
            "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
                [weighted(5, term(json!({"app": "web"}), "region"))]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
                [weighted(5, term(json!({"app": "web"}), "region"))]}
        }))
        .info();
    let v = scores(&pl(), &q, &s).unwrap();
    assert!(v.iter().all(|(_, sc)| *sc == 0));
}

#[test]
fn existing_pods_on_unlabeled_nodes_do_not_score() {
    let mut bare = node("bare");
    bare.0["metadata"]["labels"] = json!({});
    let mut s = Snapshot::new();
    s.upsert_node(bare.info());
    s.upsert_node(node("n1").info());
    s.add_pod(Arc::new(pod("w").label("app", "web").info()), "bare");
    let p = pod("p")
        .affinity(
            json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
            [weighted(5, term(json!({"app": "web"}), HOST))]}}),
        )
        .info();
    // The only matching pod sits on a node without labels: no entry → Skip.
    assert!(scores(&pl(), &p, &s).is_none());
    s.add_pod(Arc::new(pod("w2").label("app", "web").info()), "n1");
    assert_eq!(
        scores(&pl(), &p, &s).unwrap(),
        named(&[("bare", 0), ("n1", 100)])
    );
    // Extensions without PreFilter state report an error.
    let n1 = s.node("n1").unwrap().clone();
    let st = pl().add_pod(&mut CycleState::new(), &p, &p, &n1, &s);
    assert_eq!(st.code, Code::Error);
}

#[test]
fn prescore_skips_without_nodes() {
    let snap = snapshot(vec![]);
    let p = pod("p")
        .affinity(
            json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution":
            [weighted(5, term(json!({"app": "web"}), HOST))]}}),
        )
        .info();
    assert!(
        pl().pre_score(&mut CycleState::new(), &p, &snap, &[])
            .is_skip()
    );
}

#[test]
fn args_defaults_and_validation() {
    let get = |v: Value| -> Result<InterPodAffinity, String> { parse_args(Some(&v)) };
    assert!(factory(None).is_ok());
    assert_eq!(get(json!({})), Ok(pl()));
    assert_eq!(pl().hard_pod_affinity_weight, 1);
    assert_eq!(
        get(json!({"hardPodAffinityWeight": 0, "ignorePreferredTermsOfExistingPods": true})),
        Ok(InterPodAffinity {
            hard_pod_affinity_weight: 0,
            ignore_preferred_terms_of_existing_pods: true
        })
    );
    assert_eq!(
        get(json!({"hardPodAffinityWeight": 100})).map(|p| p.hard_pod_affinity_weight),
        Ok(100)
    );
    assert_eq!(
        get(json!({"apiVersion": "kubescheduler.config.k8s.io/v1",
                   "kind": "InterPodAffinityArgs"})),
        Ok(pl())
    );
    for bad in [
        json!({"hardPodAffinityWeight": 101}),
        json!({"hardPodAffinityWeight": -1}),
        json!({"hardPodAffinityWeight": "x"}),
        json!({"hardPodAffinityWeight": 1.5}),
    ] {
        let e = factory(Some(&bad)).err().unwrap();
        assert!(e.contains("hardPodAffinityWeight"), "{e}");
    }
    let e = get(json!({"ignorePreferredTermsOfExistingPods": "yes"})).unwrap_err();
    assert!(e.contains("ignorePreferredTermsOfExistingPods"), "{e}");
    let e = get(json!({"hardPodAffinityWieght": 1})).unwrap_err();
    assert!(e.contains("hardPodAffinityWieght"), "{e}");
    assert!(get(json!([1])).is_err());
}

/// Filter's verdict computed directly from the definitions, pod by pod.
fn reference_filter(p: &PodInfo, n: &NodeInfo, snap: &Snapshot) -> Code {
    let all: Vec<(&NodeInfo, &PodInfo)> = snap
        .nodes()
        .iter()
        .flat_map(|m| m.pods.iter().map(move |e| (&**m, &**e)))
        .collect();
    let same = |m: &NodeInfo, key: &str| matches!((n.labels.get(key), m.labels.get(key)), (Some(a), Some(b)) if a == b);
    let terms = &p.required_affinity_terms;
    if !terms.is_empty() {
        if terms
            .iter()
            .any(|t| !n.labels.contains_key(&t.topology_key))
        {
            return Code::UnschedulableAndUnresolvable;
        }
        let matching: Vec<&NodeInfo> = all
            .iter()
            .filter(|(_, e)| matches_all_incoming(terms, e, snap))
            .map(|(m, _)| *m)
            .collect();
        let satisfied = terms
            .iter()
            .all(|t| matching.iter().any(|m| same(m, &t.topology_key)));
        let none_counted = !matching
            .iter()
            .any(|m| terms.iter().any(|t| m.labels.contains_key(&t.topology_key)));
        let first = none_counted && matches_all_incoming(terms, p, snap);
        if !satisfied && !first {
            return Code::UnschedulableAndUnresolvable;
        }
    }
    for t in &p.required_anti_affinity_terms {
        if all
            .iter()
            .any(|(m, e)| incoming_term_matches(t, e, snap) && same(m, &t.topology_key))
        {
            return Code::Unschedulable;
        }
    }
    let ns = snap.namespace_labels(&p.namespace);
    for (m, e) in &all {
        for t in &e.required_anti_affinity_terms {
            if t.matches(p, ns) && same(m, &t.topology_key) {
                return Code::Unschedulable;
            }
        }
    }
    Code::Success
}

type Rng = rand_chacha::ChaCha8Rng;

fn random_terms(rng: &mut Rng, weighted_terms: bool) -> Vec<Value> {
    use rand::Rng;
    (0..rng.random_range(0..3))
        .map(|_| {
            let app = ["x", "y", "z"][rng.random_range(0..3)];
            let mut t = term(
                json!({ "app": app }),
                [HOST, ZONE, "rack"][rng.random_range(0..3)],
            );
            match rng.random_range(0..4) {
                0 => t["namespaceSelector"] = json!({}),
                1 => t["namespaceSelector"] = json!({"matchLabels": {"team": "t1"}}),
                2 => t["namespaces"] = json!(["ns1"]),
                _ => {}
            }
            if weighted_terms {
                weighted(rng.random_range(1..=100), t)
            } else {
                t
            }
        })
        .collect()
}

/// A pod with random labels, namespace and required (and, with `preferred`,
/// preferred) terms.
fn random_pod(name: String, rng: &mut Rng, preferred: bool) -> PodInfo {
    use rand::Rng;
    const REQ: &str = "requiredDuringSchedulingIgnoredDuringExecution";
    const PREF: &str = "preferredDuringSchedulingIgnoredDuringExecution";
    let mut aff = json!({"podAffinity": {REQ: random_terms(rng, false)},
                         "podAntiAffinity": {REQ: random_terms(rng, false)}});
    if preferred {
        aff["podAffinity"][PREF] = json!(random_terms(rng, true));
        aff["podAntiAffinity"][PREF] = json!(random_terms(rng, true));
    }
    pod(&name)
        .ns(["default", "ns1", "ns2"][rng.random_range(0..3)])
        .label("app", ["x", "y", "z"][rng.random_range(0..3)])
        .affinity(aff)
        .info()
}

/// Six nodes in zones a/b, most with a `rack`, and up to 8 random pods.
fn random_cluster(rng: &mut Rng, preferred: bool) -> Snapshot {
    use rand::Rng;
    let mut snap = Snapshot::new();
    for i in 0..6 {
        let mut b = node(&format!("n{i}")).zone(["a", "b"][rng.random_range(0..2)]);
        if rng.random_bool(0.7) {
            b = b.label("rack", ["r1", "r2"][rng.random_range(0..2)]);
        }
        snap.upsert_node(b.info());
    }
    snap.namespaces.insert(
        "ns1".into(),
        [("team".to_string(), "t1".to_string())].into(),
    );
    for j in 0..rng.random_range(0..8) {
        let e = random_pod(format!("e{j}"), rng, preferred);
        let target = format!("n{}", rng.random_range(0..6));
        snap.add_pod(Arc::new(e), &target);
    }
    snap
}

#[test]
fn filter_agrees_with_reference_on_random_clusters() {
    use rand::SeedableRng;
    let mut rng = Rng::seed_from_u64(7);
    let mut rejected = 0;
    for _ in 0..60 {
        let snap = random_cluster(&mut rng, false);
        for k in 0..5 {
            let p = random_pod(format!("p{k}"), &mut rng, false);
            let (code, got) = filter_all(&pl(), &p, &snap);
            for n in snap.nodes() {
                let want = reference_filter(&p, n, &snap);
                let have = if code == Code::Skip {
                    Code::Success
                } else {
                    got[&*n.name].0
                };
                assert_eq!(have, want, "pod {:?} on {}", p.pod.spec, n.name);
                if want != Code::Success {
                    rejected += 1;
                }
            }
        }
    }
    assert!(
        rejected > 100,
        "random cases exercise rejections: {rejected}"
    );
}

/// Raw score computed directly from the definitions; `None` when no term
/// contributed anywhere (PreScore's Skip).
fn reference_scores(pl: &InterPodAffinity, p: &PodInfo, snap: &Snapshot) -> Option<Vec<i64>> {
    let ns = snap.namespace_labels(&p.namespace);
    let has_constraints =
        !p.preferred_affinity_terms.is_empty() || !p.preferred_anti_affinity_terms.is_empty();
    // (term key, node of the existing pod, signed weight)
    let mut contributions: Vec<(&str, &NodeInfo, i64)> = Vec::new();
    for m in snap.nodes() {
        for e in &m.pods {
            if !has_constraints && !e.has_affinity() {
                continue;
            }
            for (terms, sign) in [
                (&p.preferred_affinity_terms, 1),
                (&p.preferred_anti_affinity_terms, -1),
            ] {
                for t in terms {
                    if incoming_term_matches(&t.term, e, snap) {
                        contributions.push((&t.term.topology_key, m, sign * i64::from(t.weight)));
                    }
                }
            }
            if pl.hard_pod_affinity_weight > 0 {
                for t in &e.required_affinity_terms {
                    if t.matches(p, ns) {
                        contributions.push((
                            &t.topology_key,
                            m,
                            i64::from(pl.hard_pod_affinity_weight),
                        ));
                    }
                }
            }
            for (terms, sign) in [
                (&e.preferred_affinity_terms, 1),
                (&e.preferred_anti_affinity_terms, -1),
            ] {
                for t in terms {
                    if t.term.matches(p, ns) {
                        contributions.push((&t.term.topology_key, m, sign * i64::from(t.weight)));
                    }
                }
            }
        }
    }
    contributions.retain(|(k, m, _)| m.labels.contains_key(*k));
    if contributions.is_empty() {
        return None;
    }
    Some(
        snap.nodes()
            .iter()
            .map(|n| {
                contributions
                    .iter()
                    .filter(|(k, m, _)| {
                        n.labels
                            .get(*k)
                            .is_some_and(|v| m.labels.get(*k) == Some(v))
                    })
                    .map(|(_, _, w)| w)
                    .sum()
            })
            .collect(),
    )
}

#[test]
fn score_agrees_with_reference_on_random_clusters() {
    use rand::SeedableRng;
    let mut rng = Rng::seed_from_u64(11);
    let mut non_zero = 0;
    for round in 0..60 {
        let mut snap = random_cluster(&mut rng, true);
        // Score looks hostname values up by node name only while hostnames are unique
        // and equal to the names: also a node sharing n0's hostname, and one whose
        // hostname is not its name, each with pods.
        let extra = match round % 4 {
            1 => Some(node("dup").label(HOST, "n0").zone("a")),
            2 => Some(node("named").label(HOST, "n9").zone("b")),
            _ => None,
        };
        if let Some(b) = extra {
            let name = b.info().name.to_string();
            snap.upsert_node(b.info());
            for j in 0..3 {
                let e = random_pod(format!("x{round}-{j}"), &mut rng, true);
                snap.add_pod(Arc::new(e), &name);
            }
        }
        let plugin = InterPodAffinity {
            hard_pod_affinity_weight: [0, 1, 50][round % 3],
            ..pl()
        };
        for k in 0..5 {
            let p = random_pod(format!("p{k}"), &mut rng, k % 2 == 0);
            let want = reference_scores(&plugin, &p, &snap);
            let mut st = CycleState::new();
            let nodes: Vec<&NodeInfo> = snap.nodes().iter().map(|n| &**n).collect();
            let skipped = plugin.pre_score(&mut st, &p, &snap, &nodes).is_skip();
            assert_eq!(skipped, want.is_none(), "skip for {:?}", p.pod.spec);
            let Some(want) = want else { continue };
            let have: Vec<i64> = nodes
                .iter()
                .map(|n| plugin.score(&st, &p, n, &snap).unwrap())
                .collect();
            assert_eq!(have, want, "pod {:?}", p.pod.spec);
            // Copies of the nodes (not the snapshot's: no domain-index path) score
            // the same through the label path.
            let copies: Vec<i64> = nodes
                .iter()
                .map(|n| plugin.score(&st, &p, &(*n).clone(), &snap).unwrap())
                .collect();
            assert_eq!(copies, want, "pod {:?} (label path)", p.pod.spec);
            // The whole scored set at once (by position) scores the same, for any
            // subset and order of positions.
            let mut positions: Vec<usize> = (0..nodes.len()).rev().step_by(1 + k % 2).collect();
            positions.push(0);
            let mut batch = Vec::new();
            plugin
                .score_positions(&st, &p, &snap, &positions, &mut batch)
                .unwrap();
            let expect: Vec<NodeScore> = positions
                .iter()
                .map(|&i| NodeScore {
                    node: i,
                    score: want[i],
                })
                .collect();
            assert_eq!(batch, expect, "pod {:?} (by position)", p.pod.spec);
            non_zero += want.iter().filter(|s| **s != 0).count();
            // Normalized scores stay in range and keep the order.
            let mut ns: Vec<NodeScore> = have
                .iter()
                .enumerate()
                .map(|(i, s)| NodeScore { node: i, score: *s })
                .collect();
            assert!(plugin.normalize_score(&st, &p, &mut ns).is_success());
            for a in &ns {
                assert!((0..=100).contains(&a.score));
                for b in &ns {
                    if have[a.node] <= have[b.node] {
                        assert!(a.score <= b.score, "{have:?} -> {ns:?}");
                    }
                }
            }
        }
    }
    assert!(non_zero > 100, "random cases exercise scoring: {non_zero}");
}

#[test]
fn hostname_anti_affinity_over_5000_nodes() {
    let mut s = Snapshot::new();
    s.add_nodes((0..5000).map(|i| node(&format!("n{i}")).zone(&format!("z{}", i % 3)).info()));
    let anti = req_anti(vec![term(json!({"app": "web"}), HOST)]);
    for i in 0..2500 {
        let p = pod(&format!("w{i}"))
            .label("app", "web")
            .affinity(anti.clone())
            .info();
        s.add_pod(Arc::new(p), &format!("n{}", i * 2));
    }
    let p = pod("p").label("app", "web").affinity(anti).info();
    let mut st = CycleState::new();
    let t = std::time::Instant::now();
    let (_, code) = pl().pre_filter(&mut st, &p, &s);
    assert!(code.is_success());
    let mut ok = 0;
    for n in s.nodes() {
        let r = pl().filter(&st, &p, n, &s);
        if r.is_success() {
            ok += 1;
        } else {
            assert_eq!(r.code, Code::Unschedulable);
        }
    }
    eprintln!("prefilter + 5000 filters: {:?}", t.elapsed());
    assert_eq!(ok, 2500);
}

/// The indexed PreFilter/PreScore visit only the pods a selector can match; their
/// results must equal the per-pod scans of every pod (kube-scheduler's loops),
/// including selectors without an `In` requirement, namespace selectors, several
/// terms and pods added then removed.
#[test]
fn indexed_counts_equal_the_full_scans() {
    let exists = |k: &str, key: &str| {
        json!({"labelSelector": {"matchExpressions": [{"key": k, "operator": "Exists"}]},
               "topologyKey": key})
    };
    let in2 = |k: &str, a: &str, b: &str, key: &str| {
        json!({"labelSelector": {"matchExpressions": [{"key": k, "operator": "In", "values": [a, b]}]},
               "topologyKey": key, "namespaceSelector": {}})
    };
    let shapes: Vec<PodInfo> = vec![
        pod("a").label("app", "web").affinity(req_anti(vec![term(json!({"app": "web"}), HOST)])).info(),
        pod("b").label("app", "db").affinity(req_affinity(vec![term(json!({"app": "web"}), ZONE)])).info(),
        pod("c").label("app", "web").label("tier", "fe").affinity(json!({
            "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [weighted(5, exists("tier", ZONE))]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [weighted(3, in2("app", "db", "web", HOST))]}})).info(),
        pod("d").ns("other").label("app", "db").affinity(req_anti(vec![in2("app", "web", "db", ZONE)])).info(),
        pod("e").label("tier", "be").info(),
    ];
    let names = ["a1", "a2", "b1", "b2", "c1"];
    let mut snap = snapshot(vec![]);
    let mut placed = Vec::new();
    for i in 0..40usize {
        let mut p = shapes[i % shapes.len()].clone();
        p.key = format!("{}/x{i}", p.namespace);
        p.name = format!("x{i}");
        let p = Arc::new(p);
        snap.add_pod(p.clone(), names[(i * 7) % names.len()]);
        placed.push(p);
    }
    for p in placed.iter().step_by(5) {
        snap.remove_pod(&p.key);
    }
    let full_incoming = |pod: &PodInfo| {
        let mut acc = <(TopologyMap, TopologyMap)>::default();
        for node in snap.nodes() {
            for e in &node.pods {
                if matches_all_incoming(&pod.required_affinity_terms, e, &snap) {
                    for t in &pod.required_affinity_terms {
                        acc.0.add(node, &snap, &t.topology_key, 1, true);
                    }
                }
                for t in &pod.required_anti_affinity_terms {
                    if incoming_term_matches(t, e, &snap) {
                        acc.1.add(node, &snap, &t.topology_key, 1, true);
                    }
                }
            }
        }
        acc
    };
    let sorted = |m: &TopologyMap| m.sorted();
    let mut nonempty = 0;
    for incoming in &shapes {
        let mut full_anti = TopologyMap::default();
        let mut full_score = TopologyMap::default();
        for node in snap.nodes() {
            for e in &node.pods {
                for t in &e.required_anti_affinity_terms {
                    if t.matches(incoming, snap.namespace_labels(&incoming.namespace)) {
                        full_anti.add(node, &snap, &t.topology_key, 1, true);
                    }
                }
                pl().process_existing_pod(incoming, e, node, &snap, &mut full_score);
            }
        }
        assert_eq!(
            sorted(&existing_anti_affinity_counts(incoming, &snap)),
            sorted(&full_anti)
        );
        let (a, b) = incoming_counts(incoming, &snap);
        let (fa, fb) = full_incoming(incoming);
        assert_eq!(
            (sorted(&a), sorted(&b)),
            (sorted(&fa), sorted(&fb)),
            "{}",
            incoming.key
        );
        let scored = pl().pre_score_indexed(incoming, &snap, true);
        assert_eq!(sorted(&scored), sorted(&full_score), "{}", incoming.key);
        nonempty += usize::from(!full_score.is_empty())
            + usize::from(!full_anti.is_empty())
            + usize::from(!fa.is_empty() || !fb.is_empty());
    }
    assert!(
        nonempty >= 5,
        "the workload exercises the counts ({nonempty})"
    );
}

/// A pod whose Filter is usually node-local: no required affinity, required
/// anti-affinity on the hostname (sometimes with a namespace selector or another
/// key, which must turn the declaration off).
fn random_hostname_anti_pod(name: String, rng: &mut Rng) -> PodInfo {
    use rand::Rng;
    let terms: Vec<Value> = (0..rng.random_range(1..3))
        .map(|_| {
            let app = ["x", "y", "z"][rng.random_range(0..3)];
            let key = if rng.random_bool(0.85) { HOST } else { ZONE };
            let mut t = term(json!({ "app": app }), key);
            match rng.random_range(0..6) {
                0 => t["namespaceSelector"] = json!({}),
                1 => t["namespaceSelector"] = json!({"matchLabels": {"team": "t1"}}),
                2 => t["namespaces"] = json!(["ns1", "default"]),
                _ => {}
            }
            t
        })
        .collect();
    pod(&name)
        .ns(["default", "ns1"][rng.random_range(0..2)])
        .label("app", ["x", "y", "z"][rng.random_range(0..3)])
        .affinity(req_anti(terms))
        .info()
}

fn declared_local(st: &CycleState) -> bool {
    st.node_local_filter.contains(&NAME)
}

/// Filter codes per node, Skip counting as Success (the engine runs no Filter then).
fn codes(st: &CycleState, skipped: bool, p: &PodInfo, snap: &Snapshot) -> BTreeMap<String, Code> {
    filter_with(&pl(), st, p, snap)
        .into_iter()
        .map(|(n, (c, _))| (n, if skipped { Code::Success } else { c }))
        .collect()
}

/// The node-local declaration is what lets the engine keep a node's Filter result
/// (stamped with the node's generation) across commits and batches: while it holds,
/// a node that received no pod must get the same answer from the state updated by
/// `add_pod` and from a fresh PreFilter as before the commits; and the updated
/// state equals a fresh PreFilter everywhere.
#[test]
fn node_local_declaration_keeps_untouched_nodes_randomized() {
    use rand::{Rng as _, SeedableRng};
    let mut rng = Rng::seed_from_u64(15);
    let (mut declared, mut withdrawn, mut compared, mut rejected) = (0, 0, 0, 0);
    for case in 0..400 {
        let mut snap = random_cluster(&mut rng, false);
        if case % 10 == 0 {
            // Two nodes share a hostname: never node-local.
            let dup = node("dup").label(HOST, "n0").zone("a").info();
            snap.upsert_node(dup);
        }
        let p = if rng.random_bool(0.8) {
            random_hostname_anti_pod(format!("p{case}"), &mut rng)
        } else {
            random_pod(format!("p{case}"), &mut rng, false)
        };
        let mut st = CycleState::new();
        let (_, s0) = pl().pre_filter(&mut st, &p, &snap);
        let local0 = declared_local(&st);
        assert!(!(local0 && s0.is_skip()), "declared while skipped");
        assert!(
            !(local0 && case % 10 == 0),
            "declared with duplicate hostnames"
        );
        declared += usize::from(local0);
        let before = codes(&st, s0.is_skip(), &p, &snap);
        let mut touched = std::collections::BTreeSet::new();
        let names: Vec<String> = snap.nodes().iter().map(|n| n.name.to_string()).collect();
        for j in 0..rng.random_range(1..4) {
            let added = if rng.random_bool(0.5) {
                random_hostname_anti_pod(format!("a{case}-{j}"), &mut rng)
            } else {
                random_pod(format!("a{case}-{j}"), &mut rng, false)
            };
            let target = names[rng.random_range(0..names.len())].clone();
            snap.add_pod(Arc::new(added.clone()), &target);
            let node = snap.node(&target).unwrap().clone();
            assert!(pl().add_pod(&mut st, &p, &added, &node, &snap).is_success());
            touched.insert(target);
        }
        let local1 = declared_local(&st);
        assert!(!local1 || local0, "add_pod never declares");
        withdrawn += usize::from(local0 && !local1);
        let mut fresh = CycleState::new();
        let (_, sf) = pl().pre_filter(&mut fresh, &p, &snap);
        let now = codes(&fresh, sf.is_skip(), &p, &snap);
        if !sf.is_skip() {
            assert_eq!(
                codes(&st, false, &p, &snap),
                now,
                "updated = fresh ({case})"
            );
        }
        if local1 {
            // The updated state still declares: a fresh PreFilter does too.
            assert!(declared_local(&fresh), "case {case}");
        }
        for (n, c) in &before {
            if touched.contains(n) {
                continue;
            }
            if local1 {
                assert_eq!(codes(&st, false, &p, &snap)[n], *c, "updated, {n} ({case})");
                compared += 1;
            }
            if local0 && declared_local(&fresh) {
                assert_eq!(now[n], *c, "fresh, {n} ({case})");
            }
            rejected += usize::from(*c != Code::Success);
        }
    }
    let counts = format!("{declared} {withdrawn} {compared} {rejected}");
    assert!(declared > 50, "declared: {counts}");
    assert!(withdrawn > 5, "withdrawn: {counts}");
    assert!(compared > 200 && rejected > 50, "compared: {counts}");
    eprintln!("declared, withdrawn, compared, rejected: {counts}");
}

/// `Snapshot::hostnames_unique` (which the node-local declaration and the Score name
/// path rely on) follows node additions, replacements and removals.
#[test]
fn hostnames_unique_follows_node_changes() {
    let mut snap = snapshot(vec![]);
    assert!(snap.hostnames_unique());
    snap.upsert_node(node("dup").label(HOST, "a1").zone("a").info());
    assert!(!snap.hostnames_unique());
    // Replacing the node with its own hostname makes them unique again.
    snap.upsert_node(node("dup").zone("a").info());
    assert!(snap.hostnames_unique());
    snap.add_nodes([node("dup2").label(HOST, "b1").zone("b").info()]);
    assert!(!snap.hostnames_unique());
    assert!(snap.remove_node("dup2"));
    assert!(snap.hostnames_unique());
    // Declared only while unique.
    let p = pod("p")
        .label("app", "web")
        .affinity(req_anti(vec![term(json!({"app": "web"}), HOST)]))
        .info();
    let mut st = CycleState::new();
    assert!(pl().pre_filter(&mut st, &p, &snap).1.is_success());
    assert!(declared_local(&st));
    snap.upsert_node(node("dup").label(HOST, "c1").zone("c").info());
    let mut st = CycleState::new();
    assert!(pl().pre_filter(&mut st, &p, &snap).1.is_success());
    assert!(!declared_local(&st));
}

/// PreFilter/PreScore state holds topology values by their domain id in the
/// snapshot's domain index of the time. After the node set changed (a node added,
/// with a zone no node had, and a hostname of its own), the state is still exact:
/// nodes are looked up through their label values (a value the old index lacks is
/// kept by string), so the state brought up to date with `add_pod` for pods placed
/// anywhere (also on the new node) filters like a fresh PreFilter, on the
/// snapshot's nodes and on copies, and the PreScore state taken before the change
/// scores every node (new one included) as the definitions say.
#[test]
fn state_stays_exact_across_a_node_set_change_randomized() {
    use rand::{Rng as _, SeedableRng};
    let mut rng = Rng::seed_from_u64(23);
    let (mut compared, mut rejected, mut other_values, mut scored) = (0, 0, 0, 0);
    for case in 0..200 {
        let mut snap = random_cluster(&mut rng, case % 2 == 0);
        let p = if rng.random_bool(0.5) {
            random_hostname_anti_pod(format!("p{case}"), &mut rng)
        } else {
            random_pod(format!("p{case}"), &mut rng, case % 2 == 0)
        };
        let mut st = CycleState::new();
        // Skip or not, the state is written and `add_pod` keeps it exact.
        let _ = pl().pre_filter(&mut st, &p, &snap);
        let nodes: Vec<&NodeInfo> = snap.nodes().iter().map(|n| &**n).collect();
        let mut sst = CycleState::new();
        let score_skipped = pl().pre_score(&mut sst, &p, &snap, &nodes).is_skip();
        let version = snap.nodes_version();
        let zone = ["a", "z9"][rng.random_range(0..2)];
        snap.upsert_node(node("new").zone(zone).info());
        assert_ne!(snap.nodes_version(), version, "the node set changed");
        let names: Vec<String> = snap.nodes().iter().map(|n| n.name.to_string()).collect();
        for j in 0..rng.random_range(1..5) {
            let added = if rng.random_bool(0.5) {
                random_hostname_anti_pod(format!("a{case}-{j}"), &mut rng)
            } else {
                random_pod(format!("a{case}-{j}"), &mut rng, false)
            };
            let target = if j == 0 {
                "new".to_string()
            } else {
                names[rng.random_range(0..names.len())].clone()
            };
            snap.add_pod(Arc::new(added.clone()), &target);
            // The snapshot's node, or a copy (looked up by its labels).
            let node: NodeInfo = (**snap.node(&target).unwrap()).clone();
            let node: &NodeInfo = if rng.random_bool(0.5) {
                snap.node(&target).unwrap()
            } else {
                &node
            };
            assert!(pl().add_pod(&mut st, &p, &added, node, &snap).is_success());
        }
        let mut fresh = CycleState::new();
        let (_, sf) = pl().pre_filter(&mut fresh, &p, &snap);
        if sf.is_skip() {
            continue;
        }
        let want = codes(&fresh, false, &p, &snap);
        assert_eq!(codes(&st, false, &p, &snap), want, "case {case}");
        for n in snap.nodes() {
            let copy = (**n).clone();
            assert_eq!(
                pl().filter(&st, &p, &copy, &snap).code,
                want[&*n.name],
                "copy of {} ({case})",
                n.name
            );
            compared += 1;
            rejected += usize::from(want[&*n.name] != Code::Success);
        }
        other_values += values_kept_by_string(&st);
        // PreScore state from before the change, on the new node set: the pods it
        // counted are unchanged, so the definitions over the old pods apply.
        if !score_skipped && zone == "z9" {
            let mut old_pods = snap.clone();
            for n in snap.nodes() {
                for e in &n.pods {
                    if e.name.starts_with('a') {
                        old_pods.remove_pod(&e.key);
                    }
                }
            }
            if let Some(want) = reference_scores(&pl(), &p, &old_pods) {
                let have: Vec<i64> = old_pods
                    .nodes()
                    .iter()
                    .map(|n| pl().score(&sst, &p, n, &old_pods).unwrap())
                    .collect();
                assert_eq!(have, want, "scores after the change ({case})");
                let mut batch = Vec::new();
                let positions: Vec<usize> = (0..have.len()).collect();
                pl().score_positions(&sst, &p, &old_pods, &positions, &mut batch)
                    .unwrap();
                assert_eq!(
                    batch.iter().map(|s| s.score).collect::<Vec<_>>(),
                    want,
                    "by position after the change ({case})"
                );
                scored += 1;
            }
        }
    }
    let counts = format!("{compared} {rejected} {other_values} {scored}");
    assert!(compared > 500 && rejected > 50, "compared: {counts}");
    assert!(other_values > 5, "values the old index lacks: {counts}");
    assert!(scored > 10, "scored: {counts}");
    eprintln!("compared, rejected, other values, scored: {counts}");
}

/// Checks `filter_mask` against `filter` on every node of `snap`: true when the mask
/// was available.
fn check_mask(st: &CycleState, p: &PodInfo, snap: &Snapshot, ctx: &str) -> (usize, usize) {
    let n = snap.num_nodes();
    let mut out = vec![0u64; n.div_ceil(64)];
    assert!(
        pl().filter_mask(st, p, snap, &mut out),
        "mask available: {ctx}"
    );
    let (mut pass, mut reject) = (0, 0);
    for (i, node) in snap.nodes().iter().enumerate() {
        let bit = out[i / 64] >> (i % 64) & 1 == 1;
        let ok = pl().filter(st, p, node, snap).is_success();
        assert_eq!(
            bit, ok,
            "node {} ({i}) for {:?}: {ctx}",
            node.name, p.pod.spec
        );
        // Filter on a copy of the node (not the snapshot's: the per-node checks, not
        // the state's verdict bits) agrees too.
        let copy = pl().filter(st, p, &(**node).clone(), snap);
        assert_eq!(bit, copy.is_success(), "copy of {}: {ctx}", node.name);
        if ok {
            pass += 1;
        } else {
            reject += 1;
        }
    }
    if !n.is_multiple_of(64) {
        assert_eq!(out[n / 64] >> (n % 64), 0, "bits past the last node: {ctx}");
    }
    (pass, reject)
}

#[test]
fn filter_mask_agrees_with_filter_across_commits_and_removals() {
    use rand::{Rng as _, SeedableRng};
    let mut rng = Rng::seed_from_u64(23);
    let (mut passed, mut rejected, mut checks) = (0, 0, 0);
    let mut unique = 0;
    for round in 0..42 {
        // Node counts around word boundaries; zones, racks of varied sizes (dense and
        // sparse domain sets), nodes lacking labels and a shared hostname.
        let n = [1, 5, 63, 64, 65, 130, 200][round % 7];
        let mut snap = Snapshot::new();
        for i in 0..n {
            let mut b = node(&format!("n{i}"));
            if rng.random_bool(0.9) {
                b = b.zone(["a", "b", "c"][rng.random_range(0..3)]);
            }
            if rng.random_bool(0.7) {
                let r = rng.random_range(0..1 + n / 8);
                b = b.label("rack", &format!("r{r}"));
            }
            if rng.random_bool(0.05) {
                b = b.label(HOST, "shared");
            }
            snap.upsert_node(b.info());
        }
        snap.namespaces.insert(
            "ns1".into(),
            [("team".to_string(), "t1".to_string())].into(),
        );
        for _ in 0..rng.random_range(0..(n / 2).clamp(1, 24)) {
            unique += 1;
            let e = random_pod(format!("e{unique}"), &mut rng, false);
            let target = format!("n{}", rng.random_range(0..n));
            snap.add_pod(Arc::new(e), &target);
        }
        for key in [HOST, ZONE, "rack"] {
            let dn = super::mask::domain_nodes(&snap.topology_domains(key));
            assert!(dn.dense_sets() <= 64, "dense sets bounded for {key}");
        }
        for k in 0..4 {
            let p = random_pod(format!("p{round}-{k}"), &mut rng, false);
            let mut st = CycleState::new();
            pl().pre_filter(&mut st, &p, &snap);
            let mut s = snap.clone();
            for step in 0..8 {
                let ctx = format!("round {round} pod {k} step {step}");
                let (a, r) = check_mask(&st, &p, &s, &ctx);
                passed += a;
                rejected += r;
                checks += 1;
                let placed: Vec<String> = s
                    .nodes()
                    .iter()
                    .flat_map(|nd| nd.pods.iter().map(|q| q.key.to_string()))
                    .collect();
                if step % 3 == 2 && !placed.is_empty() {
                    // A removal (an existing or a committed pod).
                    let key = &placed[rng.random_range(0..placed.len())];
                    let on = s.pod_node(key).unwrap().to_string();
                    let removed = s.remove_pod(key).unwrap();
                    let nd = s.node(&on).unwrap().clone();
                    assert!(pl().remove_pod(&mut st, &p, &removed, &nd, &s).is_success());
                } else {
                    // A commit.
                    unique += 1;
                    let c = random_pod(format!("c{unique}"), &mut rng, false);
                    let target = format!("n{}", rng.random_range(0..n));
                    s.add_pod(Arc::new(c.clone()), &target);
                    let nd = s.node(&target).unwrap().clone();
                    assert!(pl().add_pod(&mut st, &p, &c, &nd, &s).is_success());
                }
            }
            let (a, r) = check_mask(&st, &p, &s, &format!("round {round} pod {k} end"));
            passed += a;
            rejected += r;
            // A changed node set: the state's domain ids describe the old one, so the
            // mask is declined (the engine falls back to Filter), never wrong.
            s.upsert_node(node("late").zone("a").info());
            let mut out = vec![0u64; s.num_nodes().div_ceil(64)];
            if pl().filter_mask(&st, &p, &s, &mut out) {
                for (i, nd) in s.nodes().iter().enumerate() {
                    let bit = out[i / 64] >> (i % 64) & 1 == 1;
                    assert_eq!(bit, pl().filter(&st, &p, nd, &s).is_success());
                }
            }
        }
    }
    assert!(checks >= 42 * 4 * 8);
    // The random cases exercise both verdicts plentifully.
    assert!(passed > 5_000 && rejected > 5_000, "{passed} / {rejected}");
}

#[test]
fn filter_mask_without_prefilter_state_is_declined() {
    let snap = snapshot(vec![]);
    let p = pod("p").info();
    let mut out = vec![0u64; 1];
    assert!(!pl().filter_mask(&CycleState::new(), &p, &snap, &mut out));
    // A wrong-size output is declined too.
    let mut st = CycleState::new();
    pl().pre_filter(&mut st, &p, &snap);
    assert!(!pl().filter_mask(&st, &p, &snap, &mut []));
    assert!(pl().filter_mask(&st, &p, &snap, &mut out));
    assert_eq!(out[0], 0b11111);
}
