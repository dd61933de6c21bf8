//! Running-pod index for batch sessions: what `Session::open` needs from the pods
//! already running in the snapshot, kept across sessions and updated only for the
//! nodes that changed since the previous session.
//!
//! A session needs from running pods:
//! - for **plain** pods (no PodGroup): only aggregates — each is a one-pod job with
//!   nothing pending, which no action schedules, orders or reports, but whose
//!   requests count towards its queue's `allocated`/`request`, the namespace's
//!   `ns_used`/`ns_pods` and the cluster's `used`. The index keeps their requests
//!   summed per (queue annotation, namespace). The jobs themselves are built only
//!   when preempt/reclaim has a preemptor and needs victims
//!   ([`super::session::Session::materialize_running`]).
//! - for **gang members**: their `Task`s (requests as `ResMap`, role, membership),
//!   built once per pod and cloned into the session's jobs. A member's PodGroup key
//!   ("ns/name") and a plain pod's (queue, namespace) bucket are matched borrowed
//!   against the node's existing keys: a key is built once per (node, group) or
//!   (node, queue, namespace), not per pod.
//! - the cluster's allocatable total.
//!
//! Per node the index stores that node's contribution, stamped with the node's
//! generation (every snapshot change to a node re-stamps it), and keeps the totals
//! incrementally: a session over an unchanged cluster of 5,000 nodes compares 5,000
//! stamps. Sums are exact: [`Acc`] counts, per dimension, how many summands named it,
//! so the result equals adding the summands' `ResMap`s one by one.
//!
//! The index belongs to one snapshot lineage (it travels in
//! [`super::session::Carry`] with the scheduler whose snapshot it describes).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rayon::prelude::*;

use super::objects::{ANN_QUEUE_NAME, GroupApi};
use super::res::ResMap;
use super::session::{Task, annotations, is_group_key, membership_ref};
use crate::resources::Resources;
use crate::snapshot::{NodeInfo, Snapshot};

/// Exact running sum of `ResMap::from_resources` vectors: per dimension the sum and
/// the number of summands that had it (a dimension is present while any has it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acc(BTreeMap<String, (i64, i64)>);

impl Acc {
    fn put(&mut self, k: &str, v: i64, sign: i64) {
        if v == 0 {
            return;
        }
        match self.0.get_mut(k) {
            Some(e) => {
                e.0 += sign * v;
                e.1 += sign;
                if e.1 == 0 {
                    self.0.remove(k);
                }
            }
            None => {
                self.0.insert(k.to_string(), (sign * v, sign));
            }
        }
    }

    /// Adds (`sign` 1) or removes (`sign` -1) `ResMap::from_resources(r)`.
    pub fn add_resources(&mut self, r: &Resources, sign: i64) {
        self.put("cpu", r.milli_cpu, sign);
        self.put("memory", r.memory, sign);
        self.put("ephemeral-storage", r.ephemeral_storage, sign);
        for (n, v) in &r.scalar {
            self.put(n, *v, sign);
        }
    }

    /// Adds (`sign` 1) or removes (`sign` -1) every summand of `o`.
    pub fn merge(&mut self, o: &Acc, sign: i64) {
        for (k, (v, n)) in &o.0 {
            match self.0.get_mut(k) {
                Some(e) => {
                    e.0 += sign * v;
                    e.1 += sign * n;
                    if e.1 == 0 {
                        self.0.remove(k);
                    }
                }
                None => {
                    self.0.insert(k.clone(), (sign * v, sign * n));
                }
            }
        }
    }

    pub fn to_resmap(&self) -> ResMap {
        ResMap(
            self.0
                .iter()
                .filter(|(_, (_, n))| *n > 0)
                .map(|(k, (v, _))| (k.clone(), *v))
                .collect(),
        )
    }
}

/// Plain running pods of one (queue annotation, namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bucket {
    pub req: Acc,
    pub pods: i64,
}

/// `volcano.sh/queue-name` annotation (None: default queue) and namespace.
pub type PlainKey = (Option<String>, String);

/// A running gang member: its PodGroup (an index into its node's `groups`) and task.
#[derive(Debug, Clone)]
struct Member {
    group: usize,
    task: Task,
}

