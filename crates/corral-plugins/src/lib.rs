//! corral-plugins: the in-tree plugins (one per file, tests beside each) and the
//! plugin registry.
//!
//! Every plugin implements the extension-point traits of `corral_core::framework`
//! and reads only the immutable `&Snapshot` of the cycle (and the health view
//! attached to it).
//!
//! Invariant: depends on corral-core only; knows nothing about the engine's loop,
//! batch sessions, configuration files or Kubernetes I/O.

use std::sync::Arc;

use serde::de::DeserializeOwned;

// The core modules, imported at the root so that plugin files name them
// `crate::snapshot`, `crate::framework`, ...
#[cfg(test)]
use corral_core::testutil;
use corral_core::{
    domains, framework, health, impl_plugin, labels, pod_index, quantity, resources, snapshot,
    topology, volumes,
};

use crate::framework::Plugin;

pub mod default_binder;
pub mod dynamic_resources;
pub mod gpu_share;
pub mod ha_reserve;
pub mod helpers;
pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_affinity_index;
pub mod node_health;
pub mod node_name;
pub mod node_ports;
pub mod node_resource_topology;
pub mod node_resources_balanced;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod node_volume_limits;
pub mod pod_topology_spread;
pub mod priority_sort;
pub mod scheduling_gates;
pub mod taint_toleration;
pub mod volume_binding;
pub mod volume_restrictions;
pub mod volume_zone;

/// Builds a plugin from its (optional) `pluginConfig` args.
pub type Factory = fn(Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String>;

fn no_args<P: Plugin + Default + 'static>(
    args: Option<&serde_json::Value>,
) -> Result<Arc<dyn Plugin>, String> {
    match args {
        None | Some(serde_json::Value::Null) => Ok(Arc::new(P::default())),
        Some(serde_json::Value::Object(m)) if m.is_empty() => Ok(Arc::new(P::default())),
        Some(_) => Err("this plugin takes no args".into()),
    }
}

/// Decodes plugin args strictly (unknown fields are errors); absent args give the
/// default.
pub fn decode_args<T: DeserializeOwned + Default>(
    args: Option<&serde_json::Value>,
) -> Result<T, String> {
    match args {
        None | Some(serde_json::Value::Null) => Ok(T::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| e.to_string()),
    }
}

/// kube-scheduler in-tree plugins Corral recognises but has no plugin for, each with
/// what covers it: enabling one is accepted (a profile written for kube-scheduler
/// loads unchanged) and logged with that note. Preemption is the batch layer's (its
/// preempt and reclaim actions, with PodDisruptionBudgets and the preemption policy
/// honoured). (SchedulingGates and DynamicResources are plugins: gated pods are
/// held; pods with ResourceClaims are refused.)
pub const RECOGNISED_NOT_IMPLEMENTED: &[(&str, &str)] = &[(
    "DefaultPreemption",
    "preemption is done by the batch layer (preempt/reclaim actions)",
)];

/// Plugins kube-scheduler has removed, with the release that removed them. As
/// kube-scheduler (whose KubeSchedulerConfiguration validation rejects them in
/// `kubescheduler.config.k8s.io/v1`, "was invalid in version ..."), enabling one at
/// any extension point or giving it a `pluginConfig` is an error naming the field
/// and the plugin; naming one in a `disabled` list is harmless, as in kube. The
/// per-cloud volume limits were deprecated in v1.31 and removed in v1.32: their
/// in-tree volumes are migrated to CSI and counted by NodeVolumeLimits.
pub const REMOVED_FROM_KUBE_SCHEDULER: &[(&str, &str)] = &[
    ("AzureDiskLimits", "v1.32"),
    ("CinderLimits", "v1.32"),
    ("EBSLimits", "v1.32"),
    ("GCEPDLimits", "v1.32"),
];

/// The error for a plugin kube-scheduler has removed (see
/// [`REMOVED_FROM_KUBE_SCHEDULER`]), or `None` for any other name.
pub fn removed_from_kube_scheduler(name: &str) -> Option<String> {
    REMOVED_FROM_KUBE_SCHEDULER
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, v)| {
            format!(
                "plugin {n:?} was removed from kube-scheduler in {v} and is invalid in \
                 kubescheduler.config.k8s.io/v1; use NodeVolumeLimits, which counts \
                 in-tree volumes migrated to CSI against the CSINode limits"
            )
        })
}

/// What covers a recognised kube-scheduler plugin Corral has no plugin for.
pub fn recognised_not_implemented(name: &str) -> Option<&'static str> {
    RECOGNISED_NOT_IMPLEMENTED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, note)| *note)
}

/// Every implemented plugin by name.
pub fn registry() -> &'static [(&'static str, Factory)] {
    &[
        (priority_sort::NAME, no_args::<priority_sort::PrioritySort>),
        (
            node_unschedulable::NAME,
            no_args::<node_unschedulable::NodeUnschedulable>,
        ),
        (node_name::NAME, no_args::<node_name::NodeName>),
        (
            scheduling_gates::NAME,
            no_args::<scheduling_gates::SchedulingGates>,
        ),
        (
            dynamic_resources::NAME,
            no_args::<dynamic_resources::DynamicResources>,
        ),
        (taint_toleration::NAME, taint_toleration::factory),
        (node_affinity::NAME, node_affinity::factory),
        (node_ports::NAME, node_ports::factory),
        (node_resources_fit::NAME, node_resources_fit::factory),
        (
            node_resource_topology::NAME,
            node_resource_topology::factory,
        ),
        (gpu_share::NAME, gpu_share::factory),
        (pod_topology_spread::NAME, pod_topology_spread::factory),
        (inter_pod_affinity::NAME, inter_pod_affinity::factory),
        (
            node_resources_balanced::NAME,
            node_resources_balanced::factory,
        ),
        (image_locality::NAME, image_locality::factory),
        (volume_restrictions::NAME, volume_restrictions::factory),
        (node_volume_limits::NAME, node_volume_limits::factory),
        (volume_binding::NAME, volume_binding::factory),
        (volume_zone::NAME, volume_zone::factory),
        (node_health::NAME, node_health::factory),
        (
            default_binder::NAME,
            no_args::<default_binder::DefaultBinder>,
        ),
    ]
}

/// Looks up a plugin factory by name.
pub fn lookup(name: &str) -> Option<Factory> {
    registry().iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}
