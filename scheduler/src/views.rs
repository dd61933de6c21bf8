//! Operator views of a live cluster: `corral-scheduler queues` (per Volcano Queue:
//! state, weight, capability, allocated, PodGroups by phase — what `run` writes into
//! the Queue status) and `corral-scheduler jobs` (Volcano PodGroups: queue, priority
//! class, phase, running/minMember, age, time to start, why waiting). Tables with
//! kubectl-style quantities (`64Gi`, `2500m`) by default, `-o json|yaml` as data.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use kube::api::{Api, DynamicObject, ListParams};
use serde::Serialize;
use serde_json::Value;

use crate::k8s::crds::Crd;

/// Output of the views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ViewFormat {
    Table,
    Json,
    Yaml,
}

/// `corral-scheduler queues`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueuesCli {
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The configuration `run` uses (KubeSchedulerConfiguration or Volcano's), so the
    /// session computes the shares with the same plugins (proportion or capacity).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: ViewFormat,
}

/// `corral-scheduler jobs`.
#[derive(Debug, Clone, clap::Args)]
pub struct JobsCli {
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Only this namespace (default: all).
    #[arg(long, short)]
    pub namespace: Option<String>,
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: ViewFormat,
}

/// `corral-scheduler explain NS/POD`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainCli {
    /// The pod (NAMESPACE/NAME).
    #[arg(value_name = "NS/POD")]
    pub pod: String,
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The configuration `run` uses (KubeSchedulerConfiguration or Volcano's), so
    /// the same profiles and plugins are evaluated.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: ViewFormat,
}

/// `explain`'s answer: simulate's `--explain` for the pod on a fresh snapshot of
/// the cluster (a bound pod is taken off its node and evaluated again).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveExplain {
    /// The node the pod is bound to in the cluster, if any.
    pub bound_to: Option<String>,
    /// The pod's PodGroup and the batch session's verdict on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gang: Option<GangExplain>,
    #[serde(flatten)]
    pub explain: crate::scheduler::Explain,
}

/// The PodGroup of an explained gang member and the batch session's verdict
/// (phase and message: for network-topology gangs, the HyperNode chosen and why
/// the others could not hold the gang).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GangExplain {
    pub pod_group: String,
    pub phase: Option<String>,
    pub message: Option<String>,
}

/// One queue.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueRow {
    pub name: String,
    pub state: String,
    pub weight: i64,
    pub parent: Option<String>,
    pub capability: BTreeMap<String, String>,
    /// `spec.deserved` (Volcano's capacity plugin); empty when not set.
    pub deserved: BTreeMap<String, String>,
    pub allocated: BTreeMap<String, String>,
    /// Deserved share as a scheduling session computes it now on a snapshot of the
    /// cluster (proportion: weight-based and capped by capability and demand;
    /// capacity: `spec.deserved`); `None` when it could not be computed.
    pub session_deserved: Option<BTreeMap<String, String>>,
    /// Allocation as that session ends (running pods plus what it would place).
    pub session_allocated: Option<BTreeMap<String, String>>,
    pub pending: i64,
    pub inqueue: i64,
    pub running: i64,
    pub completed: i64,
}

/// One PodGroup.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobRow {
    pub namespace: String,
    pub name: String,
    pub queue: String,
    pub priority_class: Option<String>,
    /// The group's priority: its PriorityClass's value, else the globalDefault
    /// class's, else 0 (Volcano's rule); `None` when PriorityClasses could not be
    /// listed.
    pub priority: Option<i32>,
    pub phase: String,
    pub running: i64,
    pub min_member: i64,
    /// Seconds since the PodGroup was created.
    pub age_seconds: Option<i64>,
    /// Seconds from creation to the `Scheduled` condition (when it started).
    pub time_to_start_seconds: Option<i64>,
    /// The `Unschedulable` condition's message while it waits.
    pub reason: Option<String>,
}

