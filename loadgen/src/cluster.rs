//! `corral-loadgen cluster`: synthetic cluster manifests.
//!
//! Emits real Kubernetes objects (k8s-openapi types) as multi-document YAML, shaped
//! like kube-scheduler's `scheduler_perf` workloads:
//!
//! * `basic`    – SchedulingBasic: `node-default` nodes, `pod-default` pods.
//! * `affinity` – SchedulingPodAntiAffinity: required hostname anti-affinity against the
//!   pod's own group label, plus preferred affinity / anti-affinity variants.
//! * `spread`   – SchedulingTopologySpreading: zone (DoNotSchedule) and hostname
//!   (ScheduleAnyway) constraints selecting the pod's `app` label.
//! * `mixed`    – a realistic production mix (general / high-memory / arm64 / GPU pools,
//!   tainted AI pool, web, batch, data, AI and system pods, PriorityClasses).
//!
//! Output is a pure function of the arguments (ChaCha8 seeded from `--seed`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use corral_core::labels::NodeTerm;
use corral_plugins::helpers::tolerates_taint;
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerImage, ContainerPort, Namespace, Node, NodeAffinity,
    NodeCondition, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, NodeSpec, NodeStatus,
    Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity, PodSpec, PodStatus,
    PreferredSchedulingTerm, ResourceRequirements, Taint, Toleration, TopologySpreadConstraint,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Scheduler name set on every generated pod.
pub const SCHEDULER_NAME: &str = "corral";
/// Largest accepted `--nodes`.
pub const MAX_NODES: u32 = 100_000;
/// Largest accepted `--pods` + `--running`.
pub const MAX_PODS: u64 = 1_000_000;

const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";
const REGION: &str = "topology.kubernetes.io/region";
const ARCH: &str = "kubernetes.io/arch";
const OS: &str = "kubernetes.io/os";
const POOL: &str = "node.corral.dev/pool";
const GPU: &str = "nvidia.com/gpu";
const GPU_PRODUCT: &str = "nvidia.com/gpu.product";
const GPU_COUNT: &str = "nvidia.com/gpu.count";
const REGION_NAME: &str = "us-east-1";
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// Workload shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// SchedulingBasic: uniform 4-CPU/32Gi nodes, 100m/500Mi pods.
    Basic,
    /// Pod anti-affinity on hostname against the pod's own group, plus preferred variants.
    Affinity,
    /// Topology spread constraints on zone (DoNotSchedule) and hostname (ScheduleAnyway).
    Spread,
    /// Realistic mix: CPU/memory/arm64/GPU pools, tainted AI pool, web/batch/data/AI pods.
    Mixed,
}

/// Arguments of `corral-loadgen cluster`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Number of nodes.
    #[arg(long)]
    pub nodes: u32,
    /// Number of pending pods (no nodeName, schedulerName `corral`).
    #[arg(long)]
    pub pods: u64,
    /// Number of already-running pods bound to nodes (like scheduler_perf initPods).
    #[arg(long, default_value_t = 0)]
    pub running: u64,
    /// Workload profile.
    #[arg(long, value_enum, default_value_t = Profile::Basic)]
    pub profile: Profile,
    /// Random seed; the same arguments always produce byte-identical output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

impl Args {
    /// Checks the arguments, independent of the output directory.
    pub fn validate(&self) -> Result<()> {
        if self.nodes == 0 {
            bail!("--nodes must be at least 1");
        }
        if self.nodes > MAX_NODES {
            bail!("--nodes {} is above the maximum of {MAX_NODES}", self.nodes);
        }
        let total = self.pods.saturating_add(self.running);
        if total == 0 {
            bail!("nothing to generate: --pods and --running are both 0");
        }
        if total > MAX_PODS {
            bail!("--pods + --running = {total} is above the maximum of {MAX_PODS}");
        }
        Ok(())
    }
}

/// The generated objects.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub namespaces: Vec<Namespace>,
    pub priority_classes: Vec<PriorityClass>,
    pub nodes: Vec<Node>,
    /// Bound pods (`spec.nodeName` set, phase Running).
    pub running: Vec<Pod>,
    /// Pending pods (no `spec.nodeName`, `spec.schedulerName: corral`).
    pub pending: Vec<Pod>,
}

/// Running-pod shapes in a row that may fit nowhere before generation gives up.
const MAX_CONSECUTIVE_MISSES: u32 = 64;

/// File names written into `--out`.
pub const NAMESPACES_FILE: &str = "namespaces.yaml";
pub const PRIORITY_CLASSES_FILE: &str = "priorityclasses.yaml";
pub const NODES_FILE: &str = "nodes.yaml";
pub const RUNNING_FILE: &str = "running-pods.yaml";
pub const PODS_FILE: &str = "pods.yaml";

/// Entry point of the subcommand.
pub fn run(args: &Args) -> Result<()> {
    // Progress on stderr when it is a terminal (big sizes take seconds per stage).
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let t0 = std::time::Instant::now();
    // In-memory generation: a line per stage, refreshed at most every 100 ms.
    let mut shown = std::time::Instant::now();
    let mut on_gen = |stage: &str, i: u64, n: u64| {
        if tty && (i == 0 || i == n || shown.elapsed() >= std::time::Duration::from_millis(100)) {
            shown = std::time::Instant::now();
            eprint!("\r\x1b[K{}", gen_line(stage, i, n, t0.elapsed()));
        }
    };
    let cluster = generate_with(args, &mut on_gen)?;
    let mut on_file = |name: &str, i: usize, n: usize| {
        if tty {
            eprint!("\r\x1b[K{}", stage_line(name, i, n, t0.elapsed()));
        }
    };
    write_with(&cluster, &args.out, &mut on_file)?;
    if tty {
        eprintln!("\r\x1b[Kdone in {:.1} s", t0.elapsed().as_secs_f64());
    }
    println!(
        "wrote {} nodes, {} running pods, {} pending pods, {} namespaces, {} priority classes \
         (profile {:?}, seed {}) to {}",
        cluster.nodes.len(),
        cluster.running.len(),
        cluster.pending.len(),
        cluster.namespaces.len(),
        cluster.priority_classes.len(),
        args.profile,
        args.seed,
        args.out.display()
    );
    Ok(())
}

/// Renders the cluster as multi-document YAML files in `dir` (created if missing).
/// Files that would be empty are not written, and a stale copy is removed.
pub fn write(cluster: &Cluster, dir: &Path) -> Result<()> {
    write_with(cluster, dir, &mut |_, _, _| {})
}

/// One progress line of `cluster`'s in-memory generation:
/// `generating running pods 12000/150000 (3.1 s)`.
pub fn gen_line(stage: &str, i: u64, n: u64, elapsed: std::time::Duration) -> String {
    format!(
        "generating {stage} {i}/{n} ({:.1} s)",
        elapsed.as_secs_f64()
    )
}

/// One progress line of `cluster`: `writing pods.yaml (3/5, 4.2 s)`.
pub fn stage_line(file: &str, i: usize, n: usize, elapsed: std::time::Duration) -> String {
    format!("writing {file} ({i}/{n}, {:.1} s)", elapsed.as_secs_f64())
}

/// [`write`], calling `on_file(name, i, n)` before the i-th of n files is rendered.
pub fn write_with(
    cluster: &Cluster,
    dir: &Path,
    on_file: &mut dyn FnMut(&str, usize, usize),
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let files: [(&str, &dyn Fn() -> Result<String>); 5] = [
        (NAMESPACES_FILE, &|| to_yaml(&cluster.namespaces)),
        (PRIORITY_CLASSES_FILE, &|| {
            to_yaml(&cluster.priority_classes)
        }),
        (NODES_FILE, &|| to_yaml(&cluster.nodes)),
        (RUNNING_FILE, &|| to_yaml(&cluster.running)),
        (PODS_FILE, &|| to_yaml(&cluster.pending)),
    ];
    let n = files.len();
    for (i, (name, render)) in files.into_iter().enumerate() {
        on_file(name, i + 1, n);
        let text = render()?;
        let path = dir.join(name);
        if text.is_empty() {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()));
                }
            }
        } else {
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

/// Serializes objects as a `---`-separated YAML stream (empty string for no objects).
pub fn to_yaml<T: Serialize>(objects: &[T]) -> Result<String> {
    let mut out = String::new();
    for obj in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(obj).context("YAML serialization failed")?);
    }
    Ok(out)
}

