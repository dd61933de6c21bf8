//! The bulk Filter path of [`evaluate`] (live cross-node Filters' verdicts as node
//! bitmasks, `FilterPlugin::filter_mask`) decides exactly what the per-node path
//! decides: the same candidates with the same totals, the same `processed` (kube's
//! next start index), the same unschedulable message and retryability; for pods
//! evaluated against the class cache's PreFilter state, and against a state the
//! committer brought up to date with AddPod (`reuse`); sequential and parallel node
//! walks.

use std::collections::HashMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::*;
use crate::config::default_frameworks;
use crate::framework::FilterPlugin;
use crate::snapshot::NodeInfo;
use corral_core::framework::Plugin;
use corral_core::testutil::{node, pod};

/// A Filter plugin offering no bulk verdict: the per-node path of the wrapped one.
struct PerNode(Arc<dyn FilterPlugin>);

impl Plugin for PerNode {
    fn name(&self) -> &'static str {
        self.0.name()
    }
}

impl FilterPlugin for PerNode {
    fn filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Status {
        self.0.filter(state, pod, node, snap)
    }
}

/// The default profile with every Filter plugin's bulk verdict withheld.
fn per_node(fw: &Framework) -> Framework {
    let mut f = fw.clone();
    f.filter = f
        .filter
        .iter()
        .map(|p| Arc::new(PerNode(p.clone())) as Arc<dyn FilterPlugin>)
        .collect();
    f
}

/// Zones a–c (every 17th node has none), racks r0–r3 on half the nodes, 2/4/8
/// cpus, some cordoned or tainted.
fn cluster(rng: &mut ChaCha8Rng, n: usize) -> Snapshot {
    let mut snap = Snapshot::new();
    snap.add_nodes((0..n).map(|i| {
        let cpu = ["2", "4", "8"][rng.random_range(0..3)];
        let mut b = node(&format!("n{i:04}")).cpu(cpu).mem("32Gi");
        if i % 17 != 5 {
            b = b.zone(["a", "b", "c"][i % 3]);
        }
        if rng.random_range(0..2) == 0 {
            b = b.label("rack", &format!("r{}", rng.random_range(0..4)));
        }
        match rng.random_range(0..25) {
            0 => b = b.unschedulable(),
            1 => b = b.taint("dedicated", "gpu", "NoSchedule"),
            _ => {}
        }
        b.info()
    }));
    snap
}

fn hard(key: &str, app: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "DoNotSchedule",
                       "labelSelector": {"matchLabels": {"app": app}}});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    c
}

/// Pods with hard spread constraints: zone; zone and hostname (a key with more
/// domains than the per-domain masks: walked node by node); zone with a large
/// request (node-local rejections too); a rack constraint whose `minDomains`
/// exceeds the racks (PodTopologySpread ends up rejecting every node); a node
/// selector no node satisfies (no feasible node, node-local reasons).
fn template(t: usize, i: u64) -> PodInfo {
    let zone = "topology.kubernetes.io/zone";
    let b = pod(&format!("p{i}")).cpu("500m").mem("1Gi").seq(i);
    let b = match t {
        0 => b.label("app", "z").spread(hard(zone, "z", json!({}))),
        1 => b
            .label("app", "h")
            .spread(hard(zone, "h", json!({})))
            .spread(hard("kubernetes.io/hostname", "h", json!({}))),
        2 => b
            .cpu("3")
            .label("app", "z")
            .spread(hard(zone, "z", json!({}))),
        3 => b
            .label("app", "r")
            .spread(hard("rack", "r", json!({"minDomains": 10}))),
        _ => b
            .label("app", "z")
            .node_selector("pool", "none")
            .spread(hard(zone, "z", json!({}))),
    };
    b.info()
}

type Decided = (Result<Vec<(usize, i64, i64)>, (String, bool)>, usize);

fn decided(ev: &Evaluation) -> Decided {
    let out = match &ev.outcome {
        Outcome::Feasible(c) => Ok(c.iter().map(|c| (c.node, c.total, c.local)).collect()),
        Outcome::Unschedulable { message, retryable } => Err((message.clone(), *retryable)),
        Outcome::Error(e) => Err((format!("error: {e}"), false)),
        Outcome::Deferred => Err(("deferred".into(), false)),
    };
    (out, ev.processed)
}

/// The committer's update of a reused PreFilter state: AddPod of every pod
/// committed since, for the plugins that did not skip.
fn add_committed(
    fw: &Framework,
    snap: &Snapshot,
    state: &mut CycleState,
    pod: &PodInfo,
    committed: &[(Arc<PodInfo>, usize)],
) {
    for p in &fw.pre_filter {
        if state.filter_skipped(p.name()) {
            continue;
        }
        if let Some(ext) = p.extensions() {
            for (cp, ni) in committed {
                let st = ext.add_pod(state, pod, cp, &snap.nodes()[*ni], snap);
                assert!(st.is_success(), "{st}");
            }
        }
    }
}

