//! corral-api: the contract every Corral component shares.
//!
//! - [`keys`]: annotation and label keys (`corral.io/*`, Volcano's and
//!   scheduler-plugins') and the API versions of the batch CRDs;
//! - [`duration`]: the one duration grammar (Go's `time.ParseDuration`);
//! - [`pod`]: the pod key (`namespace/name`) and one definition of a finished,
//!   terminating, bound and done pod;
//! - `client` (feature `client`): one kube client builder;
//! - `crd` (feature `crd`): the CRD types (Volcano Queue/PodGroup/HyperNode,
//!   scheduler-plugins PodGroup, NodeResourceTopology) as kube
//!   `#[derive(CustomResource)]` types, from which `deploy/crds` is generated.
//!
//! Invariant: corral-api depends on no other Corral crate; without the `client`
//! feature it has no Kubernetes client and does no I/O.

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "crd")]
pub mod crd;
pub mod duration;
pub mod keys;
pub mod pod;
