//! Batch CRDs (Volcano `scheduling.volcano.sh/v1beta1` PodGroup and Queue,
//! scheduler-plugins `scheduling.x-k8s.io/v1alpha1` PodGroup) as typed dynamic
//! objects, their watches, and the status patcher that writes **one merge patch per
//! changed object per session, skipped when unchanged**.
//!
//! The gang/queue semantics live in the batch module (issue 3); the run loop talks to
//! them through [`BatchHooks`]: CRD watch events go in, status patches come out at
//! the end of every scheduling session. [`NoBatch`] is the hook used until then.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, mpsc};

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::binder::RateLimiter;

/// `scheduling.volcano.sh/v1beta1` PodGroup spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolcanoPodGroupSpec {
    #[serde(default)]
    pub min_member: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_task_member: Option<BTreeMap<String, i32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_resources: Option<BTreeMap<String, Value>>,
}

/// A PodGroup condition (both APIs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodGroupCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `scheduling.volcano.sh/v1beta1` PodGroup status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolcanoPodGroupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PodGroupCondition>,
    #[serde(default)]
    pub running: i32,
    #[serde(default)]
    pub succeeded: i32,
    #[serde(default)]
    pub failed: i32,
}

/// `scheduling.volcano.sh/v1beta1` Queue spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deserved: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaimable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// `scheduling.volcano.sh/v1beta1` Queue status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default)]
    pub pending: i32,
    #[serde(default)]
    pub running: i32,
    #[serde(default)]
    pub inqueue: i32,
    #[serde(default)]
    pub completed: i32,
    #[serde(default)]
    pub unknown: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<BTreeMap<String, Value>>,
}

/// `scheduling.x-k8s.io/v1alpha1` PodGroup spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CoschedulingPodGroupSpec {
    #[serde(default)]
    pub min_member: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_resources: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_timeout_seconds: Option<i32>,
}

/// `scheduling.x-k8s.io/v1alpha1` PodGroup status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CoschedulingPodGroupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occupied_by: Option<String>,
    #[serde(default)]
    pub running: i32,
    #[serde(default)]
    pub succeeded: i32,
    #[serde(default)]
    pub failed: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_start_time: Option<String>,
}

/// The batch CRDs Corral watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Crd {
    VolcanoPodGroup,
    VolcanoQueue,
    CoschedulingPodGroup,
}

impl Crd {
    pub const ALL: [Crd; 3] = [
        Crd::VolcanoPodGroup,
        Crd::VolcanoQueue,
        Crd::CoschedulingPodGroup,
    ];

    pub fn api_resource(self) -> ApiResource {
        let (g, v, k, p) = match self {
            Crd::VolcanoPodGroup => ("scheduling.volcano.sh", "v1beta1", "PodGroup", "podgroups"),
            Crd::VolcanoQueue => ("scheduling.volcano.sh", "v1beta1", "Queue", "queues"),
            Crd::CoschedulingPodGroup => {
                ("scheduling.x-k8s.io", "v1alpha1", "PodGroup", "podgroups")
            }
        };
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), p)
    }
}

/// Parses a CRD object's spec, naming the object and field on error.
pub fn parse_spec<T: serde::de::DeserializeOwned + Default>(
    o: &DynamicObject,
) -> Result<T, String> {
    match o.data.get("spec") {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            format!(
                "{}/{}: spec: {e}",
                o.metadata.namespace.as_deref().unwrap_or(""),
                o.metadata.name.as_deref().unwrap_or("")
            )
        }),
    }
}

/// A status to write for one CRD object.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPatch {
    pub crd: Crd,
    pub namespace: Option<String>,
    pub name: String,
    pub status: Value,
}

