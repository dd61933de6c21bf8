//! Carrying out preemption and reclaim: victims are evicted through the
//! `pods/{name}/eviction` subresource (policy/v1 `Eviction`, so PodDisruptionBudgets
//! are honoured; `--preemption-eviction=delete` deletes them like kube-scheduler's
//! DefaultPreemption does), each with the pod UID as a precondition (a re-created pod
//! of the same name is never hit). Before the eviction the victim gets a
//! `DisruptionTarget=True` condition (reason `PreemptionByScheduler`, as kube-scheduler
//! writes) and afterwards a `Preempted` Event naming the preemptor; the preemptor's
//! `status.nominatedNodeName` is set (and cleared when the preemption is abandoned).
//!
//! Every write takes a token from the shared QPS/burst bucket; only the leader writes.
//! Results go back to the loop as [`Msg::Evicted`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::Eviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta, Preconditions};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Semaphore;

use super::Msg;
use super::binder::RateLimiter;
use super::metrics::Metrics;
use super::recorder::{NewEvent, ObjRef, Recorder};

/// How victims are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EvictionMode {
    /// policy/v1 Eviction: a PodDisruptionBudget may refuse it (the preemptor then
    /// looks for other victims).
    #[default]
    Eviction,
    /// DELETE the pod (kube-scheduler's behaviour: budgets are not enforced).
    Delete,
}

/// Why a pod is evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Preemption or reclaim for a preemptor.
    Preemption,
    /// Its `corral.io/max-runtime` elapsed.
    RuntimeLimit,
    /// Its gang stayed below minMember past `corral.io/partial-timeout`.
    PartialGang,
}

/// One victim to evict.
#[derive(Debug, Clone)]
pub struct EvictRequest {
    pub cause: Cause,
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    /// The preemptor (pod or PodGroup `namespace/name`).
    pub preemptor: String,
    pub reason: String,
}

/// Result of one eviction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictResult {
    /// Accepted: the pod is terminating.
    Evicted,
    /// The pod (with that UID) no longer exists.
    Gone,
    /// Refused by a disruption budget (429).
    Blocked(String),
    /// Any other failure (including lost leadership).
    Failed(String),
}

impl EvictResult {
    pub fn label(&self) -> &'static str {
        match self {
            EvictResult::Evicted => "evicted",
            EvictResult::Gone => "gone",
            EvictResult::Blocked(_) => "blocked",
            EvictResult::Failed(_) => "error",
        }
    }
}

#[derive(Debug)]
pub struct EvictOutcome {
    pub key: String,
    pub result: EvictResult,
}

enum Work {
    Evict(EvictRequest),
    /// Set (`Some`) or clear (`None`) a pending pod's `status.nominatedNodeName`.
    Nominate {
        namespace: String,
        name: String,
        node: Option<String>,
    },
}

pub struct Evictor {
    tx: tokio::sync::mpsc::UnboundedSender<Work>,
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

struct Ctx {
    client: Client,
    mode: EvictionMode,
    limiter: Arc<RateLimiter>,
    leader: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    component: String,
    recorder: Recorder,
}

impl Evictor {
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        client: Client,
        mode: EvictionMode,
        concurrency: usize,
        limiter: Arc<RateLimiter>,
        leader: Arc<AtomicBool>,
        out: mpsc::Sender<Msg>,
        metrics: Arc<Metrics>,
        component: String,
    ) -> Evictor {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Work>();
        let sem = Arc::new(Semaphore::new(concurrency.max(1)));
        let ctx = Arc::new(Ctx {
            recorder: Recorder::new(client.clone(), &component),
            client,
            mode,
            limiter,
            leader,
            metrics,
            component,
        });
        tokio::spawn(async move {
            while let Some(w) = rx.recv().await {
                let Ok(permit) = sem.clone().acquire_owned().await else {
                    return;
                };
                let (ctx, out) = (ctx.clone(), out.clone());
                tokio::spawn(async move {
                    match w {
                        Work::Evict(req) => {
                            let result = if ctx.leader.load(Ordering::Relaxed) {
                                evict(&ctx, &req).await
                            } else {
                                EvictResult::Failed("not the leader".into())
                            };
                            ctx.metrics.eviction(result.label());
                            drop(permit);
                            let _ = out.send(Msg::Evicted(EvictOutcome {
                                key: req.key,
                                result,
                            }));
                        }
                        Work::Nominate {
                            namespace,
                            name,
                            node,
                        } => {
                            if ctx.leader.load(Ordering::Relaxed) {
                                ctx.limiter.acquire().await;
                                let pods: Api<Pod> =
                                    Api::namespaced(ctx.client.clone(), &namespace);
                                let patch = json!({"status": {"nominatedNodeName": node}});
                                if let Err(e) = pods
                                    .patch_status(
                                        &name,
                                        &PatchParams::default(),
                                        &Patch::Merge(&patch),
                                    )
                                    .await
                                {
                                    ctx.metrics.status_errors.inc();
                                    tracing::debug!(
                                        "pod {namespace}/{name} nominatedNodeName: {e}"
                                    );
                                }
                            }
                            drop(permit);
                        }
                    }
                });
            }
        });
        Evictor { tx }
    }

