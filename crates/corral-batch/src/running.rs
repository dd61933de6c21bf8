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
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use super::objects::{ANN_QUEUE_NAME, GroupApi};
use super::res::ResMap;
use super::session::{RunningSummary, Task, annotations, is_group_key, membership_ref};
use crate::resources::Resources;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

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

/// What one running pod of a node contributes to: a plain bucket (an index into
/// its node's `plain`) or, for a gang member, its PodGroup (an index into the node's
/// `groups`) and its task.
#[derive(Debug, Clone)]
enum Slot {
    Plain(usize),
    Member { group: usize, task: Task },
}

/// One running pod of a node (in the node's pod order) and what it counts towards.
/// The `Arc` is held, so pointer identity tells an unchanged pod from a new one
/// across refreshes.
#[derive(Debug, Clone)]
struct PodRec {
    pod: Arc<PodInfo>,
    slot: Slot,
}

/// A PodGroup's key: its API and "ns/name".
pub type GroupKey = (GroupApi, String);

/// The running members of one PodGroup on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeGroup {
    key: GroupKey,
    bucket: Bucket,
    /// Members per task-spec role (`""`: none).
    roles: Vec<(String, i64)>,
    max_priority: i32,
    min_seq: u64,
}

/// The running members of one PodGroup over all nodes, kept incrementally.
#[derive(Debug, Clone, Default)]
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
    /// [`GroupAgg::summary`], built on first use after a change (a warm session
    /// shares it instead of building a summary per running group).
    summary: OnceLock<Arc<RunningSummary>>,
}

impl PartialEq for GroupAgg {
    /// The aggregates (not whether the summary was built yet).
    fn eq(&self, o: &GroupAgg) -> bool {
        self.bucket == o.bucket
            && self.roles == o.roles
            && self.priorities == o.priorities
            && self.seqs == o.seqs
            && self.nodes == o.nodes
    }
}

impl Eq for GroupAgg {}

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
    /// The running members as a job's [`RunningSummary`] (count, members per
    /// role, requests), shared until the group's running members change.
    pub fn summary(&self) -> Arc<RunningSummary> {
        self.summary
            .get_or_init(|| {
                Arc::new(RunningSummary {
                    count: self.bucket.pods.max(0) as usize,
                    roles: self
                        .roles
                        .iter()
                        .map(|(r, n)| (r.clone(), (*n).max(0) as usize))
                        .collect(),
                    alloc: self.bucket.req.to_resmap(),
                })
            })
            .clone()
    }

    fn merge(&mut self, node: &Arc<str>, g: &NodeGroup, sign: i64) {
        self.summary = OnceLock::new();
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
    /// Members' aggregates per PodGroup.
    groups: Vec<NodeGroup>,
    /// The node's pods, in the node's order.
    pods: Vec<PodRec>,
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

/// Where a pod goes on its node: a plain bucket or a PodGroup (indices).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Plain(usize),
    Group(usize),
}

impl NodeEntry {
    /// The node's gang members (their group's index and task), in pod order.
    fn members(&self) -> impl Iterator<Item = (usize, &Task)> {
        self.pods.iter().filter_map(|r| match &r.slot {
            Slot::Member { group, task } => Some((*group, task)),
            Slot::Plain(_) => None,
        })
    }

    fn build(n: &NodeInfo) -> NodeEntry {
        let mut e = NodeEntry {
            name: n.name.clone(),
            generation: n.generation,
            allocatable: n.allocatable.clone(),
            plain: Vec::new(),
            groups: Vec::new(),
            pods: Vec::with_capacity(n.pods.len()),
        };
        for p in &n.pods {
            let t = e.target(p);
            let slot = e.add(p, t);
            e.pods.push(PodRec {
                pod: p.clone(),
                slot,
            });
        }
        e
    }

    /// The bucket or group `p` counts towards, created (empty) when new. Group keys
    /// are compared borrowed: one "ns/name" String per (node, group), not per pod.
    fn target(&mut self, p: &PodInfo) -> Target {
        if let Some((api, g)) = membership_ref(p) {
            let gi = match self
                .groups
                .iter()
                .position(|ng| ng.key.0 == api && is_group_key(&ng.key.1, &p.namespace, g))
            {
                Some(gi) => gi,
                None => {
                    self.groups.push(NodeGroup {
                        key: (api, format!("{}/{g}", p.namespace)),
                        bucket: Bucket::default(),
                        roles: Vec::new(),
                        max_priority: p.priority,
                        min_seq: p.seq,
                    });
                    self.groups.len() - 1
                }
            };
            Target::Group(gi)
        } else {
            let queue = annotations(p).and_then(|a| a.get(ANN_QUEUE_NAME));
            let i = match self
                .plain
                .iter()
                .position(|((q, ns), _)| q.as_ref() == queue && *ns == p.namespace)
            {
                Some(i) => i,
                None => {
                    bucket(&mut self.plain, (queue.cloned(), p.namespace.clone()));
                    self.plain.len() - 1
                }
            };
            Target::Plain(i)
        }
    }

