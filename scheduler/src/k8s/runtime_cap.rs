//! Per-job run-time cap: a running pod whose `corral.io/max-runtime` (on the pod, or
//! on its PodGroup for every member; a duration such as `72h`, `90m`, `3600`) has
//! elapsed since its `status.startTime` is evicted by the scheduler, the way a batch
//! system enforces a wall-time limit. A gang's members started together, so they
//! reach the cap together and go together.
//!
//! Stuck gangs: a PodGroup annotated `corral.io/partial-timeout: 10m` whose bound
//! members stay above zero but below `minMember` for that long (members failed or
//! were evicted and the rest cannot be placed) has its remaining members evicted, so
//! the resources they hold uselessly are freed and the job's controller can restart
//! the gang whole.
//!
//! [`RuntimeCaps`] keeps the pods that carry the annotation themselves (maintained
//! from the pod watch) and the pods currently being evicted for it; `Loop` sweeps
//! every [`SWEEP_EVERY`] (cheap: annotated pods and members of annotated PodGroups
//! only). An unparsable value is reported once per object and ignored (no cap:
//! never kill on a typo).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::batch::objects::duration_secs;
use crate::snapshot::PodInfo;

pub use corral_api::keys::{ANN_MAX_RUNTIME, ANN_PARTIAL_TIMEOUT};
/// How often caps are checked.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// After a refused or failed eviction, the next attempt.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct RuntimeCaps {
    /// Pod → its own cap in seconds.
    pods: HashMap<String, i64>,
    /// Pods whose eviction for the cap was requested → earliest next attempt.
    evicting: HashMap<String, Instant>,
    /// Objects whose value was reported invalid.
    reported: HashSet<String>,
    last_sweep: Option<Instant>,
    /// PodGroup → since when it has been partial (0 < bound < minMember).
    partial_since: HashMap<String, Instant>,
}

/// The cap of an annotation value; `Err` names the problem.
pub fn parse_cap(v: &str) -> Result<i64, String> {
    match duration_secs(v) {
        Ok(s) if s > 0 => Ok(s),
        Ok(_) => Err(format!("{ANN_MAX_RUNTIME}: {v:?} must be positive")),
        Err(e) => Err(format!("{ANN_MAX_RUNTIME}: {e}")),
    }
}

/// Unix seconds the pod started (kubelet's `status.startTime`).
pub fn started(p: &PodInfo) -> Option<i64> {
    p.pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.as_second())
}

impl RuntimeCaps {
    /// A bound pod was applied; returns an error message to report (once).
    pub fn on_pod(&mut self, p: &PodInfo) -> Option<String> {
        let v = p
            .pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANN_MAX_RUNTIME));
        match v.map(|v| parse_cap(v)) {
            Some(Ok(cap)) => {
                self.pods.insert(p.key.clone(), cap);
                None
            }
            Some(Err(e)) => {
                self.pods.remove(&p.key);
                self.report(&format!("pod {}", p.key), e)
            }
            None => {
                self.pods.remove(&p.key);
                None
            }
        }
    }

    /// Reports an invalid value once per object.
    pub fn report(&mut self, object: &str, e: String) -> Option<String> {
        self.reported
            .insert(object.to_string())
            .then(|| format!("{object}: {e}"))
    }

    pub fn forget(&mut self, key: &str) {
        self.pods.remove(key);
        self.evicting.remove(key);
    }

    /// Whether a sweep is due (and marks it done).
    pub fn due(&mut self, now: Instant) -> bool {
        if self
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < SWEEP_EVERY)
        {
            return false;
        }
        self.last_sweep = Some(now);
        true
    }

    /// Pods with their own cap.
    pub fn capped(&self) -> impl Iterator<Item = (&String, i64)> {
        self.pods.iter().map(|(k, v)| (k, *v))
    }

    /// Whether `key` (started at `start`, capped at `cap` s) must be evicted at
    /// `unix_now`, and is not already being evicted.
    pub fn expired(&self, key: &str, start: i64, cap: i64, unix_now: i64, now: Instant) -> bool {
        start.saturating_add(cap) <= unix_now && self.evicting.get(key).is_none_or(|t| *t <= now)
    }

    pub fn evicting(&mut self, key: &str, now: Instant) {
        self.evicting.insert(key.to_string(), now + RETRY_AFTER);
    }

    /// Records whether PodGroup `g` is partial now; returns how long it has been.
    pub fn partial(&mut self, g: &str, partial: bool, now: Instant) -> Duration {
        if !partial {
            self.partial_since.remove(g);
            return Duration::ZERO;
        }
        now.duration_since(*self.partial_since.entry(g.to_string()).or_insert(now))
    }

    /// Forgets PodGroups no longer present.
    pub fn retain_groups(&mut self, keep: &HashSet<String>) {
        self.partial_since.retain(|g, _| keep.contains(g));
    }

    /// Whether an eviction result is for a cap (and not a preemption).
    pub fn is_evicting(&self, key: &str) -> bool {
        self.evicting.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::pod;
    use serde_json::json;

    #[test]
    fn partial_gang_clock_runs_only_while_partial() {
        let mut c = RuntimeCaps::default();
        let t0 = Instant::now();
        assert_eq!(c.partial("ns/pg", true, t0), Duration::ZERO);
        assert_eq!(
            c.partial("ns/pg", true, t0 + Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert_eq!(
            c.partial("ns/pg", false, t0 + Duration::from_secs(40)),
            Duration::ZERO
        );
        assert_eq!(
            c.partial("ns/pg", true, t0 + Duration::from_secs(50)),
            Duration::ZERO
        );
        c.retain_groups(&HashSet::new());
        assert_eq!(
            c.partial("ns/pg", true, t0 + Duration::from_secs(60)),
            Duration::ZERO
        );
    }

    #[test]
    fn caps_parse_and_expire_once_per_retry_window() {
        assert_eq!(parse_cap("72h"), Ok(72 * 3600));
        assert!(parse_cap("0s").is_err());
        assert!(parse_cap("soon").unwrap_err().contains(ANN_MAX_RUNTIME));
        let mut c = RuntimeCaps::default();
        let mut b = pod("train").cpu("1");
        b.0["metadata"]["annotations"] = json!({ANN_MAX_RUNTIME: "1h"});
        b.0["status"]["startTime"] = json!("2026-01-01T00:00:00Z");
        let p = b.info();
        assert_eq!(c.on_pod(&p), None);
        let start = started(&p).expect("start");
        let cap = c.capped().next().map(|(_, v)| v).expect("capped");
        let now = Instant::now();
        assert!(!c.expired(&p.key, start, cap, start + 3599, now));
        assert!(c.expired(&p.key, start, cap, start + 3600, now));
        c.evicting(&p.key, now);
        assert!(!c.expired(&p.key, start, cap, start + 4000, now));
        assert!(c.expired(&p.key, start, cap, start + 4000, now + RETRY_AFTER));
        // A bad value is reported once and means no cap.
        let mut bad = pod("bad").cpu("1");
        bad.0["metadata"]["annotations"] = json!({ANN_MAX_RUNTIME: "-5m"});
        let bad = bad.info();
        assert!(
            c.on_pod(&bad)
                .is_some_and(|e| e.contains("pod default/bad"))
        );
        assert_eq!(c.on_pod(&bad), None);
        assert_eq!(c.capped().count(), 1);
        c.forget(&p.key);
        assert_eq!(c.capped().count(), 0);
    }
}