/// A kubectl-style quantity: memory-like byte counts with a binary suffix when
/// exact (`68719476736` → `64Gi`); everything else as given.
pub fn human_quantity(resource: &str, v: &str) -> String {
    let bytes = resource == "memory"
        || resource == "ephemeral-storage"
        || resource.starts_with("hugepages-");
    if !bytes {
        return v.to_string();
    }
    let Ok(n) = v.parse::<u64>() else {
        return v.to_string();
    };
    for (suffix, shift) in [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ] {
        let unit = 1u64 << shift;
        if n >= unit && n % unit == 0 {
            return format!("{}{suffix}", n / unit);
        }
    }
    v.to_string()
}

fn quantities(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, q)| {
                    let s = match q {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), human_quantity(k, &s))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn timestamp(v: &Value) -> Option<i64> {
    v.as_str()?
        .parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

/// The rows of `queues` from Queue objects (as listed).
pub fn queue_rows(objs: &[Value]) -> Vec<QueueRow> {
    let mut rows: Vec<QueueRow> = objs
        .iter()
        .map(|q| QueueRow {
            name: q["metadata"]["name"].as_str().unwrap_or("").to_string(),
            state: q["status"]["state"].as_str().unwrap_or("Open").to_string(),
            weight: q["spec"]["weight"].as_i64().unwrap_or(1),
            parent: q["spec"]["parent"].as_str().map(str::to_string),
            capability: quantities(&q["spec"]["capability"]),
            deserved: quantities(&q["spec"]["deserved"]),
            allocated: quantities(&q["status"]["allocated"]),
            session_deserved: None,
            session_allocated: None,
            pending: int(&q["status"]["pending"]),
            inqueue: int(&q["status"]["inqueue"]),
            running: int(&q["status"]["running"]),
            completed: int(&q["status"]["completed"]),
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// PriorityClass values by name; the globalDefault class also under `""`.
pub fn priority_values(pcs: &[Value]) -> BTreeMap<String, i32> {
    let mut m = BTreeMap::new();
    for pc in pcs {
        let (Some(name), Some(v)) = (pc["metadata"]["name"].as_str(), pc["value"].as_i64()) else {
            continue;
        };
        let v = i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX });
        m.insert(name.to_string(), v);
        if pc["globalDefault"] == true {
            m.insert(String::new(), v);
        }
    }
    m
}

/// The rows of `jobs` from Volcano PodGroup objects, at Unix time `now`, with
/// the PriorityClass values (`None`: not listed, priorities unknown).
pub fn job_rows(objs: &[Value], now: i64, pcs: Option<&BTreeMap<String, i32>>) -> Vec<JobRow> {
    let mut rows: Vec<JobRow> = objs
        .iter()
        .map(|g| {
            let created = timestamp(&g["metadata"]["creationTimestamp"]);
            let conds = g["status"]["conditions"].as_array();
            let cond = |t: &str| conds.and_then(|cs| cs.iter().find(|c| c["type"] == t));
            let phase = g["status"]["phase"]
                .as_str()
                .unwrap_or("Pending")
                .to_string();
            let started = cond("Scheduled").and_then(|c| timestamp(&c["lastTransitionTime"]));
            let reason = if phase == "Running" || phase == "Completed" {
                None
            } else {
                cond("Unschedulable")
                    .and_then(|c| c["message"].as_str())
                    .map(str::to_string)
            };
            JobRow {
                namespace: g["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                name: g["metadata"]["name"].as_str().unwrap_or("").to_string(),
                queue: g["spec"]["queue"].as_str().unwrap_or("default").to_string(),
                priority_class: g["spec"]["priorityClassName"]
                    .as_str()
                    .filter(|c| !c.is_empty())
                    .map(str::to_string),
                priority: pcs.map(|pcs| {
                    let default = pcs.get("").copied().unwrap_or(0);
                    g["spec"]["priorityClassName"]
                        .as_str()
                        .and_then(|c| pcs.get(c).copied())
                        .unwrap_or(default)
                }),
                phase,
                running: int(&g["status"]["running"]),
                min_member: int(&g["spec"]["minMember"]),
                age_seconds: created.map(|c| (now - c).max(0)),
                time_to_start_seconds: match (created, started) {
                    (Some(c), Some(s)) => Some((s - c).max(0)),
                    _ => None,
                },
                reason,
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

/// `5s`, `3m`, `2h`, `4d` as kubectl prints ages.
pub fn age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn list_text(m: &BTreeMap<String, String>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<width$}   ", width = w[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

pub fn queues_table(rows: &[QueueRow]) -> String {
    table(
        &[
            "NAME",
            "STATE",
            "WEIGHT",
            "PARENT",
            "CAPABILITY",
            "DESERVED",
            "ALLOCATED",
            "SESSION DESERVED",
            "SESSION ALLOCATED",
            "PENDING",
            "INQUEUE",
            "RUNNING",
            "COMPLETED",
        ],
        rows.iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.state.clone(),
                    r.weight.to_string(),
                    r.parent.clone().unwrap_or_else(|| "-".into()),
                    list_text(&r.capability),
                    list_text(&r.deserved),
                    list_text(&r.allocated),
                    r.session_deserved.as_ref().map_or("?".into(), list_text),
                    r.session_allocated.as_ref().map_or("?".into(), list_text),
                    r.pending.to_string(),
                    r.inqueue.to_string(),
                    r.running.to_string(),
                    r.completed.to_string(),
                ]
            })
            .collect(),
    )
}

pub fn jobs_table(rows: &[JobRow]) -> String {
    table(
        &[
            "NAMESPACE",
            "NAME",
            "QUEUE",
            "PRIORITY",
            "PHASE",
            "RUNNING/MIN",
            "AGE",
            "STARTED AFTER",
            "WAITING BECAUSE",
        ],
        rows.iter()
            .map(|r| {
                vec![
                    r.namespace.clone(),
                    r.name.clone(),
                    r.queue.clone(),
                    match (&r.priority_class, r.priority) {
                        (Some(c), Some(v)) => format!("{c} ({v})"),
                        (Some(c), None) => c.clone(),
                        (None, Some(v)) => format!("- ({v})"),
                        (None, None) => "-".into(),
                    },
                    r.phase.clone(),
                    format!("{}/{}", r.running, r.min_member),
                    r.age_seconds.map_or("-".into(), age),
                    r.time_to_start_seconds.map_or("-".into(), age),
                    r.reason.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    )
}

async fn list(
    client: kube::Client,
    crd: Crd,
    namespace: Option<&str>,
) -> anyhow::Result<Vec<Value>> {
    let ar = crd.api_resource();
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| anyhow::anyhow!("listing {}: {e}", ar.plural))?;
    Ok(list
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
        .collect())
}

fn render<T: Serialize>(rows: &T, format: ViewFormat, table: impl FnOnce() -> String) -> String {
    match format {
        ViewFormat::Table => table(),
        ViewFormat::Json => serde_json::to_string_pretty(rows).unwrap_or_default(),
        ViewFormat::Yaml => serde_yaml_ng::to_string(rows).unwrap_or_default(),
    }
}

/// The `queues` view as text (shares computed with the default configuration).
pub async fn queues(client: kube::Client, format: ViewFormat) -> anyhow::Result<String> {
    queues_with(client, format, None).await
}

/// The `queues` view as text; the session shares are computed with `config` (the
/// configuration `run` uses). A cluster the session cannot be computed on still
/// gets the view, with `?` (`null`) shares and a warning.
pub async fn queues_with(
    client: kube::Client,
    format: ViewFormat,
    config: Option<PathBuf>,
) -> anyhow::Result<String> {
    let mut rows = queue_rows(&list(client.clone(), Crd::VolcanoQueue, None).await?);
    match session_shares(client, config).await {
        Ok(shares) => {
            for r in &mut rows {
                if let Some((d, a)) = shares.get(&r.name) {
                    r.session_deserved = Some(d.clone());
                    r.session_allocated = Some(a.clone());
                }
            }
        }
        Err(e) => tracing::warn!("session shares not computed: {e:#}"),
    }
    Ok(render(&rows, format, || queues_table(&rows)))
}

type Shares = BTreeMap<String, (BTreeMap<String, String>, BTreeMap<String, String>)>;

/// Per queue: (deserved, allocated) as one scheduling session computes them on a
/// fresh snapshot of the cluster (what `run`'s next session would use).
async fn session_shares(client: kube::Client, config: Option<PathBuf>) -> anyhow::Result<Shares> {
    let (text, ..) = cluster_docs(client, None).await?;
    let input = crate::input::load_str(&text, "the cluster", crate::batch::EXTRA_KINDS)
        .map_err(|e| anyhow::anyhow!("{}", e.0))?;
    let args = crate::simulate::SimulateArgs {
        config,
        ..Default::default()
    };
    let report = tokio::task::spawn_blocking(move || {
        crate::simulate::run_input(&args, input, &mut |w| tracing::debug!("{w}"))
    })
    .await?
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let human = |m: BTreeMap<String, String>| {
        m.into_iter()
            .map(|(k, v)| {
                let h = human_quantity(&k, &v);
                (k, h)
            })
            .collect::<BTreeMap<_, _>>()
    };
    Ok(report
        .queues
        .into_iter()
        .map(|q| {
            let d = human(q.deserved.to_quantities());
            let a = human(q.allocated.to_quantities());
            (q.name, (d, a))
        })
        .collect())
}

/// The `jobs` view as text.
pub async fn jobs(
    client: kube::Client,
    namespace: Option<&str>,
    format: ViewFormat,
) -> anyhow::Result<String> {
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let pcs = match Api::<PriorityClass>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(l) => Some(priority_values(
            &l.items
                .into_iter()
                .filter_map(|p| serde_json::to_value(p).ok())
                .collect::<Vec<_>>(),
        )),
        Err(e) => {
            tracing::warn!("priorityclasses not listed: {e}");
            None
        }
    };
    let rows = job_rows(
        &list(client, Crd::VolcanoPodGroup, namespace).await?,
        now,
        pcs.as_ref(),
    );
    Ok(render(&rows, format, || jobs_table(&rows)))
}

fn run_view(
    kubeconfig: Option<&PathBuf>,
    f: impl AsyncFnOnce(kube::Client) -> anyhow::Result<String>,
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corral-scheduler: error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        let c = crate::k8s::client(kubeconfig).await?;
        f(c).await
    });
    match r {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("corral-scheduler: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn queues_main(cli: &QueuesCli) -> ExitCode {
    let format = cli.output;
    let config = cli.config.clone();
    run_view(cli.kubeconfig.as_ref(), async move |c| {
        queues_with(c, format, config).await
    })
}

pub fn jobs_main(cli: &JobsCli) -> ExitCode {
    let format = cli.output;
    let ns = cli.namespace.clone();
    run_view(cli.kubeconfig.as_ref(), async move |c| {
        jobs(c, ns.as_deref(), format).await
    })
}

/// Lists what `simulate` reads (Nodes, Pods, Namespaces, PriorityClasses, and the
/// Volcano Queues/PodGroups when served) as one multi-document text; the target pod
/// (`ns/name`), if any, is returned unbound with the node it was bound to and the
/// PodGroup it belongs to.
async fn cluster_docs(
    client: kube::Client,
    target: Option<&str>,
) -> anyhow::Result<(String, Option<String>, Option<String>)> {
    use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let lp = ListParams::default();
    let nodes = Api::<Node>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| anyhow::anyhow!("listing nodes: {e}"))?;
    let pods = Api::<Pod>::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| anyhow::anyhow!("listing pods: {e}"))?;
    // Namespaces (namespace selectors) and PriorityClasses (priorities) refine the
    // answer; a client not allowed to list them still gets one.
    let namespaces = match Api::<Namespace>::all(client.clone()).list(&lp).await {
        Ok(l) => l.items,
        Err(e) => {
            tracing::warn!("namespaces not listed: {e}");
            Vec::new()
        }
    };
    let pcs = match Api::<PriorityClass>::all(client.clone()).list(&lp).await {
        Ok(l) => l.items,
        Err(e) => {
            tracing::warn!("priorityclasses not listed: {e}");
            Vec::new()
        }
    };
    let mut docs: Vec<Value> = Vec::new();
    let to = |v: Result<Value, serde_json::Error>| v.map_err(|e| anyhow::anyhow!("{e}"));
    for n in nodes.items {
        docs.push(to(serde_json::to_value(n))?);
    }
    for n in namespaces {
        docs.push(to(serde_json::to_value(n))?);
    }
    for p in pcs {
        docs.push(to(serde_json::to_value(p))?);
    }
    let mut found = false;
    let mut bound_to = None;
    let mut group = None;
    for p in pods.items {
        let key = format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or("default"),
            p.metadata.name.as_deref().unwrap_or_default()
        );
        let mut v = to(serde_json::to_value(p))?;
        if Some(key.as_str()) == target {
            found = true;
            group = group_of(&v);
            if let Some(n) = v["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                bound_to = Some(n.to_string());
                v["spec"]["nodeName"] = Value::Null;
                if let Some(st) = v.get_mut("status").and_then(Value::as_object_mut) {
                    st.insert("phase".into(), Value::String("Pending".into()));
                }
            }
        }
        docs.push(v);
    }
    if let Some(target) = target.filter(|_| !found) {
        anyhow::bail!("pod {target} not found");
    }
    // The volume kinds (VolumeBinding & co. decide on them, as in `run`); a client
    // not allowed to list one still gets an answer, with a warning.
    docs.extend(volume_docs(&client).await?);
    // The batch and topology objects `run` watches (Volcano Queues/PodGroups,
    // scheduler-plugins PodGroups, HyperNodes, NodeResourceTopologies) when served.
    for crd in Crd::ALL {
        let ar = crd.api_resource();
        match list(client.clone(), crd, None).await {
            Ok(items) => {
                for mut v in items {
                    v["apiVersion"] = Value::String(ar.api_version.clone());
                    v["kind"] = Value::String(ar.kind.clone());
                    docs.push(v);
                }
            }
            Err(e) => tracing::debug!("{} not listed: {e:#}", ar.plural),
        }
    }
    let mut text = String::new();
    for d in docs {
        text.push_str("---\n");
        text.push_str(&serde_json::to_string(&d).map_err(|e| anyhow::anyhow!("{e}"))?);
        text.push('\n');
    }
    Ok((text, bound_to, group))
}

/// Every object of the seven volume kinds as `simulate` input documents.
async fn volume_docs(client: &kube::Client) -> anyhow::Result<Vec<Value>> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    use k8s_openapi::api::storage::v1::{
        CSIDriver, CSINode, CSIStorageCapacity, StorageClass, VolumeAttachment,
    };
    async fn all<K>(client: &kube::Client, out: &mut Vec<Value>) -> anyhow::Result<()>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Serialize,
    {
        match Api::<K>::all(client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(l) => {
                for o in l.items {
                    let mut v = serde_json::to_value(o).map_err(|e| anyhow::anyhow!("{e}"))?;
                    v["apiVersion"] = Value::String(K::api_version(&()).into_owned());
                    v["kind"] = Value::String(K::kind(&()).into_owned());
                    out.push(v);
                }
            }
            Err(e) => tracing::warn!("{} not listed: {e}", K::plural(&())),
        }
        Ok(())
    }
    let mut out = Vec::new();
    all::<PersistentVolume>(client, &mut out).await?;
    all::<PersistentVolumeClaim>(client, &mut out).await?;
    all::<StorageClass>(client, &mut out).await?;
    all::<CSINode>(client, &mut out).await?;
    all::<CSIDriver>(client, &mut out).await?;
    all::<CSIStorageCapacity>(client, &mut out).await?;
    all::<VolumeAttachment>(client, &mut out).await?;
    Ok(out)
}

/// The PodGroup (`namespace/name`) a pod document belongs to: Volcano's
/// `scheduling.k8s.io/group-name` annotation, else scheduler-plugins'
/// `scheduling.x-k8s.io/pod-group` label.
fn group_of(pod: &Value) -> Option<String> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    pod["metadata"]["annotations"][corral_api::keys::ANN_GROUP_NAME]
        .as_str()
        .or_else(|| pod["metadata"]["labels"][corral_api::keys::LABEL_POD_GROUP].as_str())
        .filter(|g| !g.is_empty())
        .map(|g| format!("{ns}/{g}"))
}

