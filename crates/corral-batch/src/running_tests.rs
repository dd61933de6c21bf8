//! Property test of the running index's in-place node updates: after random
//! sequences of pod adds, removals and updates, node allocatable changes and node
//! set changes, the incrementally refreshed index equals one built from scratch —
//! totals, per-group aggregates, plain buckets, member order, and every node's
//! entry (up to the order of its buckets, groups and roles).

use proptest::prelude::*;

use super::*;
use crate::objects::{ANN_GROUP_NAME, LABEL_POD_GROUP};
use crate::testutil::{node, pod};

/// One node's entry, normalized: its buckets, groups and roles sorted, its pods
/// with the key of what they count towards.
type Norm = (
    String,
    u64,
    Resources,
    Vec<(PlainKey, Bucket)>,
    Vec<(GroupKey, Bucket, Vec<(String, i64)>, i32, u64)>,
    Vec<(String, String, Option<String>)>,
);

fn norm(e: &NodeEntry) -> Norm {
    let mut plain = e.plain.clone();
    plain.sort_by(|a, b| a.0.cmp(&b.0));
    let mut groups: Vec<_> = e
        .groups
        .iter()
        .map(|g| {
            let mut roles = g.roles.clone();
            roles.sort();
            (
                g.key.clone(),
                g.bucket.clone(),
                roles,
                g.max_priority,
                g.min_seq,
            )
        })
        .collect();
    groups.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    let pods = e
        .pods
        .iter()
        .map(|r| match &r.slot {
            Slot::Plain(i) => (
                r.pod.key.clone(),
                format!("plain {:?}", e.plain[*i].0),
                None,
            ),
            Slot::Member { group, task } => {
                assert!(Arc::ptr_eq(&task.pod, &r.pod));
                (
                    r.pod.key.clone(),
                    format!("group {:?}", e.groups[*group].key),
                    task.role.clone(),
                )
            }
        })
        .collect();
    (
        e.name.to_string(),
        e.generation,
        e.allocatable.clone(),
        plain,
        groups,
        pods,
    )
}

fn check(idx: &RunningIndex, snap: &Snapshot) {
    let f = {
        let mut f = RunningIndex::default();
        f.refresh(snap);
        f
    };
    assert_eq!(idx.total, f.total);
    assert_eq!(idx.plain, f.plain);
    assert_eq!(idx.groups, f.groups);
    let a: Vec<Norm> = idx.nodes.iter().map(norm).collect();
    let b: Vec<Norm> = f.nodes.iter().map(norm).collect();
    assert_eq!(a, b);
    let ma: Vec<(&GroupKey, &str)> = idx
        .members()
        .map(|(k, t)| (k, t.pod.key.as_str()))
        .collect();
    let mb: Vec<(&GroupKey, &str)> = f.members().map(|(k, t)| (k, t.pod.key.as_str())).collect();
    assert_eq!(ma, mb);
    for k in f.groups.keys() {
        assert_eq!(idx.first_member(snap, k), f.first_member(snap, k));
        let ta: Vec<String> = idx
            .members_of(snap, k)
            .into_iter()
            .map(|t| t.pod.key.clone())
            .collect();
        let tb: Vec<String> = f
            .members_of(snap, k)
            .into_iter()
            .map(|t| t.pod.key.clone())
            .collect();
        assert_eq!(ta, tb);
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// (node, kind, group, namespace, role, priority, cpu, gpu)
    Add(usize, u8, u8, u8, u8, i32, u8, bool),
    /// Removes the i-th live pod (modulo).
    Remove(usize),
    /// Re-adds the i-th live pod with another priority (a new `Arc`, same key).
    Update(usize, i32),
    /// Node allocatable changes (same node set).
    Alloc(usize, u8),
    /// A node leaves or comes (the node set changes).
    Toggle(usize),
    Refresh,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..5, 0u8..4, 0u8..3, 0u8..2, 0u8..3, 0i32..3, 0u8..3, any::<bool>())
            .prop_map(|(n, k, g, ns, r, p, c, gpu)| Op::Add(n, k, g, ns, r, p, c, gpu)),
        3 => any::<usize>().prop_map(Op::Remove),
        1 => (any::<usize>(), 0i32..4).prop_map(|(i, p)| Op::Update(i, p)),
        1 => (0usize..5, 1u8..4).prop_map(|(n, c)| Op::Alloc(n, c)),
        1 => (0usize..5).prop_map(Op::Toggle),
        3 => Just(Op::Refresh),
    ]
}

