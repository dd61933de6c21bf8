use super::*;
use crate::framework::Code;
use crate::testutil::{node, pod};
use serde_json::{Value, json};

mod incremental;
mod random;
mod score_positions;

fn snapshot(nodes: Vec<NodeInfo>, pods: Vec<(PodInfo, &str)>) -> Snapshot {
    let mut s = Snapshot::new();
    for n in nodes {
        s.upsert_node(n);
    }
    for (p, n) in pods {
        s.add_pod(Arc::new(p), n);
    }
    s
}

fn app(name: &str) -> PodInfo {
    pod(name).label("app", "web").info()
}

fn hard(key: &str, skew: i32) -> Value {
    json!({"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": "DoNotSchedule",
           "labelSelector": {"matchLabels": {"app": "web"}}})
}

fn soft(key: &str, skew: i32) -> Value {
    json!({"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
           "labelSelector": {"matchLabels": {"app": "web"}}})
}

/// PreFilter + Filter over every snapshot node, by name.
fn filter_all(pl: &PodTopologySpread, p: &PodInfo, snap: &Snapshot) -> Vec<(String, Status)> {
    let mut st = CycleState::new();
    let (_, s) = pl.pre_filter(&mut st, p, snap);
    assert!(s.is_success(), "{s}");
    filter_with(pl, &st, p, snap)
}

fn filter_with(
    pl: &PodTopologySpread,
    st: &CycleState,
    p: &PodInfo,
    snap: &Snapshot,
) -> Vec<(String, Status)> {
    let mut v: Vec<_> = snap
        .nodes()
        .iter()
        .map(|n| {
            let fast = pl.filter(st, p, n, snap);
            // A copy of the node is not the snapshot's: Filter looks its labels
            // up instead of using PreFilter's per-node domain table.
            let copy = NodeInfo::clone(n);
            let slow = pl.filter(st, p, &copy, snap);
            assert_eq!(
                (fast.code, &fast.reasons),
                (slow.code, &slow.reasons),
                "node {}: domain table and label lookup disagree",
                n.name
            );
            (n.name.to_string(), fast)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn passing(r: &[(String, Status)]) -> Vec<&str> {
    r.iter()
        .filter(|(_, s)| s.is_success())
        .map(|(n, _)| n.as_str())
        .collect()
}

fn three_zones() -> Vec<NodeInfo> {
    vec![
        node("a1").zone("a").info(),
        node("a2").zone("a").info(),
        node("b1").zone("b").info(),
        node("c1").zone("c").label("pool", "other").info(),
    ]
}

#[test]
fn skip_without_hard_constraints() {
    let pl = PodTopologySpread::default();
    let snap = snapshot(three_zones(), vec![]);
    let mut st = CycleState::new();
    assert!(pl.pre_filter(&mut st, &app("p"), &snap).1.is_skip());
    let p = pod("p")
        .label("app", "web")
        .spread(soft(LABEL_ZONE, 1))
        .info();
    assert!(pl.pre_filter(&mut st, &p, &snap).1.is_skip());
}

#[test]
fn zone_skew_and_missing_label() {
    let pl = PodTopologySpread::default();
    let mut nodes = three_zones();
    nodes.push(node("nozone").info());
    let snap = snapshot(
        nodes,
        vec![(app("x1"), "a1"), (app("x2"), "a2"), (app("x3"), "b1")],
    );
    let p = pod("p")
        .label("app", "web")
        .spread(hard(LABEL_ZONE, 1))
        .info();
    let r = filter_all(&pl, &p, &snap);
    // a=2, b=1, c=0: min 0 → a: 3 > 1, b: 2 > 1, c: 1.
    assert_eq!(passing(&r), ["c1"]);
    let a1 = &r[0].1;
    assert_eq!(a1.code, Code::Unschedulable);
    assert_eq!(a1.reasons, vec![ERR_REASON_CONSTRAINTS]);
    let nz = &r.iter().find(|(n, _)| n == "nozone").unwrap().1;
    assert_eq!(nz.code, Code::UnschedulableAndUnresolvable);
    assert_eq!(nz.reasons, vec![ERR_REASON_MISSING_LABEL]);

    // maxSkew 2: b passes (1+1-0=2).
    let p = pod("p")
        .label("app", "web")
        .spread(hard(LABEL_ZONE, 2))
        .info();
    assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["b1", "c1"]);
}

#[test]
fn self_match_and_selector_semantics() {
    let pl = PodTopologySpread::default();
    let other_ns = pod("o").ns("other").label("app", "web").info();
    let mut terminating = pod("t").label("app", "web");
    terminating.0["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
    let snap = snapshot(
        vec![node("a1").zone("a").info(), node("b1").zone("b").info()],
        vec![
            (app("x1"), "a1"),
            (other_ns, "b1"),
            (terminating.info(), "b1"),
        ],
    );
    // The incoming pod doesn't match its own selector: a: 1+0-0 = 1 ≤ 1.
    let p = pod("p")
        .label("app", "db")
        .spread(hard(LABEL_ZONE, 1))
        .info();
    assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["a1", "b1"]);
    // Matching: a: 2 > 1 (pods in other namespaces / terminating don't count).
    let p = pod("p")
        .label("app", "web")
        .spread(hard(LABEL_ZONE, 1))
        .info();
    assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["b1"]);

    // Exists operator.
    let c = json!({"maxSkew": 1, "topologyKey": LABEL_ZONE, "whenUnsatisfiable": "DoNotSchedule",
                   "labelSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}});
    let p = pod("p").label("app", "other").spread(c).info();
    assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["b1"]);

    // Empty selector counts nothing (kube's countPodsMatchSelector); self-match 1.
    let c = json!({"maxSkew": 1, "topologyKey": LABEL_ZONE, "whenUnsatisfiable": "DoNotSchedule",
                   "labelSelector": {}});
    let p = pod("p").spread(c).info();
    assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["a1", "b1"]);

    // matchLabelKeys restricts to pods with the same value.
    let c = json!({"maxSkew": 1, "topologyKey": LABEL_ZONE, "whenUnsatisfiable": "DoNotSchedule",
                   "labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["rev"]});
    let p = pod("p")
        .label("app", "web")
        .label("rev", "2")
        .spread(c)
        .info();
    assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["a1", "b1"]);
}

#[test]
fn min_domains_treats_global_min_as_zero() {
    let pl = PodTopologySpread::default();
    let snap = snapshot(
        vec![node("a1").zone("a").info(), node("b1").zone("b").info()],
        vec![(app("x1"), "a1"), (app("x2"), "b1")],
    );
    let p = pod("p")
        .label("app", "web")
        .spread(hard(LABEL_ZONE, 1))
        .info();
    assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["a1", "b1"]);
    let mut c = hard(LABEL_ZONE, 1);
    c["minDomains"] = json!(3);
    let p = pod("p").label("app", "web").spread(c).info();
    // 2 domains < 3: global min 0 → 1+1-0 = 2 > 1 everywhere.
    assert!(passing(&filter_all(&pl, &p, &snap)).is_empty());
    let mut c = hard(LABEL_ZONE, 2);
    c["minDomains"] = json!(3);
    let p = pod("p").label("app", "web").spread(c).info();
    assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["a1", "b1"]);
}

