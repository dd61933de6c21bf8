//! One scheduling session: queues and jobs built from the snapshot, the pending pods
//! and the batch objects; plugins opened; actions run in the configured order;
//! statuses produced at close.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::objects::{
    ANN_GROUP_NAME, ANN_QUEUE_NAME, ANN_TASK_SPEC, BatchObjects, DEFAULT_QUEUE, GroupApi,
    LABEL_POD_GROUP, QueueSpec, QuotaSpec,
};
use super::plugins::SessionPlugin;
use super::res::ResMap;
use super::running::{GroupKey, RunningIndex};
use crate::scheduler::{Placement, Report, Scheduler, Unschedulable};
use crate::snapshot::{PodInfo, Snapshot};

// `Session::open_with`, in named steps.
mod open;

pub use crate::config::{Action, DEFAULT_ACTIONS, SessionConfig};
pub use crate::fit::{SESSION_FIT, insufficient, with_session_fit};

/// A pod in a job.
#[derive(Debug, Clone)]
pub struct Task {
    pub pod: Arc<PodInfo>,
    /// Requests (shared: tasks of running pods are cloned into every session).
    pub req: Arc<ResMap>,
    /// `volcano.sh/task-spec` role (annotation, else label; `None` when neither
    /// is set or both are empty: the role `""` of `minTaskMember`).
    pub role: Option<String>,
    pub best_effort: bool,
}

impl Task {
    pub fn new(pod: Arc<PodInfo>) -> Task {
        // Volcano: a non-empty annotation wins, else a non-empty label.
        let role = annotations(&pod)
            .and_then(|a| a.get(ANN_TASK_SPEC))
            .filter(|r| !r.is_empty())
            .or_else(|| pod.labels.get(ANN_TASK_SPEC).filter(|r| !r.is_empty()))
            .cloned();
        Task {
            req: Arc::new(ResMap::from_resources(&pod.requests.requests)),
            best_effort: pod.requests.requests.is_zero(),
            role,
            pod,
        }
    }
}

impl Task {
    /// Whether the task has the `minTaskMember` role `role`; pods without a
    /// task-spec have the role `""` (as in Volcano).
    pub fn has_role(&self, role: &str) -> bool {
        self.role.as_deref().unwrap_or("") == role
    }
}

pub(crate) fn annotations(p: &PodInfo) -> Option<&BTreeMap<String, String>> {
    p.pod.metadata.annotations.as_ref()
}

/// A job's running tasks. Either every running task is in `tasks`, or (a gang
/// with nothing pending, until preempt/reclaim needs victims) only the aggregates
/// the session needs are known — count, members per role, requests — taken from
/// the running index, and no task is built ([`RunningTasks::tasks`] is then
/// empty; [`Session::materialize_running`] loads them).
#[derive(Debug, Clone, Default)]
pub struct RunningTasks {
    tasks: Vec<Task>,
    /// Aggregates of running tasks not loaded into `tasks` (`None`: all loaded);
    /// shared with the running index, which keeps it while the group's running
    /// members do not change.
    unloaded: Option<Arc<RunningSummary>>,
}

/// What a job's running tasks add up to, without the tasks.
#[derive(Debug, Clone, Default)]
pub struct RunningSummary {
    pub count: usize,
    /// Tasks per task-spec role (`""`: no role).
    pub roles: BTreeMap<String, usize>,
    /// Requests summed (as adding the tasks' `req` one by one).
    pub alloc: ResMap,
}

impl RunningTasks {
    /// Running tasks known only by their aggregates.
    pub fn summarized(s: Arc<RunningSummary>) -> RunningTasks {
        RunningTasks {
            tasks: Vec::new(),
            unloaded: Some(s),
        }
    }

    /// Whether every running task is in [`RunningTasks::tasks`].
    pub fn loaded(&self) -> bool {
        self.unloaded.is_none()
    }

