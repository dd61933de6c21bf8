//! corral-core: the data and plugin model every scheduling layer shares.
//!
//! Quantities and resources, label selectors, NUMA topology, the cluster
//! [`snapshot::Snapshot`], the scheduling framework (extension-point traits,
//! `CycleState`, `Status`, the per-profile runtime) and the pure node health model
//! (signals, trackers, the per-cycle view plugins read).
//!
//! Invariant: corral-core knows nothing about batch sessions, Kubernetes I/O,
//! configuration files or tokio; it does no I/O.

pub mod domains;
pub mod equivalence;
pub mod framework;
pub mod fxhash;
pub mod health;
pub mod labels;
pub mod limits;
pub mod pod_index;
pub mod quantity;
pub mod resources;
pub mod snapshot;
#[doc(hidden)]
pub mod testutil;
pub mod topology;
pub mod volumes;
