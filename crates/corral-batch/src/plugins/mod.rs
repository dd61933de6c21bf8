//! Session plugins: the policies actions consult (Volcano's session plugin model).
//! Actions never hard-code gang, priority, fair-share or quota rules; they ask the
//! enabled plugins through the hooks of [`SessionPlugin`]:
//!
//! - ordering hooks (`job_order`, `queue_key`): the first plugin with an opinion
//!   decides;
//! - predicate hooks (`job_valid`, `job_ready`, `job_enqueueable`, `allocatable`,
//!   `overused`, `victim_ok`): every plugin must agree.
//!
//! One file per policy: `priority`, `gang`, `conformance`, `drf`, `proportion`
//! (alias `capacity`), `overcommit`, `resourcequota`.

mod conformance;
mod drf;
mod gang;
mod overcommit;
mod priority;
mod proportion;
mod resourcequota;

pub use self::conformance::{Conformance, protection};
pub use self::drf::Drf;
pub use self::gang::Gang;
pub use self::overcommit::Overcommit;
pub use self::priority::Priority;
pub use self::proportion::Proportion;
pub use self::resourcequota::ResourceQuotaPlugin;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::objects::{ANN_MIN_RUNTIME, ANN_PREEMPTABLE, duration_secs};
use super::res::ResMap;
use super::session::{Job, Queue, Session, Task};

/// Whether a victim is sought inside the preemptor's queue or across queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictMode {
    Preempt,
    Reclaim,
}

/// A session plugin. All hooks have neutral defaults.
pub trait SessionPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// Called once when the session opens (after jobs and queues are built).
    fn on_open(&self, _ssn: &mut Session) {}
    fn job_order(&self, _ssn: &Session, _a: &Job, _b: &Job) -> Ordering {
        Ordering::Equal
    }
    /// Sort keys of a queue (lower first, compared element by element); the
    /// plugins' keys are concatenated in plugin order.
    fn queue_key(&self, _ssn: &Session, _q: &Queue) -> Vec<f64> {
        Vec::new()
    }
    /// Err(reason) when the job can never run as it is (stays pending).
    fn job_valid(&self, _ssn: &Session, _job: &Job) -> Result<(), String> {
        Ok(())
    }
    /// Err(reason) when `placed` (running + newly placed tasks) does not make the job
    /// ready.
    fn job_ready(&self, _ssn: &Session, _job: &Job, _placed: &[&Task]) -> Result<(), String> {
        Ok(())
    }
    /// Err(reason) when the job may not be admitted (enqueued) now.
    fn job_enqueueable(&self, _ssn: &Session, _job: &Job) -> Result<(), String> {
        Ok(())
    }
    /// Whether the queue may take `req` more.
    fn allocatable(&self, _ssn: &Session, _queue: usize, _req: &ResMap) -> bool {
        true
    }
    /// Whether the queue already has its share (allocate skips it).
    fn overused(&self, _ssn: &Session, _queue: usize) -> bool {
        false
    }
    /// The dimensions of `req` in which the queue taking `req` more would exceed
    /// its deserved share (empty: it may). Consulted by allocate and reclaim, not
    /// by preempt (victims of the same queue free what the preemptor takes).
    fn beyond_share(&self, _ssn: &Session, _queue: usize, _req: &ResMap) -> Vec<String> {
        Vec::new()
    }
    /// The tier the plugin was configured in (Volcano `tiers[i]`; 0 for the flat
    /// `plugins` list). Victim, enqueue and starving votes are tiered.
    fn tier(&self) -> usize {
        0
    }
    /// Whether the plugin votes on victims in `mode` (Volcano: it registers a
    /// preemptable/reclaimable function); `victim_ok` of non-voters is ignored.
    fn votes_victims(&self, _mode: EvictMode) -> bool {
        false
    }
    /// Whether the plugin votes in enqueue (`job_enqueueable`: Ok = permit,
    /// Err = reject); non-voters abstain.
    fn votes_enqueue(&self) -> bool {
        false
    }
    /// Some(starving) when the plugin decides whether a job is starving (may
    /// preempt/reclaim); None = abstain.
    fn job_starving(&self, _ssn: &Session, _job: &Job) -> Option<bool> {
        None
    }
    /// Whether `victim` (of `victim_job`) may be evicted for `preemptor`.
    fn victim_ok(
        &self,
        _ssn: &Session,
        _mode: EvictMode,
        _preemptor: &Job,
        _victim_job: &Job,
        _victim: &Task,
    ) -> bool {
        true
    }
}

/// Default plugin list (order matters for ordering hooks).
pub const DEFAULT_PLUGINS: &[&str] = &[
    "priority",
    "gang",
    "conformance",
    "drf",
    "proportion",
    "overcommit",
    "resourcequota",
];

/// Builds plugins by name.
pub fn build(
    names: &[String],
    overcommit_factor: f64,
) -> Result<Vec<Arc<dyn SessionPlugin>>, String> {
    names
        .iter()
        .map(|n| -> Result<Arc<dyn SessionPlugin>, String> {
            Ok(match n.as_str() {
                "priority" => Arc::new(Priority),
                "gang" => Arc::new(Gang),
                "conformance" => Arc::new(Conformance),
                "drf" => Arc::new(Drf),
                "proportion" => Arc::new(Proportion {
                    deserved_bound: true,
                }),
                "capacity" => Arc::new(Proportion {
                    deserved_bound: false,
                }),
                "overcommit" => Arc::new(Overcommit {
                    factor: overcommit_factor,
                    per_resource: BTreeMap::new(),
                }),
                "resourcequota" => Arc::new(ResourceQuotaPlugin),
                other => {
                    return Err(format!(
                        "unknown session plugin {other:?} (known: {})",
                        DEFAULT_PLUGINS.join(", ")
                    ));
                }
            })
        })
        .collect()
}