/// Hook points for the batch semantics (issue 3).
pub trait BatchHooks: Send {
    /// A CRD watch event.
    fn on_crd_event(&mut self, crd: Crd, ev: &Event<DynamicObject>);
    /// Called once at the end of each scheduling session: the desired status of
    /// every object the session touched (unchanged ones are filtered out).
    fn session_statuses(&mut self) -> Vec<StatusPatch>;
}

/// No batch semantics: CRDs are watched but nothing is written.
#[derive(Default)]
pub struct NoBatch;

impl BatchHooks for NoBatch {
    fn on_crd_event(&mut self, _crd: Crd, _ev: &Event<DynamicObject>) {}
    fn session_statuses(&mut self) -> Vec<StatusPatch> {
        Vec::new()
    }
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

    /// Sends the patches (rate limited).
    pub async fn write(client: &Client, limiter: &RateLimiter, patches: Vec<StatusPatch>) {
        for p in patches {
            let ar = p.crd.api_resource();
            let api: Api<DynamicObject> = match &p.namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            limiter.acquire().await;
            let body = serde_json::json!({ "status": p.status });
            if let Err(e) = api
                .patch_status(&p.name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                tracing::warn!("status of {:?} {}: {e}", p.crd, p.name);
            }
        }
    }
}

/// Watches a CRD when it is served (a list answering 404 means "not installed":
/// checked again every minute). Events go to `out` wrapped by `wrap`.
pub fn watch<M: Send + 'static>(
    client: Client,
    crd: Crd,
    out: mpsc::Sender<M>,
    wrap: fn(Crd, Box<Event<DynamicObject>>) -> M,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ar = crd.api_resource();
        let api: Api<DynamicObject> = Api::all_with(client, &ar);
        loop {
            match api.list(&kube::api::ListParams::default().limit(1)).await {
                Ok(_) => break,
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                }
                Err(e) => {
                    tracing::debug!("{crd:?}: {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            }
        }
        let mut s = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = s.next().await {
            match ev {
                Ok(ev) => {
                    if out.send(wrap(crd, Box::new(ev))).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!("{crd:?} watch: {e}"),
            }
        }
    })
}

/// Shared by the run loop: the hooks and the patcher.
pub struct Batch {
    pub hooks: Box<dyn BatchHooks>,
    pub patcher: StatusPatcher,
    pub client: Client,
    pub limiter: Arc<RateLimiter>,
    pub runtime: tokio::runtime::Handle,
}

impl Batch {
    pub fn on_event(&mut self, crd: Crd, ev: Event<DynamicObject>) {
        match &ev {
            Event::Apply(o) | Event::InitApply(o) => self.patcher.observe(crd, o),
            _ => {}
        }
        self.hooks.on_crd_event(crd, &ev);
    }

    /// End of a session: write changed statuses in the background.
    pub fn end_session(&mut self) {
        let patches = self.patcher.changed(self.hooks.session_statuses());
        if patches.is_empty() {
            return;
        }
        let client = self.client.clone();
        let limiter = self.limiter.clone();
        self.runtime
            .spawn(async move { StatusPatcher::write(&client, &limiter, patches).await });
    }
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

    #[test]
    fn volcano_and_coscheduling_specs_parse() {
        let o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": "pg", "namespace": "ns"},
            "spec": {"minMember": 4, "queue": "q", "minResources": {"cpu": "4"},
                     "minTaskMember": {"worker": 3}}
        }))
        .expect("object");
        let s: VolcanoPodGroupSpec = parse_spec(&o).expect("spec");
        assert_eq!(s.min_member, 4);
        assert_eq!(s.queue.as_deref(), Some("q"));
        let bad: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
            "metadata": {"name": "pg", "namespace": "ns"},
            "spec": {"minMember": "four"}
        }))
        .expect("object");
        let e = parse_spec::<CoschedulingPodGroupSpec>(&bad).expect_err("bad spec");
        assert!(e.starts_with("ns/pg: spec:"), "{e}");
        assert_eq!(Crd::VolcanoQueue.api_resource().plural, "queues");
    }
}