#[test]
fn empty_cluster_domains() {
    let pl = PodTopologySpread::default();
    // No node has the key: no domains; every node fails on the missing label.
    let snap = snapshot(vec![node("n1").info()], vec![]);
    let p = pod("p").label("app", "web").spread(hard("rack", 1)).info();
    let r = filter_all(&pl, &p, &snap);
    assert_eq!(r[0].1.reasons, vec![ERR_REASON_MISSING_LABEL]);
    // Domains with zero pods: skew 1 everywhere.
    let snap = snapshot(three_zones(), vec![]);
    let r = filter_all(&pl, &p.clone(), &snap);
    assert!(
        r.iter()
            .all(|(_, s)| s.code == Code::UnschedulableAndUnresolvable)
    );
    let p = pod("p")
        .label("app", "web")
        .spread(hard(LABEL_ZONE, 1))
        .info();
    assert_eq!(passing(&filter_all(&pl, &p, &snap)).len(), 4);
}

#[test]
fn zone_and_hostname_constraints() {
    let pl = PodTopologySpread::default();
    let snap = snapshot(
        three_zones(),
        vec![(app("x1"), "a1"), (app("x2"), "b1"), (app("x3"), "c1")],
    );
    // Zone: a=1 b=1 c=1 (min 1) → all ok at maxSkew 1; hostname: a2 has 0 → min 0,
    // other hosts 1+1-0=2 > 1 → only a2.
    let p = pod("p")
        .label("app", "web")
        .spread(hard(LABEL_ZONE, 1))
        .spread(hard(LABEL_HOSTNAME, 1))
        .info();
    assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["a2"]);
    // A node missing one key is excluded from counting for all constraints.
    let p = pod("p")
        .label("app", "web")
        .spread(hard(LABEL_ZONE, 1))
        .spread(hard("rack", 1))
        .info();
    let r = filter_all(&pl, &p, &snap);
    assert!(
        r.iter()
            .all(|(_, s)| s.reasons == vec![ERR_REASON_MISSING_LABEL])
    );
}

