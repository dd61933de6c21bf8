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
//!   ([`batch_state`]) and runs `Scheduler::schedule_all` on the other pods of each batch
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

pub mod batch_state;
pub mod binder;
pub mod cli;
pub mod compat_metrics;
pub mod crds;
pub mod evictor;
pub mod leader;
pub mod metrics;
pub mod queue;
pub mod reflector;
pub mod runtime_cap;
pub mod settings;
pub mod status;

mod events;
pub mod failover;
pub mod group_events;
mod observe;
mod preemption;
pub mod recorder;
mod schedule;
mod sharded_hist;
mod sweeps;
pub mod volumes;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, ResourceQuota};
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
use self::preemption::{Victim, Wait};
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
    /// Per-pod retry backoff (`podInitialBackoffSeconds`/`podMaxBackoffSeconds`).
    pub backoff: queue::Backoff,
    /// Threads evaluating nodes and pods (`parallelism`); None = one per core.
    pub parallelism: Option<usize>,
    /// Engine options (`corral.batchSize`, `candidates`, `selectionTolerance`); the
    /// seed comes from `seed`.
    pub engine: SchedOptions,
    /// Write a `Scheduled` Event per binding (kube-scheduler does; on by default).
    /// Off only for the benchmark that measures what the Events cost.
    pub scheduled_events: bool,
    /// VolumeBinding's `bindTimeoutSeconds`: how long PreBind waits for claims.
    pub volume_bind_timeout: Duration,
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
            backoff: queue::Backoff::default(),
            parallelism: None,
            // Fixed batches of 64 (no latency budget): `run` hands the engine one
            // cycle's pods or one gang at a time, and sizing those small calls by
            // wall time measured under the API traffic shrank batches and tripled
            // gang creation→bind p99 (BENCHMARKS.md, session 11 combined figures).
            // Placements do not depend on the batch size.
            engine: SchedOptions {
                latency_budget: None,
                ..SchedOptions::default()
            },
            scheduled_events: true,
            volume_bind_timeout: Duration::from_secs(600),
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
    /// A watch event of a volume kind (PV, PVC, StorageClass, CSI objects).
    Volume(Box<volumes::VolumeEvent>),
    /// Leadership changed.
    Leader(bool),
    /// A graceful shutdown began (wakes the loop).
    Drain,
    Stop,
}

/// Shared, observable state of a running scheduler.
pub struct Handle {
    pub metrics: Arc<Metrics>,
    pub leader: Arc<AtomicBool>,
    pub ready: Arc<AtomicBool>,
    /// Set by a graceful shutdown: the loop takes no new work.
    draining: Arc<AtomicBool>,
    /// Binding requests handed to the binder and not yet answered.
    in_flight: Arc<AtomicUsize>,
    /// Completed passes of the loop (a pass begun after `draining` was set publishes
    /// an exact `in_flight`).
    passes: Arc<AtomicUsize>,
    client: Client,
    leader_opts: Option<leader::LeaderOptions>,
    leader_task: Option<tokio::task::JoinHandle<()>>,
    stop: mpsc::Sender<Msg>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownSummary {
    /// Binds still unanswered when the grace period ran out (0 = all finished).
    pub binds_left: usize,
    /// Whether the Lease held by this process was released.
    pub lease_released: bool,
}

impl Handle {
    /// Stops watches, leader election (releasing nothing: the lease expires) and the
    /// loop at once; see [`Handle::shutdown_gracefully`] for the SIGTERM path.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// The SIGTERM path: stops taking new work (no new batches, evictions or bind
    /// retries), waits up to `grace` for the binds in flight to be answered, stops
    /// leading, releases the Lease (holder cleared, so a standby takes over at its
    /// next retry) and then stops everything.
    pub async fn shutdown_gracefully(mut self, grace: Duration) -> ShutdownSummary {
        let start = self.passes.load(Ordering::Acquire);
        self.draining.store(true, Ordering::Relaxed);
        let _ = self.stop.send(Msg::Drain);
        let deadline = tokio::time::Instant::now() + grace;
        // A pass that began before `draining` was set may still send binds: wait for
        // two more passes, then for the published count to reach zero.
        while (self.passes.load(Ordering::Acquire) < start + 2
            || self.in_flight.load(Ordering::Relaxed) > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let binds_left = self.in_flight.load(Ordering::Relaxed);
        if let Some(t) = self.leader_task.take() {
            t.abort();
            let _ = t.await;
        }
        // Binds not yet sent now fail with NotLeader instead of racing the standby.
        self.leader.store(false, Ordering::Relaxed);
        let mut lease_released = false;
        if let Some(lo) = &self.leader_opts {
            let budget = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_secs(2));
            match tokio::time::timeout(budget, leader::release(&self.client, lo)).await {
                Ok(Ok(r)) => lease_released = r,
                Ok(Err(e)) => tracing::warn!("releasing lease {}/{}: {e}", lo.namespace, lo.name),
                Err(_) => tracing::warn!("releasing lease {}/{}: timed out", lo.namespace, lo.name),
            }
        }
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.stop.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        ShutdownSummary {
            binds_left,
            lease_released,
        }
    }

