//! `corral-loadgen k8s`: creates pods (and optionally fake Nodes) at a fixed rate
//! against any Kubernetes API server and measures, from watch events, the
//! creation→binding latency percentiles and the bound pods/s.
//!
//! Creation time is taken when the create request is sent; binding time when the
//! pod watch first shows `spec.nodeName`. Gangs (`--gang-size G`) get a Volcano
//! PodGroup (minMember G) plus the Volcano annotation and the scheduler-plugins
//! label on every member; a missing CRD is reported, not fatal.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde::Serialize;
use serde_json::json;

/// Arguments of `corral-loadgen k8s`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// kubeconfig; in-cluster configuration or $KUBECONFIG otherwise.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Pods to create.
    #[arg(long)]
    pub pods: u64,
    /// Creation rate (pods/s).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Pods per gang (1 = no gangs).
    #[arg(long, default_value_t = 1)]
    pub gang_size: u32,
    /// Fake Node objects to create first (with --fake-nodes).
    #[arg(long, default_value_t = 0)]
    pub nodes: u32,
    /// Create --nodes fake Nodes (allocatable 64 CPU / 256 GiB / 110 pods).
    #[arg(long)]
    pub fake_nodes: bool,
    /// Namespace of the pods (must exist).
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// schedulerName of the pods.
    #[arg(long, default_value = "corral")]
    pub scheduler_name: String,
    /// Name prefix of the created objects.
    #[arg(long, default_value = "loadgen")]
    pub prefix: String,
    /// Concurrent create requests.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Give up waiting for bindings after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_seconds: u64,
}

/// Latency percentiles (ms).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Result of a run (printed as JSON).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub pods: u64,
    pub created: u64,
    pub create_errors: u64,
    pub bound: u64,
    pub create_seconds: f64,
    pub created_per_second: f64,
    /// Bound pods / (last bind − first creation).
    pub bound_per_second: f64,
    pub creation_to_bind_ms: Percentiles,
    pub timed_out: bool,
    /// Creation→bind latency (ms) at quantiles 0.01, 0.02, …, 1.0 (the CDF that
    /// `benches/plots` draws); empty when nothing was bound.
    pub latency_cdf_ms: Vec<f64>,
    /// Pods created and bound so far, every 250 ms from the first creation (the
    /// created-vs-bound timeline).
    pub timeline: Vec<TimelinePoint>,
}

/// One sample of the created-vs-bound timeline.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct TimelinePoint {
    /// Seconds since the first creation was sent.
    pub t: f64,
    pub created: u64,
    pub bound: u64,
}

/// The timeline from creation and binding instants: cumulative counts every `step`
/// from `t0` until the last event.
pub fn timeline(
    t0: Instant,
    created: &[Instant],
    bound: &[Instant],
    step: Duration,
) -> Vec<TimelinePoint> {
    let secs = |v: &[Instant]| {
        let mut s: Vec<f64> = v
            .iter()
            .map(|t| t.saturating_duration_since(t0).as_secs_f64())
            .collect();
        s.sort_by(f64::total_cmp);
        s
    };
    let (c, b) = (secs(created), secs(bound));
    let end = c
        .last()
        .copied()
        .unwrap_or(0.0)
        .max(b.last().copied().unwrap_or(0.0));
    let step = step.as_secs_f64().max(1e-3);
    let mut out = Vec::new();
    let mut k = 0u64;
    loop {
        let t = k as f64 * step;
        let count = |v: &[f64]| v.partition_point(|x| *x <= t) as u64;
        out.push(TimelinePoint {
            t,
            created: count(&c),
            bound: count(&b),
        });
        if t >= end {
            break;
        }
        k += 1;
    }
    out
}

/// Latency at quantiles 0.01 … 1.0 of a sorted sample (nearest rank).
pub fn cdf(sorted: &[f64]) -> Vec<f64> {
    if sorted.is_empty() {
        return Vec::new();
    }
    (1..=100)
        .map(|i| {
            let r = ((sorted.len() as f64 * f64::from(i) / 100.0).ceil() as usize)
                .clamp(1, sorted.len());
            sorted[r - 1]
        })
        .collect()
}