#[test]
fn node_affinity_policy_honor_vs_ignore() {
    let pl = PodTopologySpread::default();
    let snap = snapshot(three_zones(), vec![(app("x1"), "a1"), (app("x2"), "b1")]);
    // The pod only fits pool!=other (zone c excluded under Honor): a=1, b=1, min 1.
    let aff = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["other"]}]}]}}});
    let p = pod("p")
        .label("app", "web")
        .affinity(aff.clone())
        .spread(hard(LABEL_ZONE, 1))
        .info();
    let r = filter_all(&pl, &p, &snap);
    assert_eq!(passing(&r), ["a1", "a2", "b1", "c1"]);
    let mut c = hard(LABEL_ZONE, 1);
    c["nodeAffinityPolicy"] = json!("Ignore");
    let p = pod("p").label("app", "web").affinity(aff).spread(c).info();
    // Zone c (0 pods) now counts: min 0, a and b at 2 > 1.
    assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["c1"]);
}

#[test]
fn node_taints_policy_honor() {
    let pl = PodTopologySpread::default();
    let nodes = vec![
        node("a1").zone("a").info(),
        node("b1").zone("b").info(),
        node("c1")
            .zone("c")
            .taint("dedicated", "ai", "NoSchedule")
            .info(),
        node("d1")
            .zone("d")
            .taint("soft", "", "PreferNoSchedule")
            .info(),
    ];
    let snap = snapshot(
        nodes,
        vec![(app("x1"), "a1"), (app("x2"), "b1"), (app("x3"), "d1")],
    );
    // Default Ignore: c counts (0) → min 0 → a, b, d fail.
    let p = pod("p")
        .label("app", "web")
        .spread(hard(LABEL_ZONE, 1))
        .info();
    assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["c1"]);
    let mut c = hard(LABEL_ZONE, 1);
    c["nodeTaintsPolicy"] = json!("Honor");
    let p = pod("p").label("app", "web").spread(c.clone()).info();
    // c excluded (untolerated NoSchedule), d kept (PreferNoSchedule): min 1.
    assert_eq!(passing(&filter_all(&pl, &p, &snap)).len(), 4);
    // Tolerating the taint brings c back.
    let p = pod("p")
        .label("app", "web")
        .toleration(json!({"key": "dedicated", "operator": "Exists"}))
        .spread(c)
        .info();
    assert_eq!(passing(&filter_all(&pl, &p, &snap)), ["c1"]);
}

#[test]
fn add_remove_pod_match_fresh_prefilter() {
    let pl = PodTopologySpread::default();
    let nodes = vec![
        node("a1").zone("a").info(),
        node("a2").zone("a").info(),
        node("b1").zone("b").info(),
        node("b2").zone("b").info(),
        node("c1").zone("c").info(),
        node("x1").info(),
    ];
    let mut snap = snapshot(nodes, vec![]);
    let p = pod("p")
        .label("app", "web")
        .spread(hard(LABEL_ZONE, 1))
        .spread(hard(LABEL_HOSTNAME, 2))
        .info();
    let mut st = CycleState::new();
    assert!(pl.pre_filter(&mut st, &p, &snap).1.is_success());
    let placements = [
        "a1", "a1", "b1", "c1", "a2", "b2", "c1", "a1", "x1", "b1", "c1", "a2",
    ];
    let mut added = Vec::new();
    for (i, n) in placements.iter().enumerate() {
        let q = if i % 4 == 3 {
            pod(&format!("q{i}")).label("app", "other").info()
        } else {
            app(&format!("q{i}"))
        };
        let node = snap.node(n).unwrap().clone();
        assert!(pl.add_pod(&mut st, &p, &q, &node, &snap).is_success());
        snap.add_pod(Arc::new(q.clone()), n);
        added.push((q, n.to_string()));
        let mut fresh = CycleState::new();
        pl.pre_filter(&mut fresh, &p, &snap);
        assert_eq!(
            filter_with(&pl, &st, &p, &snap),
            filter_with(&pl, &fresh, &p, &snap),
            "after adding {i}"
        );
        let a = st.read::<PreFilterState>(PRE_FILTER_KEY).unwrap();
        let b = fresh.read::<PreFilterState>(PRE_FILTER_KEY).unwrap();
        for (da, db) in a.domains.iter().zip(b.domains.iter()) {
            assert_eq!(da.min, db.min);
            assert_eq!(da.counts.iter().sum::<i64>(), db.counts.iter().sum::<i64>());
        }
    }
    for (i, (q, n)) in added.iter().enumerate().rev() {
        let node = snap.node(n).unwrap().clone();
        assert!(pl.remove_pod(&mut st, &p, q, &node, &snap).is_success());
        snap.remove_pod(&q.key);
        let mut fresh = CycleState::new();
        pl.pre_filter(&mut fresh, &p, &snap);
        assert_eq!(
            filter_with(&pl, &st, &p, &snap),
            filter_with(&pl, &fresh, &p, &snap),
            "after removing {i}"
        );
        let a = st.read::<PreFilterState>(PRE_FILTER_KEY).unwrap();
        let b = fresh.read::<PreFilterState>(PRE_FILTER_KEY).unwrap();
        assert_eq!(a.domains[0].min, b.domains[0].min);
        assert_eq!(a.domains[1].min, b.domains[1].min);
    }
    // Pods in another namespace don't change the counts.
    let before = filter_with(&pl, &st, &p, &snap);
    let node = snap.node("a1").unwrap().clone();
    let other = pod("o").ns("x").label("app", "web").info();
    pl.add_pod(&mut st, &p, &other, &node, &snap);
    assert_eq!(filter_with(&pl, &st, &p, &snap), before);
}