    pub fn evict(&self, req: EvictRequest) {
        let _ = self.tx.send(Work::Evict(req));
    }

    pub fn nominate(&self, namespace: &str, name: &str, node: Option<String>) {
        let _ = self.tx.send(Work::Nominate {
            namespace: namespace.to_string(),
            name: name.to_string(),
            node,
        });
    }
}

async fn evict(ctx: &Ctx, req: &EvictRequest) -> EvictResult {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &req.namespace);
    let (cond_reason, event_reason, message) = match req.cause {
        Cause::Preemption => (
            "PreemptionByScheduler",
            "Preempted",
            format!(
                "{}: preempting to accommodate {} ({})",
                ctx.component, req.preemptor, req.reason
            ),
        ),
        Cause::RuntimeLimit => (
            "RuntimeLimitExceeded",
            "RuntimeLimitExceeded",
            format!("{}: {}", ctx.component, req.reason),
        ),
        Cause::PartialGang => (
            "GangBelowMinMember",
            "GangBelowMinMember",
            format!("{}: {}", ctx.component, req.reason),
        ),
    };
    // DisruptionTarget first, so the pod's controller sees why it goes away.
    ctx.limiter.acquire().await;
    let cond = json!({"status": {"conditions": [{
        "type": "DisruptionTarget", "status": "True", "reason": cond_reason,
        "message": message, "lastTransitionTime": now(),
    }]}});
    if let Err(kube::Error::Api(s)) = pods
        .patch_status(&req.name, &PatchParams::default(), &Patch::Strategic(&cond))
        .await
        && s.code == 404
    {
        return EvictResult::Gone;
    }
    let preconditions = Preconditions {
        uid: (!req.uid.is_empty()).then(|| req.uid.clone()),
        resource_version: None,
    };
    ctx.limiter.acquire().await;
    let r = match ctx.mode {
        EvictionMode::Eviction => {
            let ev = Eviction {
                metadata: ObjectMeta {
                    name: Some(req.name.clone()),
                    namespace: Some(req.namespace.clone()),
                    ..Default::default()
                },
                delete_options: Some(DeleteOptions {
                    preconditions: Some(preconditions),
                    ..Default::default()
                }),
            };
            pods.create_subresource::<Eviction, serde_json::Value>(
                "eviction",
                &req.name,
                &PostParams::default(),
                &ev,
            )
            .await
            .map(|_| ())
        }
        EvictionMode::Delete => {
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: preconditions.uid,
                    resource_version: None,
                }),
                ..Default::default()
            };
            pods.delete(&req.name, &dp).await.map(|_| ())
        }
    };
    let result = match r {
        Ok(()) => EvictResult::Evicted,
        Err(kube::Error::Api(s)) if s.code == 404 => EvictResult::Gone,
        // UID precondition failed: the victim is gone, a new pod took its name.
        Err(kube::Error::Api(s)) if s.code == 409 => EvictResult::Gone,
        Err(kube::Error::Api(s)) if s.code == 429 => EvictResult::Blocked(s.message),
        Err(e) => EvictResult::Failed(e.to_string()),
    };
    if result == EvictResult::Evicted {
        ctx.limiter.acquire().await;
        let ev = NewEvent {
            regarding: ObjRef::pod(&req.namespace, &req.name, &req.uid),
            related: None,
            type_: "Normal",
            reason: event_reason,
            action: match req.cause {
                Cause::Preemption => "Preempting",
                Cause::RuntimeLimit | Cause::PartialGang => "Evicting",
            },
            note: match req.cause {
                Cause::Preemption => format!(
                    "Preempted by {} on node {}: {}",
                    req.preemptor, req.node, req.reason
                ),
                Cause::RuntimeLimit | Cause::PartialGang => {
                    format!("Evicted from node {}: {}", req.node, req.reason)
                }
            },
            count: 1,
        };
        if let Err(e) = ctx.recorder.create(&ev).await {
            ctx.metrics.status_errors.inc();
            tracing::debug!("event for {}: {e}", req.key);
        }
    }
    result
}
