//! `reclaim`: takes resources back from queues above their deserved share for a
//! queue below it (the shared engine in [`super::evict`], cross-queue scope).

use super::*;

pub fn reclaim(ssn: &mut Session) {
    evict(ssn, EvictMode::Reclaim);
}
