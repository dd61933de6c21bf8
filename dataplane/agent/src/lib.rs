//! corral-agent's building blocks: load/attach/pin the eBPF programs
//! (`datapath`), compile policy into their maps (`policy`), read policy,
//! node and service sources (`policy::source`, `kube_source`, `routing`,
//! `services`), serve the socket API, metrics and the drop monitor.

// the layer below, under the paths the modules use (`crate::abi::...`)
pub use corral_dataplane_abi::{abi, api, netlink};

pub mod agent;
pub mod datapath;
pub mod kube_source;
pub mod metrics;
pub mod monitor;
pub mod node_health;
pub mod policy;
pub mod routing;
pub mod serve_limits;
pub mod services;
