//! `backfill`: places best-effort pods on whatever room is left.

use super::allocate::commit_simple;
use super::*;

/// backfill: BestEffort pods (no requests) of admitted jobs go onto feasible nodes;
/// they take no requested capacity, so nothing reserved is touched.
pub fn backfill(ssn: &mut Session) {
    let mut owner = HashMap::new();
    let mut pods = Vec::new();
    for j in 0..ssn.jobs.len() {
        let job = &ssn.jobs[j];
        if !job.inqueue || !job.simple() || !job.pipelined.is_empty() || job.queue.is_none() {
            continue;
        }
        if !job.pending.iter().any(|t| t.best_effort) || ssn.job_valid(j).is_err() {
            continue;
        }
        for t in job.pending.iter().filter(|t| t.best_effort) {
            owner.insert(t.pod.key.clone(), j);
            pods.push(t.pod.clone());
        }
    }
    if pods.is_empty() {
        return;
    }
    let pods = pods.iter().map(|p| ssn.placement_pod(p)).collect();
    let report = ssn.place(pods);
    commit_simple(ssn, &owner, report);
}