/// Randomized add/remove sequences with inclusion policies, other namespaces and
/// non-matching pods: the incrementally updated state filters exactly like a fresh
/// PreFilter on the updated snapshot.
#[test]
fn incremental_updates_match_fresh_prefilter_randomized() {
    let pl = PodTopologySpread::default();
    let nodes: Vec<NodeInfo> = (0..9)
        .map(|i| {
            let mut b = node(&format!("n{i}")).zone(["a", "b", "c"][i % 3]);
            if i % 4 == 0 {
                b = b.label("pool", "gpu");
            }
            if i == 5 {
                b = b.taint("dedicated", "x", "NoSchedule");
            }
            b.info()
        })
        .collect();
    let mut zone = hard(LABEL_ZONE, 1);
    zone["nodeTaintsPolicy"] = json!("Honor");
    zone["minDomains"] = json!(2);
    let mut host = hard(LABEL_HOSTNAME, 2);
    host["nodeAffinityPolicy"] = json!("Ignore");
    let p = pod("p")
        .label("app", "web")
        .affinity(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "DoesNotExist"}]}]}}}))
        .spread(zone)
        .spread(host)
        .info();
    let mut snap = snapshot(nodes, vec![]);
    let mut st = CycleState::new();
    assert!(pl.pre_filter(&mut st, &p, &snap).1.is_success());
    let mut placed: Vec<(PodInfo, String)> = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |m: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % m
    };
    for step in 0..200 {
        if placed.is_empty() || next(3) > 0 {
            let n = format!("n{}", next(9));
            let mut b = pod(&format!("q{step}"));
            b = match next(5) {
                0 => b.label("app", "db"),
                1 => b.ns("other").label("app", "web"),
                _ => b.label("app", "web"),
            };
            let q = b.info();
            let ni = snap.node(&n).unwrap().clone();
            pl.add_pod(&mut st, &p, &q, &ni, &snap);
            snap.add_pod(Arc::new(q.clone()), &n);
            placed.push((q, n));
        } else {
            let (q, n) = placed.swap_remove(next(placed.len() as u64) as usize);
            let ni = snap.node(&n).unwrap().clone();
            pl.remove_pod(&mut st, &p, &q, &ni, &snap);
            snap.remove_pod(&q.key);
        }
        let mut fresh = CycleState::new();
        pl.pre_filter(&mut fresh, &p, &snap);
        assert_eq!(
            filter_with(&pl, &st, &p, &snap),
            filter_with(&pl, &fresh, &p, &snap),
            "step {step}"
        );
        let a = st.read::<PreFilterState>(PRE_FILTER_KEY).unwrap();
        let b = fresh.read::<PreFilterState>(PRE_FILTER_KEY).unwrap();
        for (da, db) in a.domains.iter().zip(b.domains.iter()) {
            assert_eq!((da.min, da.domains), (db.min, db.domains), "step {step}");
            assert_eq!(da.entries(), db.entries(), "step {step}");
        }
    }
}

#[test]
fn domains_min_is_exact() {
    let mut d = Domains::default();
    for v in ["a", "b", "c"] {
        d.add_raw(v, 1);
    }
    d.recompute_min();
    d.update("b", 1);
    d.update("a", 1);
    assert_eq!(d.min, 1);
    d.update("a", 1);
    assert_eq!(d.min, 1);
    d.update("c", 1);
    assert_eq!((d.min, d.at_min), (2, 2));
    d.update("b", -2);
    assert_eq!((d.min, d.at_min), (0, 1));
    d.update("new", 0);
    d.update("z", 1);
    assert_eq!(d.count("z"), 1);
    assert_eq!(d.global_min(5), 0);
}