    /// Adds pod `p` to `t` (from [`NodeEntry::target`]); returns its slot.
    fn add(&mut self, p: &Arc<PodInfo>, t: Target) -> Slot {
        match t {
            Target::Group(gi) => {
                let task = Task::new(p.clone());
                let ng = &mut self.groups[gi];
                ng.max_priority = ng.max_priority.max(p.priority);
                ng.min_seq = ng.min_seq.min(p.seq);
                let role = task.role.as_deref().unwrap_or("");
                match ng.roles.iter_mut().find(|(r, _)| r == role) {
                    Some((_, n)) => *n += 1,
                    None => ng.roles.push((role.to_string(), 1)),
                }
                ng.bucket.req.add_resources(&p.requests.requests, 1);
                ng.bucket.pods += 1;
                Slot::Member { group: gi, task }
            }
            Target::Plain(i) => {
                let b = &mut self.plain[i].1;
                b.req.add_resources(&p.requests.requests, 1);
                b.pods += 1;
                Slot::Plain(i)
            }
        }
    }

    /// Takes pod `r` out of its bucket or group (its group's highest priority and
    /// lowest seq are left for [`NodeEntry::recompute`]).
    fn remove(&mut self, r: &PodRec) {
        match &r.slot {
            Slot::Plain(i) => {
                let b = &mut self.plain[*i].1;
                b.req.add_resources(&r.pod.requests.requests, -1);
                b.pods -= 1;
            }
            Slot::Member { group, task } => {
                let ng = &mut self.groups[*group];
                ng.bucket.req.add_resources(&r.pod.requests.requests, -1);
                ng.bucket.pods -= 1;
                let role = task.role.as_deref().unwrap_or("");
                if let Some(i) = ng.roles.iter().position(|(r, _)| r == role) {
                    ng.roles[i].1 -= 1;
                    if ng.roles[i].1 == 0 {
                        ng.roles.swap_remove(i);
                    }
                }
            }
        }
    }

    /// Recomputes the highest priority and lowest seq of the groups in `touched`.
    fn recompute(&mut self, touched: &[usize]) {
        for &gi in touched {
            let mut prio = None::<i32>;
            let mut seq = None::<u64>;
            for r in &self.pods {
                if let Slot::Member { group, .. } = r.slot
                    && group == gi
                {
                    prio = Some(prio.map_or(r.pod.priority, |v| v.max(r.pod.priority)));
                    seq = Some(seq.map_or(r.pod.seq, |v| v.min(r.pod.seq)));
                }
            }
            if let (Some(p), Some(s)) = (prio, seq) {
                let ng = &mut self.groups[gi];
                ng.max_priority = p;
                ng.min_seq = s;
            }
        }
    }

    /// Drops empty buckets and groups (a fresh build has none) and renumbers the
    /// pods' slots.
    fn compact(&mut self) {
        let mut map_plain = Vec::new();
        if self.plain.iter().any(|(_, b)| b.pods == 0) {
            let mut next = 0;
            map_plain = self
                .plain
                .iter()
                .map(|(_, b)| {
                    let m = next;
                    next += usize::from(b.pods != 0);
                    m
                })
                .collect();
            self.plain.retain(|(_, b)| b.pods != 0);
        }
        let mut map_group = Vec::new();
        if self.groups.iter().any(|g| g.bucket.pods == 0) {
            let mut next = 0;
            map_group = self
                .groups
                .iter()
                .map(|g| {
                    let m = next;
                    next += usize::from(g.bucket.pods != 0);
                    m
                })
                .collect();
            self.groups.retain(|g| g.bucket.pods != 0);
        }
        if map_plain.is_empty() && map_group.is_empty() {
            return;
        }
        for r in &mut self.pods {
            match &mut r.slot {
                Slot::Plain(i) if !map_plain.is_empty() => *i = map_plain[*i],
                Slot::Member { group, .. } if !map_group.is_empty() => *group = map_group[*group],
                _ => {}
            }
        }
    }