fn node_info(i: usize, cpu: u8) -> NodeInfo {
    node(&format!("n{i}"))
        .cpu(&format!("{}", 8 * cpu as u32))
        .mem("64Gi")
        .alloc("nvidia.com/gpu", "8")
        .info()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn in_place_node_updates_equal_a_fresh_build(ops in proptest::collection::vec(op(), 1..60)) {
        let mut snap = Snapshot::new();
        // Nodes 0..4 present at the start; node 4 comes and goes with Toggle.
        for i in 0..4 {
            snap.upsert_node(node_info(i, 1));
        }
        let mut idx = RunningIndex::default();
        idx.refresh(&snap);
        // Live pods: (key, node, builder).
        let mut live: Vec<(String, usize, corral_core::testutil::PodBuilder)> = Vec::new();
        let mut seq = 0u64;
        for o in ops {
            match o {
                Op::Add(n, kind, g, ns, role, prio, cpu, gpu) => {
                    seq += 1;
                    let name = format!("p{seq}");
                    let ns = ["a", "b"][ns as usize];
                    let mut b = pod(&name).ns(ns).priority(prio).seq(seq % 7);
                    if cpu > 0 {
                        b = b.cpu(&format!("{}00m", cpu)).mem("1Gi");
                    }
                    if gpu {
                        b = b.req("nvidia.com/gpu", "1");
                    }
                    match kind {
                        0 => {}
                        1 => b.0["metadata"]["annotations"][ANN_QUEUE_NAME] = serde_json::json!("q1"),
                        2 => b.0["metadata"]["annotations"][ANN_GROUP_NAME] = serde_json::json!(format!("g{g}")),
                        _ => b = b.label(LABEL_POD_GROUP, &format!("g{g}")),
                    }
                    if kind >= 2 && role > 0 {
                        b.0["metadata"]["annotations"][crate::objects::ANN_TASK_SPEC] =
                            serde_json::json!(["x", "y"][role as usize - 1]);
                    }
                    let key = format!("{ns}/{name}");
                    snap.add_pod(Arc::new(b.info()), &format!("n{n}"));
                    live.push((key, n, b));
                }
                Op::Remove(i) if !live.is_empty() => {
                    let (key, _, _) = live.remove(i % live.len());
                    snap.remove_pod(&key);
                }
                Op::Update(i, prio) if !live.is_empty() => {
                    let j = i % live.len();
                    let (_, n, b) = &mut live[j];
                    *b = b.clone().priority(prio);
                    snap.add_pod(Arc::new(b.info()), &format!("n{n}"));
                }
                Op::Alloc(n, cpu) if snap.node_index(&format!("n{n}")).is_some() => {
                    snap.upsert_node(node_info(n, cpu));
                }
                Op::Toggle(n) => {
                    let name = format!("n{n}");
                    if snap.node_index(&name).is_some() {
                        snap.remove_node(&name);
                    } else {
                        snap.upsert_node(node_info(n, 1));
                    }
                }
                Op::Refresh => {
                    idx.refresh(&snap);
                    check(&idx, &snap);
                }
                _ => {}
            }
        }
        idx.refresh(&snap);
        check(&idx, &snap);
    }
}

#[test]
fn a_swap_removed_pod_and_an_update_are_applied_in_place() {
    let mut snap = Snapshot::new();
    snap.upsert_node(node_info(0, 4));
    let add = |snap: &mut Snapshot, name: &str, group: Option<&str>, prio: i32| {
        let mut b = pod(name).cpu("1").mem("1Gi").priority(prio);
        if let Some(g) = group {
            b.0["metadata"]["annotations"][ANN_GROUP_NAME] = serde_json::json!(g);
        }
        snap.add_pod(Arc::new(b.info()), "n0");
    };
    for i in 0..40 {
        add(&mut snap, &format!("p{i}"), (i % 2 == 0).then_some("g"), i);
    }
    let mut idx = RunningIndex::default();
    idx.refresh(&snap);
    assert_eq!((idx.rebuilt, idx.updated), (1, 0));
    let g = (GroupApi::Volcano, "default/g".to_string());
    assert_eq!(idx.groups[&g].max_priority(), Some(38));
    // The highest-priority member leaves (the last pod moves into its place) and
    // another is replaced: the group's highest priority is recomputed.
    snap.remove_pod("default/p38");
    add(&mut snap, "p36", Some("g"), -1);
    idx.refresh(&snap);
    assert_eq!((idx.rebuilt, idx.updated), (0, 1));
    assert_eq!(idx.groups[&g].max_priority(), Some(34));
    assert_eq!(idx.groups[&g].bucket.pods, 19);
    check(&idx, &snap);
    // Every member leaves: the group is gone from the node and the index.
    for i in (0..40).step_by(2) {
        snap.remove_pod(&format!("default/p{i}"));
    }
    idx.refresh(&snap);
    assert!(!idx.groups.contains_key(&g));
    assert!(idx.nodes[0].groups.is_empty());
    check(&idx, &snap);
}
