//! Session actions: enqueue, allocate, preempt/reclaim (one victim-selection engine,
//! two scopes) and backfill. Policy lives in the session plugins; actions only ask.
//!
//! One file per action; `preempt` and `reclaim` share the victim-selection engine
//! (`evict.rs`). [`run`] runs a session's configured actions in order; the session
//! itself only holds state and answers the plugins' questions.

mod allocate;
mod backfill;
mod enqueue;
mod evict;
mod preempt;
mod reclaim;
mod topology;

pub use self::allocate::allocate;
pub use self::backfill::backfill;
pub use self::enqueue::enqueue;
pub use self::evict::evict;
pub use self::preempt::preempt;
pub use self::reclaim::reclaim;

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use super::plugins::EvictMode;
use super::res::ResMap;
use super::session::{Action, Eviction, Session, Task, insufficient};
use crate::framework::{CycleState, QueuedPodInfo};
use crate::resources::Resources;
use crate::scheduler::{Placement, Report};
use crate::snapshot::PodInfo;

/// Runs the session's configured actions in order. Without `enqueue` every job is
/// admitted (Inqueue) afterwards, as Volcano does.
pub fn run(ssn: &mut Session) {
    for a in ssn.actions.clone() {
        match a {
            Action::Enqueue => enqueue(ssn),
            Action::Allocate => allocate(ssn),
            Action::Preempt => preempt(ssn),
            Action::Reclaim => reclaim(ssn),
            Action::Backfill => backfill(ssn),
        }
    }
    if !ssn.actions.contains(&Action::Enqueue) {
        for j in &mut ssn.jobs {
            j.inqueue = true;
        }
    }
}