#[test]
fn bulk_filter_path_decides_like_the_per_node_path() {
    let fws = default_frameworks();
    let plain = vec![per_node(&fws[0])];
    let (mut bulk_walks, mut infeasible, mut reused) = (0, 0, 0);
    for seed in 0..3u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = [100, 300, 1100][seed as usize];
        let mut snap = cluster(&mut rng, n);
        let mut caches: Vec<[ClassCaches; 2]> = (0..5).map(|_| Default::default()).collect();
        for i in 0..90u64 {
            let t = rng.random_range(0..5);
            let p = template(t, i);
            let key = (p.equivalence, 0);
            let classes = HashMap::from([(key, vec![0, 1])]);
            let prep = |prev: ClassCaches, fws: &[Framework], snap: &Snapshot| {
                ClassCaches::prepare(
                    prev,
                    fws,
                    snap,
                    &[&p, &p],
                    &classes,
                    &[p.equivalence, p.equivalence],
                )
            };
            let [a, b] = std::mem::take(&mut caches[t]);
            caches[t] = [prep(a, &fws, &snap), prep(b, &plain, &snap)];
            let start = rng.random_range(0..n);
            let k = [1, 16][rng.random_range(0..2)];
            let parallel = rng.random_range(0..2) == 0;
            let run = |fw: &Framework, cache: &ClassCaches, snap: &Snapshot, fresh, reuse| {
                let c = cache.get(&key);
                let ev = evaluate(
                    fw,
                    snap,
                    &p,
                    start,
                    &mut pod_rng(3, &p, 0),
                    k,
                    0,
                    parallel,
                    c,
                    fresh,
                    reuse,
                );
                decided(&ev)
            };
            let what = format!("seed {seed} pod {i} (template {t}, parallel {parallel})");
            let want = run(&plain[0], &caches[t][1], &snap, false, None);
            assert_eq!(
                run(&fws[0], &caches[t][0], &snap, false, None),
                want,
                "{what}"
            );
            // The bulk verdict is offered for this pod's state.
            let c = caches[t][0].get(&key).expect("class cache");
            if let Ok((st, _)) = &c.pre {
                let mut bits = Vec::new();
                let live = fws[0].cross_filter_mask_for(st);
                assert_ne!(
                    fws[0].filter_bulk(st, &p, &snap, live, &mut bits),
                    0,
                    "{what}"
                );
                bulk_walks += 1;
            }
            if want.0.is_err() {
                infeasible += 1;
            }
            // Commit the chosen node, then a few more pods of the spread groups,
            // and evaluate again with the class's state brought up to date by
            // AddPod (the committer's `reuse`): the mask describes the new counts.
            let mut committed: Vec<(Arc<PodInfo>, usize)> = Vec::new();
            if let Ok(c) = &want.0 {
                committed.push((Arc::new(p.clone()), c[0].0));
            }
            for j in 0..rng.random_range(0..4) {
                let q = template(rng.random_range(0..4), 10_000 + i * 8 + j);
                committed.push((Arc::new(q), rng.random_range(0..n)));
            }
            for (q, ni) in &committed {
                let name = snap.nodes()[*ni].name.to_string();
                snap.add_pod(q.clone(), &name);
            }
            let reuse = |fw: &Framework, cache: &ClassCaches| {
                let c = cache.get(&key)?;
                let (st, pre) = c.pre.as_ref().ok()?;
                let mut st = st.clone();
                add_committed(fw, &snap, &mut st, &p, &committed);
                Some((st, pre.clone()))
            };
            if let (Some(a), Some(b)) = (
                reuse(&fws[0], &caches[t][0]),
                reuse(&plain[0], &caches[t][1]),
            ) {
                let want = run(&plain[0], &caches[t][1], &snap, true, Some(b));
                assert_eq!(
                    run(&fws[0], &caches[t][0], &snap, true, Some(a)),
                    want,
                    "{what}, reused"
                );
                // And as a fresh PreFilter on the updated snapshot decides.
                let fresh = run(&fws[0], &caches[t][0], &snap, true, None);
                assert_eq!(fresh, want, "{what}, fresh PreFilter");
                reused += 1;
            }
        }
    }
    assert!(bulk_walks > 200, "bulk verdicts offered {bulk_walks} times");
    assert!(infeasible > 20, "{infeasible} pods without a feasible node");
    assert!(reused > 200, "{reused} reused states");
}
