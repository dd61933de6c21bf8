//! Randomized: PreFilter's counts per topology domain maintained incrementally
//! (`add_pod` / `remove_pod` on commit) equal a full recompute (a fresh PreFilter on
//! the updated snapshot), domain by domain, with the exact minimum, over random
//! clusters (nodes without a key, tainted nodes, a node pool), random constraint sets
//! (zone, hostname and a custom key; indexable and non-indexable selectors;
//! `matchLabelKeys`; both inclusion policies; `minDomains`) and random pods (other
//! namespaces, non-matching labels, terminating pods).

use super::random::{Rng, random_pod};
use super::*;

fn random_nodes(r: &mut Rng) -> Vec<NodeInfo> {
    let n = 6 + r.next(10);
    random_nodes_n(r, n)
}

fn random_nodes_n(r: &mut Rng, n: u64) -> Vec<NodeInfo> {
    (0..n)
        .map(|i| {
            let mut b = node(&format!("n{i}"));
            if r.next(6) > 0 {
                b = b.zone(["a", "b", "c", "d"][r.next(4) as usize]);
            }
            if r.next(5) > 0 {
                b = b.label("rack", &format!("r{}", r.next(3)));
            }
            if r.next(4) == 0 {
                b = b.label("pool", "gpu");
            }
            if r.next(6) == 0 {
                b = b.taint("dedicated", "x", "NoSchedule");
            }
            b.info()
        })
        .collect()
}

fn random_constraint(r: &mut Rng, key: &str) -> Value {
    let selector = match r.next(4) {
        0 => json!({"matchLabels": {"app": "web"}}),
        1 => {
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]})
        }
        2 => json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]}),
        _ => json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}),
    };
    let mut c = json!({"maxSkew": 1 + r.next(3), "topologyKey": key,
                       "whenUnsatisfiable": "DoNotSchedule", "labelSelector": selector});
    if r.next(3) == 0 {
        c["matchLabelKeys"] = json!(["ver"]);
    }
    match r.next(3) {
        0 => c["nodeAffinityPolicy"] = json!("Ignore"),
        1 => c["nodeAffinityPolicy"] = json!("Honor"),
        _ => {}
    }
    match r.next(3) {
        0 => c["nodeTaintsPolicy"] = json!("Honor"),
        1 => c["nodeTaintsPolicy"] = json!("Ignore"),
        _ => {}
    }
    if r.next(3) == 0 {
        c["minDomains"] = json!(1 + r.next(5));
    }
    c
}

fn random_incoming(r: &mut Rng) -> PodInfo {
    let mut b = pod("p")
        .label("app", "web")
        .label("ver", &format!("v{}", r.next(2)));
    match r.next(3) {
        0 => {
            b = b.affinity(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "DoesNotExist"}]}]}}}));
        }
        1 => b = b.node_selector("pool", "gpu"),
        _ => {}
    }
    if r.next(3) == 0 {
        b = b.toleration(json!({"key": "dedicated", "operator": "Exists"}));
    }
    let mut keys = vec![LABEL_ZONE, LABEL_HOSTNAME, "rack"];
    for _ in 0..1 + r.next(3) {
        let k = keys.remove(r.next(keys.len() as u64) as usize);
        b = b.spread(random_constraint(r, k));
    }
    b.info()
}

fn assert_same_state(st: &CycleState, fresh: &CycleState, what: &str) {
    let a = st.read::<PreFilterState>(PRE_FILTER_KEY).unwrap();
    let b = fresh.read::<PreFilterState>(PRE_FILTER_KEY).unwrap();
    assert_eq!(a.domains.len(), b.domains.len());
    for (ci, (da, db)) in a.domains.iter().zip(b.domains.iter()).enumerate() {
        assert_eq!(
            (da.min, da.at_min, da.domains),
            (db.min, db.at_min, db.domains),
            "{what}: constraint {ci} min / at_min / domains"
        );
        assert_eq!(da.entries(), db.entries(), "{what}: constraint {ci} counts");
    }
}

