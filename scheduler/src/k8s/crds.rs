//! Batch and topology CRDs (Volcano `scheduling.volcano.sh/v1beta1` PodGroup and
//! Queue, scheduler-plugins `scheduling.x-k8s.io/v1alpha1` PodGroup,
//! `topology.node.k8s.io/v1alpha2` NodeResourceTopology) as dynamic objects, their
//! watches (started only once the CRD is served; discovery is retried quietly), and
//! the status patcher that writes **one merge patch per changed object per session,
//! skipped when unchanged**.
//!
//! The objects are decoded by the batch layer's strict schemas
//! ([`crate::batch::objects`], the same code `simulate` uses): [`to_raw`] turns a
//! watched object into the loader's [`RawObject`].

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde_json::Value;

use super::binder::RateLimiter;
use crate::input::{Origin, RawObject};

/// The CRDs Corral watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Crd {
    VolcanoPodGroup,
    VolcanoQueue,
    CoschedulingPodGroup,
    NodeResourceTopology,
    /// Volcano network topology (`topology.volcano.sh/v1alpha1` HyperNode).
    HyperNode,
}

impl Crd {
    pub const ALL: [Crd; 5] = [
        Crd::VolcanoPodGroup,
        Crd::VolcanoQueue,
        Crd::CoschedulingPodGroup,
        Crd::NodeResourceTopology,
        Crd::HyperNode,
    ];

    pub fn api_resource(self) -> ApiResource {
        let (g, v, k, p) = match self {
            Crd::VolcanoPodGroup => ("scheduling.volcano.sh", "v1beta1", "PodGroup", "podgroups"),
            Crd::VolcanoQueue => ("scheduling.volcano.sh", "v1beta1", "Queue", "queues"),
            Crd::CoschedulingPodGroup => {
                ("scheduling.x-k8s.io", "v1alpha1", "PodGroup", "podgroups")
            }
            Crd::HyperNode => ("topology.volcano.sh", "v1alpha1", "HyperNode", "hypernodes"),
            Crd::NodeResourceTopology => (
                "topology.node.k8s.io",
                "v1alpha2",
                "NodeResourceTopology",
                "noderesourcetopologies",
            ),
        };
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), p)
    }
}

/// `namespace/name` (or `name`) of an object.
pub fn object_key(o: &kube::api::ObjectMeta) -> String {
    match &o.namespace {
        Some(ns) => format!("{ns}/{}", o.name.as_deref().unwrap_or("")),
        None => o.name.clone().unwrap_or_default(),
    }
}

/// A watched object as the loader's raw document, with `apiVersion`/`kind` filled in
/// from the CRD (list items may omit them), for [`crate::batch::BatchObjects::parse`].
pub fn to_raw(api_version: &str, kind: &str, mut value: Value) -> RawObject {
    if let Some(m) = value.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(api_version.into()));
        m.insert("kind".into(), Value::String(kind.into()));
    }
    let key = {
        let md = &value["metadata"];
        match md["namespace"].as_str() {
            Some(ns) => format!("{ns}/{}", md["name"].as_str().unwrap_or("")),
            None => md["name"].as_str().unwrap_or("").to_string(),
        }
    };
    RawObject {
        api_version: api_version.into(),
        kind: kind.into(),
        value,
        origin: Origin {
            file: format!("API {kind} {key}"),
            doc: 1,
        },
    }
}

/// Serializes a dynamic object into a raw document of its CRD.
pub fn dynamic_to_raw(crd: Crd, o: &DynamicObject) -> Option<RawObject> {
    let ar = crd.api_resource();
    let v = serde_json::to_value(o).ok()?;
    Some(to_raw(&ar.api_version, &ar.kind, v))
}

/// A status to write for one CRD object.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPatch {
    pub crd: Crd,
    pub namespace: Option<String>,
    pub name: String,
    pub status: Value,
}

/// Writes CRD statuses: one merge patch on `/status` per changed object per session;
/// a status equal to the last one written (or observed) is skipped.
pub struct StatusPatcher {
    last: HashMap<(Crd, Option<String>, String), Value>,
}

impl Default for StatusPatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusPatcher {
    pub fn new() -> Self {
        StatusPatcher {
            last: HashMap::new(),
        }
    }

    /// Records the status observed on the API (so an unchanged desired status is not
    /// re-written after a restart).
    pub fn observe(&mut self, crd: Crd, o: &DynamicObject) {
        if let (Some(name), Some(st)) = (o.metadata.name.clone(), o.data.get("status")) {
            self.last
                .insert((crd, o.metadata.namespace.clone(), name), st.clone());
        }
    }

    /// The status last written or observed for an object.
    pub fn observed(&self, crd: Crd, namespace: Option<String>, name: &str) -> Option<&Value> {
        self.last.get(&(crd, namespace, name.to_string()))
    }

