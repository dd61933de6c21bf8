//! `preempt`: evicts lower-priority work within a queue for a starving job (the
//! shared engine in [`super::evict`], in-queue scope).

use super::*;

pub fn preempt(ssn: &mut Session) {
    evict(ssn, EvictMode::Preempt);
}