/// Builds the cluster described by `args` (does not touch the file system).
pub fn generate(args: &Args) -> Result<Cluster> {
    generate_with(args, &mut |_, _, _| {})
}

/// Items between two progress calls of [`generate_with`].
const PROGRESS_EVERY: u64 = 1024;

/// [`generate`], calling `progress(stage, done, total)` for the stages `nodes`,
/// `running pods` and `pending pods` (at 0, every 1,024 items and at the end; the
/// output does not depend on it).
pub fn generate_with(args: &Args, progress: &mut dyn FnMut(&str, u64, u64)) -> Result<Cluster> {
    args.validate()?;
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(args.seed),
        profile: args.profile,
        nodes: args.nodes,
        next_pod: 0,
        group_seq: 0,
        groups: BTreeMap::new(),
        daemon_nodes: Vec::new(),
    };
    let mut cluster = Cluster {
        namespaces: namespaces(args.profile),
        priority_classes: priority_classes(args.profile),
        ..Cluster::default()
    };
    let mut states = Vec::with_capacity(args.nodes as usize);
    let width = digits(u64::from(args.nodes));
    let n_nodes = u64::from(args.nodes);
    progress("nodes", 0, n_nodes);
    for i in 0..args.nodes {
        let (node, state) = g.node(i, width);
        cluster.nodes.push(node);
        states.push(state);
        if u64::from(i + 1).is_multiple_of(PROGRESS_EVERY) {
            progress("nodes", u64::from(i + 1), n_nodes);
        }
    }
    progress("nodes", n_nodes, n_nodes);
    if args.profile == Profile::Mixed {
        // Pools are assigned by index above; shuffle so zones and names interleave.
        let mut order: Vec<usize> = (0..states.len()).collect();
        order.shuffle(&mut g.rng);
        cluster.nodes = order.iter().map(|&i| cluster.nodes[i].clone()).collect();
        states = order.iter().map(|&i| states[i].clone()).collect();
        g.daemon_nodes = states.iter().rev().map(|s| s.name.clone()).collect();
    }

    let pod_width = digits(args.pods + args.running);
    // Running pods: place each on a random-start first-fit node. A shape that fits
    // nowhere is replaced by a fresh one; many misses in a row mean the cluster is full.
    let mut misses = 0u32;
    progress("running pods", 0, args.running);
    while (cluster.running.len() as u64) < args.running {
        if misses >= MAX_CONSECUTIVE_MISSES {
            bail!(
                "--running {}: only {} pods fit on {} nodes (profile {:?}); \
                 use more --nodes or fewer --running",
                args.running,
                cluster.running.len(),
                args.nodes,
                args.profile
            );
        }
        let shape = g.pod(false, pod_width);
        let start = g.rng.random_range(0..states.len());
        let found = (0..states.len())
            .map(|k| (start + k) % states.len())
            .find(|&k| states[k].fits(&shape));
        misses += 1;
        if let Some(k) = found {
            misses = 0;
            states[k].add(&shape);
            let mut pod = shape.pod;
            if let Some(spec) = pod.spec.as_mut() {
                spec.node_name = Some(states[k].name.clone());
            }
            pod.status = Some(PodStatus {
                phase: Some("Running".into()),
                ..PodStatus::default()
            });
            cluster.running.push(pod);
            let done = cluster.running.len() as u64;
            if done.is_multiple_of(PROGRESS_EVERY) {
                progress("running pods", done, args.running);
            }
        }
    }
    progress("running pods", args.running, args.running);
    progress("pending pods", 0, args.pods);
    for i in 0..args.pods {
        let mut pod = g.pod(true, pod_width).pod;
        pod.status = Some(PodStatus {
            phase: Some("Pending".into()),
            ..PodStatus::default()
        });
        cluster.pending.push(pod);
        if (i + 1).is_multiple_of(PROGRESS_EVERY) {
            progress("pending pods", i + 1, args.pods);
        }
    }
    progress("pending pods", args.pods, args.pods);
    Ok(cluster)
}

fn digits(n: u64) -> usize {
    n.max(1).to_string().len().max(4)
}

fn namespaces(profile: Profile) -> Vec<Namespace> {
    let names: &[&str] = match profile {
        Profile::Basic | Profile::Spread => &["sched-0"],
        Profile::Affinity => &["sched-0", "sched-1"],
        Profile::Mixed => &[
            "web",
            "batch",
            "data",
            "ai-training",
            "ai-inference",
            "monitoring",
        ],
    };
    names
        .iter()
        .map(|n| Namespace {
            metadata: ObjectMeta {
                name: Some((*n).to_string()),
                labels: Some(labels(&[("kubernetes.io/metadata.name", n)])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        })
        .collect()
}

fn priority_classes(profile: Profile) -> Vec<PriorityClass> {
    if profile != Profile::Mixed {
        return Vec::new();
    }
    PRIORITIES
        .iter()
        .map(|&(name, value, default, desc)| PriorityClass {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            value,
            global_default: default.then_some(true),
            description: Some(desc.to_string()),
            preemption_policy: Some(
                if name == "batch-low" {
                    "Never"
                } else {
                    "PreemptLowerPriority"
                }
                .to_string(),
            ),
        })
        .collect()
}

const PRIORITIES: [(&str, i32, bool, &str); 5] = [
    (
        "corral-critical",
        1_000_000,
        false,
        "Cluster add-ons that must run on every node.",
    ),
    (
        "diamond",
        100_000,
        false,
        "Diamond tier: core services and protected training runs.",
    ),
    (
        "gold",
        10_000,
        false,
        "Gold tier: customer-facing services.",
    ),
    ("normal", 1_000, true, "Default tier."),
    (
        "batch-low",
        100,
        false,
        "Best-effort batch; never preempts others.",
    ),
];

fn priority_value(class: &str) -> Option<i32> {
    PRIORITIES
        .iter()
        .find(|p| p.0 == class)
        .map(|&(_, v, _, _)| v)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn cpu(milli: u64) -> Quantity {
    if milli.is_multiple_of(1000) {
        Quantity((milli / 1000).to_string())
    } else {
        Quantity(format!("{milli}m"))
    }
}

fn mem(mi: u64) -> Quantity {
    if mi.is_multiple_of(1024) {
        Quantity(format!("{}Gi", mi / 1024))
    } else {
        Quantity(format!("{mi}Mi"))
    }
}

fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.to_string(),
        value: (!value.is_empty()).then(|| value.to_string()),
        effect: effect.to_string(),
        ..Taint::default()
    }
}

fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_string(),
        operator: op.to_string(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_string()).collect()),
    }
}

fn selector(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(pairs)),
        ..LabelSelector::default()
    }
}

fn term(key: &str, value: &str, topology: &str, namespaces: &[&str]) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: Some(selector(&[(key, value)])),
        topology_key: topology.to_string(),
        namespaces: (!namespaces.is_empty())
            .then(|| namespaces.iter().map(|n| (*n).to_string()).collect()),
        ..PodAffinityTerm::default()
    }
}

fn spread(
    key: &str,
    value: &str,
    topology: &str,
    skew: i32,
    when: &str,
) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        label_selector: Some(selector(&[(key, value)])),
        topology_key: topology.to_string(),
        max_skew: skew,
        when_unsatisfiable: when.to_string(),
        ..TopologySpreadConstraint::default()
    }
}

fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Toleration {
        key: opt(key),
        operator: opt(op),
        value: opt(value),
        effect: opt(effect),
        ..Toleration::default()
    }
}

/// Resources of one container.
#[derive(Debug, Clone, Copy, Default)]
struct Res {
    cpu_m: u64,
    mem_mi: u64,
    gpu: u64,
}

fn container(
    name: &str,
    image: &str,
    r: Res,
    limits: bool,
    ports: &[(i32, Option<i32>)],
) -> Container {
    let mut requests = BTreeMap::new();
    requests.insert("cpu".to_string(), cpu(r.cpu_m));
    requests.insert("memory".to_string(), mem(r.mem_mi));
    let mut lim = BTreeMap::new();
    if limits {
        lim.insert("cpu".to_string(), cpu(r.cpu_m));
        lim.insert("memory".to_string(), mem(r.mem_mi));
    }
    if r.gpu > 0 {
        // Extended resources must have limits equal to requests.
        requests.insert(GPU.to_string(), Quantity(r.gpu.to_string()));
        lim.insert(GPU.to_string(), Quantity(r.gpu.to_string()));
    }
    Container {
        name: name.to_string(),
        image: Some(image.to_string()),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: (!lim.is_empty()).then_some(lim),
            ..ResourceRequirements::default()
        }),
        ports: (!ports.is_empty()).then(|| {
            ports
                .iter()
                .map(|&(port, host)| ContainerPort {
                    container_port: port,
                    host_port: host,
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                })
                .collect()
        }),
        ..Container::default()
    }
}

