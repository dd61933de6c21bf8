//! Gangs and queues through the API: the watched PodGroups, Queues, ResourceQuotas,
//! PriorityClasses and NodeResourceTopologies, the batch-session path of the run loop
//! and the PodGroup/Queue status it writes.
//!
//! - Objects are kept as raw JSON per watch key and decoded by the batch layer's
//!   strict schemas ([`BatchObjects::parse`], the code `simulate` uses) whenever one
//!   of them changed; malformed objects are logged once by name and left out.
//! - Pods that belong to a PodGroup (`scheduling.k8s.io/group-name` annotation or
//!   `scheduling.x-k8s.io/pod-group` label) or name a queue
//!   (`scheduling.volcano.sh/queue-name`) are scheduled by a batch session
//!   ([`crate::batch::session::Session`] with the configured actions, by default
//!   enqueue → allocate → preempt → reclaim → backfill; the gang plugin makes a gang
//!   all-or-nothing, the resourcequota plugin applies namespace hard limits at
//!   enqueue). Every other pod keeps the plain `schedule_all` path; a plain pod that
//!   does not fit gets a preemption-only session ([`BatchState::run_evictions`]),
//!   the PostFilter of `run`. The loop carries out the evictions (see
//!   `k8s::evictor` and the preemption waits in `k8s`).
//! - PodGroup and Queue status is produced for the objects a session touched (and
//!   for groups whose member pods changed), passed through [`StatusPatcher`] (one
//!   merge patch per changed object, skipped when unchanged).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

use super::crds::{Crd, StatusPatch, StatusPatcher, dynamic_to_raw, object_key, to_raw};
use super::metrics::{Metrics, ResourceLabel, What};
use crate::batch::hypernodes::Topology;
use crate::batch::objects::{
    ANN_GROUP_NAME, ANN_QUEUE_NAME, BatchObjects, GroupApi, LABEL_POD_GROUP,
};
use crate::batch::plugins::SessionPlugin;
use crate::batch::res::ResMap;
use crate::batch::session::{Action, Carry, Closed, SESSION_FIT, Session, SessionConfig};
use crate::scheduler::{Options as SchedOptions, Scheduler};
use crate::snapshot::{PodInfo, Snapshot};

/// A PodGroup's identity: API and `namespace/name`.
pub type GroupKey = (GroupApi, String);

/// The PodGroup a pod belongs to, from its annotation (Volcano) or label
/// (scheduler-plugins).
pub fn pod_group(p: &Pod) -> Option<GroupKey> {
    let ns = p.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(g) = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_GROUP_NAME))
        .filter(|g| !g.is_empty())
    {
        return Some((GroupApi::Volcano, format!("{ns}/{g}")));
    }
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_POD_GROUP))
        .filter(|g| !g.is_empty())
        .map(|g| (GroupApi::Coscheduling, format!("{ns}/{g}")))
}

/// Whether a pod goes through the batch session (gang member or queue-annotated).
pub fn is_batch_pod(p: &PodInfo) -> bool {
    pod_group(&p.pod).is_some()
        || p.pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.get(ANN_QUEUE_NAME).is_some_and(|q| !q.is_empty()))
}

fn crd_of(api: GroupApi) -> Crd {
    match api {
        GroupApi::Volcano => Crd::VolcanoPodGroup,
        GroupApi::Coscheduling => Crd::CoschedulingPodGroup,
    }
}

fn split_key(key: &str) -> (Option<String>, String) {
    match key.split_once('/') {
        Some((ns, n)) => (Some(ns.to_string()), n.to_string()),
        None => (None, key.to_string()),
    }
}

/// What the API shows of a gang member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    Pending,
    Bound,
    Succeeded,
    Failed,
}

/// The last status Corral decided for a PodGroup (kept so member changes between
/// sessions update counts without inventing a new phase or transition time).
#[derive(Debug, Clone)]
struct GroupView {
    phase: String,
    cond_type: String,
    reason: String,
    message: String,
    since: String,
}

/// A relist in progress: keys seen since `Init`.
type Relist = Option<HashSet<String>>;