/// The `explain` view as text.
pub async fn explain(
    client: kube::Client,
    target: &str,
    config: Option<PathBuf>,
    format: ViewFormat,
) -> anyhow::Result<String> {
    let parts: Vec<&str> = target.split('/').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        anyhow::bail!("{target:?}: expected NAMESPACE/NAME");
    }
    let (text, bound_to, group) = cluster_docs(client, Some(target)).await?;
    let input = crate::input::load_str(&text, "the cluster", crate::batch::EXTRA_KINDS)
        .map_err(|e| anyhow::anyhow!("{}", e.0))?;
    let args = crate::simulate::SimulateArgs {
        config,
        explain: vec![target.to_string()],
        ..Default::default()
    };
    let report = crate::simulate::run_input(&args, input, &mut |w| tracing::warn!("{w}"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let explain = report.core.explain.into_iter().find(|e| e.pod == target);
    // A gang member: what the batch session decided for its PodGroup (e.g. the
    // HyperNode it was placed in and why the others could not hold it).
    let gang = group.map(|g| {
        let status = report.podgroups.iter().find(|s| s.name == g);
        GangExplain {
            phase: status.map(|s| s.phase.clone()),
            message: status.map(|s| s.message.clone()).filter(|m| !m.is_empty()),
            pod_group: g,
        }
    });
    // A gang member the session never offered to the engine (e.g. no HyperNode
    // can hold its gang) has no per-node evaluation; its gang verdict says why.
    let explain = match (explain, &gang) {
        (Some(e), _) => e,
        (None, Some(_)) => crate::scheduler::Explain {
            pod: target.to_string(),
            selected: None,
            nodes: Vec::new(),
        },
        (None, None) => anyhow::bail!("{target}: no explanation was produced"),
    };
    let out = LiveExplain {
        bound_to,
        gang,
        explain,
    };
    Ok(render(&out, format, || {
        let mut s = crate::simulate::explain_table(&out.explain);
        if let Some(g) = &out.gang {
            if out.explain.nodes.is_empty() {
                s.push_str("  (not evaluated on nodes: the batch session did not offer it)\n");
            }
            s.push_str(&format!(
                "  gang {} ({}): {}\n",
                g.pod_group,
                g.phase.as_deref().unwrap_or("no status"),
                g.message.as_deref().unwrap_or("-")
            ));
        }
        if let Some(n) = &out.bound_to {
            s.push_str(&format!(
                "(bound to {n} in the cluster; evaluated again without it)\n"
            ));
        }
        s.trim_start().to_string()
    }))
}

pub fn explain_main(cli: &ExplainCli) -> ExitCode {
    let format = cli.output;
    let pod = cli.pod.clone();
    let config = cli.config.clone();
    run_view(cli.kubeconfig.as_ref(), async move |c| {
        explain(c, &pod, config, format).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_like_kubectl() {
        assert_eq!(human_quantity("memory", "68719476736"), "64Gi");
        assert_eq!(human_quantity("memory", "1536"), "1536");
        assert_eq!(human_quantity("memory", "1572864"), "1536Ki");
        assert_eq!(human_quantity("cpu", "2500m"), "2500m");
        assert_eq!(human_quantity("nvidia.com/gpu", "4"), "4");
        assert_eq!(human_quantity("pods", "1024"), "1024");
        assert_eq!(human_quantity("memory", "8Gi"), "8Gi");
        assert_eq!(age(59), "59s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(10_800), "3h");
        assert_eq!(age(259_200), "3d");
    }
}
