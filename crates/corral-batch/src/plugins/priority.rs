//! The `priority` session plugin (see the module docs of `plugins` for the hooks).

use super::*;

/// priority: higher job priority first; only lower-priority jobs are preempted.
pub struct Priority;

impl SessionPlugin for Priority {
    fn name(&self) -> &'static str {
        "priority"
    }
    fn job_order(&self, _: &Session, a: &Job, b: &Job) -> Ordering {
        b.priority.cmp(&a.priority)
    }
    fn votes_victims(&self, mode: EvictMode) -> bool {
        mode == EvictMode::Preempt
    }
    /// Volcano's priority plugin: a job is starving while any of its tasks is
    /// not running.
    fn job_starving(&self, _: &Session, job: &Job) -> Option<bool> {
        Some(!job.pending.is_empty())
    }
    fn victim_ok(&self, _: &Session, mode: EvictMode, p: &Job, vj: &Job, _: &Task) -> bool {
        match mode {
            EvictMode::Preempt => vj.priority < p.priority,
            EvictMode::Reclaim => true,
        }
    }
}