    /// Replaces the aggregates by the tasks themselves.
    pub fn load(&mut self, tasks: Vec<Task>) {
        debug_assert!(self.tasks.is_empty());
        debug_assert_eq!(
            self.unloaded.as_ref().map_or(0, |s| s.count),
            tasks.len(),
            "loaded tasks differ from the index's count"
        );
        self.tasks = tasks;
        self.unloaded = None;
    }

    /// The running tasks; only for loaded jobs (jobs with pending tasks, or every
    /// job once [`Session::materialize_running`] ran).
    pub fn tasks(&self) -> &[Task] {
        debug_assert!(self.loaded(), "running tasks of an unloaded job read");
        &self.tasks
    }

    pub fn len(&self) -> usize {
        match &self.unloaded {
            Some(s) => s.count,
            None => self.tasks.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Running tasks with the `minTaskMember` role `role`.
    pub fn with_role(&self, role: &str) -> usize {
        match &self.unloaded {
            Some(s) => s.roles.get(role).copied().unwrap_or(0),
            None => self.tasks.iter().filter(|t| t.has_role(role)).count(),
        }
    }

    /// The running tasks' requests, summed.
    pub fn alloc(&self) -> ResMap {
        match &self.unloaded {
            Some(s) => s.alloc.clone(),
            None => {
                let mut a = ResMap::default();
                for t in &self.tasks {
                    a.add(&t.req);
                }
                a
            }
        }
    }

    /// Adds a task (a loaded job's).
    pub fn push(&mut self, t: Task) {
        debug_assert!(self.loaded());
        self.tasks.push(t);
    }

    /// Removes the task at `i` (a loaded job's).
    pub fn remove(&mut self, i: usize) -> Task {
        self.tasks.remove(i)
    }
}

/// A gang: an explicit PodGroup, or one pod without a group (one-member gang).
#[derive(Debug, Clone)]
pub struct Job {
    /// `namespace/name` of the PodGroup, or of the pod for implicit jobs.
    pub key: String,
    pub group: Option<GroupApi>,
    pub namespace: String,
    pub queue: Option<usize>,
    pub min_member: usize,
    pub min_task_member: BTreeMap<String, usize>,
    pub min_resources: Option<ResMap>,
    pub priority: i32,
    pub created: i64,
    pub seq: u64,
    pub pending: Vec<Task>,
    pub running: RunningTasks,
    pub annotations: BTreeMap<String, String>,
    /// PodGroup labels (`volcano.sh/preemptable` when not annotated).
    pub labels: BTreeMap<String, String>,
    /// Admitted by enqueue.
    pub inqueue: bool,
    /// Why the job (or its pods) did not get placed.
    pub message: Option<String>,
    /// Object error: never scheduled.
    pub error: Option<String>,
    /// Preemptor tasks placed after evictions (bound in a later session).
    pub pipelined: Vec<String>,
    /// x-k8s coscheduling `scheduleTimeoutSeconds`.
    pub schedule_timeout: Option<i64>,
    /// Status reason (`Timeout` when scheduleTimeoutSeconds expired).
    pub reason: Option<String>,
}

impl Job {
    /// No gang constraint beyond one pod: each task commits on its own.
    pub fn simple(&self) -> bool {
        self.min_member <= 1 && self.min_task_member.is_empty() && self.min_resources.is_none()
    }
}

/// A queue in the session.
#[derive(Debug, Clone)]
pub struct Queue {
    pub spec: QueueSpec,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    pub error: Option<String>,
    pub allocated: ResMap,
    /// Demand: allocated + pending requests (children included).
    pub request: ResMap,
    pub deserved: ResMap,
    /// minResources of admitted jobs not yet running.
    pub inqueue: ResMap,
    /// Volcano capacity plugin's `realCapability`: capability, further bounded by
    /// what the siblings' guarantees leave (set by the proportion plugin; `None` =
    /// unlimited).
    pub real_capability: Option<ResMap>,
}

/// An eviction decided by preempt or reclaim.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Eviction {
    pub pod: String,
    pub preemptor: String,
    pub reason: String,
}

/// PodGroup status.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PodGroupStatus {
    pub name: String,
    pub phase: String,
    pub message: String,
    /// Condition reason, e.g. `Timeout` (scheduleTimeoutSeconds expired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Queue status.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QueueStatus {
    pub name: String,
    pub state: String,
    pub weight: u32,
    pub deserved: ResMap,
    pub allocated: ResMap,
}