/// Batch/topology state of the run loop.
pub struct BatchState {
    crds: HashMap<Crd, BTreeMap<String, Value>>,
    crd_relist: HashMap<Crd, HashSet<String>>,
    quotas: BTreeMap<String, Value>,
    quota_relist: Relist,
    priority_classes: HashMap<String, i32>,
    /// PriorityClasses with `globalDefault: true` (their value is the default
    /// priority of a PodGroup naming a PriorityClass that does not exist).
    pc_global: BTreeSet<String>,
    pc_relist: Relist,
    /// NodeResourceTopology objects known (key → node name); their topologies live
    /// in the snapshot (`Snapshot::set_topology`).
    pub topology: HashMap<String, String>,
    objs: Option<Arc<BatchObjects>>,
    logged_errors: HashSet<String>,
    members: HashMap<GroupKey, HashMap<String, Member>>,
    pod_groups: HashMap<String, GroupKey>,
    dirty: HashSet<GroupKey>,
    last: HashMap<GroupKey, GroupView>,
    /// Last session's queue allocation per queue name.
    queue_alloc: HashMap<String, ResMap>,
    carry: Carry,
    plugins: Vec<Arc<dyn SessionPlugin>>,
    actions: Vec<Action>,
    pub patcher: StatusPatcher,
    /// PriorityClass and ResourceQuota lists done.
    pub synced: [bool; 2],
    metrics: Arc<Metrics>,
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl BatchState {
    /// `cfg` must have been checked (`SessionConfig::plugins`) by the caller.
    pub fn new(metrics: Arc<Metrics>, cfg: &SessionConfig) -> BatchState {
        BatchState {
            crds: HashMap::new(),
            crd_relist: HashMap::new(),
            quotas: BTreeMap::new(),
            quota_relist: None,
            priority_classes: HashMap::new(),
            pc_global: BTreeSet::new(),
            pc_relist: None,
            topology: HashMap::new(),
            objs: None,
            logged_errors: HashSet::new(),
            members: HashMap::new(),
            pod_groups: HashMap::new(),
            dirty: HashSet::new(),
            last: HashMap::new(),
            queue_alloc: HashMap::new(),
            carry: Carry::default(),
            plugins: cfg.plugins().unwrap_or_default(),
            actions: cfg.actions(),
            patcher: StatusPatcher::new(),
            synced: [false; 2],
            metrics,
        }
    }

    fn set_count(&self, what: &'static str, n: usize) {
        self.metrics
            .objects
            .get_or_create(&ResourceLabel {
                resource: What(what),
            })
            .set(n as i64);
    }

    /// A CRD watch event. Returns whether scheduling-relevant state changed.
    /// NodeResourceTopology events update the snapshot's NUMA topology (`snap`);
    /// a malformed NRT is logged by name and its node has no topology.
    pub fn on_crd_event(
        &mut self,
        crd: Crd,
        ev: Event<DynamicObject>,
        snap: &mut Snapshot,
    ) -> bool {
        if crd == Crd::NodeResourceTopology {
            let changed = self.on_topology_event(ev, snap);
            self.set_count("noderesourcetopologies", self.topology.len());
            return changed;
        }
        let apply = |this: &mut Self, o: DynamicObject| {
            let key = object_key(&o.metadata);
            this.patcher.observe(crd, &o);
            if let Some(raw) = dynamic_to_raw(crd, &o) {
                this.crds
                    .entry(crd)
                    .or_default()
                    .insert(key.clone(), raw.value);
            }
            key
        };
        match ev {
            Event::Init => {
                self.crd_relist.insert(crd, HashSet::new());
                return false;
            }
            Event::InitApply(o) => {
                let k = apply(self, o);
                self.crd_relist.entry(crd).or_default().insert(k);
            }
            Event::InitDone => {
                if let Some(seen) = self.crd_relist.remove(&crd) {
                    self.crds
                        .entry(crd)
                        .or_default()
                        .retain(|k, _| seen.contains(k));
                }
            }
            Event::Apply(o) => {
                apply(self, o);
            }
            Event::Delete(o) => {
                let key = object_key(&o.metadata);
                if let Some(m) = self.crds.get_mut(&crd) {
                    m.remove(&key);
                }
            }
        }
        let n = self.crds.get(&crd).map_or(0, |m| m.len());
        self.set_count(
            match crd {
                Crd::VolcanoPodGroup => "podgroups.scheduling.volcano.sh",
                Crd::VolcanoQueue => "queues.scheduling.volcano.sh",
                Crd::HyperNode => "hypernodes.topology.volcano.sh",
                _ => "podgroups.scheduling.x-k8s.io",
            },
            n,
        );
        self.objs = None;
        true
    }

    /// A ResourceQuota watch event.
    pub fn on_quota_event(&mut self, ev: Event<ResourceQuota>) -> bool {
        let to_value = |q: &ResourceQuota| serde_json::to_value(q).ok();
        match ev {
            Event::Init => {
                self.quota_relist = Some(HashSet::new());
                return false;
            }
            Event::InitApply(q) => {
                let k = object_key(&q.metadata);
                if let Some(v) = to_value(&q) {
                    self.quotas.insert(k.clone(), v);
                }
                if let Some(s) = self.quota_relist.as_mut() {
                    s.insert(k);
                }
            }
            Event::InitDone => {
                if let Some(seen) = self.quota_relist.take() {
                    self.quotas.retain(|k, _| seen.contains(k));
                }
                self.synced[1] = true;
            }
            Event::Apply(q) => {
                if let Some(v) = to_value(&q) {
                    self.quotas.insert(object_key(&q.metadata), v);
                }
            }
            Event::Delete(q) => {
                self.quotas.remove(&object_key(&q.metadata));
            }
        }
        self.set_count("resourcequotas", self.quotas.len());
        self.objs = None;
        true
    }

    /// A PriorityClass watch event.
    pub fn on_priority_class_event(&mut self, ev: Event<PriorityClass>) -> bool {
        match ev {
            Event::Init => {
                self.pc_relist = Some(HashSet::new());
                return false;
            }
            Event::InitApply(pc) => {
                let k = self.apply_priority_class(&pc);
                if let Some(s) = self.pc_relist.as_mut() {
                    s.insert(k);
                }
            }
            Event::InitDone => {
                if let Some(seen) = self.pc_relist.take() {
                    self.priority_classes.retain(|k, _| seen.contains(k));
                    self.pc_global.retain(|k| seen.contains(k));
                }
                self.synced[0] = true;
            }
            Event::Apply(pc) => {
                self.apply_priority_class(&pc);
            }
            Event::Delete(pc) => {
                let k = pc.metadata.name.as_deref().unwrap_or("");
                self.priority_classes.remove(k);
                self.pc_global.remove(k);
            }
        }
        self.set_count("priorityclasses", self.priority_classes.len());
        self.objs = None;
        true
    }

    /// Records a PriorityClass; returns its name.
    fn apply_priority_class(&mut self, pc: &PriorityClass) -> String {
        let k = pc.metadata.name.clone().unwrap_or_default();
        self.priority_classes.insert(k.clone(), pc.value);
        if pc.global_default == Some(true) {
            self.pc_global.insert(k.clone());
        } else {
            self.pc_global.remove(&k);
        }
        k
    }

    /// Priority of a PriorityClass by name.
    pub fn priority_class(&self, name: &str) -> Option<i32> {
        self.priority_classes.get(name).copied()
    }

    /// A NodeResourceTopology event: parsed with the shared strict parser and put
    /// into the snapshot. Returns whether some node's topology changed.
    fn on_topology_event(&mut self, ev: Event<DynamicObject>, snap: &mut Snapshot) -> bool {
        let crd = Crd::NodeResourceTopology;
        let mut apply = |this: &mut Self, o: DynamicObject| -> (String, bool) {
            let key = object_key(&o.metadata);
            let parsed = serde_json::to_value(&o)
                .map_err(|e| e.to_string())
                .and_then(|v| crate::topology::parse_nrt(&v));
            match parsed {
                Ok((node, t)) => {
                    let changed = snap.topology(&node).is_none_or(|old| **old != t);
                    if let Some(prev) = this.topology.insert(key.clone(), node.clone())
                        && prev != node
                    {
                        snap.set_topology(&prev, None);
                    }
                    // Even unchanged, a newer NRT is taken to include the pods
                    // assumed on the node so far.
                    snap.set_topology(&node, Some(Arc::new(t)));
                    (key, changed)
                }
                Err(e) => {
                    this.log_error(format!("NodeResourceTopology {key}: {e}"));
                    let node = this.topology.remove(&key).unwrap_or_else(|| key.clone());
                    snap.set_topology(&node, None);
                    (key, false)
                }
            }
        };
        match ev {
            Event::Init => {
                self.crd_relist.insert(crd, HashSet::new());
                false
            }
            Event::InitApply(o) => {
                let (k, changed) = apply(self, o);
                self.crd_relist.entry(crd).or_default().insert(k);
                changed
            }
            Event::InitDone => {
                let Some(seen) = self.crd_relist.remove(&crd) else {
                    return false;
                };
                let gone: Vec<(String, String)> = self
                    .topology
                    .iter()
                    .filter(|(k, _)| !seen.contains(*k))
                    .map(|(k, n)| (k.clone(), n.clone()))
                    .collect();
                for (k, n) in &gone {
                    self.topology.remove(k);
                    snap.set_topology(n, None);
                }
                !gone.is_empty()
            }
            Event::Apply(o) => apply(self, o).1,
            Event::Delete(o) => {
                let key = object_key(&o.metadata);
                match self.topology.remove(&key) {
                    Some(node) => {
                        snap.set_topology(&node, None);
                        true
                    }
                    None => false,
                }
            }
        }
    }

    fn log_error(&mut self, e: String) {
        if self.logged_errors.insert(e.clone()) {
            tracing::warn!("{e}");
            self.metrics.invalid_objects.inc();
        }
    }

    /// The decoded batch objects (re-decoded after any change).
    pub fn objects(&mut self) -> Arc<BatchObjects> {
        if let Some(o) = &self.objs {
            return o.clone();
        }
        let mut raw = Vec::new();
        for crd in [
            Crd::VolcanoQueue,
            Crd::VolcanoPodGroup,
            Crd::CoschedulingPodGroup,
            Crd::HyperNode,
        ] {
            let ar = crd.api_resource();
            for v in self.crds.get(&crd).into_iter().flat_map(|m| m.values()) {
                raw.push(to_raw(&ar.api_version, &ar.kind, v.clone()));
            }
        }
        for v in self.quotas.values() {
            raw.push(to_raw("v1", "ResourceQuota", v.clone()));
        }
        // The globalDefault class (first by name if several) under the key "", as
        // `simulate`'s input has it: the priority of a PodGroup whose class is missing.
        let mut pcs = self.priority_classes.clone();
        if let Some(v) = self
            .pc_global
            .iter()
            .find_map(|g| self.priority_classes.get(g).copied())
        {
            pcs.insert(String::new(), v);
        }
        let objs = BatchObjects::parse(&raw, &pcs);
        for e in objs.errors.clone() {
            self.log_error(e);
        }
        let objs = Arc::new(objs);
        self.objs = Some(objs.clone());
        objs
    }

    /// Records what the API shows of a pod (before the loop applies it).
    pub fn on_pod(&mut self, key: &str, p: &Pod) {
        let Some(g) = pod_group(p) else {
            self.forget_pod(key);
            return;
        };
        let state = if p.metadata.deletion_timestamp.is_some() {
            None
        } else {
            match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
                Some("Succeeded") => Some(Member::Succeeded),
                Some("Failed") => Some(Member::Failed),
                _ if p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some_and(|n| !n.is_empty()) =>
                {
                    Some(Member::Bound)
                }
                _ => Some(Member::Pending),
            }
        };
        let Some(state) = state else {
            self.forget_pod(key);
            return;
        };
        if let Some(old) = self.pod_groups.get(key)
            && *old != g
        {
            self.forget_pod(key);
        }
        let m = self.members.entry(g.clone()).or_default();
        if m.insert(key.to_string(), state) != Some(state) {
            self.dirty.insert(g.clone());
        }
        self.pod_groups.insert(key.to_string(), g);
    }

