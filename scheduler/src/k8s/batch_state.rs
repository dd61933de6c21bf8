//! Gangs and queues through the API: the watched PodGroups, Queues, ResourceQuotas,
//! PriorityClasses and NodeResourceTopologies, the batch-session path of the run loop
//! and the PodGroup/Queue status it writes.
//!
//! - Objects are kept as raw JSON per watch key and decoded one by one by the batch
//!   layer's strict schemas ([`BatchObjects::parse`], the code `simulate` uses): a
//!   watch event re-decodes only the object it carries (all PodGroups only when a
//!   PriorityClass changed), and the session's [`BatchObjects`] are assembled from
//!   the decoded objects in watch-key order. Malformed objects are logged once by
//!   name and left out. Only changes that can alter a decision (spec, labels,
//!   annotations; a Queue's state) count as cluster events: the PodGroup status
//!   patches `run` writes itself do not re-queue anything.
//! - A gang with fewer member pods than minMember is not attempted: its members are
//!   gated in the queue (no attempt, no per-pod failure write) until a member that
//!   completes it arrives or its PodGroup changes; a gang still waiting after
//!   [`GANG_WAIT_GRACE`] gets the PodGroup condition Volcano writes
//!   (`Unschedulable`, reason `NotEnoughTasks`).
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

mod status;
mod watch;

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

/// How long a gang may wait for its member pods before its PodGroup gets the
/// `NotEnoughTasks` condition (gangs whose pods are created together complete well
/// within it and cost no write at all).
pub const GANG_WAIT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Batch/topology state of the run loop.
pub struct BatchState {
    crds: HashMap<Crd, BTreeMap<String, Value>>,
    /// Each watched object decoded alone (same keys as `crds`); `None` = not
    /// decoded since it changed.
    decoded: HashMap<Crd, BTreeMap<String, Option<BatchObjects>>>,
    /// Index of `objs.groups` by group.
    group_index: HashMap<GroupKey, usize>,
    /// Groups of `objs` changed since it was assembled, to patch in place.
    in_place: Vec<GroupKey>,
    /// PodGroups whose gated members may proceed (spec changed, object gone).
    ungate: Vec<GroupKey>,
    /// Gangs waiting for member pods: since when, and (pods, minMember) last seen.
    waiting: HashMap<GroupKey, (std::time::Instant, usize, usize)>,
    /// Groups whose pods exist but whose PodGroup object has not been seen: since
    /// when, and whether their gated members were released (they are gated for
    /// [`GANG_WAIT_GRACE`]: the PodGroup is usually created first and only not
    /// watched yet).
    missing: HashMap<GroupKey, (std::time::Instant, bool)>,
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
    /// CRDs listed once, or found not served at their first discovery (scheduling
    /// waits for every CRD of `Crd::ALL`: a HyperNode or PodGroup not yet seen
    /// would otherwise read as absent, e.g. a soft topology gang placed across
    /// racks at startup).
    pub crds_synced: HashSet<Crd>,
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
            decoded: HashMap::new(),
            group_index: HashMap::new(),
            in_place: Vec::new(),
            ungate: Vec::new(),
            waiting: HashMap::new(),
            missing: HashMap::new(),
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
            crds_synced: HashSet::new(),
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
        self.session(sched, pending, actions, None)
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
    ///
    /// Only the PodGroups in `touched` get a status in the result
    /// ([`Closed::podgroups`]): they are the ones [`BatchState::after_session`]
    /// decides; the other groups' statuses are not computed.
    pub fn run_session(
        &mut self,
        sched: Scheduler,
        pending: Vec<Arc<PodInfo>>,
        touched: &HashSet<GroupKey>,
    ) -> Closed {
        let actions = self.actions.clone();
        let only = touched.iter().map(|g| g.1.clone()).collect();
        self.session(sched, pending, actions, Some(only))
    }

    fn session(
        &mut self,
        sched: Scheduler,
        pending: Vec<Arc<PodInfo>>,
        actions: Vec<Action>,
        status_only: Option<HashSet<String>>,
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
        ssn.status_only = status_only;
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
        let (objs, i) = self.group_spec(g)?;
        let min = objs.groups[i].min_member.max(1) as usize;
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
            .and_then(|o| o.groups.get(*self.group_index.get(g)?))
            .map_or(1, |s| s.min_member.max(1) as usize)
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
mod tests;