/// Node pool of the `mixed` profile.
#[derive(Debug, Clone, Copy)]
struct Pool {
    name: &'static str,
    /// Share of nodes, in percent.
    share: u32,
    arch: &'static str,
    /// (cpu cores, memory GiB) size choices.
    sizes: &'static [(u64, u64)],
    gpus: u64,
    gpu_products: &'static [&'static str],
    taints: &'static [(&'static str, &'static str, &'static str)],
}

const POOLS: [Pool; 6] = [
    Pool {
        name: "general",
        share: 48,
        arch: "amd64",
        sizes: &[(8, 32), (16, 64), (32, 128)],
        gpus: 0,
        gpu_products: &[],
        taints: &[],
    },
    Pool {
        name: "highmem",
        share: 10,
        arch: "amd64",
        sizes: &[(16, 128), (32, 256)],
        gpus: 0,
        gpu_products: &[],
        taints: &[],
    },
    Pool {
        name: "arm",
        share: 15,
        arch: "arm64",
        sizes: &[(16, 64), (64, 256)],
        gpus: 0,
        gpu_products: &[],
        taints: &[],
    },
    Pool {
        name: "small",
        share: 8,
        arch: "amd64",
        sizes: &[(4, 16)],
        gpus: 0,
        gpu_products: &[],
        taints: &[],
    },
    Pool {
        name: "gpu-train",
        share: 10,
        arch: "amd64",
        sizes: &[(96, 1024)],
        gpus: 8,
        gpu_products: &["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"],
        taints: &[
            ("dedicated", "ai", "NoSchedule"),
            (GPU, "present", "NoSchedule"),
        ],
    },
    Pool {
        name: "gpu-infer",
        share: 9,
        arch: "amd64",
        sizes: &[(16, 64), (48, 192)],
        gpus: 4,
        gpu_products: &["NVIDIA-L4"],
        taints: &[(GPU, "present", "NoSchedule")],
    },
];

const _: () = {
    let mut total = 0;
    let mut i = 0;
    while i < POOLS.len() {
        total += POOLS[i].share;
        i += 1;
    }
    assert!(total == 100, "pool shares must add up to 100 %");
};

/// Images cached on nodes of the `mixed` profile (name, size in MB).
const IMAGES: [(&str, i64); 10] = [
    ("ghcr.io/corral-demo/storefront:2.4.1", 180),
    ("ghcr.io/corral-demo/checkout:1.9.0", 150),
    ("docker.io/library/nginx:1.27", 70),
    ("ghcr.io/corral-demo/etl-runner:0.12.3", 420),
    ("docker.io/library/python:3.12-slim", 130),
    ("docker.io/apache/spark:3.5.3", 980),
    ("nvcr.io/nvidia/pytorch:24.10-py3", 9_800),
    ("nvcr.io/nvidia/tritonserver:24.10-py3", 7_400),
    ("docker.io/vllm/vllm-openai:v0.6.3", 5_100),
    ("quay.io/prometheus/node-exporter:v1.8.2", 25),
];

/// Scheduling-relevant summary of a node, used to bind `--running` pods validly.
#[derive(Debug, Clone)]
struct NodeState {
    name: String,
    labels: BTreeMap<String, String>,
    taints: Vec<Taint>,
    free: Res,
    free_pods: u64,
    ports: BTreeSet<i32>,
    /// Required hostname anti-affinity groups present on the node.
    groups: BTreeSet<String>,
}

impl NodeState {
    fn fits(&self, s: &PodShape) -> bool {
        // Cordoned nodes carry the unschedulable taint, checked with the others below.
        if self.free_pods == 0 {
            return false;
        }
        if s.res.cpu_m > self.free.cpu_m
            || s.res.mem_mi > self.free.mem_mi
            || s.res.gpu > self.free.gpu
        {
            return false;
        }
        if s.host_ports.iter().any(|p| self.ports.contains(p)) {
            return false;
        }
        if s.anti_group
            .as_ref()
            .is_some_and(|g| self.groups.contains(g))
        {
            return false;
        }
        let Some(spec) = s.pod.spec.as_ref() else {
            return false;
        };
        let tolerations = spec.tolerations.as_deref().unwrap_or_default();
        let tolerated = self
            .taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .all(|t| tolerates_taint(tolerations, t));
        if !tolerated {
            return false;
        }
        if let Some(sel) = &spec.node_selector
            && !sel.iter().all(|(k, v)| self.labels.get(k) == Some(v))
        {
            return false;
        }
        let required = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        if let Some(required) = required {
            // The scheduler's own compiled terms (a term that does not compile, or
            // has no requirements, matches no node — as kube-scheduler).
            let any = required
                .node_selector_terms
                .iter()
                .any(|t| NodeTerm::compile(t).is_ok_and(|t| t.matches(&self.name, &self.labels)));
            if !any {
                return false;
            }
        }
        true
    }

    fn add(&mut self, s: &PodShape) {
        self.free.cpu_m -= s.res.cpu_m;
        self.free.mem_mi -= s.res.mem_mi;
        self.free.gpu -= s.res.gpu;
        self.free_pods -= 1;
        self.ports.extend(s.host_ports.iter().copied());
        if let Some(g) = &s.anti_group {
            self.groups.insert(g.clone());
        }
    }
}

/// A generated pod and what binding it consumes.
#[derive(Debug, Clone)]
struct PodShape {
    pod: Pod,
    /// Effective request: max(sum of containers, largest init container).
    res: Res,
    host_ports: Vec<i32>,
    anti_group: Option<String>,
}

/// A deployment-like group of replicas that share labels and constraints.
#[derive(Debug, Clone)]
struct Group {
    name: String,
    remaining: u32,
    /// Variant chosen when the group was created.
    variant: u32,
    namespace: &'static str,
}

struct Gen {
    rng: ChaCha8Rng,
    profile: Profile,
    nodes: u32,
    next_pod: u64,
    group_seq: u32,
    /// Current open group per workload kind.
    groups: BTreeMap<&'static str, Group>,
    /// Nodes still without a DaemonSet-style system pod (mixed profile).
    daemon_nodes: Vec<String>,
}

const COLORS: [&str; 6] = ["green", "blue", "red", "yellow", "purple", "orange"];