#[test]
fn incremental_domain_counts_match_full_recompute_randomized() {
    let pl = PodTopologySpread::default();
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let mut checked = 0;
    for seed in 0..40 {
        let nodes = random_nodes(&mut r);
        let names: Vec<String> = nodes.iter().map(|n| n.name.to_string()).collect();
        let mut snap = snapshot(nodes, vec![]);
        let p = random_incoming(&mut r);
        let mut st = CycleState::new();
        let (_, s) = pl.pre_filter(&mut st, &p, &snap);
        assert!(s.is_success(), "seed {seed}: {s}");
        let mut placed: Vec<(PodInfo, String)> = Vec::new();
        for step in 0..60 {
            if placed.is_empty() || r.next(3) > 0 {
                let n = names[r.next(names.len() as u64) as usize].clone();
                let q = random_pod(&mut r, step, true);
                let ni = snap.node(&n).unwrap().clone();
                assert!(pl.add_pod(&mut st, &p, &q, &ni, &snap).is_success());
                snap.add_pod(Arc::new(q.clone()), &n);
                placed.push((q, n));
            } else {
                let (q, n) = placed.swap_remove(r.next(placed.len() as u64) as usize);
                let ni = snap.node(&n).unwrap().clone();
                assert!(pl.remove_pod(&mut st, &p, &q, &ni, &snap).is_success());
                snap.remove_pod(&q.key);
            }
            let mut fresh = CycleState::new();
            pl.pre_filter(&mut fresh, &p, &snap);
            let what = format!("seed {seed} step {step}");
            assert_eq!(
                filter_with(&pl, &st, &p, &snap),
                filter_with(&pl, &fresh, &p, &snap),
                "{what}"
            );
            assert_same_state(&st, &fresh, &what);
            assert_mask_agrees(&pl, &st, &p, &snap, &what);
            checked += 1;
        }
    }
    assert_eq!(checked, 40 * 60);
}

/// `filter_mask` sets exactly the bits of the nodes `filter` passes (and none past
/// the last node), for the state as `add_pod`/`remove_pod` left it.
fn assert_mask_agrees(
    pl: &PodTopologySpread,
    st: &CycleState,
    p: &PodInfo,
    snap: &Snapshot,
    what: &str,
) -> usize {
    let n = snap.num_nodes();
    let mut m = vec![0u64; n.div_ceil(64)];
    assert!(pl.filter_mask(st, p, snap, &mut m), "{what}: mask offered");
    let mut passing = 0;
    for i in 0..m.len() * 64 {
        let bit = m[i / 64] >> (i % 64) & 1 == 1;
        match snap.nodes().get(i) {
            Some(node) => {
                let ok = pl.filter(st, p, node, snap).is_success();
                assert_eq!(bit, ok, "{what}: node {} ({i})", node.name);
                passing += usize::from(ok);
            }
            None => assert!(!bit, "{what}: bit {i} past the last node"),
        }
    }
    passing
}

/// Randomized, on clusters of 65–200 nodes (several mask words; hostname keys past
/// the per-domain masks, so walked node by node): the bulk verdict equals Filter
/// node by node after every commit and removal.
#[test]
fn filter_mask_matches_filter_randomized() {
    let pl = PodTopologySpread::default();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut checked, mut passing, mut rejected) = (0, 0, 0);
    for seed in 0..16 {
        let n = 65 + r.next(136);
        let nodes = random_nodes_n(&mut r, n);
        let names: Vec<String> = nodes.iter().map(|n| n.name.to_string()).collect();
        let mut snap = snapshot(nodes, vec![]);
        let p = random_incoming(&mut r);
        let mut st = CycleState::new();
        let (_, s) = pl.pre_filter(&mut st, &p, &snap);
        assert!(s.is_success(), "seed {seed}: {s}");
        let mut placed: Vec<(PodInfo, String)> = Vec::new();
        for step in 0..40 {
            // Several pods per step, mostly onto few nodes, so domains fill unevenly.
            for k in 0..1 + r.next(4) {
                if placed.is_empty() || r.next(4) > 0 {
                    let n = names[r.next(names.len().min(12) as u64) as usize].clone();
                    let q = random_pod(&mut r, (step * 8 + k) as usize, true);
                    let ni = snap.node(&n).unwrap().clone();
                    assert!(pl.add_pod(&mut st, &p, &q, &ni, &snap).is_success());
                    snap.add_pod(Arc::new(q.clone()), &n);
                    placed.push((q, n));
                } else {
                    let (q, n) = placed.swap_remove(r.next(placed.len() as u64) as usize);
                    let ni = snap.node(&n).unwrap().clone();
                    assert!(pl.remove_pod(&mut st, &p, &q, &ni, &snap).is_success());
                    snap.remove_pod(&q.key);
                }
            }
            let ok = assert_mask_agrees(&pl, &st, &p, &snap, &format!("seed {seed} step {step}"));
            passing += ok;
            rejected += snap.num_nodes() - ok;
            checked += 1;
        }
    }
    assert_eq!(checked, 16 * 40);
    // Both verdicts occur often: the test compares more than all-pass masks.
    assert!(
        passing > 1000 && rejected > 1000,
        "{passing} passing, {rejected} rejected"
    );
}