    /// Brings the entry up to date with `n` by applying only the pods added to and
    /// removed from the node since the entry was built or last updated (pods are
    /// told apart by `Arc` identity: an updated pod is a new `Arc`), and the totals
    /// with it: only the buckets and groups those pods count towards are taken out
    /// of `into` and put back. Equals [`NodeEntry::build`] of `n` up to the order of
    /// the node's buckets, groups and roles.
    fn update(&mut self, n: &NodeInfo, into: &mut Totals<'_>) {
        self.generation = n.generation;
        if self.allocatable != n.allocatable {
            into.total.add_resources(&self.allocatable, -1);
            into.total.add_resources(&n.allocatable, 1);
            self.allocatable = n.allocatable.clone();
        }
        let k = self
            .pods
            .iter()
            .zip(&n.pods)
            .take_while(|(r, p)| Arc::ptr_eq(&r.pod, p))
            .count();
        if k == self.pods.len() && k == n.pods.len() {
            return;
        }
        // Match the tails by identity (pods move when one is swap-removed).
        let mut old: Vec<Option<PodRec>> = self.pods.drain(k..).map(Some).collect();
        let by_ptr: Option<HashMap<*const PodInfo, usize>> = (old.len() > 32).then(|| {
            old.iter()
                .enumerate()
                .map(|(i, r)| (Arc::as_ptr(&r.as_ref().expect("all present").pod), i))
                .collect()
        });
        let mut kept: Vec<Option<PodRec>> = Vec::with_capacity(n.pods.len() - k);
        for p in &n.pods[k..] {
            let i = match &by_ptr {
                Some(m) => m.get(&Arc::as_ptr(p)).copied(),
                None => old
                    .iter()
                    .position(|r| r.as_ref().is_some_and(|r| Arc::ptr_eq(&r.pod, p))),
            };
            kept.push(i.and_then(|i| old[i].take()));
        }
        // Buckets and groups the change touches (existing or new).
        let mut plain_t: Vec<usize> = Vec::new();
        let mut group_t: Vec<usize> = Vec::new();
        let mut mark = |t: Target| match t {
            Target::Plain(i) if !plain_t.contains(&i) => plain_t.push(i),
            Target::Group(i) if !group_t.contains(&i) => group_t.push(i),
            _ => {}
        };
        for r in old.iter().flatten() {
            mark(match r.slot {
                Slot::Plain(i) => Target::Plain(i),
                Slot::Member { group, .. } => Target::Group(group),
            });
        }
        let mut targets: Vec<Option<Target>> = Vec::with_capacity(kept.len());
        for (p, r) in n.pods[k..].iter().zip(&kept) {
            targets.push(match r {
                Some(_) => None,
                None => {
                    let t = self.target(p);
                    mark(t);
                    Some(t)
                }
            });
        }
        into.put(self, &plain_t, &group_t, -1);
        for r in old.iter().flatten() {
            self.remove(r);
        }
        for ((p, r), t) in n.pods[k..].iter().zip(kept).zip(targets) {
            let rec = match (r, t) {
                (Some(r), _) => r,
                (None, Some(t)) => PodRec {
                    pod: p.clone(),
                    slot: self.add(p, t),
                },
                (None, None) => unreachable!("a new pod has a target"),
            };
            self.pods.push(rec);
        }
        self.recompute(&group_t);
        into.put(self, &plain_t, &group_t, 1);
        self.compact();
    }
}

/// The index's totals, borrowed for an update.
struct Totals<'a> {
    total: &'a mut Acc,
    plain: &'a mut HashMap<PlainKey, Bucket>,
    groups: &'a mut HashMap<GroupKey, GroupAgg>,
}

