//! `corral-scheduler run`: Corral as a real Kubernetes scheduler.
//!
//! Data flow:
//! - watch tasks (kube-runtime `watcher`, resuming on errors and relisting on
//!   `410 Gone`) send [`Msg`]s for Pods, Nodes, Namespaces, PriorityClasses,
//!   ResourceQuotas and the CRDs (PodGroups, Queues, NodeResourceTopology; watched
//!   once served) to one channel;
//! - the scheduling loop (a dedicated OS thread owning the [`Scheduler`] and its
//!   snapshot) applies them incrementally, pops batches from the [`queue::Queue`],
//!   sends gang/queue pods (with all their gang-mates) through a batch session
//!   ([`gang`]) and runs `Scheduler::schedule_all` on the other pods of each batch
//!   (batched parallel evaluation, committed in queue order — the commit *assumes*
//!   the pod in the snapshot) and hands placements to the binder;
//! - the binder POSTs `pods/{name}/binding` with bounded concurrency and a shared
//!   QPS/burst token bucket; its results come back to the loop, which *forgets* the
//!   assumption on failure;
//! - failures go to the status writer: a `PodScheduled=False` condition (written only
//!   when the message changes) and aggregated `FailedScheduling` Events (at most one
//!   write per pod per backoff window; repeats patch `count` of the same Event);
//! - a Lease elector flips the leader flag; only the leader schedules and binds, the
//!   standby keeps its cache warm.
//!
//! Invariants: a pod is bound at most once by this process (it is in flight from
//! pop to bind result and never popped twice; the API server rejects a second
//! binding with 409, which is never retried before a backoff); every pending pod with
//! a matching schedulerName is tracked by the queue until the watch shows it bound
//! or deleted.

pub mod binder;
pub mod cache;
pub mod cli;
pub mod crds;
pub mod evictor;
pub mod gang;
pub mod leader;
pub mod metrics;
pub mod queue;
pub mod reflector;
pub mod runtime_cap;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ResourceQuota};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use crate::batch;
use crate::framework::Framework;
use crate::labels::Labels;
use crate::scheduler::{Options as SchedOptions, Scheduler};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

use self::binder::{BindOutcome, BindRequest, Binder, RateLimiter};
use self::metrics::Metrics;
use self::queue::Queue;
use self::status::{FailureReport, StatusWriter};

/// Options of the run loop.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Pods handed to one `schedule_all` call.
    pub batch_size: usize,
    /// Concurrent binding requests.
    pub bind_concurrency: usize,
    /// Client-side write QPS and burst (binds, events, status patches).
    pub qps: f64,
    pub burst: u32,
    /// Leader election; `None` = always leader.
    pub leader: Option<leader::LeaderOptions>,
    pub seed: u64,
    /// How often a CRD that is not served (PodGroup, Queue, NodeResourceTopology)
    /// is looked for again.
    pub crd_retry: Duration,
    /// Continuous node health (NodeHealth enabled): see `health::live`.
    pub health: Option<crate::health::live::LiveOptions>,
    /// Batch sessions (`corral.session` of the config file): actions and plugins.
    pub session: batch::SessionConfig,
    /// How preemption/reclaim victims are removed.
    pub eviction: evictor::EvictionMode,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            batch_size: 256,
            bind_concurrency: 256,
            qps: 5000.0,
            burst: 10000,
            leader: None,
            seed: 0,
            crd_retry: Duration::from_secs(60),
            health: None,
            session: batch::SessionConfig::default(),
            eviction: evictor::EvictionMode::default(),
        }
    }
}

/// Messages to the scheduling loop.
pub enum Msg {
    Pods(reflector::PodEvent),
    Node(Box<Event<Node>>),
    Namespace(Box<Event<Namespace>>),
    PriorityClass(Box<Event<PriorityClass>>),
    Quota(Box<Event<ResourceQuota>>),
    Bound(BindOutcome),
    /// Result of a victim's eviction.
    Evicted(evictor::EvictOutcome),
    /// A batch CRD watch event.
    Crd(crds::Crd, Box<Event<kube::api::DynamicObject>>),
    /// Leadership changed.
    Leader(bool),
    Stop,
}

/// Shared, observable state of a running scheduler.
pub struct Handle {
    pub metrics: Arc<Metrics>,
    pub leader: Arc<AtomicBool>,
    pub ready: Arc<AtomicBool>,
    stop: mpsc::Sender<Msg>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Handle {
    /// Stops watches, leader election (releasing nothing: the lease expires) and the
    /// loop.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.stop.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Builds a client from a kubeconfig path, or in-cluster / default inference.
pub async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", p.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| anyhow::anyhow!("no kubeconfig given and {e}"))?,
    };
    // No transparent client retries: kube's default retries 429/503 up to 15 times
    // with backoff up to 1000 s, which would hold a binding slot for minutes and turn
    // a PodDisruptionBudget's 429 on an eviction into a hang. Every caller here
    // handles these errors itself (binds back off, evictions pick other victims,
    // watches relist with their own backoff).
    let mut config = config;
    config.default_retry = false;
    Ok(Client::try_from(config)?)
}

fn forward<K>(
    api: Api<K>,
    tx: mpsc::Sender<Msg>,
    wrap: fn(Box<Event<K>>) -> Msg,
    metrics: Arc<Metrics>,
    what: &'static str,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut s = watcher::watcher(api, watcher::Config::default().page_size(5000))
            .default_backoff()
            .boxed();
        while let Some(ev) = s.next().await {
            match ev {
                Ok(ev) => {
                    if tx.send(wrap(Box::new(ev))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    metrics
                        .watch_errors
                        .get_or_create(&metrics::ResourceLabel {
                            resource: metrics::What(what),
                        })
                        .inc();
                    tracing::warn!("{what} watch: {e}");
                }
            }
        }
    })
}

