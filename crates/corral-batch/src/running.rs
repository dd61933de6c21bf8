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
//! - for **gang members**: per PodGroup, aggregates kept incrementally
//!   ([`GroupAgg`]: member count, requests, members per task-spec role, highest
//!   priority, lowest seq, the nodes holding members) — all a job with nothing
//!   pending needs — and their `Task`s (requests as `ResMap`, role, membership),
//!   built once per pod and cloned into a session's job only when that job needs
//!   them ([`RunningIndex::members_of`]: it has pending tasks; or preempt/reclaim
//!   needs victims). A member's PodGroup key ("ns/name") and a plain pod's (queue,
//!   namespace) bucket are matched borrowed against the node's existing keys: a key
//!   is built once per (node, group) or (node, queue, namespace), not per pod.
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

/// A PodGroup's key: its API and "ns/name".
pub type GroupKey = (GroupApi, String);

/// The running members of one PodGroup on one node.
struct NodeGroup {
    key: GroupKey,
    bucket: Bucket,
    /// Members per task-spec role (`""`: none).
    roles: Vec<(String, i64)>,
    max_priority: i32,
    min_seq: u64,
}

/// The running members of one PodGroup over all nodes, kept incrementally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupAgg {
    /// Requests summed exactly, and the member count.
    pub bucket: Bucket,
    /// Members per task-spec role (`""`: no role, as [`Task::has_role`]).
    pub roles: BTreeMap<String, i64>,
    /// Multiset of the per-node highest member priorities.
    priorities: BTreeMap<i32, i64>,
    /// Multiset of the per-node lowest member seqs.
    seqs: BTreeMap<u64, i64>,
    /// Nodes holding members.
    nodes: BTreeMap<Arc<str>, ()>,
}

/// Adds `sign` to the count of `k` in a multiset (absent at zero).
fn count<K: Ord>(m: &mut BTreeMap<K, i64>, k: K, sign: i64) {
    use std::collections::btree_map::Entry;
    match m.entry(k) {
        Entry::Occupied(mut o) => {
            *o.get_mut() += sign;
            if *o.get() == 0 {
                o.remove();
            }
        }
        Entry::Vacant(v) => {
            v.insert(sign);
        }
    }
}

impl GroupAgg {
    /// The highest priority of a running member.
    pub fn max_priority(&self) -> Option<i32> {
        self.priorities.keys().next_back().copied()
    }
    /// The lowest seq of a running member.
    pub fn min_seq(&self) -> Option<u64> {
        self.seqs.keys().next().copied()
    }
    fn merge(&mut self, node: &Arc<str>, g: &NodeGroup, sign: i64) {
        self.bucket.req.merge(&g.bucket.req, sign);
        self.bucket.pods += sign * g.bucket.pods;
        for (r, n) in &g.roles {
            match self.roles.get_mut(r) {
                Some(v) => {
                    *v += sign * n;
                    if *v == 0 {
                        self.roles.remove(r);
                    }
                }
                None => {
                    self.roles.insert(r.clone(), sign * n);
                }
            }
        }
        count(&mut self.priorities, g.max_priority, sign);
        count(&mut self.seqs, g.min_seq, sign);
        if sign > 0 {
            self.nodes.insert(node.clone(), ());
        } else {
            self.nodes.remove(node);
        }
    }
}

