//! Failure reporting: the `PodScheduled=False` condition (strategic merge patch on
//! `pods/{name}/status`, only when the message changed) and aggregated
//! `FailedScheduling` Events (`events.k8s.io/v1` through [`super::recorder`]): the
//! first failure creates an Event, later ones (already limited by the loop to one
//! per backoff window) patch its `series` (core v1: `count`/`lastTimestamp`), folding
//! in the occurrences suppressed in between. A successful
//! binding writes one `Scheduled` Event ("Successfully assigned ns/pod to node"), as
//! kube-scheduler does, and ends the pod's failure aggregation.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::binder::RateLimiter;
use super::metrics::Metrics;
use super::recorder::{NewEvent, ObjRef, Recorder};

#[derive(Debug, Clone)]
pub struct FailureReport {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub message: String,
    /// Failures this report stands for (1 + suppressed repeats).
    pub occurrences: u32,
}

/// A pod bound by this scheduler.
#[derive(Debug, Clone)]
pub struct ScheduledReport {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
}

enum Report {
    Failed(FailureReport),
    Scheduled(ScheduledReport),
    Group(super::group_events::GroupEvent),
}

pub struct StatusWriter {
    tx: tokio::sync::mpsc::UnboundedSender<Report>,
}

struct Written {
    uid: String,
    event: super::recorder::Written,
    message: String,
    count: u32,
}

/// `Scheduled` Events written at once.
const SCHEDULED_CONCURRENCY: usize = 16;

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl StatusWriter {
    pub fn spawn(
        client: Client,
        limiter: Arc<RateLimiter>,
        metrics: Arc<Metrics>,
        component: String,
        scheduled_events: bool,
    ) -> StatusWriter {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Report>();
        let recorder = Arc::new(Recorder::new(client.clone(), &component));
        // `Scheduled` Events are independent of each other: up to
        // `SCHEDULED_CONCURRENCY` in flight, so they keep up with the bindings on a
        // slow API server instead of trailing them one round trip at a time.
        let scheduled_slots = Arc::new(tokio::sync::Semaphore::new(SCHEDULED_CONCURRENCY));
        tokio::spawn(async move {
            let mut written: HashMap<String, Written> = HashMap::new();
            // PodGroup → (reason, note) of its last Event: only transitions are written.
            let mut group_last: HashMap<String, (&'static str, String)> = HashMap::new();
            while let Some(r) = rx.recv().await {
                let r = match r {
                    Report::Failed(r) => r,
                    Report::Group(g) => {
                        let key = g.group.key();
                        let last = group_last.get(&key);
                        if last.is_some_and(|(r, n)| *r == g.reason && *n == g.note)
                            || (g.reason == "Scheduled"
                                && last.is_some_and(|(r, _)| *r == "Scheduled"))
                        {
                            continue;
                        }
                        limiter.acquire().await;
                        let ev = NewEvent {
                            regarding: g.group.obj_ref(),
                            related: None,
                            type_: g.type_,
                            reason: g.reason,
                            action: "Scheduling",
                            note: g.note.clone(),
                            count: 1,
                        };
                        match recorder.create(&ev).await {
                            Ok(_) => {
                                metrics.events_written.inc();
                                group_last.insert(key, (g.reason, g.note));
                            }
                            Err(e) => {
                                metrics.status_errors.inc();
                                tracing::debug!("event for PodGroup {key}: {e}");
                            }
                        }
                        if group_last.len() > 200_000 {
                            group_last.clear();
                        }
                        continue;
                    }
                    Report::Scheduled(s) => {
                        let key = format!("{}/{}", s.namespace, s.name);
                        written.remove(&key);
                        if !scheduled_events {
                            continue;
                        }
                        let Ok(slot) = scheduled_slots.clone().acquire_owned().await else {
                            continue;
                        };
                        let (recorder, limiter, metrics) =
                            (recorder.clone(), limiter.clone(), metrics.clone());
                        tokio::spawn(async move {
                            limiter.acquire().await;
                            let ev = NewEvent {
                                regarding: ObjRef::pod(&s.namespace, &s.name, &s.uid),
                                related: None,
                                type_: "Normal",
                                reason: "Scheduled",
                                action: "Binding",
                                note: format!("Successfully assigned {key} to {}", s.node),
                                count: 1,
                            };
                            match recorder.create(&ev).await {
                                Ok(_) => {
                                    metrics.events_written.inc();
                                }
                                Err(e) => {
                                    metrics.status_errors.inc();
                                    tracing::debug!("event for {key}: {e}");
                                }
                            }
                            drop(slot);
                        });
                        continue;
                    }
                };
                let key = format!("{}/{}", r.namespace, r.name);
                let prev = written.get(&key).filter(|w| w.uid == r.uid);
                let same = prev.is_some_and(|w| w.message == r.message);
                let pods: Api<Pod> = Api::namespaced(client.clone(), &r.namespace);
                let ts = now();
                if !same {
                    limiter.acquire().await;
                    let patch = json!({"status": {"conditions": [{
                        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": r.message, "lastTransitionTime": ts, "lastProbeTime": null
                    }]}});
                    if let Err(e) = pods
                        .patch_status(&r.name, &PatchParams::default(), &Patch::Strategic(&patch))
                        .await
                    {
                        metrics.status_errors.inc();
                        tracing::debug!("pod {key} status: {e}");
                    }
                }
                limiter.acquire().await;
                let result = match prev.filter(|_| same) {
                    Some(w) => {
                        let count = w.count + r.occurrences;
                        let event = w.event.clone();
                        recorder
                            .bump(&r.namespace, &event, count)
                            .await
                            .map(|_| (event, count))
                    }
                    None => {
                        let ev = NewEvent {
                            regarding: ObjRef::pod(&r.namespace, &r.name, &r.uid),
                            related: None,
                            type_: "Warning",
                            reason: "FailedScheduling",
                            action: "Scheduling",
                            note: r.message.clone(),
                            count: r.occurrences,
                        };
                        recorder.create(&ev).await.map(|w| (w, r.occurrences))
                    }
                };
                match result {
                    Ok((event, count)) => {
                        metrics.events_written.inc();
                        written.insert(
                            key,
                            Written {
                                uid: r.uid,
                                event,
                                message: r.message,
                                count,
                            },
                        );
                    }
                    Err(e) => {
                        metrics.status_errors.inc();
                        tracing::debug!("event for {key}: {e}");
                        written.remove(&key);
                    }
                }
                if written.len() > 200_000 {
                    written.clear();
                }
            }
        });
        StatusWriter { tx }
    }

    pub fn report(&self, r: FailureReport) {
        let _ = self.tx.send(Report::Failed(r));
    }

    /// A PodGroup Event (written when it differs from the group's last one).
    pub fn group_event(&self, e: super::group_events::GroupEvent) {
        let _ = self.tx.send(Report::Group(e));
    }

    /// A successful binding: one `Scheduled` Event.
    pub fn scheduled(&self, r: ScheduledReport) {
        let _ = self.tx.send(Report::Scheduled(r));
    }
}