/// One node's contribution.
struct NodeEntry {
    name: Arc<str>,
    generation: u64,
    allocatable: Resources,
    plain: Vec<(PlainKey, Bucket)>,
    members: Vec<Member>,
    /// Members' requests per PodGroup.
    groups: Vec<((GroupApi, String), Bucket)>,
}

/// Adds `r` to the bucket of `key` in a short list.
fn bucket<K: PartialEq>(list: &mut Vec<(K, Bucket)>, key: K) -> &mut Bucket {
    match list.iter().position(|(k, _)| *k == key) {
        Some(i) => &mut list[i].1,
        None => {
            list.push((key, Bucket::default()));
            &mut list.last_mut().expect("just pushed").1
        }
    }
}

impl NodeEntry {
    fn build(n: &NodeInfo) -> NodeEntry {
        let mut plain: Vec<(PlainKey, Bucket)> = Vec::new();
        let mut members = Vec::new();
        let mut groups: Vec<((GroupApi, String), Bucket)> = Vec::new();
        for p in &n.pods {
            // Group keys are compared borrowed: one "ns/name" String per (node,
            // group), not per pod.
            let b = if let Some((api, g)) = membership_ref(p) {
                let gi = match groups
                    .iter()
                    .position(|((a, k), _)| *a == api && is_group_key(k, &p.namespace, g))
                {
                    Some(gi) => gi,
                    None => {
                        let key = (api, format!("{}/{g}", p.namespace));
                        groups.push((key, Bucket::default()));
                        groups.len() - 1
                    }
                };
                members.push(Member {
                    group: gi,
                    task: Task::new(p.clone()),
                });
                &mut groups[gi].1
            } else {
                let queue = annotations(p).and_then(|a| a.get(ANN_QUEUE_NAME));
                match plain
                    .iter()
                    .position(|((q, ns), _)| q.as_ref() == queue && *ns == p.namespace)
                {
                    Some(i) => &mut plain[i].1,
                    None => bucket(&mut plain, (queue.cloned(), p.namespace.clone())),
                }
            };
            b.req.add_resources(&p.requests.requests, 1);
            b.pods += 1;
        }
        NodeEntry {
            name: n.name.clone(),
            generation: n.generation,
            allocatable: n.allocatable.clone(),
            plain,
            members,
            groups,
        }
    }
}

/// See the module docs.
#[derive(Default)]
pub struct RunningIndex {
    /// `Snapshot::nodes_version` the entries are indexed for (`None`: empty).
    nodes_version: Option<u64>,
    nodes: Vec<NodeEntry>,
    total: Acc,
    plain: HashMap<PlainKey, Bucket>,
    groups: HashMap<(GroupApi, String), Bucket>,
    /// Nodes rebuilt by the last [`RunningIndex::refresh`] (for tests and stats).
    pub rebuilt: usize,
}

fn merge_buckets<K: std::hash::Hash + Eq + Clone>(
    into: &mut HashMap<K, Bucket>,
    from: &[(K, Bucket)],
    sign: i64,
) {
    for (k, b) in from {
        let t = into.entry(k.clone()).or_default();
        t.req.merge(&b.req, sign);
        t.pods += sign * b.pods;
        if t.pods == 0 {
            into.remove(k);
        }
    }
}

impl RunningIndex {
    fn account(&mut self, e: &NodeEntry, sign: i64) {
        self.total.add_resources(&e.allocatable, sign);
        merge_buckets(&mut self.plain, &e.plain, sign);
        merge_buckets(&mut self.groups, &e.groups, sign);
    }
}