/// State carried from one session to the next.
#[derive(Default)]
pub struct Carry {
    /// PodGroups admitted in an earlier session.
    pub admitted: HashSet<String>,
    /// Preemptor pod → node nominated by the previous session's preempt/reclaim.
    pub nominated: HashMap<String, String>,
    /// Coscheduling PodGroup → session time of its first failed attempt in the
    /// current scheduleTimeoutSeconds window.
    pub first_attempt: HashMap<String, i64>,
    /// Coscheduling PodGroup → session time until which it backs off.
    pub backoff_until: HashMap<String, i64>,
    /// Running pods that must not be chosen as victims (e.g. their eviction was
    /// refused by a PodDisruptionBudget a moment ago, or they are preemptors' held
    /// reservations). Set by the caller.
    pub unevictable: HashSet<String>,
    /// Pods held on a node as a reservation for a preemptor whose victims are still
    /// terminating (`run`): they use capacity (and count in their queue's usage) but
    /// are not running yet; the caller also lists them in `unevictable`.
    pub reserved: HashSet<String>,
    /// What sessions need from the running pods, kept up to date incrementally
    /// (see [`super::running`]); shared by the sessions of one snapshot lineage.
    pub running: Arc<Mutex<RunningIndex>>,
}

/// Requests of the plain running pods (no PodGroup) of one queue and namespace,
/// counted into the session's usage without building their one-pod jobs.
#[derive(Debug, Clone)]
pub struct PlainUsage {
    pub queue: Option<usize>,
    pub namespace: String,
    pub alloc: ResMap,
    pub pods: i64,
}

/// The queue of a plain pod (annotation `qname`, else the default queue) and the
/// job error when that queue is invalid or unknown.
fn plain_queue(
    queue_index: &HashMap<String, usize>,
    queues: &[Queue],
    default_q: Option<usize>,
    qname: Option<&String>,
) -> (Option<usize>, Option<String>) {
    let qname = qname.map_or(DEFAULT_QUEUE, String::as_str);
    match queue_index.get(qname) {
        Some(&qi) if queues[qi].error.is_none() => (Some(qi), None),
        Some(&qi) => (Some(qi), Some(format!("queue {qname} is invalid"))),
        None => (default_q, Some(format!("queue {qname:?} not found"))),
    }
}

/// The implicit one-member job of a pod without a PodGroup, with no tasks yet.
fn plain_job(p: &PodInfo, (queue, error): (Option<usize>, Option<String>)) -> Job {
    Job {
        key: p.key.clone(),
        group: None,
        namespace: p.namespace.clone(),
        queue,
        min_member: 1,
        min_task_member: BTreeMap::new(),
        min_resources: None,
        priority: p.priority,
        created: p.created,
        seq: p.seq,
        pending: Vec::new(),
        running: RunningTasks::default(),
        annotations: BTreeMap::new(),
        labels: BTreeMap::new(),
        inqueue: true,
        message: None,
        error,
        pipelined: Vec::new(),
        schedule_timeout: None,
        reason: None,
    }
}