impl Gen {
    fn node(&mut self, i: u32, width: usize) -> (Node, NodeState) {
        let zone = ZONES[i as usize % ZONES.len()];
        let (pool, cpu_cores, mem_gi, gpus, product) = match self.profile {
            Profile::Mixed => {
                let pool = pool_for(i, self.nodes);
                let (c, m) = pool.sizes[self.rng.random_range(0..pool.sizes.len())];
                let product = (!pool.gpu_products.is_empty())
                    .then(|| pool.gpu_products[self.rng.random_range(0..pool.gpu_products.len())]);
                (Some(pool), c, m, pool.gpus, product)
            }
            _ => (None, 4, 32, 0, None),
        };
        let name = match pool {
            Some(p) => format!("{}-{i:0width$}", p.name),
            None => format!("node-{i:0width$}"),
        };
        let arch = pool.map_or("amd64", |p| p.arch);
        let mut lbl = labels(&[
            (HOSTNAME, &name),
            (ZONE, zone),
            (REGION, REGION_NAME),
            (OS, "linux"),
            (ARCH, arch),
        ]);
        let mut taints: Vec<Taint> = Vec::new();
        let mut unschedulable = false;
        let mut images = None;
        // kubelet reservations make allocatable slightly smaller than capacity.
        let (alloc_cpu, alloc_mem) = match pool {
            Some(_) => (
                cpu_cores * 1000 - 80 - 10 * cpu_cores,
                mem_gi * 1024 - 256 - 8 * mem_gi,
            ),
            None => (cpu_cores * 1000, mem_gi * 1024),
        };
        let mut cap = BTreeMap::new();
        let mut alloc = BTreeMap::new();
        cap.insert("cpu".to_string(), cpu(cpu_cores * 1000));
        cap.insert("memory".to_string(), mem(mem_gi * 1024));
        cap.insert("pods".to_string(), Quantity("110".into()));
        alloc.insert("cpu".to_string(), cpu(alloc_cpu));
        alloc.insert("memory".to_string(), mem(alloc_mem));
        alloc.insert("pods".to_string(), Quantity("110".into()));
        if let Some(p) = pool {
            lbl.insert(POOL.to_string(), p.name.to_string());
            lbl.insert(
                "node.kubernetes.io/instance-type".to_string(),
                format!("{}.{}x{}", p.name, cpu_cores, mem_gi),
            );
            for eph in [&mut cap, &mut alloc] {
                eph.insert("ephemeral-storage".to_string(), mem(200 * 1024));
                eph.insert("hugepages-2Mi".to_string(), Quantity("0".into()));
            }
            if gpus > 0 {
                cap.insert(GPU.to_string(), Quantity(gpus.to_string()));
                alloc.insert(GPU.to_string(), Quantity(gpus.to_string()));
                lbl.insert(GPU_COUNT.to_string(), gpus.to_string());
                if let Some(product) = product {
                    lbl.insert(GPU_PRODUCT.to_string(), product.to_string());
                }
            }
            for &(k, v, e) in p.taints {
                taints.push(taint(k, v, e));
                if k == "dedicated" {
                    lbl.insert(k.to_string(), v.to_string());
                }
            }
            // A few cordoned nodes (as `kubectl cordon` leaves them).
            if p.name == "general" && self.rng.random_ratio(1, 50) {
                unschedulable = true;
                taints.push(taint("node.kubernetes.io/unschedulable", "", "NoSchedule"));
            }
            let mut imgs = vec![ContainerImage {
                names: Some(vec![PAUSE_IMAGE.to_string()]),
                size_bytes: Some(320_000),
            }];
            let cached: &[usize] = if gpus > 0 {
                &[6, 7, 8, 9]
            } else {
                &[0, 1, 2, 3, 4, 5, 9]
            };
            for &k in cached {
                if self.rng.random_ratio(1, 2) {
                    let (img, mb) = IMAGES[k];
                    imgs.push(ContainerImage {
                        names: Some(vec![img.to_string()]),
                        size_bytes: Some(mb * 1_000_000),
                    });
                }
            }
            images = Some(imgs);
        }
        let cond = |t: &str, s: &str, reason: &str| NodeCondition {
            type_: t.to_string(),
            status: s.to_string(),
            reason: Some(reason.to_string()),
            ..NodeCondition::default()
        };
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(lbl.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: (!taints.is_empty()).then(|| taints.clone()),
                unschedulable: unschedulable.then_some(true),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                capacity: Some(cap),
                allocatable: Some(alloc),
                conditions: Some(vec![
                    cond("Ready", "True", "KubeletReady"),
                    cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                    cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                    cond("PIDPressure", "False", "KubeletHasSufficientPID"),
                ]),
                images,
                phase: Some("Running".into()),
                ..NodeStatus::default()
            }),
        };
        let state = NodeState {
            name,
            labels: lbl,
            taints,
            free: Res {
                cpu_m: alloc_cpu,
                mem_mi: alloc_mem,
                gpu: gpus,
            },
            free_pods: 110,
            ports: BTreeSet::new(),
            groups: BTreeSet::new(),
        };
        (node, state)
    }

    /// Returns the open group of `kind`, opening a new one of `size` replicas if needed.
    fn group(
        &mut self,
        kind: &'static str,
        size: u32,
        variants: u32,
        namespace: &'static str,
    ) -> Group {
        let mut g = match self.groups.remove(kind) {
            Some(g) if g.remaining > 0 => g,
            _ => {
                self.group_seq += 1;
                Group {
                    name: format!("{kind}-{}", self.group_seq),
                    remaining: size.max(1),
                    variant: self.rng.random_range(0..variants.max(1)),
                    namespace,
                }
            }
        };
        g.remaining -= 1;
        self.groups.insert(kind, g.clone());
        g
    }

    fn pod(&mut self, pending: bool, width: usize) -> PodShape {
        self.next_pod += 1;
        let idx = self.next_pod;
        match self.profile {
            Profile::Basic => self.basic_pod(idx, width),
            Profile::Affinity => self.affinity_pod(idx, width),
            Profile::Spread => self.spread_pod(idx, width),
            Profile::Mixed => self.mixed_pod(idx, width, pending),
        }
    }

    fn basic_pod(&mut self, idx: u64, width: usize) -> PodShape {
        shape(
            format!("pod-{idx:0width$}"),
            "sched-0",
            BTreeMap::new(),
            PodSpec {
                containers: vec![default_container()],
                ..PodSpec::default()
            },
            None,
        )
    }

    fn affinity_pod(&mut self, idx: u64, width: usize) -> PodShape {
        // Groups never exceed the node count, so a group fits with one pod per node.
        let size = self.nodes.min(25);
        let g = self.group("anti", size, 10, "sched-0");
        let ns = if idx.is_multiple_of(2) {
            "sched-0"
        } else {
            "sched-1"
        };
        let color = COLORS[(self.group_seq as usize) % COLORS.len()];
        let value = format!("{color}-{}", g.name.trim_start_matches("anti-"));
        let nss = ["sched-0", "sched-1"];
        let mut anti_group = None;
        // 70% required hostname anti-affinity (scheduler_perf), 30% preferred variants.
        let affinity = match g.variant {
            0..=6 => {
                anti_group = Some(value.clone());
                Affinity {
                    pod_anti_affinity: Some(PodAntiAffinity {
                        required_during_scheduling_ignored_during_execution: Some(vec![term(
                            "color", &value, HOSTNAME, &nss,
                        )]),
                        ..PodAntiAffinity::default()
                    }),
                    ..Affinity::default()
                }
            }
            7 | 8 => Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        WeightedPodAffinityTerm {
                            weight: 1,
                            pod_affinity_term: term("color", &value, HOSTNAME, &nss),
                        },
                    ]),
                    ..PodAntiAffinity::default()
                }),
                ..Affinity::default()
            },
            _ => Affinity {
                pod_affinity: Some(PodAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        WeightedPodAffinityTerm {
                            weight: 1,
                            pod_affinity_term: term("color", &value, ZONE, &nss),
                        },
                    ]),
                    ..PodAffinity::default()
                }),
                ..Affinity::default()
            },
        };
        shape(
            format!("anti-affinity-pod-{idx:0width$}"),
            ns,
            labels(&[("color", &value)]),
            PodSpec {
                affinity: Some(affinity),
                containers: vec![default_container()],
                ..PodSpec::default()
            },
            anti_group,
        )
    }

    fn spread_pod(&mut self, idx: u64, width: usize) -> PodShape {
        let g = self.group("spread", 30, 1, "sched-0");
        shape(
            format!("spreading-pod-{idx:0width$}"),
            g.namespace,
            labels(&[("app", &g.name)]),
            PodSpec {
                topology_spread_constraints: Some(vec![
                    spread("app", &g.name, ZONE, 1, "DoNotSchedule"),
                    spread("app", &g.name, HOSTNAME, 1, "ScheduleAnyway"),
                ]),
                containers: vec![default_container()],
                ..PodSpec::default()
            },
            None,
        )
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    fn mixed_pod(&mut self, idx: u64, width: usize, pending: bool) -> PodShape {
        // Roughly 1% of pending pods are unschedulable for an explainable reason.
        if pending && idx.is_multiple_of(97) {
            return self.impossible_pod(idx, width);
        }
        match self.rng.random_range(0..100u32) {
            0..=33 => self.web_pod(idx, width),
            34..=73 => self.batch_pod(idx, width),
            74..=83 => self.data_pod(idx, width),
            84..=87 => self.training_pod(idx, width),
            88..=92 => self.inference_pod(idx, width),
            _ => self.system_pod(idx, width),
        }
    }

    fn web_pod(&mut self, idx: u64, width: usize) -> PodShape {
        let size = self.rng.random_range(3..=12);
        let g = self.group("web", size, 4, "web");
        let app = g.name.clone();
        let image = IMAGES[(self.group_seq as usize) % 3].0;
        let r = Res {
            cpu_m: self.pick(&[250, 500, 1000]),
            mem_mi: self.pick(&[256, 512, 1024, 2048]),
            gpu: 0,
        };
        let mut anti_group = None;
        let mut ports = vec![(8080, None)];
        let mut affinity = Affinity {
            // Multi-arch images: either architecture is fine, but prefer amd64.
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![
                            req(ARCH, "In", &["amd64", "arm64"]),
                            req(GPU_PRODUCT, "DoesNotExist", &[]),
                        ]),
                        ..NodeSelectorTerm::default()
                    }],
                }),
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    PreferredSchedulingTerm {
                        weight: 20,
                        preference: NodeSelectorTerm {
                            match_expressions: Some(vec![req(ARCH, "In", &["amd64"])]),
                            ..NodeSelectorTerm::default()
                        },
                    },
                ]),
            }),
            ..Affinity::default()
        };
        let mut spreads = vec![spread("app", &app, ZONE, 1, "DoNotSchedule")];
        match g.variant {
            0 | 1 => {
                anti_group = Some(app.clone());
                affinity.pod_anti_affinity = Some(PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![term(
                        "app",
                        &app,
                        HOSTNAME,
                        &[],
                    )]),
                    ..PodAntiAffinity::default()
                });
            }
            2 => {
                affinity.pod_anti_affinity = Some(PodAntiAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        WeightedPodAffinityTerm {
                            weight: 100,
                            pod_affinity_term: term("app", &app, HOSTNAME, &[]),
                        },
                    ]),
                    ..PodAntiAffinity::default()
                });
                spreads.push(spread("app", &app, HOSTNAME, 1, "ScheduleAnyway"));
            }
            _ => {
                // Edge proxies bind a host port, which also keeps replicas apart.
                ports = vec![(8443, Some(8443))];
            }
        }
        shape(
            format!("{app}-{idx:0width$}"),
            g.namespace,
            labels(&[("app", &app), ("tier", "frontend")]),
            PodSpec {
                affinity: Some(affinity),
                topology_spread_constraints: Some(spreads),
                containers: vec![container("app", image, r, false, &ports)],
                priority_class_name: Some("gold".into()),
                ..PodSpec::default()
            },
            anti_group,
        )
    }

    fn batch_pod(&mut self, idx: u64, width: usize) -> PodShape {
        let size = self.rng.random_range(5..=40);
        let g = self.group("batch", size, 3, "batch");
        let r = Res {
            cpu_m: self.pick(&[250, 500, 1000, 2000]),
            mem_mi: self.pick(&[1024, 2048, 4096, 8192]),
            gpu: 0,
        };
        let image = if g.variant == 0 {
            IMAGES[4].0
        } else {
            IMAGES[3].0
        };
        let mut spec = PodSpec {
            containers: vec![container("worker", image, r, false, &[])],
            priority_class_name: Some(
                if g.variant == 2 {
                    "batch-low"
                } else {
                    "normal"
                }
                .into(),
            ),
            ..PodSpec::default()
        };
        if g.variant != 0 {
            // amd64-only binaries; stay off the GPU pools.
            spec.affinity = Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![
                                req(ARCH, "In", &["amd64"]),
                                req(POOL, "NotIn", &["gpu-train", "gpu-infer"]),
                            ]),
                            ..NodeSelectorTerm::default()
                        }],
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            });
        } else {
            spec.node_selector = Some(labels(&[(OS, "linux")]));
        }
        if g.variant == 1 {
            // Stage input with an init container that needs more CPU than the worker.
            let init = Res {
                cpu_m: r.cpu_m * 2,
                mem_mi: 512,
                gpu: 0,
            };
            spec.init_containers = Some(vec![container("stage-in", IMAGES[4].0, init, false, &[])]);
        }
        shape(
            format!("{}-{idx:0width$}", g.name),
            g.namespace,
            labels(&[("job-name", &g.name), ("app", "etl")]),
            spec,
            None,
        )
    }

    fn data_pod(&mut self, idx: u64, width: usize) -> PodShape {
        let size = self.rng.random_range(4..=16);
        let g = self.group("spark", size, 2, "data");
        let r = Res {
            cpu_m: self.pick(&[1000, 2000, 4000]),
            mem_mi: self.pick(&[8192, 16384, 24576]),
            gpu: 0,
        };
        let spec = PodSpec {
            containers: vec![container("executor", IMAGES[5].0, r, false, &[])],
            priority_class_name: Some("normal".into()),
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![
                                req(POOL, "In", &["highmem", "general"]),
                                req(ZONE, "Exists", &[]),
                            ]),
                            ..NodeSelectorTerm::default()
                        }],
                    }),
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        PreferredSchedulingTerm {
                            weight: 50,
                            preference: NodeSelectorTerm {
                                match_expressions: Some(vec![req(POOL, "In", &["highmem"])]),
                                ..NodeSelectorTerm::default()
                            },
                        },
                    ]),
                }),
                // Executors of one application like to share a zone (shuffle traffic).
                pod_affinity: Some(PodAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        WeightedPodAffinityTerm {
                            weight: 80,
                            pod_affinity_term: term("spark-app", &g.name, ZONE, &[]),
                        },
                    ]),
                    ..PodAffinity::default()
                }),
                ..Affinity::default()
            }),
            ..PodSpec::default()
        };
        shape(
            format!("{}-exec-{idx:0width$}", g.name),
            g.namespace,
            labels(&[("spark-app", &g.name), ("spark-role", "executor")]),
            spec,
            None,
        )
    }

    fn training_pod(&mut self, idx: u64, width: usize) -> PodShape {
        let size = self.pick(&[1, 1, 2, 4]);
        // Every worker of a job asks for the same GPU model and count.
        let g = self.group("train", size, 12, "ai-training");
        let product = POOLS[4].gpu_products[g.variant as usize % 2];
        let gpus = [1, 1, 2, 4, 4, 8][g.variant as usize / 2];
        let r = Res {
            cpu_m: gpus * 10_000,
            mem_mi: gpus * 64 * 1024,
            gpu: gpus,
        };
        let init = Res {
            cpu_m: 1000,
            mem_mi: 2048,
            gpu: 0,
        };
        let spec = PodSpec {
            init_containers: Some(vec![container(
                "fetch-checkpoint",
                IMAGES[4].0,
                init,
                false,
                &[],
            )]),
            containers: vec![container(
                "trainer",
                IMAGES[6].0,
                r,
                false,
                &[(29500, None)],
            )],
            node_selector: Some(labels(&[(GPU_PRODUCT, product)])),
            tolerations: Some(vec![
                toleration("dedicated", "Equal", "ai", "NoSchedule"),
                toleration(GPU, "Exists", "", "NoSchedule"),
            ]),
            priority_class_name: Some("diamond".into()),
            ..PodSpec::default()
        };
        shape(
            format!("{}-worker-{idx:0width$}", g.name),
            g.namespace,
            labels(&[("training-job", &g.name), ("framework", "pytorch")]),
            spec,
            None,
        )
    }

    fn inference_pod(&mut self, idx: u64, width: usize) -> PodShape {
        let size = self.rng.random_range(2..=6);
        let g = self.group("llm", size, 2, "ai-inference");
        let r = Res {
            cpu_m: 4000,
            mem_mi: 16384,
            gpu: 1,
        };
        let image = if g.variant == 0 {
            IMAGES[7].0
        } else {
            IMAGES[8].0
        };
        let spec = PodSpec {
            containers: vec![container("server", image, r, false, &[(8000, None)])],
            tolerations: Some(vec![toleration(GPU, "Exists", "", "NoSchedule")]),
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![
                                req(GPU_PRODUCT, "Exists", &[]),
                                req("dedicated", "DoesNotExist", &[]),
                            ]),
                            ..NodeSelectorTerm::default()
                        }],
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
            topology_spread_constraints: Some(vec![spread(
                "app",
                &g.name,
                ZONE,
                1,
                "ScheduleAnyway",
            )]),
            priority_class_name: Some("gold".into()),
            ..PodSpec::default()
        };
        shape(
            format!("{}-{idx:0width$}", g.name),
            g.namespace,
            labels(&[("app", &g.name)]),
            spec,
            None,
        )
    }

    /// A DaemonSet-style node-exporter pinned to one node (`matchFields` on
    /// `metadata.name`, as the DaemonSet controller does); a batch pod once every
    /// node has one.
    fn system_pod(&mut self, idx: u64, width: usize) -> PodShape {
        let Some(node) = self.daemon_nodes.pop() else {
            return self.batch_pod(idx, width);
        };
        let r = Res {
            cpu_m: 100,
            mem_mi: 128,
            gpu: 0,
        };
        let spec = PodSpec {
            containers: vec![container(
                "node-exporter",
                IMAGES[9].0,
                r,
                true,
                &[(9100, Some(9100))],
            )],
            tolerations: Some(vec![toleration("", "Exists", "", "")]),
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_fields: Some(vec![req("metadata.name", "In", &[&node])]),
                            ..NodeSelectorTerm::default()
                        }],
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
            priority_class_name: Some("corral-critical".into()),
            ..PodSpec::default()
        };
        shape(
            format!("node-exporter-{idx:0width$}"),
            "monitoring",
            labels(&[("app", "node-exporter")]),
            spec,
            None,
        )
    }

    /// Pending pods that no node can take, each for a distinct, explainable reason.
    fn impossible_pod(&mut self, idx: u64, width: usize) -> PodShape {
        let kind = (idx / 97) % 3;
        let (name, ns, spec) = match kind {
            // A GPU model nobody has.
            0 => (
                "train-b200",
                "ai-training",
                PodSpec {
                    containers: vec![container(
                        "trainer",
                        IMAGES[6].0,
                        Res {
                            cpu_m: 16_000,
                            mem_mi: 131_072,
                            gpu: 8,
                        },
                        false,
                        &[],
                    )],
                    node_selector: Some(labels(&[(GPU_PRODUCT, "NVIDIA-B200")])),
                    tolerations: Some(vec![
                        toleration("dedicated", "Equal", "ai", "NoSchedule"),
                        toleration(GPU, "Exists", "", "NoSchedule"),
                    ]),
                    priority_class_name: Some("diamond".into()),
                    ..PodSpec::default()
                },
            ),
            // More CPU than any node has.
            1 => (
                "etl-huge",
                "batch",
                PodSpec {
                    containers: vec![container(
                        "worker",
                        IMAGES[3].0,
                        Res {
                            cpu_m: 256_000,
                            mem_mi: 65_536,
                            gpu: 0,
                        },
                        false,
                        &[],
                    )],
                    priority_class_name: Some("normal".into()),
                    ..PodSpec::default()
                },
            ),
            // GPUs without tolerating the GPU taints.
            _ => (
                "notebook-no-toleration",
                "ai-inference",
                PodSpec {
                    containers: vec![container(
                        "jupyter",
                        IMAGES[6].0,
                        Res {
                            cpu_m: 2000,
                            mem_mi: 8192,
                            gpu: 1,
                        },
                        false,
                        &[],
                    )],
                    priority_class_name: Some("normal".into()),
                    ..PodSpec::default()
                },
            ),
        };
        shape(
            format!("{name}-{idx:0width$}"),
            ns,
            labels(&[("app", name)]),
            spec,
            None,
        )
    }
}

