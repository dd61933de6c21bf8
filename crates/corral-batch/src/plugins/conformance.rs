//! The `conformance` session plugin (see the module docs of `plugins` for the hooks).

use super::*;

/// conformance: never evict pods (or groups) marked not preemptable, nor pods
/// younger than their `corral.io/min-runtime`, nor system-critical pods.
pub struct Conformance;

fn annotation<'a>(t: &'a Task, job: &'a Job, key: &str) -> Option<&'a str> {
    t.pod
        .pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .or_else(|| job.annotations.get(key))
        .map(String::as_str)
}

/// `volcano.sh/preemptable` (or Corral's key) as Volcano reads it: the pod's
/// annotation, else the pod's label, else the PodGroup's annotation, else its
/// label (an annotation wins over a label on the same object).
fn preemptable_value<'a>(t: &'a Task, job: &'a Job, key: &str) -> Option<&'a str> {
    let pod_ann = t.pod.pod.metadata.annotations.as_ref();
    pod_ann
        .and_then(|a| a.get(key))
        .or_else(|| t.pod.labels.get(key))
        .or_else(|| job.annotations.get(key))
        .or_else(|| job.labels.get(key))
        .map(String::as_str)
}

/// Why a running task is protected from eviction, if it is.
pub fn protection(now: i64, job: &Job, t: &Task) -> Option<String> {
    for k in ANN_PREEMPTABLE {
        if preemptable_value(t, job, k) == Some("false") {
            return Some(format!("{k}: \"false\""));
        }
    }
    if t.pod.priority >= 2_000_000_000 {
        return Some("system-critical priority".into());
    }
    if let Some(d) = annotation(t, job, ANN_MIN_RUNTIME) {
        let min = match duration_secs(d) {
            Ok(s) => s,
            // An unparsable protection request protects (fail safe).
            Err(e) => return Some(format!("{ANN_MIN_RUNTIME}: {e}")),
        };
        let started = t
            .pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.as_second());
        match started {
            Some(s) if now - s >= min => {}
            _ => return Some(format!("{ANN_MIN_RUNTIME}: {d} not reached")),
        }
    }
    None
}

impl SessionPlugin for Conformance {
    fn name(&self) -> &'static str {
        "conformance"
    }
    fn votes_victims(&self, _: EvictMode) -> bool {
        true
    }
    fn victim_ok(&self, ssn: &Session, _: EvictMode, _: &Job, vj: &Job, v: &Task) -> bool {
        protection(ssn.now, vj, v).is_none()
    }
}