/// A session.
pub struct Session {
    pub sched: Scheduler,
    pub queues: Vec<Queue>,
    pub queue_index: HashMap<String, usize>,
    pub jobs: Vec<Job>,
    pub quotas: Vec<QuotaSpec>,
    /// Cluster allocatable.
    pub total: ResMap,
    /// Requests of running pods.
    pub used: ResMap,
    /// minResources of admitted, not yet running jobs.
    pub inqueue: ResMap,
    pub ns_used: HashMap<String, ResMap>,
    pub ns_pods: HashMap<String, i64>,
    pub now: i64,
    pub plugins: Vec<Arc<dyn SessionPlugin>>,
    pub actions: Vec<Action>,
    /// Output of this session.
    pub placements: Vec<Placement>,
    pub evictions: Vec<Eviction>,
    /// Per-pod failure messages (simple jobs).
    pub pod_messages: HashMap<String, String>,
    pub batches: u64,
    pub conflicts: u64,
    /// Core evaluation/commit wall time spent in this session (ms).
    pub evaluate_ms: f64,
    pub commit_ms: f64,
    /// Annotations Reserve plugins recorded for pods placed in this session (e.g.
    /// GpuShare's cards); kept for the pods still placed at the end.
    pub annotations: BTreeMap<String, crate::framework::PodAnnotations>,
    /// Pod equivalence class → class with the session-only annotations ignored
    /// (see [`Session::placement_pod`]).
    pub equivalence: HashMap<u64, u64>,
    /// The same for node-local classes ([`PodInfo::node_local_class`]).
    pub node_local: HashMap<u64, u64>,
    /// Preemptor pod → node nominated by the previous session (placed first by
    /// allocate).
    pub nominated_nodes: HashMap<String, String>,
    /// Nominations made in this session (output).
    pub nominated: Vec<Placement>,
    /// Pods evicted in this session with the node they were on (output).
    pub evicted: Vec<(Arc<PodInfo>, String)>,
    /// Running pods never chosen as victims (see [`Carry::unevictable`]).
    pub unevictable: HashSet<String>,
    /// scheduleTimeoutSeconds bookkeeping (carried across sessions).
    pub first_attempt: HashMap<String, i64>,
    pub backoff_until: HashMap<String, i64>,
    /// Backoff after a timeout (`None`: the group's scheduleTimeoutSeconds).
    pub pod_group_backoff: Option<i64>,
    /// HyperNodes and PodGroups' networkTopology (set by the caller).
    pub topology: Arc<crate::hypernodes::Topology>,
    /// HyperNode free totals and shapes shown full (built by allocate on first use).
    pub hyper_capacity: Option<Box<crate::hypernodes::capacity::Capacity>>,
    /// Plain running pods whose one-pod jobs are not in `jobs` (yet): their usage,
    /// by queue and namespace. Emptied by [`Session::materialize_running`].
    pub plain_running: Vec<PlainUsage>,
    /// Whether the plain running pods' jobs are left out of `jobs`.
    pub plain_lazy: bool,
    running_index: Arc<Mutex<RunningIndex>>,
    /// PodGroup → its job.
    group_index: HashMap<GroupKey, usize>,
    /// Running gang members built into tasks of their jobs in this session (the
    /// members of jobs with pending tasks, of groups without a PodGroup object,
    /// and every member once preempt/reclaim needs victims); 0 for a warm session
    /// whose pending pods have no running gang-mates and that evicts nothing.
    pub members_loaded: usize,
    /// When set, [`Session::close`] reports the status ([`PodGroupStatus`]) only of
    /// the PodGroups with these keys ("ns/name"; e.g. those whose pods were in the
    /// session, the only ones `run` writes), instead of every PodGroup's.
    pub status_only: Option<HashSet<String>>,
}

/// Annotations read only by the session (never by profile plugins): pods differing
/// only in these share the core's equivalence-class caches (e.g. the 500 pods of
/// each of 20 gangs form one class instead of 20).
pub const SESSION_ONLY_ANNOTATIONS: &[&str] = &[
    ANN_GROUP_NAME,
    ANN_TASK_SPEC,
    ANN_QUEUE_NAME,
    super::objects::ANN_MIN_RUNTIME,
    "volcano.sh/preemptable",
    "corral.io/preemptable",
];

/// A pod's PodGroup, borrowed: its API and the group's name (in the pod's
/// namespace) — no allocation; [`membership`] gives the owned "ns/name" key.
pub(crate) fn membership_ref(p: &PodInfo) -> Option<(GroupApi, &str)> {
    if let Some(g) = annotations(p).and_then(|a| a.get(ANN_GROUP_NAME))
        && !g.is_empty()
    {
        return Some((GroupApi::Volcano, g.as_str()));
    }
    p.labels
        .get(LABEL_POD_GROUP)
        .filter(|g| !g.is_empty())
        .map(|g| (GroupApi::Coscheduling, g.as_str()))
}

