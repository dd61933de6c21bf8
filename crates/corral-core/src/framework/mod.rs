//! The scheduling framework: extension-point traits, cycle state, status, and the
//! per-profile runtime that runs plugins in order.

mod cycle_state;
mod interface;
pub mod observe;
pub mod runtime;
pub mod score_cache;
mod status;

pub use cycle_state::{CycleState, PodAnnotations, StateData, StateKey};
pub use interface::*;
pub use observe::FrameworkObserver;
pub use runtime::Framework;
pub use status::{Code, Reasons, Status};
