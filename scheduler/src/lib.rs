//! corral-scheduler: a Kubernetes-compatible batch scheduler core.
//!
//! See ARCHITECTURE.md at the repository root for the bird's-eye view.

pub mod extender;
pub mod health;
/// The bounded HTTP server (moved to the corral-http crate).
pub use corral_http::server as http_server;
pub mod k8s;
pub mod shutdown;
pub mod simulate;
pub mod svg_plot;
pub mod views;

// The layers below, re-exported under their old paths for the modules of this
// crate and for tests, benches and tools written against them.
#[doc(hidden)]
pub use corral_core::testutil;
pub use corral_core::{
    framework, impl_plugin, labels, limits, quantity, resources, snapshot, topology, volumes,
};
pub use corral_engine::{config, defaulting, input, scheduler};
pub use {corral_batch as batch, corral_plugins as plugins};