impl Totals<'_> {
    /// Adds (`sign` 1) or removes (`sign` -1) the non-empty buckets `plain` and
    /// groups `groups` of entry `e`.
    fn put(&mut self, e: &NodeEntry, plain: &[usize], groups: &[usize], sign: i64) {
        for &i in plain {
            let (k, b) = &e.plain[i];
            if b.pods != 0 {
                merge_bucket(self.plain, k, b, sign);
            }
        }
        for &gi in groups {
            let g = &e.groups[gi];
            if g.bucket.pods != 0 {
                merge_group(self.groups, &e.name, g, sign);
            }
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
    /// Nodes built from scratch by the last [`RunningIndex::refresh`] (for tests
    /// and stats).
    pub rebuilt: usize,
    /// Nodes updated in place (by their added and removed pods) by the last
    /// [`RunningIndex::refresh`].
    pub updated: usize,
}

fn merge_bucket<K: std::hash::Hash + Eq + Clone>(
    into: &mut HashMap<K, Bucket>,
    k: &K,
    b: &Bucket,
    sign: i64,
) {
    let t = match into.get_mut(k) {
        Some(t) => t,
        None => into.entry(k.clone()).or_default(),
    };
    t.req.merge(&b.req, sign);
    t.pods += sign * b.pods;
    if t.pods == 0 {
        into.remove(k);
    }
}

fn merge_group(
    groups: &mut HashMap<GroupKey, GroupAgg>,
    node: &Arc<str>,
    g: &NodeGroup,
    sign: i64,
) {
    let t = match groups.get_mut(&g.key) {
        Some(t) => t,
        None => groups.entry(g.key.clone()).or_default(),
    };
    t.merge(node, g, sign);
    if t.bucket.pods == 0 {
        groups.remove(&g.key);
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
    for (k, b) in &e.plain {
        merge_bucket(plain, k, b, sign);
    }
    for g in &e.groups {
        merge_group(groups, &e.name, g, sign);
    }
}

impl RunningIndex {
    /// Brings the index up to date with `snap`: nodes whose generation changed are
    /// updated in place by the pods added to and removed from them
    /// ([`NodeEntry::update`]); nodes new to the index are built, in parallel.
    pub fn refresh(&mut self, snap: &Snapshot) {
        let nodes = snap.nodes();
        self.rebuilt = 0;
        self.updated = 0;
        let RunningIndex {
            nodes_version,
            nodes: entries,
            total,
            plain,
            groups,
            rebuilt,
            updated,
        } = self;
        if *nodes_version == Some(snap.nodes_version()) && entries.len() == nodes.len() {
            // Same nodes in the same order: stale entries are updated in place (a
            // session over an unchanged cluster touches no entry).
            for (e, n) in entries.iter_mut().zip(nodes) {
                if e.generation == n.generation && e.name == n.name {
                    continue;
                }
                if e.name == n.name {
                    let mut t = Totals {
                        total,
                        plain,
                        groups,
                    };
                    e.update(n, &mut t);
                    *updated += 1;
                } else {
                    account(total, plain, groups, e, -1);
                    *e = NodeEntry::build(n);
                    account(total, plain, groups, e, 1);
                    *rebuilt += 1;
                }
            }
            return;
        }
        // Node set or order changed: re-key the entries by name.
        let mut old: HashMap<Arc<str>, NodeEntry> =
            entries.drain(..).map(|e| (e.name.clone(), e)).collect();
        let mut slots: Vec<Option<NodeEntry>> = nodes.iter().map(|n| old.remove(&n.name)).collect();
        for e in old.into_values() {
            account(total, plain, groups, &e, -1);
        }
        // Stale entries are updated; nodes new to the index are built.
        let mut changed = Vec::new();
        for (i, slot) in slots.iter_mut().enumerate() {
            let n = &nodes[i];
            match slot {
                Some(e) if e.generation != n.generation => {
                    let mut t = Totals {
                        total,
                        plain,
                        groups,
                    };
                    e.update(n, &mut t);
                    *updated += 1;
                }
                Some(_) => {}
                None => changed.push(i),
            }
        }
        *rebuilt = changed.len();
        let fresh: Vec<(usize, NodeEntry)> = changed
            .into_par_iter()
            .map(|i| (i, NodeEntry::build(&nodes[i])))
            .collect();
        for (i, e) in fresh {
            account(total, plain, groups, &e, 1);
            slots[i] = Some(e);
        }
        *entries = slots.into_iter().flatten().collect();
        *nodes_version = Some(snap.nodes_version());
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
                e.members()
                    .filter(|(g, _)| *g == gi)
                    .map(|(_, t)| t.clone()),
            );
        }
        out
    }

    /// Where PodGroup `key`'s first member comes in [`RunningIndex::members`]'
    /// order: (node index, position among the node's members).
    pub fn first_member(&self, snap: &Snapshot, key: &GroupKey) -> Option<(usize, usize)> {
        let (i, e) = self.group_nodes(snap, key).into_iter().next()?;
        let gi = e.groups.iter().position(|g| g.key == *key)?;
        e.members().position(|(g, _)| g == gi).map(|p| (i, p))
    }

    /// Running gang members (their PodGroup and task) in snapshot order (nodes in
    /// order, pods in node order).
    pub fn members(&self) -> impl Iterator<Item = (&GroupKey, &Task)> {
        self.nodes
            .iter()
            .flat_map(|e| e.members().map(|(g, t)| (&e.groups[g].key, t)))
    }
}

#[cfg(test)]
#[path = "running_tests.rs"]
mod incremental_tests;

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
        assert_eq!(
            (idx.rebuilt, idx.updated),
            (0, 2),
            "n0 and n2 changed: updated in place"
        );
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