    /// Keeps only the patches that change something (the last one per object wins).
    pub fn changed(&mut self, patches: Vec<StatusPatch>) -> Vec<StatusPatch> {
        let mut latest: HashMap<(Crd, Option<String>, String), StatusPatch> = HashMap::new();
        for p in patches {
            latest.insert((p.crd, p.namespace.clone(), p.name.clone()), p);
        }
        let mut out: Vec<StatusPatch> = latest
            .into_iter()
            .filter_map(|(k, p)| {
                if self.last.get(&k) == Some(&p.status) {
                    None
                } else {
                    self.last.insert(k, p.status.clone());
                    Some(p)
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    /// Sends the patches (rate limited), up to [`STATUS_CONCURRENCY`] at once; give
    /// at most one patch per object (see [`coalesce`]).
    /// A CRD whose `/status` answers `404` for an object that exists has no status
    /// subresource (Volcano's PodGroup CRD: Volcano writes the status with the
    /// object): the status is then merged into the object itself, and for that CRD
    /// from then on (`on_object`).
    pub async fn write(
        client: &Client,
        limiter: &RateLimiter,
        patches: Vec<StatusPatch>,
        metrics: &super::metrics::Metrics,
        on_object: &std::sync::Mutex<HashSet<Crd>>,
    ) {
        futures::stream::iter(patches)
            .for_each_concurrent(STATUS_CONCURRENCY, |p| async move {
                let ar = p.crd.api_resource();
                let api: Api<DynamicObject> = match &p.namespace {
                    Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                    None => Api::all_with(client.clone(), &ar),
                };
                limiter.acquire().await;
                let body = serde_json::json!({ "status": p.status });
                let pp = PatchParams::default();
                let known_on_object = on_object
                    .lock()
                    .map(|s| s.contains(&p.crd))
                    .unwrap_or(false);
                let r = if known_on_object {
                    api.patch(&p.name, &pp, &Patch::Merge(&body)).await
                } else {
                    match api.patch_status(&p.name, &pp, &Patch::Merge(&body)).await {
                        Err(kube::Error::Api(s)) if s.code == 404 => {
                            // No status subresource, or the object is gone: the
                            // object itself tells which.
                            limiter.acquire().await;
                            let r = api.patch(&p.name, &pp, &Patch::Merge(&body)).await;
                            if r.is_ok()
                                && let Ok(mut set) = on_object.lock()
                                && set.insert(p.crd)
                            {
                                tracing::info!(
                                    "{:?}: no status subresource; writing statuses on the objects",
                                    p.crd
                                );
                            }
                            r
                        }
                        r => r,
                    }
                };
                if let Err(e) = r {
                    metrics.status_errors.inc();
                    tracing::warn!("status of {:?} {}: {e}", p.crd, p.name);
                } else {
                    metrics.status_patches.inc();
                }
            })
            .await;
    }
}

/// Status patches in flight at once.
pub const STATUS_CONCURRENCY: usize = 32;

/// The latest patch per object, in first-seen order.
pub fn coalesce(patches: Vec<StatusPatch>) -> Vec<StatusPatch> {
    let mut at: HashMap<(Crd, Option<String>, String), usize> = HashMap::new();
    let mut out: Vec<StatusPatch> = Vec::with_capacity(patches.len());
    for p in patches {
        let k = (p.crd, p.namespace.clone(), p.name.clone());
        match at.get(&k) {
            Some(&i) => out[i] = p,
            None => {
                at.insert(k, out.len());
                out.push(p);
            }
        }
    }
    out
}

/// Watches a CRD when it is served. Discovery is a `limit=1` list: `404` means "not
/// installed" and is retried every `retry` without logging above debug level (a
/// cluster without, say, NodeResourceTopology is normal); a watch that starts
/// answering `404` (CRD deleted) goes back to discovery after an `InitDone`-less
/// relist, so no error is logged per backoff step. Events go to `out` wrapped by
/// `wrap`.
pub fn watch<M: Send + 'static>(
    client: Client,
    crd: Crd,
    out: mpsc::Sender<M>,
    wrap: fn(Crd, Box<Event<DynamicObject>>) -> M,
    retry: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ar = crd.api_resource();
        let api: Api<DynamicObject> = Api::all_with(client, &ar);
        // The first failed discovery reports an empty, complete list (Init +
        // InitDone), so a consumer waiting for every CRD's first list does not wait
        // for one that is not installed (or not readable); a later successful
        // discovery relists it as usual.
        let mut first = true;
        loop {
            loop {
                match api.list(&kube::api::ListParams::default().limit(1)).await {
                    Ok(_) => break,
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        tracing::debug!("{crd:?}: CRD not served; checking again in {retry:?}");
                    }
                    Err(e) => tracing::debug!("{crd:?} discovery: {e}"),
                }
                if std::mem::take(&mut first) {
                    let _ = out.send(wrap(crd, Box::new(Event::Init)));
                    if out.send(wrap(crd, Box::new(Event::InitDone))).is_err() {
                        return;
                    }
                }
                tokio::time::sleep(retry).await;
            }
            tracing::info!("{crd:?}: CRD served, watching");
            let mut s = watcher::watcher(api.clone(), watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(ev) = s.next().await {
                match ev {
                    Ok(ev) => {
                        if out.send(wrap(crd, Box::new(ev))).is_err() {
                            return;
                        }
                    }
                    Err(watcher::Error::InitialListFailed(kube::Error::Api(s)))
                    | Err(watcher::Error::WatchStartFailed(kube::Error::Api(s)))
                        if s.code == 404 =>
                    {
                        tracing::info!("{crd:?}: CRD no longer served");
                        // Forget every object of the CRD.
                        let _ = out.send(wrap(crd, Box::new(Event::Init)));
                        let _ = out.send(wrap(crd, Box::new(Event::InitDone)));
                        break;
                    }
                    Err(e) => tracing::warn!("{crd:?} watch: {e}"),
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(name: &str, running: i32) -> StatusPatch {
        StatusPatch {
            crd: Crd::VolcanoPodGroup,
            namespace: Some("ns".into()),
            name: name.into(),
            status: json!({"phase": "Running", "running": running}),
        }
    }

    #[test]
    fn patcher_writes_once_per_changed_object() {
        let mut p = StatusPatcher::new();
        let out = p.changed(vec![patch("a", 1), patch("a", 2), patch("b", 1)]);
        assert_eq!(out, vec![patch("a", 2), patch("b", 1)]);
        assert!(p.changed(vec![patch("a", 2), patch("b", 1)]).is_empty());
        assert_eq!(p.changed(vec![patch("b", 3)]), vec![patch("b", 3)]);
    }

    #[test]
    fn coalescing_keeps_the_latest_patch_per_object_in_first_seen_order() {
        let out = coalesce(vec![
            patch("b", 1),
            patch("a", 1),
            patch("b", 2),
            patch("a", 3),
        ]);
        assert_eq!(out, vec![patch("b", 2), patch("a", 3)]);
        let mut q = patch("a", 1);
        q.crd = Crd::VolcanoQueue;
        assert_eq!(coalesce(vec![patch("a", 1), q.clone()]).len(), 2);
    }

    #[test]
    fn patcher_skips_status_already_on_the_api() {
        let mut p = StatusPatcher::new();
        let o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": "a", "namespace": "ns"},
            "status": {"phase": "Running", "running": 1}
        }))
        .expect("object");
        p.observe(Crd::VolcanoPodGroup, &o);
        assert!(p.changed(vec![patch("a", 1)]).is_empty());
    }

    /// Volcano's PodGroup CRD has no status subresource: the status goes on the
    /// object (and stays there for the CRD); a CRD with one is patched on `/status`.
    #[tokio::test]
    async fn status_goes_on_the_object_without_a_status_subresource() {
        use corral_test_apiserver::TestApiServer;
        let server = TestApiServer::start().await.expect("server");
        server.set_status_subresource("scheduling.volcano.sh", "podgroups", false);
        server
            .insert_all([
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}),
                json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
                       "metadata": {"name": "a", "namespace": "ns"}, "spec": {"minMember": 2}}),
                json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
                       "metadata": {"name": "b", "namespace": "ns"}, "spec": {"minMember": 2}}),
                json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "Queue",
                       "metadata": {"name": "q"}, "spec": {"weight": 1}}),
            ])
            .expect("insert");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        server.write_kubeconfig(&path).expect("kubeconfig");
        let client = crate::k8s::client(Some(&path)).await.expect("client");
        let limiter = RateLimiter::new(0.0, 1);
        let metrics = super::super::metrics::Metrics::new();
        let on_object = std::sync::Mutex::new(HashSet::new());
        let queue = StatusPatch {
            crd: Crd::VolcanoQueue,
            namespace: None,
            name: "q".into(),
            status: json!({"state": "Open", "allocated": {"cpu": "2"}}),
        };
        StatusPatcher::write(
            &client,
            &limiter,
            vec![patch("a", 1), queue],
            &metrics,
            &on_object,
        )
        .await;
        let pg = |n: &str| {
            server
                .get("scheduling.volcano.sh", "podgroups", Some("ns"), n)
                .expect("podgroup")
        };
        assert_eq!(pg("a")["status"]["running"], 1, "{}", pg("a"));
        assert_eq!(
            *on_object.lock().expect("lock"),
            HashSet::from([Crd::VolcanoPodGroup])
        );
        let q = server
            .get("scheduling.volcano.sh", "queues", None, "q")
            .expect("queue");
        assert_eq!(q["status"]["allocated"]["cpu"], "2");
        let via_status = server.status_patches();
        assert!(via_status.contains_key("queues/q"), "{via_status:?}");
        assert!(!via_status.keys().any(|k| k.starts_with("podgroups/")));
        // Later PodGroup statuses go straight to the object.
        let before = server.requests();
        StatusPatcher::write(&client, &limiter, vec![patch("b", 2)], &metrics, &on_object).await;
        assert_eq!(pg("b")["status"]["running"], 2);
        assert_eq!(
            server.requests() - before,
            1,
            "one request, no /status attempt"
        );
        assert_eq!(metrics.status_errors.get(), 0);
        assert_eq!(metrics.status_patches.get(), 3);
    }
}