impl RunningIndex {
    /// Brings the index up to date with `snap`: only nodes whose generation changed
    /// (or that were added) are rebuilt, in parallel.
    pub fn refresh(&mut self, snap: &Snapshot) {
        let nodes = snap.nodes();
        let mut slots: Vec<Option<NodeEntry>>;
        if self.nodes_version == Some(snap.nodes_version()) && self.nodes.len() == nodes.len() {
            slots = self.nodes.drain(..).map(Some).collect();
        } else {
            // Node set or order changed: re-key the entries by name.
            let mut old: HashMap<Arc<str>, NodeEntry> =
                self.nodes.drain(..).map(|e| (e.name.clone(), e)).collect();
            slots = nodes.iter().map(|n| old.remove(&n.name)).collect();
            for e in old.into_values() {
                self.account(&e, -1);
            }
        }
        // Stale entries leave the totals; their nodes are rebuilt.
        let mut changed = Vec::new();
        for (i, slot) in slots.iter_mut().enumerate() {
            let n = &nodes[i];
            if let Some(e) = slot
                && (e.generation != n.generation || e.name != n.name)
            {
                self.account(e, -1);
                *slot = None;
            }
            if slot.is_none() {
                changed.push(i);
            }
        }
        self.rebuilt = changed.len();
        let fresh: Vec<(usize, NodeEntry)> = changed
            .into_par_iter()
            .map(|i| (i, NodeEntry::build(&nodes[i])))
            .collect();
        for (i, e) in fresh {
            self.account(&e, 1);
            slots[i] = Some(e);
        }
        self.nodes = slots.into_iter().flatten().collect();
        self.nodes_version = Some(snap.nodes_version());
    }

    /// Sum of the nodes' allocatable (as `ResMap::from_resources` each, added).
    pub fn total(&self) -> ResMap {
        self.total.to_resmap()
    }

