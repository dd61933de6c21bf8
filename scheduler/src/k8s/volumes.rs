//! Volumes in `run`: watches of the seven volume kinds fed into the snapshot's volume
//! state, and VolumeBinding's PreBind done by the binder.
//!
//! - **Watches** (`spawn`): PersistentVolumes, PersistentVolumeClaims,
//!   StorageClasses, CSINodes, CSIDrivers, CSIStorageCapacities, VolumeAttachments
//!   through kube-runtime
//!   watchers; each event is decoded in the loop (`Loop::on_volume_event`) into
//!   `corral_core::volumes` objects, applied incrementally; a relist removes what it
//!   did not see. An object that does not decode is skipped with a warning and
//!   `corral_scheduler_invalid_objects_total`. Every change re-queues unschedulable
//!   pods (a claim may have bound). An observed bound claim / claimed PV replaces the
//!   snapshot's assumption (the assume cache).
//! - **PreBind** (`pre_bind`, run by the binder before the Binding, within its
//!   concurrency and QPS limits): for the pod's assumed decisions, statically chosen
//!   PVs get `spec.claimRef` (+ `pv.kubernetes.io/bound-by-controller`) and claims to
//!   provision get `volume.kubernetes.io/selected-node`; then the claims are polled
//!   until all are bound (`volumeName` + `pv.kubernetes.io/bind-completed`), bounded
//!   by `bindTimeoutSeconds`. On failure or timeout the writes are rolled back (the
//!   annotation removed, a claimRef that did not lead to a binding cleared) and the
//!   binding fails with `running PreBind plugin "VolumeBinding": ...`; the loop then
//!   unreserves (the pod leaves the snapshot with its assumptions), reports a
//!   FailedScheduling event and retries after a backoff.

use std::collections::HashSet;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::{
    CSIDriver, CSINode, CSIStorageCapacity, StorageClass, VolumeAttachment,
};
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use super::Msg;
use super::metrics::{self, Metrics};
use crate::volumes::{
    ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER, ANN_SELECTED_NODE, PodVolumeBindings, VolumeObject,
};

/// The volume kinds, in the order of [`VolumeWatch::relist`].
pub const KINDS: [&str; 7] = [
    "PersistentVolume",
    "PersistentVolumeClaim",
    "StorageClass",
    "CSINode",
    "CSIDriver",
    "CSIStorageCapacity",
    "VolumeAttachment",
];

/// One watch event of a volume kind.
pub enum VolumeEvent {
    /// A relist of `kind` begins.
    Init(usize),
    Apply {
        kind: usize,
        value: serde_json::Value,
    },
    /// A relist of `kind` ended.
    InitDone(usize),
    Delete {
        kind: usize,
        key: String,
    },
}

/// Relist bookkeeping of the volume watches (in the loop).
#[derive(Default)]
pub struct VolumeWatch {
    relist: [Option<HashSet<String>>; 7],
    /// Keys currently applied per kind.
    known: [HashSet<String>; 7],
    /// Initial list done, per kind.
    synced: [bool; 7],
}

fn object_key(v: &serde_json::Value) -> String {
    let md = &v["metadata"];
    let name = md["name"].as_str().unwrap_or("");
    match md["namespace"].as_str() {
        Some(ns) => corral_api::pod::key(ns, name),
        None => name.to_string(),
    }
}

/// API group of each of [`KINDS`].
const GROUPS: [&str; 7] = [
    "",
    "",
    "storage.k8s.io",
    "storage.k8s.io",
    "storage.k8s.io",
    "storage.k8s.io",
    "storage.k8s.io",
];

/// The RBAC verb and the API server's message when a watch error is a 403
/// (the scheduler's service account may not list or watch the resource).
pub fn forbidden(e: &watcher::Error) -> Option<(&'static str, &str)> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 403 => {
            Some(("list", &s.message))
        }
        watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s))
            if s.code == 403 =>
        {
            Some(("watch", &s.message))
        }
        watcher::Error::WatchError(s) if s.code == 403 => Some(("watch", &s.message)),
        _ => None,
    }
}