/// Whether `key` is the group key "`ns`/`name`" (compared without building it).
pub(crate) fn is_group_key(key: &str, ns: &str, name: &str) -> bool {
    key.len() == ns.len() + 1 + name.len()
        && key.starts_with(ns)
        && key.as_bytes()[ns.len()] == b'/'
        && key.ends_with(name)
}

pub(crate) fn membership(p: &PodInfo) -> Option<(GroupApi, String)> {
    membership_ref(p).map(|(api, g)| (api, format!("{}/{g}", p.namespace)))
}

impl Session {
    /// Opens a session over `sched`'s snapshot with the given pending pods.
    ///
    /// Running pods come from `carry.running` (refreshed for the nodes that changed
    /// since the last session): gang members become tasks of their jobs, plain
    /// running pods only count in the usage (`plain_running`); their one-pod jobs
    /// are built by [`Session::materialize_running`] when preempt/reclaim needs
    /// victims.
    pub fn open(
        sched: Scheduler,
        pending: Vec<Arc<PodInfo>>,
        objs: &BatchObjects,
        plugins: Vec<Arc<dyn SessionPlugin>>,
        actions: Vec<Action>,
        now: i64,
        carry: &Carry,
    ) -> Session {
        Session::open_with(sched, pending, objs, plugins, actions, now, carry, false)
    }

    /// Recomputes queue allocated/request and namespace usage from the jobs (a job's
    /// running requests from its tasks, or its aggregates while not loaded).
    pub fn recompute_usage(&mut self) {
        for q in &mut self.queues {
            q.allocated = ResMap::default();
            q.request = ResMap::default();
        }
        self.used = ResMap::default();
        self.ns_used.clear();
        self.ns_pods.clear();
        for u in &self.plain_running {
            self.used.add(&u.alloc);
            self.ns_used
                .entry(u.namespace.clone())
                .or_default()
                .add(&u.alloc);
            *self.ns_pods.entry(u.namespace.clone()).or_insert(0) += u.pods;
            let mut cur = u.queue;
            while let Some(c) = cur {
                self.queues[c].allocated.add(&u.alloc);
                self.queues[c].request.add(&u.alloc);
                cur = self.queues[c].parent;
            }
        }
        for j in &self.jobs {
            let alloc = j.running.alloc();
            self.used.add(&alloc);
            self.ns_used
                .entry(j.namespace.clone())
                .or_default()
                .add(&alloc);
            *self.ns_pods.entry(j.namespace.clone()).or_insert(0) += j.running.len() as i64;
            let Some(qi) = j.queue else { continue };
            let mut req = alloc.clone();
            if j.error.is_none() {
                for t in &j.pending {
                    req.add(&t.req);
                }
            }
            let mut cur = Some(qi);
            while let Some(c) = cur {
                self.queues[c].allocated.add(&alloc);
                self.queues[c].request.add(&req);
                cur = self.queues[c].parent;
            }
        }
    }