fn fake_node(name: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("zone-{}", name.len() % 3),
            "corral.io/fake-node": "true"}},
        "spec": {"taints": [{"key": "corral.io/fake-node", "value": "true", "effect": "NoExecute"}]},
        "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                   "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .expect("static node")
}

fn pod(args: &Args, i: u64) -> Pod {
    let name = format!("{}-{i}", args.prefix);
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": args.namespace,
                     "labels": {"app": args.prefix}},
        "spec": {"schedulerName": args.scheduler_name,
            "tolerations": [{"key": "corral.io/fake-node", "operator": "Exists"}],
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
    });
    if args.gang_size > 1 {
        let g = format!("{}-gang-{}", args.prefix, i / u64::from(args.gang_size));
        p["metadata"]["annotations"] = json!({"scheduling.k8s.io/group-name": g});
        p["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] = json!(g);
    }
    serde_json::from_value(p).expect("static pod")
}

/// One progress line: `created 1200/5000  bound 1100  (12 s)`.
pub fn progress_line(created: u64, bound: u64, total: u64, elapsed: Duration) -> String {
    format!(
        "corral-loadgen: created {created}/{total}  bound {bound}  ({} s)",
        elapsed.as_secs()
    )
}

/// Runs the load against `client`.
pub async fn run_with_client(client: Client, args: &Args) -> Result<Report> {
    if args.pods == 0 {
        bail!("--pods must be at least 1");
    }
    if !args.rate.is_finite() || args.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    if args.gang_size == 0 {
        bail!("--gang-size must be at least 1");
    }
    if args.fake_nodes {
        let nodes: Api<Node> = Api::all(client.clone());
        for i in 0..args.nodes {
            let n = fake_node(&format!("{}-node-{i}", args.prefix));
            let name = n.metadata.name.clone().unwrap_or_default();
            match nodes.create(&PostParams::default(), &n).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e).with_context(|| format!("creating node {name}")),
            }
            // A real API server ignores status on create.
            let st = json!({"status": n.status});
            let _ = nodes
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&st))
                .await;
        }
    }
    if args.gang_size > 1 {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("scheduling.volcano.sh", "v1beta1", "PodGroup"),
            "podgroups",
        );
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &args.namespace, &ar);
        let groups = args.pods.div_ceil(u64::from(args.gang_size));
        for g in 0..groups {
            let name = format!("{}-gang-{g}", args.prefix);
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
                "metadata": {"name": name, "namespace": args.namespace},
                "spec": {"minMember": args.gang_size}
            }))?;
            if let Err(e) = api.create(&PostParams::default(), &obj).await {
                eprintln!("corral-loadgen: warning: PodGroup {name}: {e}");
                break;
            }
        }
    }

    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &args.namespace);
    let prefix = format!("{}-", args.prefix);
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel::<()>();
    let watch = {
        let bound = bound.clone();
        let pods = pods.clone();
        tokio::spawn(async move {
            let mut synced = Some(synced_tx);
            let mut s = watcher::watcher(pods, watcher::Config::default()).boxed();
            while let Some(ev) = s.next().await {
                let p = match ev {
                    Ok(Event::Apply(p) | Event::InitApply(p)) => p,
                    Ok(Event::InitDone) => {
                        if let Some(t) = synced.take() {
                            let _ = t.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                let Some(name) = p.metadata.name.as_deref() else {
                    continue;
                };
                if !name.starts_with(&prefix) {
                    continue;
                }
                if p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some_and(|n| !n.is_empty())
                {
                    bound
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(name.to_string())
                        .or_insert_with(Instant::now);
                }
            }
        })
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), synced_rx).await;

    let t0 = Instant::now();
    // Progress on stderr once a second when it is a terminal (pipes and CI logs get
    // only the final report).
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let (created, bound) = (created.clone(), bound.clone());
        let total = args.pods;
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_secs(1));
            loop {
                iv.tick().await;
                let c = created.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
                let b = bound.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
                eprint!("\r{}", progress_line(c, b, total, t0.elapsed()));
            }
        })
    });
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..args.pods {
        let due = t0 + Duration::from_secs_f64(i as f64 / args.rate);
        tokio::time::sleep_until(due.into()).await;
        let permit = sem.clone().acquire_owned().await?;
        let p = pod(args, i);
        let pods = pods.clone();
        let created = created.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let name = p.metadata.name.clone().unwrap_or_default();
            let t = Instant::now();
            match pods.create(&PostParams::default(), &p).await {
                Ok(_) => {
                    created
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name, t);
                }
                Err(e) => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    eprintln!("corral-loadgen: create {name}: {e}");
                }
            }
            drop(permit);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let create_secs = t0.elapsed().as_secs_f64();
    let n_created = created.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    let mut timed_out = false;
    loop {
        let b = bound.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
        if b >= n_created {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    watch.abort();
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    let created = created.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let bound = bound.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut lat: Vec<f64> = created
        .iter()
        .filter_map(|(k, c)| {
            bound
                .get(k)
                .map(|b| b.saturating_duration_since(*c).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1]
        }
    };
    let created_at: Vec<Instant> = created.values().copied().collect();
    let bound_at: Vec<Instant> = bound
        .iter()
        .filter(|(k, _)| created.contains_key(*k))
        .map(|(_, t)| *t)
        .collect();
    let tl = timeline(t0, &created_at, &bound_at, Duration::from_millis(250));
    let last_bind = bound.values().max().copied();
    let span = last_bind.map_or(0.0, |l| l.saturating_duration_since(t0).as_secs_f64());
    Ok(Report {
        pods: args.pods,
        created: n_created,
        create_errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        bound: lat.len() as u64,
        create_seconds: create_secs,
        created_per_second: n_created as f64 / create_secs.max(1e-9),
        bound_per_second: if span > 0.0 {
            lat.len() as f64 / span
        } else {
            0.0
        },
        creation_to_bind_ms: Percentiles {
            p50: pct(0.5),
            p90: pct(0.9),
            p99: pct(0.99),
            max: lat.last().copied().unwrap_or(0.0),
        },
        timed_out,
        latency_cdf_ms: cdf(&lat),
        timeline: tl,
    })
}

/// Builds a client from `--kubeconfig` (or inference).
pub async fn client(kubeconfig: Option<&PathBuf>) -> Result<Client> {
    Ok(corral_api::client::client(kubeconfig.map(PathBuf::as_path), Default::default()).await?)
}

/// Entry point of `corral-loadgen k8s`.
pub fn run(args: &Args) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let c = client(args.kubeconfig.as_ref()).await?;
        run_with_client(c, args).await
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.timed_out {
        bail!(
            "{} of {} pods bound before the timeout",
            report.bound,
            report.created
        );
    }
    Ok(())
}