/// One node's contribution.
struct NodeEntry {
    name: Arc<str>,
    generation: u64,
    allocatable: Resources,
    plain: Vec<(PlainKey, Bucket)>,
    members: Vec<Member>,
    /// Members' aggregates per PodGroup.
    groups: Vec<NodeGroup>,
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
        let mut groups: Vec<NodeGroup> = Vec::new();
        for p in &n.pods {
            // Group keys are compared borrowed: one "ns/name" String per (node,
            // group), not per pod.
            let b = if let Some((api, g)) = membership_ref(p) {
                let gi = match groups
                    .iter()
                    .position(|ng| ng.key.0 == api && is_group_key(&ng.key.1, &p.namespace, g))
                {
                    Some(gi) => gi,
                    None => {
                        groups.push(NodeGroup {
                            key: (api, format!("{}/{g}", p.namespace)),
                            bucket: Bucket::default(),
                            roles: Vec::new(),
                            max_priority: p.priority,
                            min_seq: p.seq,
                        });
                        groups.len() - 1
                    }
                };
                let task = Task::new(p.clone());
                let ng = &mut groups[gi];
                ng.max_priority = ng.max_priority.max(p.priority);
                ng.min_seq = ng.min_seq.min(p.seq);
                let role = task.role.as_deref().unwrap_or("");
                match ng.roles.iter_mut().find(|(r, _)| r == role) {
                    Some((_, n)) => *n += 1,
                    None => ng.roles.push((role.to_string(), 1)),
                }
                members.push(Member { group: gi, task });
                &mut groups[gi].bucket
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
    groups: HashMap<GroupKey, GroupAgg>,
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
        account(&mut self.total, &mut self.plain, &mut self.groups, e, sign);
    }
}

/// Adds (`sign` 1) or removes (`sign` -1) a node's contribution to the totals.
fn account(
    total: &mut Acc,
    plain: &mut HashMap<PlainKey, Bucket>,
    groups: &mut HashMap<GroupKey, GroupAgg>,
    e: &NodeEntry,
    sign: i64,
) {
    total.add_resources(&e.allocatable, sign);
    merge_buckets(plain, &e.plain, sign);
    for g in &e.groups {
        let t = match groups.get_mut(&g.key) {
            Some(t) => t,
            None => groups.entry(g.key.clone()).or_default(),
        };
        t.merge(&e.name, g, sign);
        if t.bucket.pods == 0 {
            groups.remove(&g.key);
        }
    }
}

impl RunningIndex {
    /// Brings the index up to date with `snap`: only nodes whose generation changed
    /// (or that were added) are rebuilt, in parallel.
    pub fn refresh(&mut self, snap: &Snapshot) {
        let nodes = snap.nodes();
        if self.nodes_version == Some(snap.nodes_version()) && self.nodes.len() == nodes.len() {
            // Same nodes in the same order: stale entries are replaced in place (a
            // session over an unchanged cluster moves no entry).
            let changed: Vec<usize> = (0..nodes.len())
                .filter(|&i| {
                    let e = &self.nodes[i];
                    e.generation != nodes[i].generation || e.name != nodes[i].name
                })
                .collect();
            self.rebuilt = changed.len();
            let fresh: Vec<(usize, NodeEntry)> = changed
                .into_par_iter()
                .map(|i| (i, NodeEntry::build(&nodes[i])))
                .collect();
            for (i, e) in fresh {
                account(
                    &mut self.total,
                    &mut self.plain,
                    &mut self.groups,
                    &self.nodes[i],
                    -1,
                );
                self.account(&e, 1);
                self.nodes[i] = e;
            }
            return;
        }
        // Node set or order changed: re-key the entries by name.
        let mut old: HashMap<Arc<str>, NodeEntry> =
            self.nodes.drain(..).map(|e| (e.name.clone(), e)).collect();
        let mut slots: Vec<Option<NodeEntry>> = nodes.iter().map(|n| old.remove(&n.name)).collect();
        for e in old.into_values() {
            self.account(&e, -1);
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

    /// Running gang members' aggregates per PodGroup.
    pub fn groups(&self) -> impl Iterator<Item = (&GroupKey, &GroupAgg)> {
        self.groups.iter()
    }

    /// The entry of node `name`, expected at `snap`'s index of that node.
    fn entry(&self, snap: &Snapshot, name: &str) -> Option<(usize, &NodeEntry)> {
        let i = snap.node_index(name);
        match i.and_then(|i| self.nodes.get(i)) {
            Some(e) if &*e.name == name => i.map(|i| (i, e)),
            // The index is refreshed for `snap` at open; a mismatch would mean a
            // node set change since: find the entry by name.
            _ => self
                .nodes
                .iter()
                .enumerate()
                .find(|(_, e)| &*e.name == name),
        }
    }

    /// The nodes holding members of `key`, as (entry index, entry), in order.
    fn group_nodes(&self, snap: &Snapshot, key: &GroupKey) -> Vec<(usize, &NodeEntry)> {
        let Some(g) = self.groups.get(key) else {
            return Vec::new();
        };
        let mut v: Vec<(usize, &NodeEntry)> =
            g.nodes.keys().filter_map(|n| self.entry(snap, n)).collect();
        v.sort_unstable_by_key(|(i, _)| *i);
        v
    }

    /// The running members of PodGroup `key` as tasks, in snapshot order (as
    /// [`RunningIndex::members`] yields them), touching only the nodes that hold
    /// them. `snap` is the snapshot the index was last refreshed with.
    pub fn members_of(&self, snap: &Snapshot, key: &GroupKey) -> Vec<Task> {
        let mut out = Vec::new();
        for (_, e) in self.group_nodes(snap, key) {
            let Some(gi) = e.groups.iter().position(|g| g.key == *key) else {
                continue;
            };
            out.extend(
                e.members
                    .iter()
                    .filter(|m| m.group == gi)
                    .map(|m| m.task.clone()),
            );
        }
        out
    }

    /// Where PodGroup `key`'s first member comes in [`RunningIndex::members`]'
    /// order: (node index, position among the node's members).
    pub fn first_member(&self, snap: &Snapshot, key: &GroupKey) -> Option<(usize, usize)> {
        let (i, e) = self.group_nodes(snap, key).into_iter().next()?;
        let gi = e.groups.iter().position(|g| g.key == *key)?;
        e.members.iter().position(|m| m.group == gi).map(|p| (i, p))
    }

    /// Running gang members (their PodGroup and task) in snapshot order (nodes in
    /// order, pods in node order).
    pub fn members(&self) -> impl Iterator<Item = (&GroupKey, &Task)> {
        self.nodes
            .iter()
            .flat_map(|e| e.members.iter().map(|m| (&e.groups[m.group].key, &m.task)))
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
            .map(|((a, k), g)| {
                (
                    *a,
                    k.clone(),
                    g.bucket.pods,
                    g.bucket.req.to_resmap().get("cpu"),
                )
            })
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
