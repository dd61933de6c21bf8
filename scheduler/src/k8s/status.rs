//! Failure reporting: the `PodScheduled=False` condition (strategic merge patch on
//! `pods/{name}/status`, only when the message changed) and aggregated
//! `FailedScheduling` Events: the first failure creates an Event, later ones (already
//! limited by the loop to one per backoff window) patch its `count` and
//! `lastTimestamp`, folding in the occurrences suppressed in between. A successful
//! binding writes one `Scheduled` Event ("Successfully assigned ns/pod to node"), as
//! kube-scheduler does, and ends the pod's failure aggregation.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::binder::RateLimiter;
use super::metrics::Metrics;

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
}

pub struct StatusWriter {
    tx: tokio::sync::mpsc::UnboundedSender<Report>,
}

struct Written {
    uid: String,
    event: String,
    message: String,
    count: u32,
}

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
    ) -> StatusWriter {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Report>();
        tokio::spawn(async move {
            let mut written: HashMap<String, Written> = HashMap::new();
            let mut seq: u64 = 0;
            while let Some(r) = rx.recv().await {
                let r = match r {
                    Report::Failed(r) => r,
                    Report::Scheduled(s) => {
                        let key = format!("{}/{}", s.namespace, s.name);
                        written.remove(&key);
                        seq += 1;
                        let name = format!("{}.{:x}{:04x}", s.name, std::process::id(), seq);
                        let ts = now();
                        let ev: Result<Event, _> = serde_json::from_value(json!({
                            "apiVersion": "v1", "kind": "Event",
                            "metadata": {"name": name, "namespace": s.namespace},
                            "involvedObject": {"apiVersion": "v1", "kind": "Pod",
                                "name": s.name, "namespace": s.namespace, "uid": s.uid},
                            "reason": "Scheduled",
                            "message": format!("Successfully assigned {key} to {}", s.node),
                            "type": "Normal", "count": 1,
                            "firstTimestamp": ts, "lastTimestamp": ts,
                            "source": {"component": component},
                            "reportingComponent": component,
                            "reportingInstance": component,
                        }));
                        let events: Api<Event> = Api::namespaced(client.clone(), &s.namespace);
                        limiter.acquire().await;
                        match ev {
                            Ok(ev) => match events.create(&PostParams::default(), &ev).await {
                                Ok(_) => metrics.events_written.inc(),
                                Err(e) => {
                                    metrics.status_errors.inc();
                                    tracing::debug!("event for {key}: {e}");
                                    0
                                }
                            },
                            Err(e) => {
                                tracing::warn!("event for {key}: {e}");
                                0
                            }
                        };
                        continue;
                    }
                };
                let key = format!("{}/{}", r.namespace, r.name);
                let prev = written.get(&key).filter(|w| w.uid == r.uid);
                let same = prev.is_some_and(|w| w.message == r.message);
                let pods: Api<Pod> = Api::namespaced(client.clone(), &r.namespace);
                let events: Api<Event> = Api::namespaced(client.clone(), &r.namespace);
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
                        let patch = json!({"count": count, "lastTimestamp": ts});
                        let name = w.event.clone();
                        events
                            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .map(|_| (name, count))
                    }
                    None => {
                        seq += 1;
                        let name = format!("{}.{:x}{:04x}", r.name, std::process::id(), seq);
                        let ev: Result<Event, _> = serde_json::from_value(json!({
                            "apiVersion": "v1", "kind": "Event",
                            "metadata": {"name": name, "namespace": r.namespace},
                            "involvedObject": {"apiVersion": "v1", "kind": "Pod",
                                "name": r.name, "namespace": r.namespace, "uid": r.uid},
                            "reason": "FailedScheduling", "message": r.message,
                            "type": "Warning", "count": r.occurrences,
                            "firstTimestamp": ts, "lastTimestamp": ts,
                            "source": {"component": component},
                            "reportingComponent": component,
                            "reportingInstance": component,
                        }));
                        match ev {
                            Ok(ev) => events
                                .create(&PostParams::default(), &ev)
                                .await
                                .map(|_| (name, r.occurrences)),
                            Err(e) => {
                                tracing::warn!("event for {key}: {e}");
                                continue;
                            }
                        }
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

    /// A successful binding: one `Scheduled` Event.
    pub fn scheduled(&self, r: ScheduledReport) {
        let _ = self.tx.send(Report::Scheduled(r));
    }
}