/// Starts the scheduler against `client` and returns a handle (tasks run on the
/// current tokio runtime, the loop on its own thread).
pub fn start(
    client: Client,
    frameworks: Vec<Framework>,
    opts: RunOptions,
) -> anyhow::Result<Handle> {
    if frameworks.is_empty() {
        anyhow::bail!("no scheduler profiles configured");
    }
    opts.session.plugins().map_err(|e| anyhow::anyhow!("{e}"))?;
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = mpsc::channel::<Msg>();
    let leader = Arc::new(AtomicBool::new(opts.leader.is_none()));
    let ready = Arc::new(AtomicBool::new(false));
    let limiter = Arc::new(RateLimiter::new(opts.qps, opts.burst));
    let mut tasks = vec![
        reflector::spawn(client.clone(), tx.clone(), metrics.clone(), 5000),
        forward(
            Api::<Node>::all(client.clone()),
            tx.clone(),
            Msg::Node,
            metrics.clone(),
            "nodes",
        ),
        forward(
            Api::<Namespace>::all(client.clone()),
            tx.clone(),
            Msg::Namespace,
            metrics.clone(),
            "namespaces",
        ),
        forward(
            Api::<PriorityClass>::all(client.clone()),
            tx.clone(),
            Msg::PriorityClass,
            metrics.clone(),
            "priorityclasses",
        ),
        forward(
            Api::<ResourceQuota>::all(client.clone()),
            tx.clone(),
            Msg::Quota,
            metrics.clone(),
            "resourcequotas",
        ),
    ];
    for crd in crds::Crd::ALL {
        tasks.push(crds::watch(
            client.clone(),
            crd,
            tx.clone(),
            Msg::Crd,
            opts.crd_retry,
        ));
    }
    // One writer task: PodGroup/Queue status patches in session order.
    let (status_tx, mut status_rx) =
        tokio::sync::mpsc::unbounded_channel::<Vec<crds::StatusPatch>>();
    {
        let (client, limiter, metrics) = (client.clone(), limiter.clone(), metrics.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(p) = status_rx.recv().await {
                crds::StatusPatcher::write(&client, &limiter, p, &metrics).await;
            }
        }));
    }
    if let Some(lo) = opts.leader.clone() {
        tasks.push(leader::spawn(
            client.clone(),
            lo,
            leader.clone(),
            tx.clone(),
        ));
    }
    let binder = Binder::spawn(
        client.clone(),
        opts.bind_concurrency,
        limiter.clone(),
        leader.clone(),
        tx.clone(),
        metrics.clone(),
    );
    let health = match opts.health.clone() {
        Some(o) => {
            let (h, task) =
                crate::health::live::LiveHealth::start(o, &tokio::runtime::Handle::current())
                    .map_err(|e| anyhow::anyhow!("NodeHealth: {e}"))?;
            tasks.extend(task);
            Some(h)
        }
        None => None,
    };
    let component = frameworks[0].scheduler_name.clone();
    let evictor = evictor::Evictor::spawn(
        client.clone(),
        opts.eviction,
        32,
        limiter.clone(),
        leader.clone(),
        tx.clone(),
        metrics.clone(),
        component.clone(),
    );
    let writer = StatusWriter::spawn(client, limiter, metrics.clone(), component);
    let names: HashSet<String> = frameworks
        .iter()
        .map(|f| f.scheduler_name.clone())
        .collect();
    let sched = Scheduler::new(
        frameworks,
        Snapshot::new(),
        SchedOptions {
            seed: opts.seed,
            ..SchedOptions::default()
        },
    );
    let mut lp = Loop {
        sched,
        names,
        queue: Queue::default(),
        pods: HashMap::new(),
        seq: 0,
        leader: leader.clone(),
        ready: ready.clone(),
        synced: [false; 3],
        gangs: gang::BatchState::new(metrics.clone(), &opts.session),
        status_tx,
        bind_retries: HashMap::new(),
        relist: [None, None, None],
        binder,
        writer,
        metrics: metrics.clone(),
        batch: opts.batch_size.max(1),
        max_in_flight: opts.bind_concurrency.max(1) * 8,
        in_flight: 0,
        last_report: HashMap::new(),
        node_buf: Vec::new(),
        health,
        evictor,
        waits: HashMap::new(),
        waiting_pod: HashMap::new(),
        victims: HashMap::new(),
        nominations: HashMap::new(),
        unevictable: HashMap::new(),
        caps: runtime_cap::RuntimeCaps::default(),
    };
    let thread = std::thread::Builder::new()
        .name("corral-sched".into())
        .spawn(move || lp.run(rx))?;
    Ok(Handle {
        metrics,
        leader,
        ready,
        stop: tx,
        tasks,
        thread: Some(thread),
    })
}

/// What the cache knows about a pod from the API.
struct Tracked {
    rv: String,
    /// Node per the API (None = pending).
    node: Option<String>,
}

struct Loop {
    sched: Scheduler,
    names: HashSet<String>,
    queue: Queue,
    pods: HashMap<String, Tracked>,
    seq: u64,
    leader: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
    /// Initial list done for pods, nodes, namespaces.
    synced: [bool; 3],
    /// Keys seen during a (re)list in progress, per resource.
    relist: [Option<HashSet<String>>; 3],
    binder: Binder,
    writer: StatusWriter,
    metrics: Arc<Metrics>,
    batch: usize,
    max_in_flight: usize,
    in_flight: usize,
    /// Last failure report per pod (event aggregation window).
    last_report: HashMap<String, (Instant, Duration, u32)>,
    /// PodGroups, Queues, quotas, priority classes, topology; the gang path.
    gangs: gang::BatchState,
    status_tx: tokio::sync::mpsc::UnboundedSender<Vec<crds::StatusPatch>>,
    /// Retries of a gang member's failed binding.
    bind_retries: HashMap<String, u32>,
    /// Nodes of a list in progress.
    node_buf: Vec<Node>,
    /// Live node health feed (ticks between batches).
    health: Option<crate::health::live::LiveHealth>,
    /// Evicts preemption victims and writes nominations.
    evictor: evictor::Evictor,
    /// Preemptions in progress, by preemptor job (PodGroup or pod `namespace/name`).
    waits: HashMap<String, Wait>,
    /// Waiting preemptor pod → its job key in `waits`.
    waiting_pod: HashMap<String, String>,
    /// Victims being evicted.
    victims: HashMap<String, Victim>,
    /// Preemptors whose victims are gone → nominated node (placed there first by the
    /// next session, then forgotten).
    nominations: HashMap<String, String>,
    /// Pods whose eviction a disruption budget refused, not chosen again until then.
    unevictable: HashMap<String, Instant>,
    /// `corral.io/max-runtime` enforcement.
    caps: runtime_cap::RuntimeCaps,
}

/// A preemptor waiting for its victims to terminate. Its pods stay in flight (never
/// popped) and are held in the snapshot on their nominated nodes as reservations, so
/// the capacity the victims free cannot be taken by anyone else.
struct Wait {
    /// (pod key, nominated node).
    pods: Vec<(String, String)>,
    /// Victims not yet gone.
    victims: HashSet<String>,
    /// After this the preemptor is released even if victims remain (e.g. a kubelet
    /// that never finishes termination).
    deadline: Instant,
}