    /// Builds the running tasks left out at open (as `Session::open_with(.., eager)`
    /// does), for actions that need them as tasks (victims of preempt/reclaim): the
    /// one-pod jobs of the plain running pods, appended to `jobs`, and the members
    /// of gangs whose running tasks were only aggregated. Their usage is already
    /// counted; nothing is charged. The running pods are those of the snapshot at
    /// open: pods placed in this session (already tasks of their own jobs) are
    /// skipped. Idempotent.
    pub fn materialize_running(&mut self) {
        if !self.plain_lazy {
            return;
        }
        self.plain_lazy = false;
        self.plain_running.clear();
        let placed: HashSet<&str> = self.placements.iter().map(|p| p.pod.as_str()).collect();
        let default_q = self.queue_index.get(DEFAULT_QUEUE).copied();
        let mut jobs = Vec::new();
        let mut members: Vec<Vec<Task>> = vec![Vec::new(); self.jobs.len()];
        // The job of the previous member's group (consecutive members of one
        // group on a node need no key).
        let mut last: Option<(GroupApi, String, Option<usize>)> = None;
        for n in self.sched.snapshot.nodes() {
            for p in &n.pods {
                if placed.contains(p.key.as_str()) {
                    continue;
                }
                let Some((api, g)) = membership_ref(p) else {
                    let qname = annotations(p).and_then(|a| a.get(ANN_QUEUE_NAME));
                    let q = plain_queue(&self.queue_index, &self.queues, default_q, qname);
                    let mut job = plain_job(p, q);
                    job.running.push(Task::new(p.clone()));
                    jobs.push(job);
                    continue;
                };
                let ji = match &last {
                    Some((a, k, ji)) if *a == api && is_group_key(k, &p.namespace, g) => *ji,
                    _ => {
                        let key = (api, format!("{}/{g}", p.namespace));
                        let ji = self.group_index.get(&key).copied();
                        last = Some((key.0, key.1, ji));
                        ji
                    }
                };
                if let Some(ji) = ji
                    && !self.jobs[ji].running.loaded()
                {
                    members[ji].push(Task::new(p.clone()));
                }
            }
        }
        let mut n = 0;
        for (j, tasks) in self.jobs.iter_mut().zip(members) {
            if !j.running.loaded() {
                n += tasks.len();
                j.running.load(tasks);
            }
        }
        self.members_loaded += n;
        self.jobs.extend(jobs);
    }

    /// Adds `req` to the queue and its ancestors' allocation (negative: `sub`).
    pub fn charge(&mut self, queue: Option<usize>, ns: &str, req: &ResMap, add: bool) {
        let mut cur = queue;
        while let Some(c) = cur {
            if add {
                self.queues[c].allocated.add(req);
            } else {
                self.queues[c].allocated.sub(req);
            }
            cur = self.queues[c].parent;
        }
        let nsu = self.ns_used.entry(ns.to_string()).or_default();
        let np = self.ns_pods.entry(ns.to_string()).or_insert(0);
        if add {
            self.used.add(req);
            nsu.add(req);
            *np += 1;
        } else {
            self.used.sub(req);
            nsu.sub(req);
            *np -= 1;
        }
    }

    /// Job order: plugins in order, then creation time, then input order.
    pub fn job_cmp(&self, a: usize, b: usize) -> std::cmp::Ordering {
        let (ja, jb) = (&self.jobs[a], &self.jobs[b]);
        for p in &self.plugins {
            let o = p.job_order(self, ja, jb);
            if o.is_ne() {
                return o;
            }
        }
        ja.created
            .cmp(&jb.created)
            .then(ja.seq.cmp(&jb.seq))
            .then(ja.key.cmp(&jb.key))
    }

    pub fn job_valid(&self, j: usize) -> Result<(), String> {
        let job = &self.jobs[j];
        if let Some(e) = &job.error {
            return Err(e.clone());
        }
        if let Some(qi) = job.queue
            && !self.queues[qi].spec.open
        {
            return Err(format!("queue {} is Closed", self.queues[qi].spec.name));
        }
        for p in &self.plugins {
            p.job_valid(self, job)?;
        }
        Ok(())
    }

    pub fn job_ready(&self, j: usize, placed: &[&Task]) -> Result<(), String> {
        for p in &self.plugins {
            p.job_ready(self, &self.jobs[j], placed)?;
        }
        Ok(())
    }

    pub fn allocatable(&self, queue: usize, req: &ResMap) -> bool {
        self.plugins.iter().all(|p| p.allocatable(self, queue, req))
    }

    /// Err(message) when queue `queue` taking `req` more would exceed its
    /// deserved share in a dimension `req` uses.
    pub fn within_share(&self, queue: usize, req: &ResMap) -> Result<(), String> {
        for p in &self.plugins {
            let over = p.beyond_share(self, queue, req);
            if !over.is_empty() {
                return Err(format!(
                    "queue {} would exceed its deserved share ({})",
                    self.queues[queue].spec.name,
                    over.join(", ")
                ));
            }
        }
        Ok(())
    }

