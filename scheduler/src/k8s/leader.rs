//! Leader election with a `coordination.k8s.io/v1` Lease, following client-go's
//! leaderelection: the holder renews every `retry_period`; a candidate takes over
//! when it has observed no change of the lease record for `lease_duration` (local
//! clock, so clock skew between replicas does not matter); updates use the
//! resourceVersion for optimistic concurrency, so two candidates never both win.
//! A leader that cannot renew within `renew_deadline` steps down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};

use super::Msg;

#[derive(Debug, Clone)]
pub struct LeaderOptions {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderOptions {
    /// kube-scheduler's defaults: 15 s / 10 s / 2 s.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaderOptions {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// One acquire/renew attempt. Returns whether we hold the lease afterwards.
async fn try_acquire(
    api: &Api<Lease>,
    o: &LeaderOptions,
    observed: &mut Option<(String, Instant)>,
) -> Result<bool, kube::Error> {
    let secs = i32::try_from(o.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&o.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(o.name.clone()),
                namespace: Some(o.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(o.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let record = format!(
        "{holder}|{:?}",
        spec.renew_time.as_ref().map(|t| t.0.to_string())
    );
    let t = Instant::now();
    match observed {
        Some((r, _)) if *r == record => {}
        _ => *observed = Some((record, t)),
    }
    let observed_at = observed.as_ref().map_or(t, |o| o.1);
    let ours = holder == o.identity;
    let expired = holder.is_empty()
        || t.duration_since(observed_at)
            >= Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(secs)).unwrap_or(15),
            );
    if !ours && !expired {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(o.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(secs);
    match api.replace(&o.name, &PostParams::default(), &lease).await {
        Ok(_) => {
            *observed = None;
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the lease up if this candidate holds it, as client-go's
/// `ReleaseOnCancel`: the holder is cleared (and the duration set to 1 s), so a
/// standby takes over at its next retry instead of after a full lease duration.
/// Returns whether a lease held by us was released. The update is conditional on the
/// resourceVersion, so a late renewal racing with it loses (409) and is re-read.
pub async fn release(client: &Client, o: &LeaderOptions) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &o.namespace);
    for _ in 0..3 {
        let Some(mut lease) = api.get_opt(&o.name).await? else {
            return Ok(false);
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(o.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        spec.acquire_time = Some(now());
        match api.replace(&o.name, &PostParams::default(), &lease).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

pub fn spawn(
    client: Client,
    o: LeaderOptions,
    flag: Arc<AtomicBool>,
    out: mpsc::Sender<Msg>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &o.namespace);
        let mut observed = None;
        let mut last_renew: Option<Instant> = None;
        loop {
            let r =
                tokio::time::timeout(o.retry_period, try_acquire(&api, &o, &mut observed)).await;
            let held = match r {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => {
                    tracing::warn!("lease {}/{}: {e}", o.namespace, o.name);
                    false
                }
                Err(_) => false,
            };
            let was = flag.load(Ordering::Relaxed);
            let now = Instant::now();
            let leader = if held {
                last_renew = Some(now);
                true
            } else {
                // A leader keeps leading until its renew deadline passes.
                was && last_renew.is_some_and(|t| now.duration_since(t) < o.renew_deadline)
            };
            if leader != was {
                flag.store(leader, Ordering::Relaxed);
                if out.send(Msg::Leader(leader)).is_err() {
                    return;
                }
            }
            tokio::time::sleep(o.retry_period).await;
        }
    })
}