    /// Plain running pods by (queue annotation, namespace), in a stable order.
    pub fn plain(&self) -> Vec<(&PlainKey, &Bucket)> {
        let mut v: Vec<_> = self.plain.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// Running gang members' requests per PodGroup.
    pub fn groups(&self) -> impl Iterator<Item = (&(GroupApi, String), &Bucket)> {
        self.groups.iter()
    }

    /// Running gang members (their PodGroup and task) in snapshot order (nodes in
    /// order, pods in node order).
    pub fn members(&self) -> impl Iterator<Item = (&(GroupApi, String), &Task)> {
        self.nodes
            .iter()
            .flat_map(|e| e.members.iter().map(|m| (&e.groups[m.group].0, &m.task)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::ANN_GROUP_NAME;
    use crate::testutil::{node, pod};

    /// The index built from scratch over `snap`.
    fn fresh(snap: &Snapshot) -> RunningIndex {
        let mut i = RunningIndex::default();
        i.refresh(snap);
        i
    }

    fn same(a: &RunningIndex, b: &RunningIndex) {
        assert_eq!(a.total, b.total);
        assert_eq!(a.plain, b.plain);
        assert_eq!(a.groups, b.groups);
        let ka: Vec<&str> = a.members().map(|(_, t)| t.pod.key.as_str()).collect();
        let kb: Vec<&str> = b.members().map(|(_, t)| t.pod.key.as_str()).collect();
        assert_eq!(ka, kb);
    }

    #[test]
    fn members_are_grouped_by_api_namespace_and_name_without_per_pod_keys() {
        use crate::objects::LABEL_POD_GROUP;
        let mut snap = Snapshot::new();
        snap.upsert_node(node("n0").cpu("64").mem("64Gi").info());
        // Same group name "a" in two namespaces and in both APIs, interleaved, plus
        // a group "ab" whose key shares a prefix with "a".
        let specs = [
            ("x", "a", false),
            ("y", "a", false),
            ("x", "a", true),
            ("x", "ab", false),
            ("x", "a", false),
            ("y", "a", false),
        ];
        for (i, (ns, g, cosched)) in specs.iter().enumerate() {
            let mut b = pod(&format!("p{i}"))
                .ns(ns)
                .cpu("1")
                .mem("1Gi")
                .seq(i as u64);
            if *cosched {
                b = b.label(LABEL_POD_GROUP, g);
            } else {
                b.0["metadata"]["annotations"][ANN_GROUP_NAME] = serde_json::json!(g);
            }
            snap.add_pod(Arc::new(b.info()), "n0");
        }
        let idx = fresh(&snap);
        let got: Vec<(GroupApi, &str, &str)> = idx
            .members()
            .map(|((api, k), t)| (*api, k.as_str(), t.pod.key.as_str()))
            .collect();
        let v = GroupApi::Volcano;
        let c = GroupApi::Coscheduling;
        assert_eq!(
            got,
            [
                (v, "x/a", "x/p0"),
                (v, "y/a", "y/p1"),
                (c, "x/a", "x/p2"),
                (v, "x/ab", "x/p3"),
                (v, "x/a", "x/p4"),
                (v, "y/a", "y/p5"),
            ]
        );
        let mut pods: Vec<(GroupApi, String, i64, i64)> = idx
            .groups()
            .map(|((a, k), b)| (*a, k.clone(), b.pods, b.req.to_resmap().get("cpu")))
            .collect();
        pods.sort_by_key(|e| (format!("{:?}", e.0), e.1.clone()));
        assert_eq!(
            pods,
            [
                (c, "x/a".to_string(), 1, 1_000),
                (v, "x/a".to_string(), 2, 2_000),
                (v, "x/ab".to_string(), 1, 1_000),
                (v, "y/a".to_string(), 2, 2_000),
            ]
        );
        assert!(idx.plain.is_empty());
    }

    #[test]
    fn refresh_rebuilds_only_changed_nodes_and_matches_a_fresh_build() {
        let mut snap = Snapshot::new();
        for i in 0..4 {
            snap.upsert_node(node(&format!("n{i}")).cpu("8").mem("8Gi").info());
        }
        let mut seq = 0;
        let mut add = |snap: &mut Snapshot, name: &str, n: &str, group: bool| {
            seq += 1;
            let mut b = pod(name).cpu("1").mem("1Gi").seq(seq);
            if group {
                b.0["metadata"]["annotations"][ANN_GROUP_NAME] = serde_json::json!("g");
            }
            snap.add_pod(Arc::new(b.info()), n);
        };
        for i in 0..8 {
            add(
                &mut snap,
                &format!("p{i}"),
                &format!("n{}", i % 4),
                i % 3 == 0,
            );
        }
        let mut idx = fresh(&snap);
        assert_eq!(idx.rebuilt, 4);
        assert_eq!(idx.total().get("cpu"), 32_000);
        let b = &idx.plain[&(None, "default".to_string())];
        assert_eq!((b.pods, b.req.to_resmap().get("cpu")), (5, 5_000));
        assert_eq!(idx.members().count(), 3);

        idx.refresh(&snap);
        assert_eq!(idx.rebuilt, 0, "nothing changed");

        add(&mut snap, "late", "n2", false);
        snap.remove_pod("default/p0");
        idx.refresh(&snap);
        assert_eq!(idx.rebuilt, 2, "n0 and n2 changed");
        same(&idx, &fresh(&snap));

        // Node set changes: entries are re-keyed by name, removed nodes leave.
        snap.remove_node("n1");
        snap.upsert_node(node("n9").cpu("2").mem("1Gi").info());
        idx.refresh(&snap);
        same(&idx, &fresh(&snap));
        assert_eq!(idx.total().get("cpu"), 26_000);

        // Removing every plain pod of a bucket removes the bucket.
        for k in ["p1", "p2", "p4", "p5", "p7", "late"] {
            snap.remove_pod(&format!("default/{k}"));
        }
        idx.refresh(&snap);
        same(&idx, &fresh(&snap));
        assert!(idx.plain.is_empty(), "{:?}", idx.plain);
    }

    #[test]
    fn acc_equals_adding_resmaps_one_by_one() {
        let rs = [
            Resources {
                milli_cpu: 500,
                memory: 0,
                ..Resources::default()
            },
            Resources {
                milli_cpu: 0,
                memory: 7,
                scalar: vec![(Arc::from("nvidia.com/gpu"), 1)],
                ..Resources::default()
            },
            Resources::default(),
        ];
        let mut acc = Acc::default();
        let mut sum = ResMap::default();
        for r in &rs {
            acc.add_resources(r, 1);
            sum.add(&ResMap::from_resources(r));
        }
        assert_eq!(acc.to_resmap(), sum);
        acc.add_resources(&rs[1], -1);
        assert_eq!(acc.to_resmap(), ResMap::from_resources(&rs[0]));
    }
}