#[cfg(test)]
mod progress_tests {
    use super::*;

    #[test]
    fn timeline_counts_cumulatively_until_the_last_event() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let created = [at(0), at(100), at(300)];
        let bound = [at(200), at(600)];
        let tl = timeline(t0, &created, &bound, Duration::from_millis(250));
        let got: Vec<(u64, u64)> = tl.iter().map(|p| (p.created, p.bound)).collect();
        // t = 0, 0.25, 0.5, 0.75 s.
        assert_eq!(got, vec![(1, 0), (2, 1), (3, 1), (3, 2)]);
        assert!((tl[3].t - 0.75).abs() < 1e-9);
    }

    #[test]
    fn cdf_is_nearest_rank() {
        assert!(cdf(&[]).is_empty());
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        let c = cdf(&v);
        assert_eq!(c.len(), 100);
        assert_eq!(c[0], 2.0); // q = 0.01 of 200 samples: rank 2
        assert_eq!(c[49], 100.0);
        assert_eq!(c[98], 198.0);
        assert_eq!(c[99], 200.0);
        assert_eq!(cdf(&[7.0])[0], 7.0);
    }

    #[test]
    fn progress_line_counts() {
        assert_eq!(
            progress_line(1200, 1100, 5000, Duration::from_millis(12_400)),
            "corral-loadgen: created 1200/5000  bound 1100  (12 s)"
        );
    }
}