    /// A pod is gone.
    pub fn forget_pod(&mut self, key: &str) {
        if let Some(g) = self.pod_groups.remove(key) {
            if let Some(m) = self.members.get_mut(&g) {
                m.remove(key);
                if m.is_empty() {
                    self.members.remove(&g);
                }
            }
            self.dirty.insert(g);
        }
    }

    /// The group of a tracked pod.
    pub fn group_of(&self, key: &str) -> Option<&GroupKey> {
        self.pod_groups.get(key)
    }

    /// Pod keys of a group.
    pub fn members(&self, g: &GroupKey) -> Vec<String> {
        self.members
            .get(g)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Member pods the API shows bound (running or starting).
    pub fn bound_members(&self, g: &GroupKey) -> Vec<String> {
        self.members
            .get(g)
            .map(|m| {
                m.iter()
                    .filter(|(_, s)| **s == Member::Bound)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets what the next session takes from the loop: preemptors whose victims are
    /// gone with the node they were nominated to (placed there first), reservations
    /// held for waiting preemptors, and pods not to be chosen as victims.
    pub fn prepare(
        &mut self,
        nominated: HashMap<String, String>,
        reserved: HashSet<String>,
        unevictable: HashSet<String>,
    ) {
        self.carry.nominated = nominated;
        self.carry.reserved = reserved;
        self.carry.unevictable = unevictable;
    }

    /// Pods currently held as preemptor reservations (not running yet).
    pub fn set_reserved(&mut self, reserved: HashSet<String>) {
        self.carry.reserved = reserved;
    }

    /// Whether the configured actions evict (preempt or reclaim).
    pub fn evicts(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::Preempt | Action::Reclaim))
    }

    /// Whether reclaim is configured and there are Queues to reclaim between.
    pub fn may_reclaim(&mut self) -> bool {
        self.actions.contains(&Action::Reclaim) && !self.objects().queues.is_empty()
    }

    /// A preemption-only session (the configured preempt/reclaim actions) for plain
    /// pods that did not fit: kube-scheduler's PostFilter, with Corral's victim rules
    /// (lower priority in the same queue, reclaim across queues, gangs evicted whole
    /// rather than broken, protected pods never).
    pub fn run_evictions(&mut self, sched: Scheduler, pending: Vec<Arc<PodInfo>>) -> Closed {
        let actions: Vec<Action> = self
            .actions
            .iter()
            .copied()
            .filter(|a| matches!(a, Action::Preempt | Action::Reclaim))
            .collect();
        self.session(sched, pending, actions)
    }

    /// A dry run for the extender: would the gangs of `pending` be placed (enqueue +
    /// allocate, all-or-nothing) on `sched`'s snapshot? Nothing is carried over.
    pub fn plan(&mut self, sched: Scheduler, pending: Vec<Arc<PodInfo>>) -> Closed {
        let objs = self.objects();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut ssn = Session::open(
            sched,
            pending,
            &objs,
            self.plugins.clone(),
            vec![Action::Enqueue, Action::Allocate],
            now,
            &Carry::default(),
        );
        ssn.topology = Arc::new(Topology::new(&objs, &ssn.sched.snapshot));
        crate::batch::actions::run(&mut ssn);
        ssn.close()
    }

    /// Runs one batch session over `sched` with `pending` (all batch pods of the
    /// popped gangs) and returns the closed session; the scheduler comes back
    /// without the session's resource filter.
    pub fn run_session(&mut self, sched: Scheduler, pending: Vec<Arc<PodInfo>>) -> Closed {
        let actions = self.actions.clone();
        self.session(sched, pending, actions)
    }

    fn session(
        &mut self,
        sched: Scheduler,
        pending: Vec<Arc<PodInfo>>,
        actions: Vec<Action>,
    ) -> Closed {
        let objs = self.objects();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut ssn = Session::open(
            sched,
            pending,
            &objs,
            self.plugins.clone(),
            actions,
            now,
            &self.carry,
        );
        ssn.topology = Arc::new(Topology::new(&objs, &ssn.sched.snapshot));
        crate::batch::actions::run(&mut ssn);
        let mut closed = ssn.close();
        for fw in &mut closed.sched.frameworks {
            fw.filter.retain(|f| f.name() != SESSION_FIT);
        }
        self.carry = std::mem::take(&mut closed.carry);
        for q in &closed.queues {
            self.queue_alloc.insert(q.name.clone(), q.allocated.clone());
        }
        closed
    }

    fn counts(&self, g: &GroupKey, snapshot: &Snapshot) -> (i32, i32, i32, usize) {
        let (mut running, mut succeeded, mut failed) = (0, 0, 0);
        let members = self.members.get(g);
        for (k, s) in members.into_iter().flatten() {
            match s {
                Member::Succeeded => succeeded += 1,
                Member::Failed => failed += 1,
                Member::Bound => running += 1,
                // Assumed (binding in flight) counts as running; a preemptor's
                // reservation (victims still terminating) does not.
                Member::Pending
                    if snapshot.pod_node(k).is_some() && !self.carry.reserved.contains(k) =>
                {
                    running += 1
                }
                Member::Pending => {}
            }
        }
        (running, succeeded, failed, members.map_or(0, |m| m.len()))
    }

    /// `Some((pods, minMember))` when a PodGroup has fewer live member pods (pending
    /// or bound) than its minMember: no session can place it yet (coscheduling's
    /// PreEnqueue check), so its pods wait without costing one.
    pub fn short_of_members(&mut self, g: &GroupKey) -> Option<(usize, usize)> {
        let objs = self.objects();
        let spec = objs
            .groups
            .iter()
            .find(|s| s.api == g.0 && s.key() == g.1)?;
        let min = spec.min_member.max(1) as usize;
        let live = self.members.get(g).map_or(0, |m| {
            m.values()
                .filter(|s| matches!(s, Member::Pending | Member::Bound))
                .count()
        });
        (live < min).then_some((live, min))
    }

    fn min_member(&self, g: &GroupKey) -> usize {
        self.objs
            .as_ref()
            .and_then(|o| o.groups.iter().find(|s| s.api == g.0 && s.key() == g.1))
            .map_or(1, |s| s.min_member.max(1) as usize)
    }

    fn condition_since(&self, g: &GroupKey, cond_type: &str) -> String {
        if let Some(v) = self.last.get(g)
            && v.cond_type == cond_type
        {
            return v.since.clone();
        }
        // After a restart: keep the transition time the API shows.
        let (ns, name) = split_key(&g.1);
        self.patcher
            .observed(crd_of(g.0), ns, &name)
            .and_then(|st| st["conditions"].as_array())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == cond_type)
                    .and_then(|c| c["lastTransitionTime"].as_str())
            })
            .map(str::to_string)
            .unwrap_or_else(now_rfc3339)
    }

    /// Decides the status of the PodGroups whose pods were in a session, from the
    /// session's verdict (`closed`) and the members' unschedulable messages.
    pub fn after_session(&mut self, closed: &Closed, touched: &HashSet<GroupKey>) {
        let messages: HashMap<&str, &str> = closed
            .unschedulable
            .iter()
            .map(|u| (u.pod.as_str(), u.message.as_str()))
            .collect();
        for g in touched {
            if !self
                .crds
                .get(&crd_of(g.0))
                .is_some_and(|m| m.contains_key(&g.1))
            {
                continue; // No object (yet): nothing to write.
            }
            let Some(st) = closed.podgroups.iter().find(|s| s.name == g.1) else {
                continue;
            };
            // Aggregate the members' failure messages (most frequent first).
            let mut agg: BTreeMap<&str, usize> = BTreeMap::new();
            let members = self.members(g);
            let mut unplaced = 0;
            for k in &members {
                if let Some(m) = messages.get(k.as_str()) {
                    unplaced += 1;
                    *agg.entry(m).or_insert(0) += 1;
                }
            }
            let mut agg: Vec<(&str, usize)> = agg.into_iter().collect();
            agg.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let (cond_type, reason, message) = if unplaced > 0 {
                // The session's gang verdict is already aggregated Volcano-style
                // ("1/3 tasks in gang unschedulable: 0/2 nodes are available: ...");
                // otherwise the members' messages are, most frequent first.
                let message = if st.message.is_empty() {
                    let parts: Vec<String> =
                        agg.iter().map(|(m, n)| format!("{n} × {m}")).collect();
                    format!(
                        "{unplaced}/{} tasks in gang unschedulable: {}",
                        members.len(),
                        parts.join("; ")
                    )
                } else {
                    st.message.clone()
                };
                ("Unschedulable", "NotEnoughResources", message)
            } else {
                (
                    "Scheduled",
                    "tasks in gang are ready to be scheduled",
                    st.message.clone(),
                )
            };
            let since = self.condition_since(g, cond_type);
            self.last.insert(
                g.clone(),
                GroupView {
                    phase: st.phase.clone(),
                    cond_type: cond_type.into(),
                    reason: reason.into(),
                    message,
                    since,
                },
            );
            self.dirty.insert(g.clone());
        }
    }

    /// Status patches for every dirty group with a decided status, and every Queue
    /// object (only changed ones survive the patcher).
    pub fn statuses(&mut self, snapshot: &Snapshot, queues_too: bool) -> Vec<StatusPatch> {
        let mut out = Vec::new();
        let dirty: Vec<GroupKey> = self.dirty.drain().collect();
        for g in dirty {
            if !self
                .crds
                .get(&crd_of(g.0))
                .is_some_and(|m| m.contains_key(&g.1))
            {
                continue;
            }
            let (running, succeeded, failed, total) = self.counts(&g, snapshot);
            let min = self.min_member(&g);
            let Some(view) = self.last.get_mut(&g) else {
                continue; // Never in a session: nothing decided yet.
            };
            if running as usize >= min {
                view.phase = "Running".into();
            } else if total > 0 && running == 0 && (succeeded + failed) as usize == total {
                view.phase = "Completed".into();
            }
            let view = view.clone();
            let (ns, name) = split_key(&g.1);
            let status = match g.0 {
                GroupApi::Volcano => json!({
                    "phase": view.phase,
                    "running": running,
                    "succeeded": succeeded,
                    "failed": failed,
                    "conditions": [{
                        "type": view.cond_type,
                        "status": "True",
                        "lastTransitionTime": view.since,
                        "reason": view.reason,
                        "message": view.message,
                    }],
                }),
                GroupApi::Coscheduling => json!({
                    "phase": match view.phase.as_str() {
                        "Running" => "Running",
                        "Completed" => "Finished",
                        "Inqueue" | "Unknown" => "Scheduling",
                        _ => "Pending",
                    },
                    "running": running,
                    "succeeded": succeeded,
                    "failed": failed,
                }),
            };
            out.push(StatusPatch {
                crd: crd_of(g.0),
                namespace: ns,
                name,
                status,
            });
        }
        if queues_too {
            out.extend(self.queue_statuses());
        }
        self.patcher.changed(out)
    }

    fn queue_statuses(&mut self) -> Vec<StatusPatch> {
        let Some(queues) = self.crds.get(&Crd::VolcanoQueue) else {
            return Vec::new();
        };
        let objs = match &self.objs {
            Some(o) => o.clone(),
            None => return Vec::new(),
        };
        let mut out = Vec::new();
        for (name, v) in queues {
            let mut c: BTreeMap<&str, i32> = BTreeMap::new();
            for g in objs.groups.iter().filter(|g| &g.queue == name) {
                let phase = self
                    .last
                    .get(&(g.api, g.key()))
                    .map(|v| v.phase.as_str())
                    .or(g.phase.as_deref())
                    .unwrap_or("Pending");
                *c.entry(phase).or_insert(0) += 1;
            }
            let n = |p: &str| c.get(p).copied().unwrap_or(0);
            let counts = super::compat_metrics::POD_GROUP_PHASES.map(|p| i64::from(n(p)));
            self.metrics.volcano.set_queue_pod_groups(name, counts);
            let state = match v["status"]["state"].as_str() {
                Some(s) if !s.is_empty() => s.to_string(),
                _ => "Open".to_string(),
            };
            let mut status = json!({
                "state": state,
                "pending": c.get("Pending").copied().unwrap_or(0),
                "running": c.get("Running").copied().unwrap_or(0),
                "inqueue": c.get("Inqueue").copied().unwrap_or(0),
                "unknown": c.get("Unknown").copied().unwrap_or(0),
                "completed": c.get("Completed").copied().unwrap_or(0),
            });
            // Always present: Volcano's Queue CRD requires `status.allocated`, so a
            // status without it would be refused on a queue that has none yet.
            status["allocated"] = match self.queue_alloc.get(name) {
                Some(a) => json!(a.to_quantities()),
                None => json!({}),
            };
            out.push(StatusPatch {
                crd: Crd::VolcanoQueue,
                namespace: None,
                name: name.clone(),
                status,
            });
        }
        out
    }

    /// Whether some group's status may need a write outside a session.
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The UID of a watched CRD object (`namespace/name`, or `name`).
    pub fn object_uid(&self, crd: Crd, key: &str) -> Option<String> {
        self.crds.get(&crd)?.get(key)?["metadata"]["uid"]
            .as_str()
            .map(str::to_string)
    }
}

