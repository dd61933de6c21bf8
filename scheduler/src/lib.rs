//! corral-scheduler: a Kubernetes-compatible batch scheduler core.
//!
//! See ARCHITECTURE.md at the repository root for the bird's-eye view.

pub mod batch;
pub mod config;
pub mod defaulting;
pub mod extender;
pub mod framework;
pub mod health;
pub mod http_server;
pub mod input;
pub mod kube;
pub mod labels;
pub mod limits;
pub mod plugins;
pub mod quantity;
pub mod resources;
pub mod scheduler;
pub mod simulate;
pub mod snapshot;
#[doc(hidden)]
pub mod testutil;
pub mod topology;