fn scores(pl: &PodTopologySpread, p: &PodInfo, snap: &Snapshot) -> (Status, Vec<i64>, Vec<i64>) {
    let mut st = CycleState::new();
    let nodes: Vec<&NodeInfo> = snap.nodes().iter().map(|n| &**n).collect();
    let s = pl.pre_score(&mut st, p, snap, &nodes);
    if !s.is_success() {
        return (s, vec![], vec![]);
    }
    // Report in name order.
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by(|&a, &b| nodes[a].name.cmp(&nodes[b].name));
    let mut out: Vec<NodeScore> = order
        .iter()
        .map(|&i| NodeScore {
            node: i,
            score: {
                let fast = pl.score(&st, p, nodes[i], snap).unwrap();
                // A copy of the node is not the snapshot's: Score looks its labels
                // up and matches its pods instead of reading the domain index.
                let copy = NodeInfo::clone(nodes[i]);
                let slow = pl.score(&st, p, &copy, snap).unwrap();
                assert_eq!(
                    fast, slow,
                    "node {}: index and lookup disagree",
                    nodes[i].name
                );
                fast
            },
        })
        .collect();
    let raw = out.iter().map(|s| s.score).collect();
    pl.normalize().unwrap().normalize_score(&st, p, &mut out);
    (s, raw, out.iter().map(|s| s.score).collect())
}