/// A placeholder scheduler (no profiles, empty snapshot) used while a session owns
/// the real one.
pub fn placeholder() -> Scheduler {
    Scheduler::new(Vec::new(), Snapshot::new(), SchedOptions::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dyn_obj(v: Value) -> DynamicObject {
        serde_json::from_value(v).expect("object")
    }

    #[test]
    fn topology_events_feed_the_snapshot() {
        let mut st = BatchState::new(Arc::new(Metrics::new()), &SessionConfig::default());
        let mut snap = Snapshot::new();
        snap.upsert_node(crate::testutil::node("n1").cpu("16").info());
        let nrt = |avail: &str| {
            dyn_obj(json!({
                "apiVersion": "topology.node.k8s.io/v1alpha2", "kind": "NodeResourceTopology",
                "metadata": {"name": "n1"},
                "attributes": [{"name": "topologyManagerPolicy", "value": "single-numa-node"}],
                "zones": [{"name": "node-0", "type": "Node",
                    "resources": [{"name": "cpu", "capacity": "16", "allocatable": "16", "available": avail}]}]
            }))
        };
        let t = Crd::NodeResourceTopology;
        assert!(st.on_crd_event(t, Event::Apply(nrt("12")), &mut snap));
        let numa = snap.node("n1").unwrap().numa.as_ref().expect("numa");
        assert_eq!(numa.available[0][0], 12_000);
        // Same content again: not a change.
        assert!(!st.on_crd_event(t, Event::Apply(nrt("12")), &mut snap));
        // Malformed: logged, node without topology.
        assert!(!st.on_crd_event(t, Event::Apply(nrt("lots")), &mut snap));
        assert!(snap.node("n1").unwrap().numa.is_none());
        assert!(!snap.has_topology());
        // Relist that no longer has it removes it.
        st.on_crd_event(t, Event::Apply(nrt("8")), &mut snap);
        assert!(snap.has_topology());
        st.on_crd_event(t, Event::Init, &mut snap);
        assert!(st.on_crd_event(t, Event::InitDone, &mut snap));
        assert!(!snap.has_topology() && snap.node("n1").unwrap().numa.is_none());
        st.on_crd_event(t, Event::Apply(nrt("8")), &mut snap);
        assert!(st.on_crd_event(t, Event::Delete(nrt("8")), &mut snap));
        assert!(snap.node("n1").unwrap().numa.is_none());
    }

    #[test]
    fn watched_hypernodes_reach_the_session_objects() {
        let mut st = BatchState::new(Arc::new(Metrics::new()), &SessionConfig::default());
        let hn = dyn_obj(json!({
            "apiVersion": "topology.volcano.sh/v1alpha1", "kind": "HyperNode",
            "metadata": {"name": "s0", "resourceVersion": "1"},
            "spec": {"tier": 1, "members": [{"type": "Node", "selector": {"regexMatch": {"pattern": "^n"}}}]}
        }));
        let pg = dyn_obj(json!({
            "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": "pg", "namespace": "ns"},
            "spec": {"minMember": 2, "queue": "default",
                "networkTopology": {"mode": "hard", "highestTierAllowed": 1}}
        }));
        let mut snap = Snapshot::new();
        snap.upsert_node(crate::testutil::node("n1").cpu("4").info());
        assert!(st.on_crd_event(Crd::HyperNode, Event::Apply(hn), &mut snap));
        assert!(st.on_crd_event(Crd::VolcanoPodGroup, Event::Apply(pg), &mut snap));
        let objs = st.objects();
        assert!(objs.errors.is_empty(), "{:?}", objs.errors);
        let topo = Topology::new(&objs, &snap);
        assert_eq!(topo.domains.len(), 1);
        assert!(topo.domains[0].nodes.contains("n1"));
        assert!(topo.groups["ns/pg"].hard);
    }

    #[test]
    fn watched_objects_decode_through_the_batch_schemas() {
        let mut st = BatchState::new(Arc::new(Metrics::new()), &SessionConfig::default());
        let pg = dyn_obj(json!({
            "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": "pg", "namespace": "ns", "resourceVersion": "3"},
            "spec": {"minMember": 4, "queue": "q", "priorityClassName": "high"}
        }));
        let pc: PriorityClass = serde_json::from_value(json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": "high"}, "value": 1000
        }))
        .expect("pc");
        st.on_priority_class_event(Event::Apply(pc));
        assert!(st.on_crd_event(Crd::VolcanoPodGroup, Event::Apply(pg), &mut Snapshot::new()));
        let q: ResourceQuota = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "rq", "namespace": "ns"},
            "spec": {"hard": {"requests.cpu": "2", "pods": "5"}}
        }))
        .expect("quota");
        st.on_quota_event(Event::Apply(q));
        let objs = st.objects();
        assert!(objs.errors.is_empty(), "{:?}", objs.errors);
        assert_eq!(objs.groups[0].min_member, 4);
        assert_eq!(objs.groups[0].priority, Some(1000));
        // A PodGroup naming a missing PriorityClass gets the default priority
        // (globalDefault, else 0) and stays schedulable, as in Volcano.
        let missing = |st: &mut BatchState| {
            let pg = dyn_obj(json!({
                "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
                "metadata": {"name": "pg", "namespace": "ns", "resourceVersion": "4"},
                "spec": {"minMember": 4, "queue": "q", "priorityClassName": "nope"}
            }));
            assert!(st.on_crd_event(Crd::VolcanoPodGroup, Event::Apply(pg), &mut Snapshot::new()));
            let objs = st.objects();
            assert!(objs.errors.is_empty(), "{:?}", objs.errors);
            objs.groups[0].priority
        };
        assert_eq!(missing(&mut st), Some(0));
        let def: PriorityClass = serde_json::from_value(json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": "def"}, "value": 7, "globalDefault": true
        }))
        .expect("pc");
        st.on_priority_class_event(Event::Apply(def.clone()));
        assert_eq!(missing(&mut st), Some(7));
        st.on_priority_class_event(Event::Delete(def));
        assert_eq!(missing(&mut st), Some(0));
        assert_eq!(objs.quotas[0].hard.get("cpu"), 2000);
        assert_eq!(objs.quotas[0].pods, Some(5));
        // A malformed object is reported by name and left out.
        let bad = dyn_obj(json!({
            "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": "bad", "namespace": "ns"},
            "spec": {"minMembers": 2}
        }));
        st.on_crd_event(
            Crd::VolcanoPodGroup,
            Event::Apply(bad),
            &mut Snapshot::new(),
        );
        let objs = st.objects();
        assert_eq!(objs.groups.len(), 1);
        assert!(objs.errors[0].contains("ns/bad"), "{:?}", objs.errors);
        assert!(objs.errors[0].contains("minMembers"), "{:?}", objs.errors);
        // Relist without the objects removes them.
        st.on_crd_event(Crd::VolcanoPodGroup, Event::Init, &mut Snapshot::new());
        st.on_crd_event(Crd::VolcanoPodGroup, Event::InitDone, &mut Snapshot::new());
        assert!(st.objects().groups.is_empty());
    }
}
