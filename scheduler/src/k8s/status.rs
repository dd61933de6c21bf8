//! Failure reporting: the `PodScheduled=False` condition (strategic merge patch on
//! `pods/{name}/status`, only when the message changed) and aggregated
//! `FailedScheduling` Events: the first failure creates an Event, later ones (already
//! limited by the loop to one per backoff window) patch its `count` and
//! `lastTimestamp`, folding in the occurrences suppressed in between.

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

pub struct StatusWriter {
    tx: tokio::sync::mpsc::UnboundedSender<FailureReport>,
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
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<FailureReport>();
        tokio::spawn(async move {
            let mut written: HashMap<String, Written> = HashMap::new();
            let mut seq: u64 = 0;
            while let Some(r) = rx.recv().await {
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
        let _ = self.tx.send(r);
    }
}