#[test]
fn scoring_matches_kube_formula() {
    let pl = PodTopologySpread::default();
    let nodes = vec![
        node("n1").zone("a").info(),
        node("n2").zone("a").info(),
        node("n3").zone("b").info(),
        node("n4").info(),
    ];
    let snap = snapshot(
        nodes,
        vec![
            (app("x1"), "n1"),
            (app("x2"), "n1"),
            (app("x3"), "n2"),
            (app("x4"), "n4"),
        ],
    );
    // Zone only: weight ln(2+2); a=3 → round(4.159)=4, b=0; n4 ignored.
    let p = pod("p")
        .label("app", "web")
        .spread(soft(LABEL_ZONE, 1))
        .info();
    let (s, raw, norm) = scores(&pl, &p, &snap);
    assert!(s.is_success());
    assert_eq!(raw, [4, 4, 0, 0]);
    assert_eq!(norm, [0, 0, 100, 0]);

    // Zone (maxSkew 1) + hostname (maxSkew 2, weight ln(3+2)):
    // n1 = 3·ln4 + 2·ln5 + 1 = 8.38 → 8; n2 = 3·ln4 + ln5 + 1 = 6.77 → 7; n3 = 1.
    // Normalized: 100·(9−s)/8 → 12, 25, 100; n4 ignored → 0.
    let p = pod("p")
        .label("app", "web")
        .spread(soft(LABEL_ZONE, 1))
        .spread(soft(LABEL_HOSTNAME, 2))
        .info();
    let (_, raw, norm) = scores(&pl, &p, &snap);
    assert_eq!(raw, [8, 7, 1, 0]);
    assert_eq!(norm, [12, 25, 100, 0]);

    // No matching pods anywhere: all max (ignored still 0).
    let p = pod("p")
        .label("app", "db")
        .spread(json!({"maxSkew": 1, "topologyKey": LABEL_ZONE,
        "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "db"}}}))
        .info();
    let (_, raw, norm) = scores(&pl, &p, &snap);
    assert_eq!(raw, [0, 0, 0, 0]);
    assert_eq!(norm, [100, 100, 100, 0]);

    // Hard-only pods and pods without constraints skip scoring.
    let p = pod("p")
        .label("app", "web")
        .spread(hard(LABEL_ZONE, 1))
        .info();
    assert!(scores(&pl, &p, &snap).0.is_skip());
    assert!(scores(&pl, &app("p"), &snap).0.is_skip());
}

#[test]
fn scoring_counts_only_domains_of_filtered_nodes() {
    // Counts for a domain include pods on every node of that domain, even nodes that
    // are not being scored.
    let pl = PodTopologySpread::default();
    let snap = snapshot(
        vec![
            node("n1").zone("a").info(),
            node("n2").zone("a").info(),
            node("n3").zone("b").info(),
        ],
        vec![(app("x1"), "n2"), (app("x2"), "n2")],
    );
    let p = pod("p")
        .label("app", "web")
        .spread(soft(LABEL_ZONE, 1))
        .info();
    let mut st = CycleState::new();
    let n1 = snap.node("n1").unwrap();
    let n3 = snap.node("n3").unwrap();
    assert!(pl.pre_score(&mut st, &p, &snap, &[n1, n3]).is_success());
    // weight ln(4): n1 = 2·1.386 = 2.77 → 3.
    assert_eq!(pl.score(&st, &p, n1, &snap).unwrap(), 3);
    assert_eq!(pl.score(&st, &p, n3, &snap).unwrap(), 0);
}

#[test]
fn invalid_constraints_are_rejected_clearly() {
    let pl = PodTopologySpread::default();
    let snap = snapshot(three_zones(), vec![]);
    let cases = [
        (
            json!({"maxSkew": 0, "topologyKey": "k", "whenUnsatisfiable": "DoNotSchedule"}),
            "maxSkew",
        ),
        (
            json!({"maxSkew": 1, "topologyKey": "", "whenUnsatisfiable": "DoNotSchedule"}),
            "topologyKey",
        ),
        (
            json!({"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "Sometimes"}),
            "whenUnsatisfiable",
        ),
        (
            json!({"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 2}),
            "minDomains",
        ),
        (
            json!({"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "DoNotSchedule", "minDomains": 0}),
            "minDomains",
        ),
        (
            json!({"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "DoNotSchedule", "nodeTaintsPolicy": "Maybe"}),
            "nodeTaintsPolicy",
        ),
        (
            json!({"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}}),
            "labelSelector",
        ),
    ];
    for (c, needle) in cases {
        let p = pod("p").spread(c).info();
        let (_, s) = pl.pre_filter(&mut CycleState::new(), &p, &snap);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable, "{s}");
        assert!(s.message().contains(needle), "{s}");
        assert!(
            s.message().contains("spec.topologySpreadConstraints[0]"),
            "{s}"
        );
    }
    let p = pod("p").spread(hard("k", 1)).spread(hard("k", 2)).info();
    let (_, s) = pl.pre_filter(&mut CycleState::new(), &p, &snap);
    assert!(s.message().contains("duplicate"), "{s}");
    // Filter without PreFilter state is an error, not a panic.
    let n = node("n").info();
    assert_eq!(
        pl.filter(&CycleState::new(), &p, &n, &snap).code,
        Code::Error
    );
}

#[test]
fn args_defaulting() {
    assert!(factory(None).is_ok());
    assert!(factory(Some(&json!({"defaultingType": "System"}))).is_ok());
    let e = factory(Some(&json!({"defaultingType": "System",
        "defaultConstraints": [{"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway"}]})))
    .err()
    .unwrap();
    assert!(e.contains("defaultConstraints"), "{e}");
    let e = factory(Some(&json!({"defaultingType": "List",
        "defaultConstraints": [{"maxSkew": 1, "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway",
                                "labelSelector": {}}]})))
    .err()
    .unwrap();
    assert!(e.contains("defaultConstraints[0].labelSelector"), "{e}");
    let e = factory(Some(&json!({"defaultingType": "List",
        "defaultConstraints": [{"maxSkew": 0, "topologyKey": "k", "whenUnsatisfiable": "ScheduleAnyway"}]})))
    .err()
    .unwrap();
    assert!(e.contains("defaultConstraints[0].maxSkew"), "{e}");
    assert!(factory(Some(&json!({"defaultingType": "Other"}))).is_err());
    assert!(factory(Some(&json!({"defaultConstraint": []}))).is_err());
    let pl = PodTopologySpread::new(
        serde_json::from_value(json!({"defaultingType": "List",
            "defaultConstraints": [{"maxSkew": 1, "topologyKey": LABEL_ZONE, "whenUnsatisfiable": "DoNotSchedule"}]}))
        .unwrap(),
    )
    .unwrap();
    assert!(!pl.system_defaulted);
    // No owner objects in the snapshot: default constraints don't apply.
    let snap = snapshot(three_zones(), vec![]);
    assert!(
        pl.pre_filter(&mut CycleState::new(), &app("p"), &snap)
            .1
            .is_skip()
    );
    let sys = PodTopologySpread::default();
    assert!(sys.system_defaulted);
    assert_eq!(sys.default_constraints.len(), 2);
    let nodes: Vec<&NodeInfo> = snap.nodes().iter().map(|n| &**n).collect();
    assert!(
        sys.pre_score(&mut CycleState::new(), &app("p"), &snap, &nodes)
            .is_skip()
    );
}

/// The snapshot's domain index: PreFilter registers every zone in O(domains) when all
/// nodes carry the key; after a relabel (new `nodes_version`) Filter falls back to the
/// label lookup and still agrees with a fresh PreFilter; hostname scores come from the
/// pod index and follow added and removed pods.
#[test]
fn domain_index_follows_relabels_and_pods() {
    let pl = PodTopologySpread::default();
    let mut snap = snapshot(
        vec![
            node("a1").zone("a").info(),
            node("a2").zone("a").info(),
            node("b1").zone("b").info(),
        ],
        vec![(app("x1"), "a1"), (app("x2"), "a2")],
    );
    let p = pod("p")
        .label("app", "web")
        .spread(hard(LABEL_ZONE, 1))
        .spread(soft(LABEL_HOSTNAME, 1))
        .info();
    let mut st = CycleState::new();
    assert!(pl.pre_filter(&mut st, &p, &snap).1.is_success());
    assert_eq!(passing(&filter_with(&pl, &st, &p, &snap)), ["b1"]);
    // b1 moves to zone a: the state's domain ids are stale, Filter uses labels.
    snap.upsert_node(node("b1").zone("a").info());
    let stale = filter_with(&pl, &st, &p, &snap);
    let mut fresh = CycleState::new();
    pl.pre_filter(&mut fresh, &p, &snap);
    assert_eq!(
        passing(&filter_with(&pl, &fresh, &p, &snap)),
        ["a1", "a2", "b1"]
    );
    // The stale state still knows zone b (count 0): every zone-a node is at skew 3.
    assert_eq!(passing(&stale), Vec::<&str>::new());
    // Hostname scores: a1 and a2 hold one matching pod each, then a1 two.
    let (_, raw, _) = scores(&pl, &p, &snap);
    let w = (3f64 + 2.0).ln();
    assert_eq!(raw, [w.round() as i64, w.round() as i64, 0]);
    snap.add_pod(Arc::new(app("x3")), "a1");
    let (_, raw, _) = scores(&pl, &p, &snap);
    assert_eq!(raw, [(2.0 * w).round() as i64, w.round() as i64, 0]);
    snap.remove_pod("default/x1");
    snap.remove_pod("default/x3");
    let (_, raw, _) = scores(&pl, &p, &snap);
    assert_eq!(raw, [0, w.round() as i64, 0]);
}

/// Randomized clusters (zones, nodes without a zone, tainted nodes, a node pool),
/// pods with soft zone + hostname constraints and inclusion policies: every node's
/// raw score equals kube's formula computed by brute force over all nodes and pods
/// (the index-based PreScore/Score against a direct count).
#[test]
fn soft_scores_match_brute_force_randomized() {
    let pl = PodTopologySpread::default();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |m: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % m
    };
    for round in 0..12 {
        let nodes: Vec<NodeInfo> = (0..12)
            .map(|i| {
                let mut b = node(&format!("n{i}"));
                if next(6) > 0 {
                    b = b.zone(["a", "b", "c", "d"][next(4) as usize]);
                }
                if next(4) == 0 {
                    b = b.label("pool", "gpu");
                }
                if next(5) == 0 {
                    b = b.taint("dedicated", "x", "NoSchedule");
                }
                b.info()
            })
            .collect();
        let names: Vec<String> = nodes.iter().map(|n| n.name.to_string()).collect();
        let mut snap = snapshot(nodes, vec![]);
        for j in 0..30 {
            let b = pod(&format!("q{j}"));
            let b = match next(4) {
                0 => b.label("app", "db"),
                1 => b.ns("other").label("app", "web"),
                _ => b.label("app", "web"),
            };
            snap.add_pod(Arc::new(b.info()), &names[next(12) as usize]);
        }
        let mut zone = soft(LABEL_ZONE, 1 + next(3) as i32);
        if next(2) == 0 {
            zone["nodeTaintsPolicy"] = json!("Honor");
        }
        let mut host = soft(LABEL_HOSTNAME, 1 + next(2) as i32);
        if next(2) == 0 {
            host["nodeAffinityPolicy"] = json!("Ignore");
        }
        let mut b = pod("p").label("app", "web").spread(zone);
        if next(2) == 0 {
            b = b.spread(host);
        }
        if next(2) == 0 {
            b = b.affinity(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "DoesNotExist"}]}]}}}));
        }
        let p = b.info();
        let (hard_cs, cs) = pl.constraints(&p).unwrap();
        assert!(hard_cs.is_empty());
        let required = RequiredNodeAffinity::from_pod(&p).unwrap();
        // Brute force, kube's PreScore/Score with every node scored.
        let all: Vec<&NodeInfo> = snap.nodes().iter().map(|n| &**n).collect();
        let scored: Vec<&NodeInfo> = all
            .iter()
            .copied()
            .filter(|n| has_all_keys(&n.labels, &cs))
            .collect();
        let mut want: Vec<(String, i64)> = all
            .iter()
            .map(|n| {
                if !has_all_keys(&n.labels, &cs) {
                    return (n.name.to_string(), 0);
                }
                let mut score = 0.0;
                for c in &cs {
                    let v = &n.labels[&c.topology_key];
                    let (cnt, size) = if c.topology_key == LABEL_HOSTNAME {
                        (c.count_on(n, &p.namespace), scored.len())
                    } else {
                        let domains: std::collections::BTreeSet<&String> =
                            scored.iter().map(|s| &s.labels[&c.topology_key]).collect();
                        let cnt: i64 = all
                            .iter()
                            .filter(|o| {
                                has_all_keys(&o.labels, &cs)
                                    && c.includes(&p, o, &required)
                                    && o.labels.get(&c.topology_key) == Some(v)
                            })
                            .map(|o| c.count_on(o, &p.namespace))
                            .sum();
                        (cnt, domains.len())
                    };
                    score += cnt as f64 * ((size + 2) as f64).ln() + (c.max_skew - 1) as f64;
                }
                (n.name.to_string(), score.round() as i64)
            })
            .collect();
        want.sort();
        let (s, raw, _) = scores(&pl, &p, &snap);
        assert!(s.is_success(), "round {round}: {s}");
        assert_eq!(
            raw,
            want.iter().map(|w| w.1).collect::<Vec<_>>(),
            "round {round}: {want:?}"
        );
    }
}

/// The inclusion masks are cached in the snapshot by what the policies read of the
/// pod: on one snapshot, pods with other node requirements or tolerations get their
/// own mask (and their own verdicts), pods with the same ones share it, and a node
/// change rebuilds it.
#[test]
fn inclusion_masks_are_keyed_by_requirements_and_tolerations() {
    let pl = PodTopologySpread::default();
    let mut nodes = three_zones();
    nodes.push(
        node("d1")
            .zone("d")
            .taint("dedicated", "ai", "NoSchedule")
            .info(),
    );
    let mut snap = snapshot(nodes, vec![(app("x1"), "a1"), (app("x2"), "b1")]);
    let req = |op: &str| {
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "pool", "operator": op, "values": ["other"]}]}]}}})
    };
    let mut honor_both = hard(LABEL_ZONE, 1);
    honor_both["nodeTaintsPolicy"] = json!("Honor");
    // Each requirement set caches two entries: its inclusion mask and the zones
    // with an eligible node (`Eligibility::registered_domains`).
    let masks = |s: &Snapshot| s.domain_index().cached_masks(s.nodes_version()) / 2;
    // Default policies, no requirements: no mask at all.
    let plain = pod("p")
        .label("app", "web")
        .spread(hard(LABEL_ZONE, 1))
        .info();
    assert_eq!(passing(&filter_all(&pl, &plain, &snap)), ["c1", "d1"]);
    assert_eq!(masks(&snap), 0);
    // pool NotIn other (c excluded; d's taint ignored): zones a, b, d → min 0 (d).
    let not_in = pod("p")
        .label("app", "web")
        .affinity(req("NotIn"))
        .spread(hard(LABEL_ZONE, 1))
        .info();
    assert_eq!(passing(&filter_all(&pl, &not_in, &snap)), ["c1", "d1"]);
    assert_eq!(masks(&snap), 1);
    // Same requirements, another pod: the mask is shared.
    let same = pod("q")
        .label("app", "web")
        .affinity(req("NotIn"))
        .spread(hard(LABEL_ZONE, 1))
        .info();
    assert_eq!(passing(&filter_all(&pl, &same, &snap)), ["c1", "d1"]);
    assert_eq!(masks(&snap), 1);
    // Honoring taints too: d excluded → zones a, b (1 each) → everyone passes.
    let honor = pod("p")
        .label("app", "web")
        .affinity(req("NotIn"))
        .spread(honor_both.clone())
        .info();
    assert_eq!(passing(&filter_all(&pl, &honor, &snap)).len(), 5);
    assert_eq!(masks(&snap), 2);
    // The same with a toleration for d's taint: its own mask, d counts again.
    let tolerant = pod("p")
        .label("app", "web")
        .affinity(req("NotIn"))
        .toleration(json!({"key": "dedicated", "operator": "Exists"}))
        .spread(honor_both)
        .info();
    assert_eq!(passing(&filter_all(&pl, &tolerant, &snap)), ["c1", "d1"]);
    assert_eq!(masks(&snap), 3);
    // pool In other: only zone c (0 pods) is registered → zones a and b are not
    // counted (0) → everyone passes (under NotIn's mask, a1, a2, b1 failed).
    let only_c = pod("p")
        .label("app", "web")
        .affinity(req("In"))
        .spread(hard(LABEL_ZONE, 1))
        .info();
    assert_eq!(passing(&filter_all(&pl, &only_c, &snap)).len(), 5);
    assert_eq!(masks(&snap), 4);
    // Relabel a2 into pool other: a node change drops the masks; NotIn now leaves
    // a1 (1 pod), b1 (1), d1 (0) — and the rebuilt mask must see a2 excluded.
    snap.upsert_node(node("a2").zone("a").label("pool", "other").info());
    assert_eq!(masks(&snap), 0);
    let r = filter_all(&pl, &not_in, &snap);
    assert_eq!(passing(&r), ["c1", "d1"]);
    // With d honoured away as well: a (1), b (1) → all pass; with a2 in "other"
    // the zone-a count still comes from a1 only.
    let honor = pod("p")
        .label("app", "web")
        .affinity(req("NotIn"))
        .spread({
            let mut c = hard(LABEL_ZONE, 1);
            c["nodeTaintsPolicy"] = json!("Honor");
            c
        })
        .info();
    assert_eq!(passing(&filter_all(&pl, &honor, &snap)).len(), 5);
    assert_eq!(masks(&snap), 2);
}