    pub fn overused(&self, queue: usize) -> bool {
        self.plugins.iter().any(|p| p.overused(self, queue))
    }

    /// Whether job `j` is backing off after its scheduleTimeoutSeconds expired.
    pub fn backing_off(&self, j: usize) -> Option<i64> {
        self.backoff_until
            .get(&self.jobs[j].key)
            .copied()
            .filter(|&u| u > self.now)
    }

    /// A gang attempt of job `j` failed: starts or checks its
    /// scheduleTimeoutSeconds window; on expiry the group is marked `Timeout`, its
    /// waiting pods are rejected for this round and it backs off.
    pub fn gang_attempt_failed(&mut self, j: usize) {
        let Some(timeout) = self.jobs[j].schedule_timeout else {
            return;
        };
        let key = self.jobs[j].key.clone();
        let first = *self.first_attempt.entry(key.clone()).or_insert(self.now);
        if self.now - first < timeout {
            return;
        }
        let backoff = self.pod_group_backoff.unwrap_or(timeout).max(1);
        self.first_attempt.remove(&key);
        self.backoff_until.insert(key, self.now + backoff);
        let job = &mut self.jobs[j];
        let why = job.message.take().unwrap_or_default();
        job.reason = Some("Timeout".into());
        job.message = Some(format!(
            "pod group timed out: minMember {} not reached within scheduleTimeoutSeconds {timeout} (first attempt at {first}, now {}); waiting pods rejected, retry after backoff of {backoff}s{}",
            job.min_member,
            self.now,
            if why.is_empty() {
                String::new()
            } else {
                format!(" (last attempt: {why})")
            }
        ));
    }

    /// Job `j` reached minMember: its timeout window ends.
    pub fn gang_attempt_succeeded(&mut self, j: usize) {
        let key = &self.jobs[j].key;
        self.first_attempt.remove(key);
        self.backoff_until.remove(key);
    }

    /// The pod as handed to the core: a copy whose equivalence class ignores the
    /// session-only annotations (computed once per class).
    pub fn placement_pod(&mut self, p: &PodInfo) -> PodInfo {
        let mut out = p.clone();
        out.equivalence = *self.equivalence.entry(p.equivalence).or_insert_with(|| {
            crate::snapshot::equivalence_hash_ignoring(&p.pod, SESSION_ONLY_ANNOTATIONS)
        });
        out.node_local_class = *self
            .node_local
            .entry(p.node_local_class)
            .or_insert_with(|| {
                corral_core::equivalence::node_local_hash_ignoring(&p.pod, SESSION_ONLY_ANNOTATIONS)
            });
        out
    }