/// A victim whose eviction was requested.
struct Victim {
    job: String,
    node: String,
    uid: String,
    /// The pod as last seen without a deletion timestamp (restored if the eviction
    /// fails).
    unmarked: Arc<PodInfo>,
    /// The API shows it terminating.
    api_terminating: bool,
}

/// A victim as the snapshot keeps it until the API removes it: still using its
/// resources, marked terminating so no session picks it as a victim again.
fn mark_terminating(p: &PodInfo) -> Arc<PodInfo> {
    let mut pod = (*p.pod).clone();
    pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let mut info = p.clone();
    info.pod = Arc::new(pod);
    Arc::new(info)
}

/// How long a refused victim is left alone.
const UNEVICTABLE_FOR: Duration = Duration::from_secs(60);
/// Slack over the victims' termination grace before a waiting preemptor is released.
const WAIT_SLACK: Duration = Duration::from_secs(60);

/// Finished (Succeeded/Failed), or being deleted before it was bound. A bound pod
/// that is terminating still holds its node's resources (the kubelet has not
/// stopped it yet) and stays in the snapshot until the API removes it.
fn is_done(p: &Pod) -> bool {
    let bound = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    (p.metadata.deletion_timestamp.is_some() && !bound)
        || matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Retries of a gang member's failed binding (to the same node) before its
/// assumption is forgotten.
const GANG_BIND_RETRIES: u32 = 3;

impl Loop {
    fn all_synced(&self) -> bool {
        self.synced.iter().all(|s| *s) && self.gangs.synced.iter().all(|s| *s)
    }

    fn run(&mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            // Block when there is nothing to schedule, else drain without waiting.
            let can_schedule = self.leader.load(Ordering::Relaxed)
                && self.all_synced()
                && self.queue.has_active()
                && self.in_flight < self.max_in_flight;
            let first = if can_schedule {
                rx.try_recv().ok()
            } else {
                let wait = self
                    .queue
                    .next_ready()
                    .map(|t| t.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_millis(500))
                    .clamp(Duration::from_millis(1), Duration::from_millis(500));
                match rx.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            };
            let mut next = first;
            let mut n = 0;
            while let Some(m) = next {
                if matches!(m, Msg::Stop) {
                    return;
                }
                self.handle(m);
                n += 1;
                next = if n < 100_000 {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            let now = Instant::now();
            self.expire_waits(now);
            if self.leader.load(Ordering::Relaxed) && self.all_synced() && self.caps.due(now) {
                self.sweep_caps(now);
            }
            self.queue.tick(now);
            let c = self.queue.counts();
            self.metrics.set_pending(c);
            if self.synced[1]
                && let Some(h) = self.health.as_mut()
            {
                h.maybe_tick(&mut self.sched.snapshot, now);
            }
            if self.leader.load(Ordering::Relaxed)
                && self.all_synced()
                && self.in_flight < self.max_in_flight
                && self.queue.has_active()
            {
                self.schedule_batch();
            }
            if self.gangs.has_dirty() && self.leader.load(Ordering::Relaxed) && self.all_synced() {
                self.flush_statuses(false);
            }
        }
    }

    /// Sends the changed PodGroup (and, after a session, Queue) statuses.
    fn flush_statuses(&mut self, queues_too: bool) {
        self.gangs
            .set_reserved(self.waiting_pod.keys().cloned().collect());
        let patches = self.gangs.statuses(&self.sched.snapshot, queues_too);
        if !patches.is_empty() {
            let _ = self.status_tx.send(patches);
        }
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Pods(ev) => self.on_pod_event(ev),
            Msg::Node(ev) => self.on_node_event(*ev),
            Msg::Namespace(ev) => self.on_ns_event(*ev),
            Msg::Bound(o) => self.on_bound(o),
            Msg::Evicted(o) => self.on_evicted(o),
            Msg::Crd(crd, ev) => {
                if self.gangs.on_crd_event(crd, *ev, &mut self.sched.snapshot) {
                    self.queue.on_cluster_event();
                }
            }
            Msg::PriorityClass(ev) => {
                if self.gangs.on_priority_class_event(*ev) {
                    self.queue.on_cluster_event();
                }
            }
            Msg::Quota(ev) => {
                if self.gangs.on_quota_event(*ev) {
                    self.queue.on_cluster_event();
                }
            }
            Msg::Leader(l) => {
                tracing::info!(leader = l, "leadership changed");
                self.metrics.leader.set(i64::from(l));
            }
            Msg::Stop => {}
        }
        if !self.ready.load(Ordering::Relaxed) && self.all_synced() {
            self.ready.store(true, Ordering::Relaxed);
        }
    }

    fn on_pod_event(&mut self, ev: reflector::PodEvent) {
        use reflector::PodEvent;
        match ev {
            PodEvent::Init => self.relist[0] = Some(HashSet::new()),
            PodEvent::Apply { init, pods } => {
                for p in pods {
                    if init && let Some(s) = self.relist[0].as_mut() {
                        s.insert(p.key.clone());
                    }
                    self.apply_pod(p);
                }
            }
            PodEvent::InitDone => {
                if let Some(seen) = self.relist[0].take() {
                    let gone: Vec<String> = self
                        .pods
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for k in gone {
                        self.delete_pod(&k);
                    }
                }
                self.synced[0] = true;
            }
            PodEvent::Delete(key) => self.delete_pod(&key),
        }
    }

    fn delete_pod(&mut self, key: &str) {
        let had = self.pods.remove(key).is_some();
        let placed = self.sched.snapshot.remove_pod(key).is_some();
        if let Some(e) = self.queue.remove(key)
            && e.state == queue::State::InFlight
        {
            // The bind result will find no entry and do nothing.
        }
        self.last_report.remove(key);
        self.bind_retries.remove(key);
        self.gangs.forget_pod(key);
        self.nominations.remove(key);
        self.caps.forget(key);
        self.victim_gone(key);
        self.preemptor_gone(key);
        if had && placed {
            // Freed capacity: unschedulable pods may fit now.
            self.queue.on_cluster_event();
        }
    }

    fn apply_pod(&mut self, parsed: reflector::ParsedPod) {
        let key = parsed.key;
        let mut info = match parsed.info {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("pod {key}: {e}");
                self.metrics.invalid_objects.inc();
                return;
            }
        };
        let p = info.pod.clone();
        if is_done(&p) {
            self.delete_pod(&key);
            // Succeeded/Failed gang members still count in their group's status.
            self.gangs.on_pod(&key, &p);
            return;
        }
        let rv = p.metadata.resource_version.clone().unwrap_or_default();
        if let Some(t) = self.pods.get(&key)
            && t.rv == rv
            && !rv.is_empty()
        {
            return; // Relist duplicate.
        }
        let node = info.node_name.clone();
        if node.is_none() && !self.names.contains(&info.scheduler_name) {
            // Someone else's pending pod.
            self.pods.remove(&key);
            return;
        }
        self.gangs.on_pod(&key, &p);
        self.seq += 1;
        info.seq = self.seq;
        let info = Arc::new(info);
        self.pods.insert(
            key.clone(),
            Tracked {
                rv,
                node: node.clone(),
            },
        );
        match node {
            Some(n) => {
                // Bound (by us or anyone): the API is the truth.
                self.queue.remove(&key);
                self.last_report.remove(&key);
                self.nominations.remove(&key);
                self.preemptor_gone(&key);
                if let Some(e) = self.caps.on_pod(&info) {
                    tracing::warn!("{e}");
                    self.metrics.invalid_objects.inc();
                }
                let info = match self.victims.get_mut(&key) {
                    Some(v) if info.pod.metadata.deletion_timestamp.is_none() => {
                        // Eviction requested, not yet visible: keep it marked.
                        v.unmarked = info.clone();
                        mark_terminating(&info)
                    }
                    Some(v) => {
                        v.api_terminating = true;
                        info
                    }
                    None => info,
                };
                self.sched.snapshot.add_pod(info, &n);
            }
            None => {
                if self.sched.snapshot.pod_node(&key).is_some()
                    && self.queue.get(&key).map(|e| e.state) != Some(queue::State::InFlight)
                {
                    // Was bound before (re-created with the same name): forget.
                    self.sched.snapshot.remove_pod(&key);
                }
                self.queue.upsert(info, Instant::now());
            }
        }
    }

    fn on_node_event(&mut self, ev: Event<Node>) {
        match ev {
            Event::Init => {
                self.relist[1] = Some(HashSet::new());
                self.node_buf.clear();
            }
            Event::InitApply(n) => {
                if let (Some(s), Some(name)) = (self.relist[1].as_mut(), n.metadata.name.clone()) {
                    s.insert(name);
                }
                // Buffered: applied with one reordering at InitDone.
                self.node_buf.push(n);
            }
            Event::InitDone => {
                let buf = std::mem::take(&mut self.node_buf);
                let mut infos = Vec::with_capacity(buf.len());
                for n in buf {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    match NodeInfo::new(n) {
                        Ok(i) => infos.push(i),
                        Err(e) => {
                            tracing::warn!("node {name}: {e}");
                            self.metrics.invalid_objects.inc();
                        }
                    }
                }
                self.sched.snapshot.upsert_nodes(infos);
                if let Some(seen) = self.relist[1].take() {
                    let gone: Vec<String> = self
                        .sched
                        .snapshot
                        .nodes()
                        .iter()
                        .filter(|n| !seen.contains(&*n.name))
                        .map(|n| n.name.to_string())
                        .collect();
                    for n in gone {
                        self.sched.snapshot.remove_node(&n);
                    }
                }
                self.synced[1] = true;
                self.queue.on_cluster_event();
            }
            Event::Apply(n) => {
                if self.apply_node(n) {
                    self.queue.on_cluster_event();
                }
            }
            Event::Delete(n) => {
                if let Some(name) = n.metadata.name.as_deref() {
                    self.sched.snapshot.remove_node(name);
                }
            }
        }
    }

    /// Applies a node; returns whether something scheduling-relevant changed
    /// (new node, allocatable, labels, taints, unschedulable) — status heartbeats do
    /// not re-queue unschedulable pods.
    fn apply_node(&mut self, n: Node) -> bool {
        let name = n.metadata.name.clone().unwrap_or_default();
        let old = self.sched.snapshot.node(&name).cloned();
        if let Some(old) = &old
            && old.node.metadata.resource_version == n.metadata.resource_version
            && n.metadata.resource_version.is_some()
        {
            return false;
        }
        match NodeInfo::new(n) {
            Ok(info) => {
                let relevant = old.is_none_or(|o| {
                    o.allocatable != info.allocatable
                        || o.labels != info.labels
                        || o.taints != info.taints
                        || o.unschedulable != info.unschedulable
                });
                self.sched.snapshot.upsert_node(info);
                relevant
            }
            Err(e) => {
                tracing::warn!("node {name}: {e}");
                self.metrics.invalid_objects.inc();
                false
            }
        }
    }

    fn on_ns_event(&mut self, ev: Event<Namespace>) {
        let apply = |snap: &mut Snapshot, ns: Namespace| {
            if let Some(name) = ns.metadata.name {
                let labels: Labels = ns.metadata.labels.unwrap_or_default().into_iter().collect();
                snap.namespaces.insert(name, labels);
            }
        };
        match ev {
            Event::Init => self.relist[2] = Some(HashSet::new()),
            Event::InitApply(ns) => {
                if let (Some(s), Some(name)) = (self.relist[2].as_mut(), ns.metadata.name.clone()) {
                    s.insert(name);
                }
                apply(&mut self.sched.snapshot, ns);
            }
            Event::InitDone => {
                if let Some(seen) = self.relist[2].take() {
                    self.sched
                        .snapshot
                        .namespaces
                        .retain(|k, _| seen.contains(k));
                }
                self.synced[2] = true;
            }
            Event::Apply(ns) => {
                apply(&mut self.sched.snapshot, ns);
                self.queue.on_cluster_event();
            }
            Event::Delete(ns) => {
                if let Some(name) = ns.metadata.name.as_deref() {
                    self.sched.snapshot.namespaces.remove(name);
                }
            }
        }
    }

    fn schedule_batch(&mut self) {
        let room = self.max_in_flight - self.in_flight;
        let pods = self.queue.pop_active(self.batch.min(room));
        if pods.is_empty() {
            return;
        }
        // Gang/queue pods and preemptors placed on their nominated node go through a
        // batch session, before the plain pods of the batch so that the capacity
        // freed for a preemptor is not taken by a lower-priority plain pod.
        let (gang_pods, plain): (Vec<_>, Vec<_>) = pods
            .into_iter()
            .partition(|p| gang::is_batch_pod(p) || self.nominations.contains_key(&p.key));
        if !gang_pods.is_empty() {
            self.schedule_gangs(gang_pods);
        }
        if !plain.is_empty() {
            self.schedule_plain(plain);
        }
    }

    fn bind_request(&self, key: String, node: String, attempt: u32) -> Option<BindRequest> {
        let e = self.queue.get(&key)?;
        // Annotations Reserve plugins added to the assumed pod (e.g. GpuShare's card
        // assignment): whatever path placed it (plain batch, batch session, a retry),
        // the copy in the snapshot carries them.
        let mut annotations = crate::framework::PodAnnotations::default();
        if let Some((placed, on)) = self.sched.snapshot.placed_pod(&key)
            && **on == *node
            && !Arc::ptr_eq(&placed.pod, &e.info.pod)
        {
            let before = e.info.pod.metadata.annotations.as_ref();
            for (k, v) in placed.pod.metadata.annotations.iter().flatten() {
                if before.and_then(|b| b.get(k)) != Some(v) {
                    annotations.insert(k.clone(), v.clone());
                }
            }
        }
        Some(BindRequest {
            namespace: e.info.namespace.clone(),
            name: e.info.name.clone(),
            uid: e.info.uid.clone(),
            enqueued: e.enqueued,
            key,
            node,
            attempt,
            annotations,
        })
    }

    fn schedule_plain(&mut self, pods: Vec<Arc<PodInfo>>) {
        let t0 = Instant::now();
        let batch: Vec<PodInfo> = pods.iter().map(|p| (**p).clone()).collect();
        let mut report = self.sched.schedule_all(batch);
        let secs = t0.elapsed().as_secs_f64();
        self.metrics.algorithm_seconds.inc_by(secs);
        self.metrics
            .algorithm_latency
            .observe(secs / pods.len() as f64);
        let now = Instant::now();
        for pl in report.placements {
            self.metrics.attempt("scheduled");
            let annotations = report.annotations.remove(&pl.pod).unwrap_or_default();
            let Some(mut req) = self.bind_request(pl.pod, pl.node, 0) else {
                continue;
            };
            req.annotations = annotations;
            self.in_flight += 1;
            self.binder.bind(req);
        }
        let nominated = self.preempt_for(&report.unschedulable);
        for u in report.unschedulable {
            if nominated.contains(&u.pod) {
                self.metrics.attempt("preempting");
                continue;
            }
            self.metrics.attempt("unschedulable");
            let attempts = self.queue.failed(&u.pod, now, true);
            self.report_failure(&u.pod, u.message, attempts, now);
        }
    }

    /// PostFilter for plain pods that did not fit: a preemption-only session over
    /// those that may preempt. Returns the pods nominated (now waiting for victims).
    fn preempt_for(&mut self, failed: &[crate::scheduler::Unschedulable]) -> HashSet<String> {
        if failed.is_empty() || !self.gangs.evicts() {
            return HashSet::new();
        }
        let cands: Vec<Arc<PodInfo>> = failed
            .iter()
            .filter_map(|u| self.queue.get(&u.pod))
            .map(|e| e.info.clone())
            .filter(|p| {
                p.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.preemption_policy.as_deref())
                    != Some("Never")
            })
            .collect();
        if cands.is_empty() {
            return HashSet::new();
        }
        // Cheap precheck: preempt needs a running pod of lower priority; reclaim needs
        // queues to reclaim between.
        let top = cands.iter().map(|p| p.priority).max().unwrap_or(i32::MIN);
        let lower = self
            .sched
            .snapshot
            .nodes()
            .iter()
            .any(|n| n.pods.iter().any(|p| p.priority < top));
        if !lower && !self.gangs.may_reclaim() {
            return HashSet::new();
        }
        self.prepare_session(HashMap::new());
        let t0 = Instant::now();
        let sched = std::mem::replace(&mut self.sched, gang::placeholder());
        let closed = self.gangs.run_evictions(sched, cands);
        let batch::session::Closed {
            sched,
            evicted,
            evictions,
            nominated,
            ..
        } = closed;
        self.sched = sched;
        self.metrics
            .algorithm_seconds
            .inc_by(t0.elapsed().as_secs_f64());
        self.start_preemptions(evicted, evictions, nominated)
    }

    /// Hands the loop's preemption state to the next session.
    fn prepare_session(&mut self, nominated: HashMap<String, String>) {
        let now = Instant::now();
        self.unevictable.retain(|_, t| *t > now);
        let reserved: HashSet<String> = self.waiting_pod.keys().cloned().collect();
        // A held reservation is a pending pod: never a victim.
        let unevictable = self
            .unevictable
            .keys()
            .cloned()
            .chain(reserved.iter().cloned())
            .collect();
        self.gangs.prepare(nominated, reserved, unevictable);
    }

    /// The preemptor job a pod belongs to (its PodGroup, else itself).
    fn job_of(&self, pod: &str) -> String {
        self.gangs
            .group_of(pod)
            .map(|g| g.1.clone())
            .unwrap_or_else(|| pod.to_string())
    }

    /// Carries out a session's evictions: victims stay in the snapshot marked
    /// terminating until the API removes them; each preemptor pod is held (in flight,
    /// reserved on its nominated node, `nominatedNodeName` written) until its job's
    /// victims are all gone. Returns the nominated pod keys.
    fn start_preemptions(
        &mut self,
        evicted: Vec<(Arc<PodInfo>, String)>,
        evictions: Vec<batch::Eviction>,
        nominated: Vec<crate::scheduler::Placement>,
    ) -> HashSet<String> {
        let now = Instant::now();
        let mut out = HashSet::new();
        if evictions.is_empty() && nominated.is_empty() {
            return out;
        }
        let info: HashMap<String, (Arc<PodInfo>, String)> = evicted
            .into_iter()
            .map(|(p, n)| (p.key.clone(), (p, n)))
            .collect();
        let mut new_waits: HashMap<String, Wait> = HashMap::new();
        for e in evictions {
            let Some((p, node)) = info.get(&e.pod) else {
                continue;
            };
            // Back into the snapshot (the session took it out): it runs until the
            // kubelet stops it.
            self.sched.snapshot.add_pod(mark_terminating(p), node);
            let grace = p
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .clamp(0, 3600) as u64;
            let w = new_waits
                .entry(e.preemptor.clone())
                .or_insert_with(|| Wait {
                    pods: Vec::new(),
                    victims: HashSet::new(),
                    deadline: now,
                });
            w.victims.insert(e.pod.clone());
            w.deadline = w
                .deadline
                .max(now + Duration::from_secs(grace) + WAIT_SLACK);
            self.victims.insert(
                e.pod.clone(),
                Victim {
                    job: e.preemptor.clone(),
                    node: node.clone(),
                    uid: p.uid.clone(),
                    unmarked: p.clone(),
                    api_terminating: false,
                },
            );
            tracing::info!(victim = %e.pod, preemptor = %e.preemptor, node = %node, "evicting: {}", e.reason);
            self.evictor.evict(evictor::EvictRequest {
                cause: evictor::Cause::Preemption,
                key: e.pod.clone(),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                uid: p.uid.clone(),
                node: node.clone(),
                preemptor: e.preemptor,
                reason: e.reason,
            });
        }
        for pl in nominated {
            let Some(entry) = self.queue.get(&pl.pod) else {
                continue;
            };
            let (p, state) = (entry.info.clone(), entry.state);
            if state != queue::State::InFlight {
                continue;
            }
            let job = self.job_of(&pl.pod);
            let w = new_waits.entry(job.clone()).or_insert_with(|| Wait {
                pods: Vec::new(),
                victims: HashSet::new(),
                deadline: now + WAIT_SLACK,
            });
            w.pods.push((pl.pod.clone(), pl.node.clone()));
            self.sched.snapshot.add_pod(p.clone(), &pl.node);
            self.evictor
                .nominate(&p.namespace, &p.name, Some(pl.node.clone()));
            self.waiting_pod.insert(pl.pod.clone(), job);
            out.insert(pl.pod);
        }
        for (job, w) in new_waits {
            match self.waits.get_mut(&job) {
                Some(old) => {
                    old.pods.extend(w.pods);
                    old.victims.extend(w.victims);
                    old.deadline = old.deadline.max(w.deadline);
                }
                None => {
                    self.waits.insert(job.clone(), w);
                }
            }
            if self.waits.get(&job).is_some_and(|w| w.victims.is_empty()) {
                self.end_wait(&job, true, now);
            }
        }
        self.metrics
            .preemptors_waiting
            .set(self.waiting_pod.len() as i64);
        out
    }

    /// Ends a preemption wait. `released`: the victims are gone (or the deadline
    /// passed), the preemptors become active with their nomination; otherwise the
    /// preemption is abandoned (nomination cleared, victims not yet terminating
    /// restored, preemptors back off).
    fn end_wait(&mut self, job: &str, released: bool, now: Instant) {
        let Some(w) = self.waits.remove(job) else {
            return;
        };
        for (pod, node) in w.pods {
            self.waiting_pod.remove(&pod);
            let api_bound = self.pods.get(&pod).is_some_and(|t| t.node.is_some());
            if !api_bound && self.sched.snapshot.pod_node(&pod).map(|n| &**n) == Some(&*node) {
                self.sched.snapshot.remove_pod(&pod);
            }
            if api_bound {
                continue;
            }
            if released {
                self.nominations.insert(pod.clone(), node);
                self.queue.retry_now(&pod);
            } else {
                if let Some(e) = self.queue.get(&pod) {
                    self.evictor.nominate(&e.info.namespace, &e.info.name, None);
                }
                self.queue.failed(&pod, now, false);
            }
        }
        for v in w.victims {
            if released {
                // Deadline: stop tracking; the snapshot follows the API from here.
                self.victims.remove(&v);
            } else if let Some(vi) = self.victims.remove(&v) {
                self.unmark(&v, vi);
            }
        }
        self.queue.on_cluster_event();
        self.metrics
            .preemptors_waiting
            .set(self.waiting_pod.len() as i64);
    }

    /// Puts a victim back as it was (its eviction did not happen).
    fn unmark(&mut self, key: &str, v: Victim) {
        if !v.api_terminating
            && self.sched.snapshot.pod_node(key).map(|n| &**n) == Some(&*v.node)
            && self.pods.contains_key(key)
        {
            self.sched.snapshot.add_pod(v.unmarked, &v.node);
        }
    }

    /// A victim left the API (or the snapshot): its preemptor may be done waiting.
    fn victim_gone(&mut self, key: &str) {
        let Some(v) = self.victims.remove(key) else {
            return;
        };
        let done = match self.waits.get_mut(&v.job) {
            Some(w) => {
                w.victims.remove(key);
                w.victims.is_empty()
            }
            None => false,
        };
        if done {
            self.end_wait(&v.job, true, Instant::now());
        }
    }

    /// A waiting preemptor pod was deleted or bound elsewhere.
    fn preemptor_gone(&mut self, key: &str) {
        let Some(job) = self.waiting_pod.remove(key) else {
            return;
        };
        if let Some(w) = self.waits.get_mut(&job) {
            w.pods.retain(|(p, _)| p != key);
            if w.pods.is_empty()
                && let Some(w) = self.waits.remove(&job)
            {
                // Nobody to place: victims already asked to go keep going; stop
                // tracking them (the watch removes them).
                for v in w.victims {
                    self.victims.remove(&v);
                }
            }
        }
        self.metrics
            .preemptors_waiting
            .set(self.waiting_pod.len() as i64);
    }

    fn on_evicted(&mut self, o: evictor::EvictOutcome) {
        let now = Instant::now();
        match o.result {
            evictor::EvictResult::Evicted => {}
            evictor::EvictResult::Gone => {
                // Gone before the watch said so: drop it from the snapshot (only that
                // incarnation).
                if let Some(v) = self.victims.get(&o.key)
                    && self
                        .sched
                        .snapshot
                        .node(&v.node)
                        .is_some_and(|n| n.pods.iter().any(|p| p.key == o.key && p.uid == v.uid))
                {
                    self.sched.snapshot.remove_pod(&o.key);
                }
                self.victim_gone(&o.key);
            }
            evictor::EvictResult::Blocked(msg) | evictor::EvictResult::Failed(msg) => {
                tracing::info!(victim = %o.key, "eviction not carried out: {msg}");
                self.unevictable
                    .insert(o.key.clone(), now + UNEVICTABLE_FOR);
                match self.victims.get(&o.key).map(|v| v.job.clone()) {
                    Some(job) if self.waits.contains_key(&job) => self.end_wait(&job, false, now),
                    Some(_) => {
                        if let Some(v) = self.victims.remove(&o.key) {
                            self.unmark(&o.key, v);
                        }
                    }
                    None => {}
                }
            }
        }
    }

    /// Evicts running pods past their `corral.io/max-runtime` (own annotation, else
    /// their PodGroup's).
    fn sweep_caps(&mut self, now: Instant) {
        use runtime_cap::{ANN_MAX_RUNTIME, parse_cap, started};
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut due: HashMap<String, i64> =
            self.caps.capped().map(|(k, v)| (k.clone(), v)).collect();
        let objs = self.gangs.objects();
        self.sweep_partial_gangs(&objs, now);
        for g in &objs.groups {
            let Some(v) = g.annotations.get(ANN_MAX_RUNTIME) else {
                continue;
            };
            match parse_cap(v) {
                Ok(cap) => {
                    for m in self.gangs.members(&(g.api, g.key())) {
                        due.entry(m).or_insert(cap);
                    }
                }
                Err(e) => {
                    if let Some(msg) = self.caps.report(&format!("PodGroup {}", g.key()), e) {
                        tracing::warn!("{msg}");
                        self.metrics.invalid_objects.inc();
                    }
                }
            }
        }
        for (key, cap) in due {
            let Some((p, node)) = self.policy_target(&key) else {
                continue;
            };
            let Some(start) = started(&p) else { continue };
            if !self.caps.expired(&key, start, cap, unix_now, now) {
                continue;
            }
            tracing::info!(pod = %key, cap, "max runtime exceeded; evicting");
            let reason = format!(
                "{ANN_MAX_RUNTIME} of {cap}s exceeded (running {}s)",
                unix_now - start
            );
            self.policy_evict(&p, node, evictor::Cause::RuntimeLimit, reason, now);
        }
    }

    /// A running pod a policy (run-time cap, stuck gang) may evict: placed, not
    /// terminating, not already a preemption victim or a held preemptor.
    fn policy_target(&self, key: &str) -> Option<(Arc<PodInfo>, String)> {
        if self.victims.contains_key(key) || self.waiting_pod.contains_key(key) {
            return None;
        }
        let (p, node) = self.sched.snapshot.placed_pod(key)?;
        p.pod
            .metadata
            .deletion_timestamp
            .is_none()
            .then(|| (p.clone(), node.to_string()))
    }

    /// Evicts `p` for a policy through the evictor (retried after
    /// `runtime_cap::RETRY_AFTER` if refused).
    fn policy_evict(
        &mut self,
        p: &PodInfo,
        node: String,
        cause: evictor::Cause,
        reason: String,
        now: Instant,
    ) {
        self.caps.evicting(&p.key, now);
        self.evictor.evict(evictor::EvictRequest {
            cause,
            key: p.key.clone(),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
            node,
            preemptor: String::new(),
            reason,
        });
    }

    /// Evicts the bound members of gangs that stayed partial (0 < bound < minMember)
    /// longer than their `corral.io/partial-timeout`.
    fn sweep_partial_gangs(&mut self, objs: &batch::BatchObjects, now: Instant) {
        use runtime_cap::{ANN_PARTIAL_TIMEOUT, parse_cap};
        let mut present = HashSet::new();
        for g in &objs.groups {
            let Some(v) = g.annotations.get(ANN_PARTIAL_TIMEOUT) else {
                continue;
            };
            let key = g.key();
            present.insert(key.clone());
            let timeout = match parse_cap(v) {
                Ok(t) => t,
                Err(e) => {
                    let e = e.replace(runtime_cap::ANN_MAX_RUNTIME, ANN_PARTIAL_TIMEOUT);
                    if let Some(msg) = self.caps.report(&format!("PodGroup {key}"), e) {
                        tracing::warn!("{msg}");
                        self.metrics.invalid_objects.inc();
                    }
                    continue;
                }
            };
            let bound = self.gangs.bound_members(&(g.api, key.clone()));
            let min = g.min_member.max(1) as usize;
            let partial = !bound.is_empty() && bound.len() < min;
            let for_ = self.caps.partial(&key, partial, now);
            if !partial || for_ < Duration::from_secs(timeout as u64) {
                continue;
            }
            let reason = format!(
                "gang {key} below minMember ({}/{min} bound) for more than {ANN_PARTIAL_TIMEOUT} {v}",
                bound.len()
            );
            for k in bound {
                if self.caps.is_evicting(&k) {
                    continue;
                }
                let Some((p, node)) = self.policy_target(&k) else {
                    continue;
                };
                tracing::info!(pod = %k, group = %key, "gang below minMember too long; evicting");
                self.policy_evict(&p, node, evictor::Cause::PartialGang, reason.clone(), now);
            }
        }
        self.caps.retain_groups(&present);
    }

    /// Releases preemptors whose wait passed its deadline.
    fn expire_waits(&mut self, now: Instant) {
        if self.waits.is_empty() {
            return;
        }
        let expired: Vec<String> = self
            .waits
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for job in expired {
            tracing::info!(preemptor = %job, "victims still terminating at the deadline; releasing");
            self.end_wait(&job, true, now);
        }
    }

    /// A batch session over the popped gang/queue pods plus every other pending
    /// member of their gangs (whatever their queue state), so a gang is always
    /// decided as a whole: the gang plugin commits it only when minMember (and
    /// minTaskMember/minResources) is placeable, otherwise nothing of it stays in the
    /// snapshot. The placed members' bindings are then issued together.
    fn schedule_gangs(&mut self, pods: Vec<Arc<PodInfo>>) {
        // Gangs with fewer member pods than minMember wait for the rest without a
        // session (the member that completes the gang brings the others in).
        let mut short: HashMap<gang::GroupKey, String> = HashMap::new();
        let now = Instant::now();
        let mut pods = pods;
        pods.retain(|p| {
            let Some(g) = self.gangs.group_of(&p.key).cloned() else {
                return true;
            };
            let why = match short.get(&g) {
                Some(w) => w.clone(),
                None => match self.gangs.short_of_members(&g) {
                    Some((have, min)) => {
                        let w = format!(
                            "pod group {} is not ready: {have} pod(s) exist, minMember is {min}",
                            g.1
                        );
                        short.insert(g, w.clone());
                        w
                    }
                    None => return true,
                },
            };
            self.metrics.attempt("unschedulable");
            let attempts = self.queue.failed(&p.key, now, true);
            self.report_failure(&p.key, why, attempts, now);
            false
        });
        if pods.is_empty() {
            return;
        }
        let mut keys: HashSet<String> = pods.iter().map(|p| p.key.clone()).collect();
        let touched: HashSet<gang::GroupKey> = pods
            .iter()
            .filter_map(|p| self.gangs.group_of(&p.key).cloned())
            .collect();
        let mut pending = pods;
        for g in &touched {
            for m in self.gangs.members(g) {
                if keys.contains(&m) {
                    continue;
                }
                if let Some(info) = self.queue.take(&m) {
                    keys.insert(m);
                    pending.push(info);
                }
            }
        }
        let n = pending.len();
        // Released preemptors of this batch are placed on their nominated node first
        // (once: afterwards they compete normally).
        let nominated: HashMap<String, String> = keys
            .iter()
            .filter_map(|k| self.nominations.remove(k).map(|n| (k.clone(), n)))
            .collect();
        self.prepare_session(nominated);
        let t0 = Instant::now();
        let sched = std::mem::replace(&mut self.sched, gang::placeholder());
        let closed = self.gangs.run_session(sched, pending);
        self.gangs.after_session(&closed, &touched);
        let batch::session::Closed {
            sched,
            placements,
            unschedulable,
            evicted,
            evictions,
            nominated,
            ..
        } = closed;
        self.sched = sched;
        let waiting = self.start_preemptions(evicted, evictions, nominated);
        for k in &waiting {
            keys.remove(k);
            self.metrics.attempt("preempting");
        }
        let secs = t0.elapsed().as_secs_f64();
        self.metrics.algorithm_seconds.inc_by(secs);
        self.metrics.algorithm_latency.observe(secs / n as f64);
        let now = Instant::now();
        for pl in placements {
            if !keys.remove(&pl.pod) {
                continue;
            }
            self.metrics.attempt("scheduled");
            match self.bind_request(pl.pod.clone(), pl.node, 0) {
                Some(req) => {
                    self.in_flight += 1;
                    self.binder.bind(req);
                }
                None => {
                    self.sched.snapshot.remove_pod(&pl.pod);
                }
            }
        }
        for u in unschedulable {
            if !keys.remove(&u.pod) {
                continue;
            }
            self.metrics.attempt("unschedulable");
            let attempts = self.queue.failed(&u.pod, now, true);
            self.report_failure(&u.pod, u.message, attempts, now);
        }
        // Anything the session neither placed nor reported: retry after a backoff.
        for k in keys {
            self.queue.failed(&k, now, false);
        }
        if self.leader.load(Ordering::Relaxed) {
            self.flush_statuses(true);
        }
    }

    /// Aggregation: at most one write per pod per backoff window; repeats in the
    /// window are counted and folded into the next write.
    fn report_failure(&mut self, key: &str, message: String, attempts: u32, now: Instant) {
        let Some(e) = self.queue.get(key) else { return };
        let window = queue::backoff(attempts.max(1));
        let entry = self.last_report.entry(key.to_string()).or_insert((
            now - Duration::from_secs(3600),
            Duration::ZERO,
            0,
        ));
        if now.duration_since(entry.0) < entry.1 {
            entry.2 += 1;
            self.metrics.events_suppressed.inc();
            return;
        }
        let suppressed = entry.2;
        *entry = (now, window, 0);
        self.writer.report(FailureReport {
            namespace: e.info.namespace.clone(),
            name: e.info.name.clone(),
            uid: e.info.uid.clone(),
            message,
            occurrences: suppressed + 1,
        });
    }

    fn on_bound(&mut self, o: BindOutcome) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let now = Instant::now();
        match o.result {
            Ok(()) => {
                self.bind_retries.remove(&o.key);
                self.metrics.binds.inc();
                if let Some(e) = self.queue.remove(&o.key) {
                    self.metrics
                        .e2e_latency
                        .observe(now.duration_since(e.enqueued).as_secs_f64());
                }
                self.last_report.remove(&o.key);
                // The snapshot already holds the assumed pod; the watch confirms it.
            }
            Err(err) => {
                self.metrics.bind_error(err.label());
                // Forget the assumption unless the API already showed the pod bound.
                let api_bound = self.pods.get(&o.key).is_some_and(|t| t.node.is_some());
                // A gang member whose gang-mates are being bound: retry the same node
                // (keeping the assumption) a few times before giving up, so that a
                // transient error does not leave the gang partial.
                if !api_bound
                    && matches!(
                        err,
                        binder::BindError::Throttled | binder::BindError::Other(_)
                    )
                    && self.gangs.group_of(&o.key).is_some()
                    && self.sched.snapshot.pod_node(&o.key).map(|n| &**n) == Some(&*o.node)
                {
                    let n = self.bind_retries.entry(o.key.clone()).or_insert(0);
                    *n += 1;
                    let attempt = *n;
                    if attempt <= GANG_BIND_RETRIES
                        && let Some(req) = self.bind_request(o.key.clone(), o.node.clone(), attempt)
                    {
                        tracing::info!(pod = %o.key, attempt, "retrying gang member binding");
                        self.in_flight += 1;
                        self.binder.bind(req);
                        return;
                    }
                }
                self.bind_retries.remove(&o.key);
                if !api_bound
                    && self.sched.snapshot.pod_node(&o.key).map(|n| &**n) == Some(&*o.node)
                {
                    self.sched.snapshot.remove_pod(&o.key);
                }
                if api_bound {
                    self.queue.remove(&o.key);
                    return;
                }
                match err {
                    binder::BindError::NotLeader => self.queue.retry_now(&o.key),
                    binder::BindError::NotFound => {
                        self.queue.remove(&o.key);
                    }
                    // Already bound (another scheduler) or transient: back off; the
                    // watch removes the pod once it shows it bound. A 409 is never
                    // retried before the backoff expires: no retry storm.
                    _ => {
                        self.queue.failed(&o.key, now, false);
                    }
                }
            }
        }
    }
}