/// Assigns pools by index so that the mix is exact for any node count.
fn pool_for(i: u32, n: u32) -> &'static Pool {
    let n = u64::from(n);
    let mut upto = 0u64;
    for pool in &POOLS[1..] {
        upto += u64::from(pool.share);
        // Pools other than "general" take indices [n - n*upto/100, ...) from the end.
        if u64::from(i) >= n - n * upto / 100 {
            return pool;
        }
    }
    &POOLS[0]
}

fn default_container() -> Container {
    container(
        "pause",
        PAUSE_IMAGE,
        Res {
            cpu_m: 100,
            mem_mi: 500,
            gpu: 0,
        },
        true,
        &[(80, None)],
    )
}

fn shape(
    name: String,
    namespace: &str,
    lbl: BTreeMap<String, String>,
    mut spec: PodSpec,
    anti_group: Option<String>,
) -> PodShape {
    spec.scheduler_name = Some(SCHEDULER_NAME.to_string());
    if let Some(class) = &spec.priority_class_name {
        spec.priority = priority_value(class);
    }
    let mut res = Res::default();
    for c in &spec.containers {
        let r = container_res(c);
        res.cpu_m += r.cpu_m;
        res.mem_mi += r.mem_mi;
        res.gpu += r.gpu;
    }
    for c in spec.init_containers.iter().flatten() {
        let r = container_res(c);
        res.cpu_m = res.cpu_m.max(r.cpu_m);
        res.mem_mi = res.mem_mi.max(r.mem_mi);
        res.gpu = res.gpu.max(r.gpu);
    }
    let host_ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| p.host_port)
        .collect();
    PodShape {
        pod: Pod {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.to_string()),
                labels: (!lbl.is_empty()).then_some(lbl),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            status: None,
        },
        res,
        host_ports,
        anti_group,
    }
}

