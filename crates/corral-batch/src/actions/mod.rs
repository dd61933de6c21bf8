//! Session actions: enqueue, allocate, preempt/reclaim (one victim-selection engine,
//! two scopes) and backfill. Policy lives in the session plugins; actions only ask.
//!
//! One file per action; `preempt` and `reclaim` share the victim-selection engine
//! (`evict.rs`). The dispatcher is `Session::run`.

mod allocate;
mod backfill;
mod enqueue;
mod evict;
mod preempt;
mod reclaim;

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
use super::session::{Eviction, Session, Task, insufficient};
use crate::framework::{CycleState, QueuedPodInfo};
use crate::resources::Resources;
use crate::scheduler::{Placement, Report};
use crate::snapshot::PodInfo;