    /// Places pods with the core's batched scheduler (parallel evaluation, ordered
    /// commit). Returns the core report.
    pub fn place(&mut self, pods: Vec<PodInfo>) -> Report {
        let r = self.sched.schedule_all(pods);
        self.annotations
            .extend(r.annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.batches += r.stats.batches;
        self.conflicts += r.stats.conflicts;
        self.evaluate_ms += r.stats.evaluate_ms;
        self.commit_ms += r.stats.commit_ms;
        r
    }

    /// Closes the session: pipelined preemptors are taken off their nodes (they bind
    /// in a later session, after their victims terminated).
    pub fn close(mut self) -> Closed {
        let pipelined: Vec<String> = self.jobs.iter().flat_map(|j| j.pipelined.clone()).collect();
        let mut nominated = HashMap::new();
        for k in &pipelined {
            if let Some(n) = self.sched.snapshot.pod_node(k) {
                nominated.insert(k.clone(), n.to_string());
            }
            self.sched.snapshot.remove_pod(k);
        }
        let mut podgroups = Vec::new();
        let mut unschedulable = Vec::new();
        let mut pending = Vec::new();
        let mut admitted = HashSet::new();
        for j in &self.jobs {
            if j.group.is_some() && j.inqueue {
                admitted.insert(j.key.clone());
            }
            let reported = j.group.is_some()
                && self
                    .status_only
                    .as_ref()
                    .is_none_or(|only| only.contains(&j.key));
            if !reported && j.pending.is_empty() {
                continue;
            }
            let valid = self.job_valid_static(j);
            if reported {
                let phase = if j.running.len() >= j.min_member.max(1) {
                    "Running"
                } else if !j.running.is_empty() {
                    "Unknown"
                } else if j.inqueue && valid.is_none() {
                    "Inqueue"
                } else {
                    "Pending"
                };
                let message = valid
                    .clone()
                    .or_else(|| j.message.clone())
                    .unwrap_or_else(|| {
                        if phase == "Running" {
                            format!("{} task(s) running", j.running.len())
                        } else {
                            String::new()
                        }
                    });
                podgroups.push(PodGroupStatus {
                    name: j.key.clone(),
                    phase: phase.into(),
                    message,
                    reason: j.reason.clone(),
                });
            }
            for t in &j.pending {
                let msg = self
                    .pod_messages
                    .get(&t.pod.key)
                    .cloned()
                    .or_else(|| valid.clone())
                    .or_else(|| j.message.clone())
                    .unwrap_or_else(|| {
                        let q = j
                            .queue
                            .map(|q| self.queues[q].spec.name.clone())
                            .unwrap_or_default();
                        format!("waiting in queue {q}: not allocated in this session")
                    });
                unschedulable.push(Unschedulable {
                    pod: t.pod.key.clone(),
                    message: msg,
                });
                pending.push(t.pod.clone());
            }
        }
        podgroups.sort_by(|a, b| a.name.cmp(&b.name));
        let queues = self
            .queues
            .iter()
            .map(|q| QueueStatus {
                name: q.spec.name.clone(),
                state: match (&q.error, q.spec.open) {
                    (Some(_), _) => "Invalid".into(),
                    (None, true) => "Open".into(),
                    (None, false) => "Closed".into(),
                },
                weight: q.spec.weight,
                deserved: q.deserved.clone(),
                allocated: q.allocated.clone(),
            })
            .collect();
        Closed {
            sched: self.sched,
            pending,
            placements: self.placements,
            evictions: self.evictions,
            unschedulable,
            podgroups,
            queues,
            carry: Carry {
                admitted,
                nominated,
                first_attempt: self.first_attempt,
                backoff_until: self.backoff_until,
                unevictable: self.unevictable,
                reserved: HashSet::new(),
                running: self.running_index,
            },
            nominated: self.nominated,
            evicted: self.evicted,
            annotations: self.annotations,
            batches: self.batches,
            conflicts: self.conflicts,
            evaluate_ms: self.evaluate_ms,
            commit_ms: self.commit_ms,
        }
    }

    fn job_valid_static(&self, j: &Job) -> Option<String> {
        if let Some(e) = &j.error {
            return Some(e.clone());
        }
        for p in &self.plugins {
            if let Err(e) = p.job_valid(self, j) {
                return Some(e);
            }
        }
        None
    }
}

/// A closed session's results.
pub struct Closed {
    pub sched: Scheduler,
    pub pending: Vec<Arc<PodInfo>>,
    pub placements: Vec<Placement>,
    pub evictions: Vec<Eviction>,
    /// Preemptors nominated in this session.
    pub nominated: Vec<Placement>,
    /// Evicted pods with the node they were on (they keep running until the API
    /// removes them; `run` keeps them in its snapshot as terminating).
    pub evicted: Vec<(Arc<PodInfo>, String)>,
    /// Reserve plugins' annotations of the pods placed in the session.
    pub annotations: BTreeMap<String, crate::framework::PodAnnotations>,
    pub unschedulable: Vec<Unschedulable>,
    pub podgroups: Vec<PodGroupStatus>,
    pub queues: Vec<QueueStatus>,
    pub carry: Carry,
    pub batches: u64,
    pub conflicts: u64,
    pub evaluate_ms: f64,
    pub commit_ms: f64,
}
