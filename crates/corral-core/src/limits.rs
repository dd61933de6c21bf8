//! Bounds on values from untrusted objects that size memory or loops.
//!
//! Every count or quantity that sizes an allocation or a loop is checked where the
//! object enters ([`NodeInfo::new`](crate::snapshot::NodeInfo::new) for nodes,
//! `corral_plugins::gpu_share::pod_gpu_requests` for GPU
//! requests); an object beyond a limit is an error naming the field. What the
//! caller does with it: `simulate` fails naming file/document/object/field; `run`
//! and the extender's node cache skip the object with a warning log and the
//! `corral_scheduler_invalid_objects_total` metric; the extender's `/filter` and
//! `/prioritize` answer for the other nodes and report the skipped one as failed.
//! Other bounds live next to their data: NUMA zones ([`crate::topology::MAX_NUMA_ZONES`]),
//! quantity exponents ([`crate::quantity`]), nesting depth and document sizes
//! ([`corral_limits`]).

use k8s_openapi::api::core::v1::Node;

use crate::resources::{FieldError, Resources};
use corral_api::keys::{CARD_CORE, LABEL_GPU_COUNT, VCUDA_CORE, VCUDA_MEMORY};

/// Most GPU cards one node may have (the largest real systems have 16; the card
/// model allocates per card).
pub const MAX_GPU_CARDS_PER_NODE: i64 = 128;
/// Largest `coreOvercommit` GpuShare accepts.
pub const MAX_CORE_OVERCOMMIT: i64 = 8;
/// Largest `tencent.com/vcuda-core` a node may advertise: 128 cards × 100 × 8.
pub const MAX_VCUDA_CORE_PER_NODE: i64 = MAX_GPU_CARDS_PER_NODE * CARD_CORE * MAX_CORE_OVERCOMMIT;
/// Largest `tencent.com/vcuda-memory` (256 MiB units) of a node or a container:
/// 2^24 units = 4 PiB, so sums over any number of pods stay far from i64 overflow.
pub const MAX_VCUDA_MEMORY: i64 = 1 << 24;
/// Most nodes in one extender request (Kubernetes supports 5,000 per cluster).
pub const MAX_EXTENDER_NODES: usize = 15_000;

/// Checks a node's values against the limits above (`alloc` = its parsed
/// allocatable, `field` the list it came from).
pub fn check_node(node: &Node, alloc: &Resources, field: &str) -> Result<(), FieldError> {
    let core = alloc.scalar_value(VCUDA_CORE);
    if core > MAX_VCUDA_CORE_PER_NODE {
        return Err(FieldError {
            field: format!("{field}[{VCUDA_CORE}]"),
            message: format!(
                "{core} exceeds the limit of {MAX_VCUDA_CORE_PER_NODE} ({MAX_GPU_CARDS_PER_NODE} cards × {CARD_CORE} × coreOvercommit {MAX_CORE_OVERCOMMIT})"
            ),
        });
    }
    let mem = alloc.scalar_value(VCUDA_MEMORY);
    if mem > MAX_VCUDA_MEMORY {
        return Err(FieldError {
            field: format!("{field}[{VCUDA_MEMORY}]"),
            message: format!("{mem} exceeds the limit of {MAX_VCUDA_MEMORY}"),
        });
    }
    // The card-count label only matters on a node with shared GPUs.
    if core > 0
        && let Some(v) = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_GPU_COUNT))
        && !v.is_empty()
        && v.bytes().all(|b| b.is_ascii_digit())
        && v.parse::<i64>()
            .map_or(true, |n| n > MAX_GPU_CARDS_PER_NODE)
    {
        return Err(FieldError {
            field: format!("metadata.labels[{LABEL_GPU_COUNT}]"),
            message: format!(
                "{v:?} exceeds the limit of {MAX_GPU_CARDS_PER_NODE} GPU cards per node"
            ),
        });
    }
    Ok(())
}

/// The nesting-depth/size pre-scan for a YAML (or JSON) file read by `origin`,
/// as an error string naming it.
pub fn check_yaml_text(text: &str, origin: &str, max_bytes: usize) -> Result<(), String> {
    corral_limits::check_yaml(text, corral_limits::MAX_NESTING_DEPTH, max_bytes)
        .map_err(|e| format!("{origin}: {e}"))
}