/// Command-line arguments of `corral-scheduler run`.
#[derive(Debug, Clone)]
pub struct RunArgs {
    pub kubeconfig: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub listen: SocketAddr,
    pub opts: RunOptions,
    /// `--health-*` flags (used when a profile enables NodeHealth).
    pub health: crate::health::live::HealthFlags,
}

/// Runs until Ctrl-C.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut opts = args.opts.clone();
    let (frameworks, health_args) = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("config {}: {e}", p.display()))?;
            let cfg = crate::config::KubeSchedulerConfiguration::from_yaml(
                &text,
                &p.display().to_string(),
            )?;
            let session =
                crate::batch::SessionConfig::from_config_yaml(&text, &p.display().to_string())
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(s) = session {
                s.plugins()
                    .map_err(|e| anyhow::anyhow!("config {}: {e}", p.display()))?;
                opts.session = s;
            }
            (cfg.build()?, crate::health::args_from_config(&cfg))
        }
        None => (crate::config::default_frameworks(), None),
    };
    opts.health = crate::health::live::options_for(&frameworks, health_args, &args.health)
        .map_err(|e| anyhow::anyhow!("NodeHealth: {e}"))?;
    let client = client(args.kubeconfig.as_ref()).await?;
    let handle = start(client, frameworks, opts)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen {}: {e}", args.listen))?;
    let app = metrics::router(handle.metrics.clone(), handle.ready.clone());
    tracing::info!("serving /metrics /healthz /readyz on {}", args.listen);
    tokio::select! {
        r = axum::serve(listener, app) => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    tokio::task::block_in_place(|| handle.stop());
    Ok(())
}
