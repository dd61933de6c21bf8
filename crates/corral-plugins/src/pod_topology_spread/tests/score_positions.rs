//! Randomized: `score_positions` (one state read per pod, each node's score by
//! position) equals `score` on every node (and on a copy of the node, which takes
//! the label-lookup path), across commits and removals of pods, random feasible
//! subsets, and a node relabelled after PreScore (the state's domain tables are then
//! stale and both paths must look labels up).

use super::random::{Rng, random_pod};
use super::*;

fn random_node(r: &mut Rng, i: u64) -> NodeInfo {
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
}

fn random_soft(r: &mut Rng, key: &str) -> Value {
    let selector = match r.next(4) {
        0 => json!({"matchLabels": {"app": "web"}}),
        1 => {
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]})
        }
        2 => json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]}),
        _ => json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}),
    };
    let mut c = json!({"maxSkew": 1 + r.next(3), "topologyKey": key,
                       "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": selector});
    if r.next(3) == 0 {
        c["matchLabelKeys"] = json!(["ver"]);
    }
    match r.next(3) {
        0 => c["nodeAffinityPolicy"] = json!("Ignore"),
        1 => c["nodeAffinityPolicy"] = json!("Honor"),
        _ => {}
    }
    if r.next(2) == 0 {
        c["nodeTaintsPolicy"] = json!("Honor");
    }
    c
}

fn random_incoming(r: &mut Rng) -> PodInfo {
    let mut b = pod("p")
        .label("app", "web")
        .label("ver", &format!("v{}", r.next(2)));
    if r.next(3) == 0 {
        b = b.affinity(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "DoesNotExist"}]}]}}}));
    }
    // No constraint of its own (one round in five): the system defaults.
    if r.next(5) > 0 {
        let mut keys = vec![LABEL_ZONE, LABEL_HOSTNAME, "rack"];
        for _ in 0..1 + r.next(3) {
            let k = keys.remove(r.next(keys.len() as u64) as usize);
            b = b.spread(random_soft(r, k));
        }
    }
    b.info()
}

/// `score_positions` against `score` per node and (`labels_too`: no pod committed
/// since PreScore, whose hostname counts the label path recounts on the node) on a
/// copy of each node. Returns how many nodes were compared.
fn check(
    pl: &PodTopologySpread,
    p: &PodInfo,
    snap: &Snapshot,
    st: &CycleState,
    positions: &[usize],
    what: &str,
    labels_too: bool,
) -> usize {
    let mut bulk = Vec::new();
    pl.score_positions(st, p, snap, positions, &mut bulk)
        .unwrap();
    assert_eq!(bulk.len(), positions.len(), "{what}");
    for (ns, &i) in bulk.iter().zip(positions) {
        let n = &snap.nodes()[i];
        let one = pl.score(st, p, n, snap).unwrap();
        let copy = NodeInfo::clone(n);
        let by_labels = pl.score(st, p, &copy, snap).unwrap();
        assert_eq!(
            (ns.node, ns.score),
            (i, one),
            "{what}: node {} bulk vs per node",
            n.name
        );
        if labels_too {
            assert_eq!(one, by_labels, "{what}: node {} position vs labels", n.name);
        }
    }
    positions.len()
}

#[test]
fn score_positions_equal_per_node_scores_randomized() {
    let pl = PodTopologySpread::default();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut compared = 0;
    let mut scored_rounds = 0;
    for seed in 0..40 {
        let nodes: Vec<NodeInfo> = (0..6 + r.next(10))
            .map(|i| random_node(&mut r, i))
            .collect();
        let names: Vec<String> = nodes.iter().map(|n| n.name.to_string()).collect();
        let mut snap = snapshot(nodes, vec![]);
        let p = random_incoming(&mut r);
        let mut placed: Vec<(PodInfo, String)> = Vec::new();
        for step in 0..25 {
            // A commit (or a removal) between cycles.
            if placed.is_empty() || r.next(4) > 0 {
                let n = names[r.next(names.len() as u64) as usize].clone();
                let q = random_pod(&mut r, step, false);
                snap.add_pod(Arc::new(q.clone()), &n);
                placed.push((q, n));
            } else {
                let (q, _) = placed.swap_remove(r.next(placed.len() as u64) as usize);
                snap.remove_pod(&q.key);
            }
            // A random feasible subset, in snapshot order.
            let positions: Vec<usize> = (0..snap.num_nodes()).filter(|_| r.next(4) > 0).collect();
            if positions.is_empty() {
                continue;
            }
            let scored: Vec<&NodeInfo> = positions.iter().map(|&i| &*snap.nodes()[i]).collect();
            let mut st = CycleState::new();
            let s = pl.pre_score(&mut st, &p, &snap, &scored);
            if s.is_skip() {
                continue;
            }
            assert!(s.is_success(), "seed {seed} step {step}: {s}");
            scored_rounds += 1;
            let what = format!("seed {seed} step {step}");
            compared += check(&pl, &p, &snap, &st, &positions, &what, true);
            // A pod committed after PreScore: both paths still read the state.
            let n = names[r.next(names.len() as u64) as usize].clone();
            let q = random_pod(&mut r, 1000 + step, false);
            snap.add_pod(Arc::new(q.clone()), &n);
            placed.push((q, n));
            compared += check(
                &pl,
                &p,
                &snap,
                &st,
                &positions,
                &format!("{what} +pod"),
                false,
            );
            // A node relabelled after PreScore: the state is stale, labels are read.
            if r.next(4) == 0 {
                let i = r.next(names.len() as u64);
                let relabelled = random_node(&mut r, i);
                snap.upsert_node(relabelled);
                compared += check(
                    &pl,
                    &p,
                    &snap,
                    &st,
                    &positions,
                    &format!("{what} relabel"),
                    false,
                );
            }
        }
    }
    assert!(scored_rounds > 400, "only {scored_rounds} rounds scored");
    assert!(compared > 5_000, "only {compared} nodes compared");
}
