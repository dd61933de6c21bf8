//! Event writes as kube-scheduler makes them: `events.k8s.io/v1` Events (`regarding`,
//! `related`, `note`, `action`, `reportingController`/`reportingInstance`,
//! `eventTime`; repeats aggregated in `series`), falling back to core `v1` Events
//! (`involvedObject`, `message`, `count`/`lastTimestamp`) when the API server does
//! not serve `events.k8s.io/v1` (checked on the first write, then remembered).
//!
//! Callers hold the write rate limiter; the recorder issues exactly one request per
//! call (two on the one fallback).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

/// The object an Event is about (or related to).
#[derive(Debug, Clone)]
pub struct ObjRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl ObjRef {
    pub fn pod(namespace: &str, name: &str, uid: &str) -> ObjRef {
        ObjRef {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn json(&self) -> Value {
        json!({"apiVersion": self.api_version, "kind": self.kind,
            "namespace": self.namespace, "name": self.name, "uid": self.uid})
    }
}

/// One Event to create.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub regarding: ObjRef,
    pub related: Option<ObjRef>,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    pub reason: &'static str,
    /// What was done (`Scheduling`, `Binding`, `Preempting`, ...).
    pub action: &'static str,
    pub note: String,
    pub count: u32,
}

/// A created Event, for later aggregation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub name: String,
    /// Written through `events.k8s.io/v1` (else core `v1`).
    pub v1: bool,
}

pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    /// `events.k8s.io/v1` is served (until a write showed it is not).
    events_v1: AtomicBool,
    seq: AtomicU64,
}

/// `events.k8s.io/v1` `note` is at most 1 kB.
const MAX_NOTE: usize = 1024;

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn micro_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

fn sec_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The API server does not serve the resource (as opposed to a missing namespace
/// or object): the answer kube-apiserver gives for an unknown group/version.
fn unserved(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404
        && s.message.contains("could not find the requested resource"))
}

impl Recorder {
    /// `component` is the reporting controller (the scheduler name); the instance is
    /// `component-<POD_NAME or hostname>` as kube-scheduler's `<name>-<host>`.
    pub fn new(client: Client, component: &str) -> Recorder {
        let host = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "local".into());
        Recorder {
            client,
            controller: component.to_string(),
            instance: format!("{component}-{host}"),
            events_v1: AtomicBool::new(true),
            seq: AtomicU64::new(0),
        }
    }

    fn name_for(&self, object: &str) -> String {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{object}.{:x}{seq:04x}", std::process::id())
    }

    /// Creates one Event.
    pub async fn create(&self, e: &NewEvent) -> Result<Written, kube::Error> {
        let name = self.name_for(&e.regarding.name);
        let ns = e.regarding.namespace.clone();
        if self.events_v1.load(Ordering::Relaxed) {
            let mut v = json!({
                "apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": name, "namespace": ns},
                "eventTime": micro_now(),
                "regarding": e.regarding.json(),
                "reason": e.reason, "action": e.action,
                "note": truncate(&e.note, MAX_NOTE), "type": e.type_,
                "reportingController": self.controller,
                "reportingInstance": self.instance,
            });
            if let Some(r) = &e.related {
                v["related"] = r.json();
            }
            if e.count > 1 {
                v["series"] = json!({"count": e.count, "lastObservedTime": micro_now()});
            }
            let ev: Event = serde_json::from_value(v).map_err(kube::Error::SerdeError)?;
            let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
            match api.create(&PostParams::default(), &ev).await {
                Ok(_) => return Ok(Written { name, v1: true }),
                Err(err) if unserved(&err) => {
                    tracing::info!("events.k8s.io/v1 is not served: writing core v1 Events");
                    self.events_v1.store(false, Ordering::Relaxed);
                }
                Err(err) => return Err(err),
            }
        }
        let ts = sec_now();
        let mut v = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": e.regarding.json(),
            "reason": e.reason, "action": e.action, "message": e.note,
            "type": e.type_, "count": e.count.max(1),
            "firstTimestamp": ts, "lastTimestamp": ts,
            "source": {"component": self.controller},
            "reportingComponent": self.controller,
            "reportingInstance": self.instance,
        });
        if let Some(r) = &e.related {
            v["related"] = r.json();
        }
        let ev: CoreEvent = serde_json::from_value(v).map_err(kube::Error::SerdeError)?;
        let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), &ns);
        api.create(&PostParams::default(), &ev).await?;
        Ok(Written { name, v1: false })
    }

    /// Aggregates repeats into an Event written earlier: `series` (v1) or
    /// `count`/`lastTimestamp` (core).
    pub async fn bump(&self, ns: &str, w: &Written, count: u32) -> Result<(), kube::Error> {
        if w.v1 {
            let patch = json!({"series": {"count": count, "lastObservedTime": micro_now()}});
            let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
            api.patch(&w.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        } else {
            let patch = json!({"count": count, "lastTimestamp": sec_now()});
            let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), ns);
            api.patch(&w.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_bounded_on_a_char_boundary() {
        assert_eq!(truncate("abc", 10), "abc");
        let long = "é".repeat(600);
        let t = truncate(&long, MAX_NOTE);
        assert!(t.len() <= MAX_NOTE && t.ends_with("..."), "{}", t.len());
        let ts = micro_now();
        assert_eq!(ts.len(), "2026-12-07T10:30:00.123456Z".len(), "{ts}");
    }
}