    fn shutdown(&mut self) {
        if let Some(t) = &self.leader_task {
            t.abort();
        }
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
    // No transparent client retries: kube's default retries 429/503 up to 15 times
    // with backoff up to 1000 s, which would hold a binding slot for minutes and turn
    // a PodDisruptionBudget's 429 on an eviction into a hang. Every caller here
    // handles these errors itself (binds back off, evictions pick other victims,
    // watches relist with their own backoff).
    let opts = corral_api::client::ClientOptions { retry: false };
    Ok(corral_api::client::client(kubeconfig.map(PathBuf::as_path), opts).await?)
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
    let mut frameworks = frameworks;
    let timings = metrics.kube.framework_timings();
    for fw in &mut frameworks {
        fw.observer = Some(timings.clone());
    }
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
    tasks.extend(volumes::spawn(&client, &tx, &metrics));
    for crd in crds::Crd::ALL {
        tasks.push(crds::watch(
            client.clone(),
            crd,
            tx.clone(),
            Msg::Crd,
            opts.crd_retry,
        ));
    }
    // One writer task: PodGroup/Queue status patches. What queued up while a round
    // was being written is coalesced (the latest status per object wins) and sent
    // as the next round, up to `STATUS_CONCURRENCY` requests at once; a round ends
    // before the next begins, so an object's writes stay in order.
    let (status_tx, mut status_rx) =
        tokio::sync::mpsc::unbounded_channel::<Vec<crds::StatusPatch>>();
    {
        let (client, limiter, metrics) = (client.clone(), limiter.clone(), metrics.clone());
        tasks.push(tokio::spawn(async move {
            let on_object = std::sync::Mutex::new(std::collections::HashSet::new());
            while let Some(first) = status_rx.recv().await {
                let mut round = first;
                while let Ok(more) = status_rx.try_recv() {
                    round.extend(more);
                }
                let round = crds::coalesce(round);
                crds::StatusPatcher::write(&client, &limiter, round, &metrics, &on_object).await;
            }
        }));
    }
    let leader_task = opts
        .leader
        .clone()
        .map(|lo| leader::spawn(client.clone(), lo, leader.clone(), tx.clone()));
    let draining = Arc::new(AtomicBool::new(false));
    let in_flight_pub = Arc::new(AtomicUsize::new(0));
    let passes = Arc::new(AtomicUsize::new(0));
    let binder = Binder::spawn(
        client.clone(),
        opts.volume_bind_timeout,
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
    let writer = StatusWriter::spawn(
        client.clone(),
        limiter,
        metrics.clone(),
        component,
        opts.scheduled_events,
    );
    let names: HashSet<String> = frameworks
        .iter()
        .map(|f| f.scheduler_name.clone())
        .collect();
    let sched = Scheduler::new(
        frameworks,
        Snapshot::new(),
        SchedOptions {
            seed: opts.seed,
            ..opts.engine.clone()
        },
    );
    let mut lp = Loop {
        sched,
        names,
        queue: Queue::with_backoff(opts.backoff),
        pods: HashMap::new(),
        seq: 0,
        leader: leader.clone(),
        ready: ready.clone(),
        synced: [false; 3],
        gangs: batch_state::BatchState::new(metrics.clone(), &opts.session),
        status_tx,
        bind_retries: HashMap::new(),
        relist: [None, None, None],
        binder,
        writer,
        metrics: metrics.clone(),
        batch: opts.batch_size.max(1),
        max_in_flight: opts.bind_concurrency.max(1) * 8,
        in_flight: 0,
        draining: draining.clone(),
        in_flight_pub: in_flight_pub.clone(),
        passes: passes.clone(),
        last_report: HashMap::new(),
        node_buf: Vec::new(),
        volume_watch: volumes::VolumeWatch::default(),
        health,
        evictor,
        waits: HashMap::new(),
        waiting_pod: HashMap::new(),
        victims: HashMap::new(),
        nominations: HashMap::new(),
        unevictable: HashMap::new(),
        caps: runtime_cap::RuntimeCaps::default(),
        failover: failover::Failover::default(),
    };
    // `parallelism`: the evaluation's rayon work runs in a pool of that size.
    let pool = match opts.parallelism {
        Some(n) => Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .thread_name(|i| format!("corral-eval-{i}"))
                .build()
                .map_err(|e| anyhow::anyhow!("parallelism: {e}"))?,
        ),
        None => None,
    };
    let thread = std::thread::Builder::new()
        .name("corral-sched".into())
        .spawn(move || match pool {
            Some(p) => p.install(|| lp.run(rx)),
            None => lp.run(rx),
        })?;
    Ok(Handle {
        metrics,
        leader,
        ready,
        draining,
        in_flight: in_flight_pub,
        passes,
        client,
        leader_opts: opts.leader,
        leader_task,
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
    /// Graceful shutdown in progress: no new batches, evictions or bind retries.
    draining: Arc<AtomicBool>,
    /// `in_flight`, published for the graceful shutdown at the end of each pass.
    in_flight_pub: Arc<AtomicUsize>,
    /// Completed passes of the loop.
    passes: Arc<AtomicUsize>,
    /// Last failure report per pod (event aggregation window).
    last_report: HashMap<String, (Instant, Duration, u32)>,
    /// PodGroups, Queues, quotas, priority classes, topology; the gang path.
    gangs: batch_state::BatchState,
    status_tx: tokio::sync::mpsc::UnboundedSender<Vec<crds::StatusPatch>>,
    /// Retries of a gang member's failed binding.
    bind_retries: HashMap<String, u32>,
    /// Nodes of a list in progress.
    node_buf: Vec<Node>,
    /// Relist state of the volume watches.
    volume_watch: volumes::VolumeWatch,
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
    /// Controllers that lost pods on failed nodes: their new pods go first.
    failover: failover::Failover,
}

impl Loop {
    /// Leading, synced and not shutting down: may take new work.
    fn may_work(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
            && self.all_synced()
    }

    fn all_synced(&self) -> bool {
        self.synced.iter().all(|s| *s)
            && self.gangs.synced.iter().all(|s| *s)
            && self.gangs.crds_synced.len() == crds::Crd::ALL.len()
            && self.volume_watch.synced()
    }

    fn run(&mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            // Block when there is nothing to schedule, else drain without waiting.
            let can_schedule =
                self.may_work() && self.queue.has_active() && self.in_flight < self.max_in_flight;
            let first = if can_schedule {
                rx.try_recv().ok()
            } else {
                let wait = self
                    .queue
                    .next_ready()
                    .map(|t| t.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_millis(500))
                    .clamp(Duration::from_millis(1), Duration::from_millis(500));
                // Draining: short passes, so the published in-flight count is fresh.
                let wait = if self.draining.load(Ordering::Relaxed) {
                    wait.min(Duration::from_millis(10))
                } else {
                    wait
                };
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
            if self.may_work() && self.caps.due(now) {
                self.sweep_caps(now);
            }
            self.queue.tick(now);
            for g in self.gangs.sweep_gang_waits(now) {
                let members = self.gangs.members(&g);
                self.queue.ungate(&members);
            }
            self.publish_queue_metrics();
            if self.synced[1]
                && let Some(h) = self.health.as_mut()
            {
                h.maybe_tick(&mut self.sched.snapshot, now);
            }
            if self.may_work() && self.in_flight < self.max_in_flight && self.queue.has_active() {
                self.schedule_batch();
            }
            if self.gangs.has_dirty() && self.leader.load(Ordering::Relaxed) && self.all_synced() {
                self.flush_statuses(false);
            }
            self.in_flight_pub.store(self.in_flight, Ordering::Relaxed);
            self.passes.fetch_add(1, Ordering::Release);
        }
    }

    /// Sends the changed PodGroup (and, after a session, Queue) statuses.
    fn flush_statuses(&mut self, queues_too: bool) {
        self.gangs
            .set_reserved(self.waiting_pod.keys().cloned().collect());
        let patches = self.gangs.statuses(&self.sched.snapshot, queues_too);
        if !patches.is_empty() {
            for e in group_events::from_patches(&patches, |k| {
                self.gangs.object_uid(crds::Crd::VolcanoPodGroup, k)
            }) {
                self.writer.group_event(e);
            }
            let _ = self.status_tx.send(patches);
        }
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Pods(ev) => self.on_pod_event(ev),
            Msg::Node(ev) => self.on_node_event(*ev),
            Msg::Namespace(ev) => self.on_ns_event(*ev),
            Msg::Bound(o) => self.on_bound(o),
            Msg::Volume(ev) => {
                if self
                    .volume_watch
                    .apply(*ev, &mut self.sched.snapshot, &self.metrics)
                {
                    self.queue.on_cluster_event();
                }
            }
            Msg::Evicted(o) => self.on_evicted(o),
            Msg::Crd(crd, ev) => {
                if self.gangs.on_crd_event(crd, *ev, &mut self.sched.snapshot) {
                    self.queue.on_cluster_event();
                }
                for g in self.gangs.take_ungated() {
                    let members = self.gangs.members(&g);
                    self.queue.ungate(&members);
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
            Msg::Drain | Msg::Stop => {}
        }
        if !self.ready.load(Ordering::Relaxed) && self.all_synced() {
            self.ready.store(true, Ordering::Relaxed);
            tracing::info!(
                pods = self.pods.len(),
                pending = self.queue.len(),
                "caches synced: ready"
            );
        }
    }
}

/// Command-line arguments of `corral-scheduler run`.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// Flags that override the configuration file when given.
    pub flags: settings::FlagOverrides,
    pub config: Option<PathBuf>,
    pub listen: SocketAddr,
    pub opts: RunOptions,
    /// `--health-*` flags (used when a profile enables NodeHealth).
    pub health: crate::health::live::HealthFlags,
    /// Bound on the drain after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
}

/// Runs until SIGTERM or SIGINT, then shuts down gracefully
/// ([`Handle::shutdown_gracefully`]).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut opts = args.opts.clone();
    let mut kubeconfig = args.flags.kubeconfig.clone();
    let (frameworks, health_args) = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("config {}: {e}", p.display()))?;
            // A Volcano scheduler configuration, or a KubeSchedulerConfiguration.
            let (cfg, session) =
                crate::batch::volcano_conf::load_any(&text, &p.display().to_string())
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            kubeconfig =
                settings::apply_run(Some(&cfg), &p.display().to_string(), &args.flags, &mut opts)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(s) = session {
                s.plugins()
                    .map_err(|e| anyhow::anyhow!("config {}: {e}", p.display()))?;
                opts.session = s;
            }
            (cfg.build()?, crate::health::args_from_config(&cfg))
        }
        None => {
            settings::apply_run(None, "flags", &args.flags, &mut opts)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            (crate::config::default_frameworks(), None)
        }
    };
    opts.health = crate::health::live::options_for(&frameworks, health_args, &args.health)
        .map_err(|e| anyhow::anyhow!("NodeHealth: {e}"))?;
    let profiles: Vec<&str> = frameworks
        .iter()
        .map(|f| f.scheduler_name.as_str())
        .collect();
    let leader = opts.leader.as_ref().map_or_else(
        || "off".to_string(),
        |l| {
            format!(
                "{}/{} as {} (lease {:?}, renew {:?}, retry {:?})",
                l.namespace, l.name, l.identity, l.lease_duration, l.renew_deadline, l.retry_period
            )
        },
    );
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %args.config.as_ref().map_or("-".into(), |p| p.display().to_string()),
        kubeconfig = %kubeconfig.as_ref().map_or("in-cluster/default".into(), |p| p.display().to_string()),
        profiles = %profiles.join(","),
        leader_election = %leader,
        qps = opts.qps,
        burst = opts.burst,
        backoff = %format!("{:?}..{:?}", opts.backoff.initial, opts.backoff.max),
        parallelism = opts.parallelism.unwrap_or(0),
        batch_size = opts.batch_size,
        bind_concurrency = opts.bind_concurrency,
        listen = %args.listen,
        "corral-scheduler run starting"
    );
    let client = client(kubeconfig.as_ref()).await?;
    let handle = start(client, frameworks, opts)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen {}: {e}", args.listen))?;
    let app = metrics::router(handle.metrics.clone(), handle.ready.clone());
    tracing::info!("serving /metrics /healthz /readyz on {}", args.listen);
    let sig = tokio::select! {
        r = crate::http_server::serve(listener, app, crate::http_server::ServerLimits::default()) => {
            r?;
            "server exit"
        }
        s = crate::shutdown::signal() => s,
    };
    tracing::info!("{sig}: shutting down (grace {:?})", args.shutdown_grace);
    let sum = handle.shutdown_gracefully(args.shutdown_grace).await;
    if sum.binds_left > 0 {
        tracing::warn!(
            "{} bind(s) still in flight after {:?}",
            sum.binds_left,
            args.shutdown_grace
        );
    }
    tracing::info!(lease_released = sum.lease_released, "stopped");
    Ok(())
}