/// Reads back the requests this module wrote (always whole millicores / MiB / GiB).
fn container_res(c: &Container) -> Res {
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let get = |k: &str| requests.and_then(|m| m.get(k)).map(|q| q.0.as_str());
    let cpu_m = get("cpu").map_or(0, |s| match s.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(0),
        None => s.parse::<u64>().unwrap_or(0) * 1000,
    });
    let mem_mi = get("memory").map_or(0, |s| {
        if let Some(g) = s.strip_suffix("Gi") {
            g.parse::<u64>().unwrap_or(0) * 1024
        } else {
            s.strip_suffix("Mi")
                .and_then(|m| m.parse().ok())
                .unwrap_or(0)
        }
    });
    let gpu = get(GPU).and_then(|s| s.parse().ok()).unwrap_or(0);
    Res { cpu_m, mem_mi, gpu }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize as _;
    use serde::de::DeserializeOwned;

    const PROFILES: [Profile; 4] = [
        Profile::Basic,
        Profile::Affinity,
        Profile::Spread,
        Profile::Mixed,
    ];

    #[test]
    fn write_reports_each_file_in_order() {
        let c = generate(&args(Profile::Basic, 3, 4, 2, 1)).expect("generate");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seen = Vec::new();
        write_with(&c, dir.path(), &mut |f, i, n| {
            seen.push((f.to_string(), i, n))
        })
        .expect("write");
        assert_eq!(seen.len(), 5, "{seen:?}");
        assert_eq!(seen[0], (NAMESPACES_FILE.to_string(), 1, 5));
        assert_eq!(seen[4], (PODS_FILE.to_string(), 5, 5));
        assert!(dir.path().join(PODS_FILE).exists());
        assert_eq!(
            stage_line(PODS_FILE, 5, 5, std::time::Duration::from_millis(4200)),
            format!("writing {PODS_FILE} (5/5, 4.2 s)")
        );
    }

    /// In-memory generation reports each stage from 0 to its total (and every
    /// 1,024 items between), and the cluster does not depend on being observed.
    #[test]
    fn generation_reports_progress_per_stage() {
        let a = args(Profile::Basic, 2_100, 3_000, 2_050, 7);
        let mut seen: Vec<(String, u64, u64)> = Vec::new();
        let c =
            generate_with(&a, &mut |s, i, n| seen.push((s.to_string(), i, n))).expect("generate");
        let stage = |name: &str| -> Vec<u64> {
            seen.iter()
                .filter(|(s, _, _)| s == name)
                .map(|(_, i, _)| *i)
                .collect()
        };
        assert_eq!(stage("nodes"), [0, 1024, 2048, 2100]);
        assert_eq!(stage("running pods"), [0, 1024, 2048, 2050]);
        assert_eq!(stage("pending pods"), [0, 1024, 2048, 3000]);
        assert!(seen.iter().all(|(_, i, n)| i <= n), "{seen:?}");
        let plain = generate(&a).expect("generate");
        assert_eq!(plain.nodes, c.nodes);
        assert_eq!(plain.running, c.running);
        assert_eq!(plain.pending, c.pending);
        assert_eq!(
            gen_line(
                "running pods",
                12_000,
                150_000,
                std::time::Duration::from_millis(3100)
            ),
            "generating running pods 12000/150000 (3.1 s)"
        );
    }

    fn args(profile: Profile, nodes: u32, pods: u64, running: u64, seed: u64) -> Args {
        Args {
            nodes,
            pods,
            running,
            profile,
            seed,
            out: PathBuf::from("unused"),
        }
    }

    fn render(c: &Cluster) -> [String; 5] {
        [
            to_yaml(&c.namespaces).unwrap(),
            to_yaml(&c.priority_classes).unwrap(),
            to_yaml(&c.nodes).unwrap(),
            to_yaml(&c.running).unwrap(),
            to_yaml(&c.pending).unwrap(),
        ]
    }

    /// Parses every document of a stream back into `T`, checking apiVersion/kind.
    fn parse_all<T: DeserializeOwned + k8s_openapi::Resource>(text: &str) -> Vec<T> {
        let mut out = Vec::new();
        if text.is_empty() {
            return out;
        }
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            let value = serde_yaml_ng::Value::deserialize(doc).expect("valid YAML");
            assert_eq!(value["apiVersion"].as_str(), Some(T::API_VERSION));
            assert_eq!(value["kind"].as_str(), Some(T::KIND));
            out.push(serde_yaml_ng::from_value(value).expect("parses as the k8s type"));
        }
        out
    }

    fn spec(p: &Pod) -> &PodSpec {
        p.spec.as_ref().expect("pod has a spec")
    }

    #[test]
    fn same_seed_same_output() {
        for profile in PROFILES {
            let a = render(&generate(&args(profile, 60, 200, 100, 9)).unwrap());
            let b = render(&generate(&args(profile, 60, 200, 100, 9)).unwrap());
            assert_eq!(a, b, "{profile:?}");
        }
    }

    #[test]
    fn different_seed_different_output() {
        for profile in PROFILES {
            let a = render(&generate(&args(profile, 60, 200, 100, 1)).unwrap());
            let b = render(&generate(&args(profile, 60, 200, 100, 2)).unwrap());
            assert_ne!(a, b, "{profile:?}");
        }
    }

    #[test]
    fn counts_match_arguments() {
        for profile in PROFILES {
            let c = generate(&args(profile, 37, 123, 45, 3)).unwrap();
            assert_eq!(c.nodes.len(), 37);
            assert_eq!(c.pending.len(), 123);
            assert_eq!(c.running.len(), 45);
            assert!(!c.namespaces.is_empty());
            assert_eq!(c.priority_classes.is_empty(), profile != Profile::Mixed);
        }
        let c = generate(&args(Profile::Basic, 1, 0, 5, 0)).unwrap();
        assert!(c.pending.is_empty());
        assert_eq!(c.running.len(), 5);
    }

    #[test]
    fn every_document_parses_back() {
        for profile in PROFILES {
            let c = generate(&args(profile, 50, 300, 150, 11)).unwrap();
            let [ns, pc, nodes, running, pending] = render(&c);
            assert_eq!(parse_all::<Namespace>(&ns), c.namespaces);
            assert_eq!(parse_all::<PriorityClass>(&pc), c.priority_classes);
            assert_eq!(parse_all::<Node>(&nodes), c.nodes);
            assert_eq!(parse_all::<Pod>(&running), c.running);
            assert_eq!(parse_all::<Pod>(&pending), c.pending);
            assert!(nodes.starts_with("---\napiVersion: v1\nkind: Node\n"));
        }
    }

    #[test]
    fn names_are_unique() {
        for profile in PROFILES {
            let c = generate(&args(profile, 40, 500, 200, 5)).unwrap();
            let nodes: BTreeSet<_> = c.nodes.iter().map(|n| n.metadata.name.clone()).collect();
            assert_eq!(nodes.len(), c.nodes.len());
            let pods: BTreeSet<_> = c
                .running
                .iter()
                .chain(&c.pending)
                .map(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()))
                .collect();
            assert_eq!(pods.len(), 700);
            let known: BTreeSet<_> = c
                .namespaces
                .iter()
                .map(|n| n.metadata.name.clone())
                .collect();
            assert!(pods.iter().all(|(ns, _)| known.contains(ns)));
        }
    }

    #[test]
    fn basic_matches_scheduler_perf_defaults() {
        let c = generate(&args(Profile::Basic, 30, 10, 0, 0)).unwrap();
        let zones: BTreeSet<_> = c
            .nodes
            .iter()
            .map(|n| n.metadata.labels.as_ref().unwrap()[ZONE].clone())
            .collect();
        assert_eq!(zones.len(), 3);
        for n in &c.nodes {
            let status = n.status.as_ref().unwrap();
            let alloc = status.allocatable.as_ref().unwrap();
            assert_eq!(alloc["cpu"].0, "4");
            assert_eq!(alloc["memory"].0, "32Gi");
            assert_eq!(alloc["pods"].0, "110");
            let l = n.metadata.labels.as_ref().unwrap();
            assert_eq!(l[HOSTNAME], *n.metadata.name.as_ref().unwrap());
            assert_eq!(l[OS], "linux");
            assert_eq!(l[ARCH], "amd64");
            let ready = status.conditions.as_ref().unwrap();
            assert!(
                ready
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            );
        }
        for p in &c.pending {
            let s = spec(p);
            assert_eq!(s.scheduler_name.as_deref(), Some(SCHEDULER_NAME));
            assert!(s.node_name.is_none());
            let r = s.containers[0]
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap();
            assert_eq!(r["cpu"].0, "100m");
            assert_eq!(r["memory"].0, "500Mi");
        }
    }

    #[test]
    fn affinity_pods_carry_anti_affinity_terms() {
        let c = generate(&args(Profile::Affinity, 20, 400, 0, 4)).unwrap();
        let mut required = 0;
        for p in &c.pending {
            let a = spec(p)
                .affinity
                .as_ref()
                .expect("every pod has an affinity");
            let color = &p.metadata.labels.as_ref().unwrap()["color"];
            if let Some(terms) = a.pod_anti_affinity.as_ref().and_then(|x| {
                x.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }) {
                required += 1;
                assert_eq!(terms[0].topology_key, HOSTNAME);
                let sel = terms[0].label_selector.as_ref().unwrap();
                assert_eq!(&sel.match_labels.as_ref().unwrap()["color"], color);
            } else {
                assert!(a.pod_anti_affinity.is_some() || a.pod_affinity.is_some());
            }
        }
        assert!(
            required > 200,
            "most pods use required anti-affinity: {required}"
        );
        assert!(required < 400, "some pods use preferred variants");
        // A group never has more members than there are nodes.
        let mut groups: BTreeMap<String, u32> = BTreeMap::new();
        for p in &c.pending {
            *groups
                .entry(p.metadata.labels.as_ref().unwrap()["color"].clone())
                .or_default() += 1;
        }
        assert!(groups.values().all(|&n| n <= 20));
    }

    #[test]
    fn spread_pods_carry_constraints() {
        let c = generate(&args(Profile::Spread, 20, 100, 0, 4)).unwrap();
        for p in &c.pending {
            let app = &p.metadata.labels.as_ref().unwrap()["app"];
            let tsc = spec(p).topology_spread_constraints.as_ref().unwrap();
            assert_eq!(tsc.len(), 2);
            assert_eq!(
                (
                    tsc[0].topology_key.as_str(),
                    tsc[0].max_skew,
                    tsc[0].when_unsatisfiable.as_str()
                ),
                (ZONE, 1, "DoNotSchedule")
            );
            assert_eq!(
                (
                    tsc[1].topology_key.as_str(),
                    tsc[1].when_unsatisfiable.as_str()
                ),
                (HOSTNAME, "ScheduleAnyway")
            );
            for t in tsc {
                let sel = t
                    .label_selector
                    .as_ref()
                    .unwrap()
                    .match_labels
                    .as_ref()
                    .unwrap();
                assert_eq!(&sel["app"], app);
            }
        }
    }

    #[test]
    fn mixed_has_realistic_variety() {
        let c = generate(&args(Profile::Mixed, 300, 1000, 600, 42)).unwrap();
        let labels_of = |n: &Node| n.metadata.labels.clone().unwrap_or_default();
        let gpu_nodes: Vec<&Node> = c
            .nodes
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .unwrap()
                    .allocatable
                    .as_ref()
                    .unwrap()
                    .contains_key(GPU)
            })
            .collect();
        assert!(!gpu_nodes.is_empty());
        for n in &gpu_nodes {
            assert!(labels_of(n).contains_key(GPU_PRODUCT));
            assert!(
                n.spec
                    .as_ref()
                    .unwrap()
                    .taints
                    .as_ref()
                    .is_some_and(|t| !t.is_empty())
            );
        }
        assert!(c.nodes.iter().any(|n| labels_of(n)[ARCH] == "arm64"));
        assert!(
            c.nodes
                .iter()
                .any(|n| labels_of(n).get("dedicated").map(String::as_str) == Some("ai"))
        );
        assert!(
            c.nodes
                .iter()
                .any(|n| n.spec.as_ref().unwrap().unschedulable == Some(true))
        );
        let sizes: BTreeSet<_> = c
            .nodes
            .iter()
            .map(|n| {
                n.status.as_ref().unwrap().allocatable.as_ref().unwrap()["cpu"]
                    .0
                    .clone()
            })
            .collect();
        assert!(sizes.len() >= 4, "varied node sizes: {sizes:?}");
        let zones: BTreeSet<_> = c.nodes.iter().map(|n| labels_of(n)[ZONE].clone()).collect();
        assert_eq!(zones.len(), 3);

        let pods: Vec<&Pod> = c.pending.iter().chain(&c.running).collect();
        let any = |f: &dyn Fn(&PodSpec) -> bool| pods.iter().any(|p| f(spec(p)));
        let ops: BTreeSet<String> = pods
            .iter()
            .filter_map(|p| spec(p).affinity.as_ref()?.node_affinity.as_ref())
            .filter_map(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .flat_map(|ns| ns.node_selector_terms.iter())
            .flat_map(|t| t.match_expressions.iter().flatten())
            .map(|r| r.operator.clone())
            .collect();
        for op in ["In", "NotIn", "Exists", "DoesNotExist"] {
            assert!(ops.contains(op), "missing operator {op}: {ops:?}");
        }
        assert!(any(&|s| s.tolerations.is_some()
            && s.containers.iter().any(|c| container_res(c).gpu > 0)
            && s.node_selector
                .as_ref()
                .is_some_and(|m| m.contains_key(GPU_PRODUCT))));
        assert!(any(&|s| s.init_containers.is_some()));
        assert!(any(&|s| s.topology_spread_constraints.is_some()));
        assert!(any(&|s| s
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .is_some_and(|x| x
                .required_during_scheduling_ignored_during_execution
                .is_some())));
        assert!(any(&|s| s
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .any(|p| p.host_port.is_some())));
        // Every priorityClassName refers to an emitted PriorityClass, with its value.
        for p in &pods {
            let s = spec(p);
            let class = s
                .priority_class_name
                .as_deref()
                .expect("mixed pods have a priority class");
            let pc = c
                .priority_classes
                .iter()
                .find(|pc| pc.metadata.name.as_deref() == Some(class))
                .expect("known class");
            assert_eq!(s.priority, Some(pc.value));
        }
        // Some pending pods can never fit, for explainable reasons.
        let impossible: Vec<_> = c
            .pending
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .filter(|n| {
                n.starts_with("train-b200")
                    || n.starts_with("etl-huge")
                    || n.starts_with("notebook-no-toleration")
            })
            .collect();
        assert!(impossible.len() >= 3, "{impossible:?}");
        assert!(
            c.running
                .iter()
                .all(|p| !p.metadata.name.as_deref().unwrap().starts_with("etl-huge"))
        );
    }

    /// Running pods are bound without overcommitting resources, pod slots or host
    /// ports and without breaking required anti-affinity or node constraints.
    #[test]
    fn running_pods_form_a_valid_placement() {
        for profile in PROFILES {
            let c = generate(&args(profile, 40, 10, 600, 8)).unwrap();
            let mut by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
            for p in &c.running {
                let s = spec(p);
                let node = s.node_name.as_deref().expect("running pods are bound");
                assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
                by_node.entry(node).or_default().push(p);
            }
            for n in &c.nodes {
                let name = n.metadata.name.as_deref().unwrap();
                let pods = by_node.remove(name).unwrap_or_default();
                let alloc = n.status.as_ref().unwrap().allocatable.as_ref().unwrap();
                let mut free = container_res(&Container {
                    resources: Some(ResourceRequirements {
                        requests: Some(alloc.clone()),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                });
                assert!(pods.len() <= 110);
                let mut ports = BTreeSet::new();
                let mut groups = BTreeSet::new();
                let state = node_state(n);
                for p in pods {
                    let shape = shape(String::new(), "", BTreeMap::new(), spec(p).clone(), None);
                    assert!(
                        state.fits(&PodShape {
                            anti_group: None,
                            ..shape.clone()
                        }),
                        "{profile:?} {name}"
                    );
                    free.cpu_m = free.cpu_m.checked_sub(shape.res.cpu_m).expect("cpu fits");
                    free.mem_mi = free
                        .mem_mi
                        .checked_sub(shape.res.mem_mi)
                        .expect("memory fits");
                    free.gpu = free.gpu.checked_sub(shape.res.gpu).expect("gpu fits");
                    for port in shape.host_ports {
                        assert!(ports.insert(port), "host port {port} used twice on {name}");
                    }
                    let required = spec(p)
                        .affinity
                        .as_ref()
                        .and_then(|a| a.pod_anti_affinity.as_ref())
                        .and_then(|a| {
                            a.required_during_scheduling_ignored_during_execution
                                .as_ref()
                        });
                    if let Some(terms) = required {
                        let sel = terms[0]
                            .label_selector
                            .as_ref()
                            .unwrap()
                            .match_labels
                            .clone();
                        assert!(groups.insert(sel), "anti-affinity broken on {name}");
                    }
                }
            }
            assert!(by_node.is_empty(), "pods bound to unknown nodes");
            for p in &c.pending {
                assert!(spec(p).node_name.is_none());
                assert_eq!(spec(p).scheduler_name.as_deref(), Some(SCHEDULER_NAME));
            }
        }
    }

    /// A node's static constraints (labels, taints), with unlimited capacity.
    fn node_state(n: &Node) -> NodeState {
        NodeState {
            name: n.metadata.name.clone().unwrap(),
            labels: n.metadata.labels.clone().unwrap_or_default(),
            taints: n
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default(),
            free: Res {
                cpu_m: u64::MAX,
                mem_mi: u64::MAX,
                gpu: u64::MAX,
            },
            free_pods: u64::MAX,
            ports: BTreeSet::new(),
            groups: BTreeSet::new(),
        }
    }

    #[test]
    fn argument_errors() {
        let err = |a: Args| generate(&a).unwrap_err().to_string();
        assert!(err(args(Profile::Basic, 0, 10, 0, 0)).contains("--nodes must be at least 1"));
        assert!(err(args(Profile::Basic, 10, 0, 0, 0)).contains("nothing to generate"));
        assert!(err(args(Profile::Basic, MAX_NODES + 1, 1, 0, 0)).contains("maximum"));
        assert!(err(args(Profile::Basic, 10, MAX_PODS, 1, 0)).contains("maximum"));
        assert!(err(args(Profile::Basic, 10, u64::MAX, u64::MAX, 0)).contains("maximum"));
        // 4 CPUs hold 40 pods of 100m: 41 running pods cannot be bound to one node.
        let e = err(args(Profile::Basic, 1, 0, 41, 0));
        assert!(
            e.contains("--running 41") && e.contains("only 40 pods fit"),
            "{e}"
        );
        assert!(generate(&args(Profile::Basic, 1, 0, 40, 0)).is_ok());
    }

    /// The committed built-in example is exactly what the documented command writes
    /// (see `examples/README.md`).
    #[test]
    fn committed_example_is_up_to_date() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster");
        let c = generate(&args(Profile::Mixed, 300, 1000, 1200, 42)).unwrap();
        let files = [
            NAMESPACES_FILE,
            PRIORITY_CLASSES_FILE,
            NODES_FILE,
            RUNNING_FILE,
            PODS_FILE,
        ];
        for (file, expected) in files.iter().zip(render(&c)) {
            let actual = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            assert!(
                actual == expected,
                "examples/cluster/{file} is stale; regenerate it with the command in \
                 examples/README.md"
            );
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("corral-loadgen-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn writes_files_and_creates_directory() {
        let root = scratch("write");
        let dir = root.join("a/b");
        let mut a = args(Profile::Mixed, 10, 20, 5, 1);
        a.out = dir.clone();
        run(&a).unwrap();
        for f in [
            NAMESPACES_FILE,
            PRIORITY_CLASSES_FILE,
            NODES_FILE,
            RUNNING_FILE,
            PODS_FILE,
        ] {
            assert!(dir.join(f).is_file(), "{f}");
        }
        let pods = std::fs::read_to_string(dir.join(PODS_FILE)).unwrap();
        assert_eq!(parse_all::<Pod>(&pods).len(), 20);
        // Regenerating without running pods removes the stale file.
        let mut b = args(Profile::Basic, 10, 20, 0, 1);
        b.out = dir.clone();
        run(&b).unwrap();
        assert!(!dir.join(RUNNING_FILE).exists());
        assert!(!dir.join(PRIORITY_CLASSES_FILE).exists());
        assert!(dir.join(PODS_FILE).is_file());
        // An output path that is a file is a clear error, not a panic.
        let file = root.join("file");
        std::fs::write(&file, "x").unwrap();
        let mut c = args(Profile::Basic, 1, 1, 0, 0);
        c.out = file;
        let e = format!("{:#}", run(&c).unwrap_err());
        assert!(e.contains("cannot create output directory"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
