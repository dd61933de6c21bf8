//! corral-engine: the batched scheduling loop.
//!
//! [`config`] turns a KubeSchedulerConfiguration into one framework (profile) per
//! scheduler name, [`scheduler::Scheduler`] evaluates batches of pending pods in
//! parallel against the immutable snapshot and commits them in order, with
//! explanations on request; [`input`] loads Kubernetes manifests into a snapshot.
//!
//! Invariant: the engine knows nothing about batch sessions (its [`scheduler::Report`]
//! has no batch fields), Kubernetes I/O or tokio.

mod batch_size;
mod cells;
pub mod config;
pub mod defaulting;
mod evaluate;
pub mod explain;
pub mod input;
mod ranked;
pub mod report;
pub mod scheduler;

// The lower layers, imported at the root so that engine files name them
// `crate::snapshot`, `crate::plugins`, ...
use corral_core::{framework, labels, snapshot, topology, volumes};
use corral_plugins as plugins;