/// The log line for a forbidden volume watch: the missing permission (verb,
/// resource, API group) and what it stops.
pub fn forbidden_message(verb: &str, resource: &str, group: &str, api: &str) -> String {
    let g = if group.is_empty() {
        "\"\" (core)"
    } else {
        group
    };
    format!(
        "missing RBAC permission: the scheduler may not {verb} {resource} (API group {g}): \
         403 Forbidden ({api}); scheduling waits until every volume kind is listed, so \
         no pod is scheduled until `{verb}` on `{resource}` is granted (see \
         deploy/common/rbac.yaml)"
    )
}

fn forward<K>(
    api: Api<K>,
    kind: usize,
    tx: mpsc::Sender<Msg>,
    metrics: Arc<Metrics>,
    what: &'static str,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Send
        + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut s = watcher::watcher(api, watcher::Config::default().page_size(5000))
            .default_backoff()
            .boxed();
        // Each denied verb is reported once at error level (the watcher retries
        // with backoff; the repeats are debug).
        let mut denied: HashSet<&'static str> = HashSet::new();
        while let Some(ev) = s.next().await {
            let out = match ev {
                Ok(Event::Init) => Some(VolumeEvent::Init(kind)),
                Ok(Event::InitDone) => Some(VolumeEvent::InitDone(kind)),
                Ok(Event::InitApply(o)) | Ok(Event::Apply(o)) => serde_json::to_value(&o)
                    .ok()
                    .map(|value| VolumeEvent::Apply { kind, value }),
                Ok(Event::Delete(o)) => {
                    serde_json::to_value(&o).ok().map(|v| VolumeEvent::Delete {
                        kind,
                        key: object_key(&v),
                    })
                }
                Err(e) => {
                    metrics
                        .watch_errors
                        .get_or_create(&metrics::ResourceLabel {
                            resource: metrics::What(what),
                        })
                        .inc();
                    match forbidden(&e) {
                        Some((verb, api)) if denied.insert(verb) => {
                            tracing::error!("{}", forbidden_message(verb, what, GROUPS[kind], api));
                        }
                        Some(_) => tracing::debug!("{what} watch: {e}"),
                        None => tracing::warn!("{what} watch: {e}"),
                    }
                    None
                }
            };
            if let Some(ev) = out
                && tx.send(Msg::Volume(Box::new(ev))).is_err()
            {
                return;
            }
        }
    })
}

/// Starts the volume watches.
pub fn spawn(
    client: &Client,
    tx: &mpsc::Sender<Msg>,
    m: &Arc<Metrics>,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        forward(
            Api::<PersistentVolume>::all(client.clone()),
            0,
            tx.clone(),
            m.clone(),
            "persistentvolumes",
        ),
        forward(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            1,
            tx.clone(),
            m.clone(),
            "persistentvolumeclaims",
        ),
        forward(
            Api::<StorageClass>::all(client.clone()),
            2,
            tx.clone(),
            m.clone(),
            "storageclasses",
        ),
        forward(
            Api::<CSINode>::all(client.clone()),
            3,
            tx.clone(),
            m.clone(),
            "csinodes",
        ),
        forward(
            Api::<CSIDriver>::all(client.clone()),
            4,
            tx.clone(),
            m.clone(),
            "csidrivers",
        ),
        forward(
            Api::<CSIStorageCapacity>::all(client.clone()),
            5,
            tx.clone(),
            m.clone(),
            "csistoragecapacities",
        ),
        forward(
            Api::<VolumeAttachment>::all(client.clone()),
            6,
            tx.clone(),
            m.clone(),
            "volumeattachments",
        ),
    ]
}

impl VolumeWatch {
    /// Every volume kind listed once (scheduling waits for it, as for nodes:
    /// a claim not yet seen would read as missing).
    pub fn synced(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }

    /// Applies one event to the snapshot's volume state. Returns whether anything
    /// changed (unschedulable pods should be re-queued).
    pub fn apply(
        &mut self,
        ev: VolumeEvent,
        snap: &mut crate::snapshot::Snapshot,
        metrics: &Metrics,
    ) -> bool {
        match ev {
            VolumeEvent::Init(k) => {
                self.relist[k] = Some(HashSet::new());
                false
            }
            VolumeEvent::Apply { kind, value, .. } => {
                let key = object_key(&value);
                if let Some(s) = self.relist[kind].as_mut() {
                    s.insert(key.clone());
                }
                match VolumeObject::decode(KINDS[kind], value) {
                    Ok(Some(o)) => {
                        snap.volumes_mut().upsert(o);
                        self.known[kind].insert(key);
                        true
                    }
                    Ok(None) => false,
                    Err(e) => {
                        tracing::warn!("{} {key}: {e}; skipped", KINDS[kind]);
                        metrics.invalid_objects.inc();
                        // A bad update removes the last good version: never decide
                        // on an object the API no longer has.
                        self.remove(kind, &key, snap)
                    }
                }
            }
            VolumeEvent::InitDone(k) => {
                self.synced[k] = true;
                let Some(seen) = self.relist[k].take() else {
                    return false;
                };
                let gone: Vec<String> = self.known[k].difference(&seen).cloned().collect();
                let mut changed = false;
                for key in gone {
                    changed |= self.remove(k, &key, snap);
                }
                changed
            }
            VolumeEvent::Delete { kind, key } => self.remove(kind, &key, snap),
        }
    }

    fn remove(&mut self, kind: usize, key: &str, snap: &mut crate::snapshot::Snapshot) -> bool {
        self.known[kind].remove(key);
        snap.volumes_mut().remove(KINDS[kind], key)
    }
}

/// `bindTimeoutSeconds` of the first profile configuring VolumeBinding (default
/// 600 s; the args were validated when the profiles were built).
pub fn bind_timeout(cfg: &crate::config::KubeSchedulerConfiguration) -> Duration {
    let secs = cfg
        .profiles
        .iter()
        .flat_map(|p| p.plugin_config.iter())
        .find(|pc| pc.name == crate::plugins::volume_binding::NAME)
        .and_then(|pc| pc.args.as_ref())
        .and_then(|a| a.get("bindTimeoutSeconds"))
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(crate::plugins::volume_binding::DEFAULT_BIND_TIMEOUT_SECONDS);
    Duration::from_secs(secs.max(0) as u64)
}

/// kube-scheduler's PreBind failure message.
pub fn prebind_error(msg: impl std::fmt::Display) -> String {
    format!("running PreBind plugin \"VolumeBinding\": {msg}")
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("default", key))
}

fn api_msg(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{}: {}", s.code, s.message),
        e => e.to_string(),
    }
}

/// Writes the pod's volume decisions and waits (bounded) for its claims to bind;
/// rolls the writes back on failure. `Err` is the event message.
pub async fn pre_bind(
    client: &Client,
    limiter: &super::binder::RateLimiter,
    b: &PodVolumeBindings,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let r = write_and_wait(client, limiter, b, deadline).await;
    if let Err(e) = &r {
        tracing::warn!(node = %b.node, "volume binding failed: {e}; rolling back");
        roll_back(client, limiter, b).await;
    }
    r.map_err(prebind_error)
}

