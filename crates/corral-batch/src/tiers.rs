//! Volcano's tiers and per-plugin `enable*` flags.
//!
//! A configured plugin is wrapped in [`Gated`]: a hook whose flag is off answers
//! neutrally (as in Volcano, where the session skips that plugin's function), and the
//! wrapper reports the plugin's tier. The tiered decisions live here as `Session`
//! methods, with Volcano's voting rules:
//!
//! - ordering (`job_order`, `queue_key`): the first plugin in tier order with an
//!   opinion decides (plain plugin order, tiers concatenated);
//! - `allocatable`, `job_ready`, `job_valid`: every enabled plugin must agree;
//!   `overused`: any enabled plugin;
//! - victims ([`Session::victims`]): per tier, the voting plugins' candidate sets are
//!   intersected; a plugin with no candidate ends its tier undecided; the first tier
//!   that yields victims decides, later tiers only where earlier ones are undecided;
//! - enqueue ([`Session::enqueue_verdict`]): a reject anywhere rejects; otherwise the
//!   first tier with a permit admits (later tiers are not asked); no vote admits;
//! - starving ([`Session::job_starving`]): the first tier with a voter decides (all
//!   its voters must say starving); no voter: no job is starving.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::plugins::{EvictMode, SessionPlugin};
use crate::res::ResMap;
use crate::session::{Job, Queue, Session, Task};

/// Which hooks of a plugin are enabled (Volcano's `enable*` flags; unset = on).
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    pub job_order: bool,
    pub queue_order: bool,
    pub job_ready: bool,
    pub preemptable: bool,
    pub reclaimable: bool,
    pub job_enqueued: bool,
    pub job_starving: bool,
    pub overused: bool,
    pub allocatable: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            job_order: true,
            queue_order: true,
            job_ready: true,
            preemptable: true,
            reclaimable: true,
            job_enqueued: true,
            job_starving: true,
            overused: true,
            allocatable: true,
        }
    }
}

/// A session plugin as configured in a tier, with its flags.
pub struct Gated {
    pub inner: Arc<dyn SessionPlugin>,
    pub tier: usize,
    pub flags: Flags,
}

impl SessionPlugin for Gated {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn on_open(&self, ssn: &mut Session) {
        self.inner.on_open(ssn)
    }
    fn job_order(&self, ssn: &Session, a: &Job, b: &Job) -> Ordering {
        if self.flags.job_order {
            self.inner.job_order(ssn, a, b)
        } else {
            Ordering::Equal
        }
    }
    fn queue_key(&self, ssn: &Session, q: &Queue) -> Vec<f64> {
        if self.flags.queue_order {
            self.inner.queue_key(ssn, q)
        } else {
            Vec::new()
        }
    }
    fn job_valid(&self, ssn: &Session, job: &Job) -> Result<(), String> {
        self.inner.job_valid(ssn, job)
    }
    fn job_ready(&self, ssn: &Session, job: &Job, placed: &[&Task]) -> Result<(), String> {
        if self.flags.job_ready {
            self.inner.job_ready(ssn, job, placed)
        } else {
            Ok(())
        }
    }
    fn job_enqueueable(&self, ssn: &Session, job: &Job) -> Result<(), String> {
        if self.flags.job_enqueued {
            self.inner.job_enqueueable(ssn, job)
        } else {
            Ok(())
        }
    }
    fn allocatable(&self, ssn: &Session, queue: usize, req: &ResMap) -> bool {
        !self.flags.allocatable || self.inner.allocatable(ssn, queue, req)
    }
    fn overused(&self, ssn: &Session, queue: usize) -> bool {
        self.flags.overused && self.inner.overused(ssn, queue)
    }
    fn beyond_share(&self, ssn: &Session, queue: usize, req: &ResMap) -> Vec<String> {
        // Part of proportion's allocatable function in Volcano.
        if self.flags.allocatable {
            self.inner.beyond_share(ssn, queue, req)
        } else {
            Vec::new()
        }
    }
    fn tier(&self) -> usize {
        self.tier
    }
    fn votes_victims(&self, mode: EvictMode) -> bool {
        let on = match mode {
            EvictMode::Preempt => self.flags.preemptable,
            EvictMode::Reclaim => self.flags.reclaimable,
        };
        on && self.inner.votes_victims(mode)
    }
    fn votes_enqueue(&self) -> bool {
        self.flags.job_enqueued && self.inner.votes_enqueue()
    }
    fn job_starving(&self, ssn: &Session, job: &Job) -> Option<bool> {
        if self.flags.job_starving {
            self.inner.job_starving(ssn, job)
        } else {
            None
        }
    }
    fn victim_ok(
        &self,
        ssn: &Session,
        mode: EvictMode,
        preemptor: &Job,
        victim_job: &Job,
        victim: &Task,
    ) -> bool {
        self.inner
            .victim_ok(ssn, mode, preemptor, victim_job, victim)
    }
}

/// The plugins grouped by tier, in order.
fn tiers(plugins: &[Arc<dyn SessionPlugin>]) -> Vec<Vec<&Arc<dyn SessionPlugin>>> {
    let mut out: Vec<Vec<&Arc<dyn SessionPlugin>>> = Vec::new();
    let mut last = None;
    for p in plugins {
        if last != Some(p.tier()) || out.is_empty() {
            out.push(Vec::new());
            last = Some(p.tier());
        }
        if let Some(t) = out.last_mut() {
            t.push(p);
        }
    }
    out
}

impl Session {
    /// Volcano's Preemptable/Reclaimable over the candidates `cands` (victim job,
    /// task): which of them may be evicted for job `preemptor`.
    pub fn victims(
        &self,
        mode: EvictMode,
        preemptor: usize,
        cands: &[(usize, &Task)],
    ) -> Vec<bool> {
        let pj = &self.jobs[preemptor];
        for tier in tiers(&self.plugins) {
            let mut victims: Option<Vec<bool>> = None;
            for p in tier.iter().filter(|p| p.votes_victims(mode)) {
                let mine: Vec<bool> = cands
                    .iter()
                    .map(|(vj, t)| p.victim_ok(self, mode, pj, &self.jobs[*vj], t))
                    .collect();
                if !mine.iter().any(|b| *b) {
                    victims = None;
                    break;
                }
                victims = match victims.take() {
                    None => Some(mine),
                    Some(v) => {
                        let both: Vec<bool> = v.iter().zip(&mine).map(|(a, b)| *a && *b).collect();
                        // An empty intersection is no decision (the next voter of
                        // the tier starts afresh), as in Volcano.
                        both.iter().any(|b| *b).then_some(both)
                    }
                };
            }
            if let Some(v) = victims {
                return v;
            }
        }
        vec![false; cands.len()]
    }

    /// Volcano's JobEnqueueable: Err(reason) when a voting plugin rejects.
    pub fn enqueue_verdict(&self, j: usize) -> Result<(), String> {
        let job = &self.jobs[j];
        for tier in tiers(&self.plugins) {
            let mut permit = false;
            for p in tier.iter().filter(|p| p.votes_enqueue()) {
                p.job_enqueueable(self, job)?;
                permit = true;
            }
            if permit {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Volcano's JobStarving: whether job `j` may preempt/reclaim.
    pub fn job_starving(&self, j: usize) -> bool {
        let job = &self.jobs[j];
        for tier in tiers(&self.plugins) {
            let mut found = false;
            for p in &tier {
                match p.job_starving(self, job) {
                    None => {}
                    Some(false) => return false,
                    Some(true) => found = true,
                }
            }
            if found {
                return true;
            }
        }
        false
    }
}
