//! The interfaces of Corral's data plane, below both the agent and the CNI
//! plugin: the Rust mirror of `ebpf/corral_abi.h` with the compiled eBPF
//! object (`abi`, the only `unsafe` of the data plane), a minimal
//! rtnetlink client (`netlink`) and the agent's socket protocol (`api`).
//! corral-agent and corral-cni both depend on this crate and never on each
//! other.

pub mod abi;
pub mod api;
pub mod netlink;