async fn write_and_wait(
    client: &Client,
    limiter: &super::binder::RateLimiter,
    b: &PodVolumeBindings,
    deadline: Instant,
) -> Result<(), String> {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for (claim, pv) in &b.bindings {
        let (ns, name) = split(claim);
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        limiter.acquire().await;
        let c = pvcs
            .get(name)
            .await
            .map_err(|e| format!("binding volumes: claim {claim}: {}", api_msg(e)))?;
        let patch = serde_json::json!({
            "metadata": {"annotations": {ANN_BOUND_BY_CONTROLLER: "yes"}},
            "spec": {"claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                "namespace": ns, "name": name, "uid": c.metadata.uid,
                "resourceVersion": c.metadata.resource_version}}
        });
        limiter.acquire().await;
        pvs.patch(pv, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| format!("binding volumes: persistentvolume {pv:?}: {}", api_msg(e)))?;
    }
    for claim in &b.provisions {
        let (ns, name) = split(claim);
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        let patch = serde_json::json!({"metadata": {"annotations": {ANN_SELECTED_NODE: b.node}}});
        limiter.acquire().await;
        pvcs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| {
                format!(
                    "binding volumes: persistentvolumeclaim {claim:?}: {}",
                    api_msg(e)
                )
            })?;
    }
    // `checkBindings`: poll until every claim is fully bound.
    let claims: Vec<&String> = b
        .bindings
        .iter()
        .map(|(c, _)| c)
        .chain(b.provisions.iter())
        .collect();
    let mut pending: Vec<&String> = claims;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for claim in pending {
            let (ns, name) = split(claim);
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
            limiter.acquire().await;
            let c = pvcs
                .get(name)
                .await
                .map_err(|e| format!("binding volumes: claim {claim}: {}", api_msg(e)))?;
            let bound = c
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .is_some_and(|v| !v.is_empty())
                && c.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(ANN_BIND_COMPLETED));
            if bound {
                continue;
            }
            let provisioning = b.provisions.contains(claim);
            let selected = c
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANN_SELECTED_NODE));
            if provisioning && selected.is_none_or(|n| *n != b.node) {
                // The provisioner gave up on this node (it removes the annotation).
                return Err(format!(
                    "binding volumes: provisioning failed for PVC {name:?}"
                ));
            }
            still.push(claim);
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err("binding volumes: context deadline exceeded".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Best effort: clears the selected-node annotation of claims still unbound and a
/// claimRef we wrote whose claim did not bind.
async fn roll_back(client: &Client, limiter: &super::binder::RateLimiter, b: &PodVolumeBindings) {
    for claim in &b.provisions {
        let (ns, name) = split(claim);
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        limiter.acquire().await;
        let Ok(c) = pvcs.get(name).await else {
            continue;
        };
        let unbound = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_none_or(str::is_empty);
        if unbound {
            let patch = serde_json::json!({"metadata": {"annotations": {ANN_SELECTED_NODE: null}}});
            limiter.acquire().await;
            let _ = pvcs
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    }
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for (claim, pv) in &b.bindings {
        let (ns, name) = split(claim);
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        limiter.acquire().await;
        let bound = pvcs
            .get(name)
            .await
            .ok()
            .and_then(|c| c.spec.and_then(|s| s.volume_name))
            .is_some_and(|v| v == *pv);
        if bound {
            continue;
        }
        limiter.acquire().await;
        let Ok(v) = pvs.get(pv).await else { continue };
        let ours = v
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some_and(|r| r.namespace.as_deref() == Some(ns) && r.name.as_deref() == Some(name));
        if ours {
            let patch = serde_json::json!({"spec": {"claimRef": null}});
            limiter.acquire().await;
            let _ = pvs
                .patch(pv, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    }
}

/// The extender's volume watches: the same kinds applied to its cache (its
/// Filter runs the volume plugins; kube-scheduler does the PreBind itself).
pub fn spawn_for_extender(
    client: &Client,
    ext: Arc<crate::extender::Extender>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut tasks = spawn(client, &tx, &ext.metrics);
    tasks.push(tokio::task::spawn_blocking(move || {
        let mut w = VolumeWatch::default();
        while let Ok(m) = rx.recv() {
            let Msg::Volume(ev) = m else { continue };
            let Ok(mut snap) = ext.cache.write() else {
                return;
            };
            w.apply(*ev, &mut snap, &ext.metrics);
        }
    }));
    tasks
}
