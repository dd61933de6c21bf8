//! Binding through the `pods/{name}/binding` subresource with bounded concurrency
//! and a client-side QPS/burst token bucket shared by every write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::Semaphore;

use super::Msg;
use super::metrics::Metrics;

/// A token bucket: `qps` tokens per second, at most `burst` stored.
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            qps: if qps > 0.0 { qps } else { f64::INFINITY },
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token, returning how long the caller must wait before using it.
    pub fn reserve(&self) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.qps).min(self.burst);
        s.1 = now;
        s.0 -= 1.0;
        if s.0 >= 0.0 || self.qps.is_infinite() {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / self.qps)
        }
    }

    pub async fn acquire(&self) {
        let d = self.reserve();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

#[derive(Debug, Clone)]
pub struct BindRequest {
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub enqueued: Instant,
    /// Retries of this binding so far (a gang member's failed bind is retried to the
    /// same node after `100 ms × 2^(attempt-1)`).
    pub attempt: u32,
    /// Annotations Reserve plugins recorded (e.g. GpuShare's card assignment),
    /// merge-patched onto the pod right before the Binding.
    pub annotations: crate::framework::PodAnnotations,
    /// VolumeBinding's decisions for the pod (PreBind writes them first).
    pub volumes: Option<crate::volumes::PodVolumeBindings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindError {
    /// 409: already bound (by another scheduler or an earlier attempt).
    Conflict,
    /// 404 / UID mismatch: the pod is gone.
    NotFound,
    /// 429.
    Throttled,
    /// Lost leadership before the request was sent.
    NotLeader,
    /// A PreBind plugin failed (the message is kube-scheduler's
    /// `running PreBind plugin ...`).
    PreBind(String),
    Other(String),
}

impl BindError {
    pub fn label(&self) -> &'static str {
        match self {
            BindError::Conflict => "conflict",
            BindError::NotFound => "not_found",
            BindError::Throttled => "throttled",
            BindError::NotLeader => "not_leader",
            BindError::PreBind(_) => "prebind",
            BindError::Other(_) => "error",
        }
    }
}

#[derive(Debug)]
pub struct BindOutcome {
    pub key: String,
    /// The pod's UID (empty when unknown).
    pub uid: String,
    pub node: String,
    pub result: Result<(), BindError>,
}

pub struct Binder {
    tx: tokio::sync::mpsc::UnboundedSender<BindRequest>,
}

impl Binder {
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        client: Client,
        volume_timeout: Duration,
        concurrency: usize,
        limiter: Arc<RateLimiter>,
        leader: Arc<AtomicBool>,
        out: mpsc::Sender<Msg>,
        metrics: Arc<Metrics>,
    ) -> Binder {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<BindRequest>();
        let sem = Arc::new(Semaphore::new(concurrency.max(1)));
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                let Ok(permit) = sem.clone().acquire_owned().await else {
                    return;
                };
                let client = client.clone();
                let limiter = limiter.clone();
                let leader = leader.clone();
                let out = out.clone();
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    if req.attempt > 0 {
                        let d = Duration::from_millis(100) * (1u32 << req.attempt.min(6));
                        tokio::time::sleep(d / 2).await;
                    }
                    limiter.acquire().await;
                    let result = if leader.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        let r = match &req.volumes {
                            Some(v) if !v.is_empty() => {
                                super::volumes::pre_bind(&client, &limiter, v, volume_timeout)
                                    .await
                                    .map_err(BindError::PreBind)
                            }
                            _ => Ok(()),
                        };
                        let r = match r {
                            Ok(()) => bind(&client, &req).await,
                            Err(e) => Err(e),
                        };
                        metrics.bind_latency.observe(t0.elapsed().as_secs_f64());
                        r
                    } else {
                        Err(BindError::NotLeader)
                    };
                    drop(permit);
                    let _ = out.send(Msg::Bound(BindOutcome {
                        key: req.key,
                        uid: req.uid,
                        node: req.node,
                        result,
                    }));
                });
            }
        });
        Binder { tx }
    }

    pub fn bind(&self, req: BindRequest) {
        let _ = self.tx.send(req);
    }
}

/// Maps an API error of a bind-path request.
fn api_error(e: kube::Error) -> BindError {
    match e {
        kube::Error::Api(s) => match s.code {
            409 => BindError::Conflict,
            404 => BindError::NotFound,
            429 => BindError::Throttled,
            c => BindError::Other(format!("{c}: {}", s.message)),
        },
        e => BindError::Other(e.to_string()),
    }
}

/// Merge-patches `req.annotations` onto the pod (first stamping GpuShare's
/// `tencent.com/predicate-time`); nothing to do when there are none.
pub async fn annotate(client: &Client, req: &BindRequest) -> Result<(), BindError> {
    if req.annotations.is_empty() {
        return Ok(());
    }
    let mut ann = req.annotations.clone();
    crate::plugins::gpu_share::stamp_predicate_time(&mut ann);
    let api: Api<Pod> = Api::namespaced(client.clone(), &req.namespace);
    let patch = serde_json::json!({"metadata": {"annotations": ann}});
    api.patch(&req.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(api_error)
}

/// Writes the request's annotations ([`annotate`]), then POSTs one Binding (with
/// the pod UID as a precondition-like reference).
pub async fn bind(client: &Client, req: &BindRequest) -> Result<(), BindError> {
    annotate(client, req).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), &req.namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(req.name.clone()),
            namespace: Some(req.namespace.clone()),
            uid: (!req.uid.is_empty()).then(|| req.uid.clone()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(req.node.clone()),
            ..Default::default()
        },
    };
    match api
        .create_subresource::<Binding, serde_json::Value>(
            "binding",
            &req.name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err(match s.code {
            409 => BindError::Conflict,
            404 => BindError::NotFound,
            429 => BindError::Throttled,
            c => BindError::Other(format!("{c}: {}", s.message)),
        }),
        Err(e) => Err(BindError::Other(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_burst_then_paces() {
        let l = RateLimiter::new(10.0, 3);
        for _ in 0..3 {
            assert_eq!(l.reserve(), Duration::ZERO);
        }
        let d = l.reserve();
        assert!(
            d > Duration::from_millis(50) && d <= Duration::from_millis(100),
            "{d:?}"
        );
        let d2 = l.reserve();
        assert!(d2 > d, "later reservations wait longer: {d2:?} vs {d:?}");
    }

    #[test]
    fn zero_qps_means_unlimited() {
        let l = RateLimiter::new(0.0, 1);
        for _ in 0..100 {
            assert_eq!(l.reserve(), Duration::ZERO);
        }
    }
}
