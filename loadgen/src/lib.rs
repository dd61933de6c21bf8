//! corral-loadgen: workload generators for Corral (cluster manifests shaped like
//! kube-scheduler's scheduler_perf workloads; network traffic for the data plane).

pub mod cluster;
pub mod k8s;
pub mod net;
