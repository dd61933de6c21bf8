//! Corral eBPF data plane: kernel programs (ebpf/), their loader and the
//! `corral-agent` daemon's building blocks.

pub mod abi;
pub mod agent;
pub mod api;
pub mod cni;
pub mod datapath;
pub mod kube_source;
pub mod metrics;
pub mod monitor;
pub mod node_health;
pub mod policy;
pub mod routing;
pub mod serve_limits;
pub mod services;
