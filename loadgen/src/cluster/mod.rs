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

mod mixed;
mod nodes;
mod objects;
mod output;
mod pods;
#[cfg(test)]
mod tests;

use nodes::*;
use objects::*;
pub use output::{gen_line, stage_line, to_yaml, write, write_with};
use pods::*;

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
