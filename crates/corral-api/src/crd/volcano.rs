//! Volcano's `scheduling.volcano.sh/v1beta1` Queue and PodGroup and
//! `topology.volcano.sh/v1alpha1` HyperNode: the fields and types of Volcano's API
//! (`volcano.sh/apis`), so Volcano YAML applies unchanged and Volcano's own
//! controllers work against these CRDs.
//!
//! Differences from Volcano's generated CRDs, on purpose: the Queue's `weight`
//! (default 1, 1..=65535) and `reclaimable` (default true) and the PodGroup's
//! `queue` (default `default`) carry defaults and bounds that Volcano's admission
//! webhook applies — Corral installs no webhook, so the CRD does it. Field
//! descriptions are Corral's.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// A `v1.ResourceList`.
pub type ResourceList = BTreeMap<String, Quantity>;

fn default_weight() -> i32 {
    1
}

fn default_true() -> Option<bool> {
    Some(true)
}

fn default_queue() -> String {
    "default".into()
}

/// The desired behaviour of a queue.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "scheduling.volcano.sh",
    version = "v1beta1",
    kind = "Queue",
    plural = "queues",
    singular = "queue",
    shortname = "q",
    shortname = "queue-v1beta1",
    status = "QueueStatus",
    doc = "Queue is a tenant's share of the cluster: weight, capability, deserved and guaranteed resources.",
    label("app.kubernetes.io/part-of", "corral"),
    printcolumn(name = "STATE", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "WEIGHT", type_ = "integer", json_path = ".spec.weight"),
    printcolumn(name = "PARENT", type_ = "string", json_path = ".spec.parent"),
    crates(
        kube_core = ::kube_core,
        k8s_openapi = ::k8s_openapi,
        schemars = ::schemars,
        serde = ::serde,
        serde_json = ::serde_json
    )
)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// Share of the cluster relative to the other queues' weights.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 1, max = 65535))]
    pub weight: i32,
    /// Upper limit of the resources the queue's jobs may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::resource_list")]
    pub capability: Option<ResourceList>,
    /// Whether other queues may reclaim resources this queue uses beyond its share.
    #[serde(default = "default_true", skip_serializing_if = "Option::is_none")]
    pub reclaimable: Option<bool>,
    /// Clusters the queue's jobs may be dispatched to (multi-cluster).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extend_clusters: Vec<Cluster>,
    /// Resources reserved for the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guarantee: Option<Guarantee>,
    /// Node groups the queue's pods must or should (not) run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Queue type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    /// Parent queue (hierarchical queues).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Resources the queue deserves: lent to others while idle, reclaimed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::resource_list")]
    pub deserved: Option<ResourceList>,
    /// Higher values are scheduled first and reclaimed from last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

/// A cluster a queue's jobs may go to.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Resources of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::resource_list")]
    pub capacity: Option<ResourceList>,
}

/// Resources reserved for a queue.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Guarantee {
    /// The reserved amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::resource_list")]
    pub resource: Option<ResourceList>,
}

/// Node-group (anti-)affinity of a queue.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    /// Node groups the queue's pods go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_group_affinity: Option<NodeGroupAffinity>,
    /// Node groups the queue's pods avoid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_group_anti_affinity: Option<NodeGroupAffinity>,
}

/// Required and preferred node groups.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroupAffinity {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_during_scheduling_ignored_during_execution: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_during_scheduling_ignored_during_execution: Vec<String>,
}

/// The observed state of a queue.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// Open, Closed, Closing or Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// PodGroups of the queue in phase Unknown.
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub unknown: i32,
    /// PodGroups of the queue in phase Pending.
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub pending: i32,
    /// PodGroups of the queue in phase Running.
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub running: i32,
    /// PodGroups of the queue in phase Inqueue.
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub inqueue: i32,
    /// PodGroups of the queue in phase Completed.
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub completed: i32,
    /// Resources held for the queue on locked nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<Reservation>,
    /// Resources allocated to the queue's pods.
    #[schemars(schema_with = "schema::resource_list")]
    pub allocated: ResourceList,
}

/// Resource reservation of a queue.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// Nodes locked for the queue.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// Idle resources on the locked nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::resource_list")]
    pub resource: Option<ResourceList>,
}

/// The desired behaviour of a pod group.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "scheduling.volcano.sh",
    version = "v1beta1",
    kind = "PodGroup",
    plural = "podgroups",
    singular = "podgroup",
    namespaced,
    shortname = "pg",
    shortname = "podgroup-v1beta1",
    status = "PodGroupStatus",
    doc = "PodGroup is a collection of Pods scheduled all-or-nothing (gang).",
    label("app.kubernetes.io/part-of", "corral"),
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "minMember", type_ = "integer", json_path = ".spec.minMember"),
    printcolumn(name = "RUNNINGS", type_ = "integer", json_path = ".status.running"),
    printcolumn(name = "AGE", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "QUEUE",
        type_ = "string",
        json_path = ".spec.queue",
        priority = 1
    ),
    crates(
        kube_core = ::kube_core,
        k8s_openapi = ::k8s_openapi,
        schemars = ::schemars,
        serde = ::serde,
        serde_json = ::serde_json
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PodGroupSpec {
    /// Minimal number of members to run the group; 0 = not a gang.
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub min_member: i32,
    /// Minimal number of pods per task (role) of the group.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub min_task_member: BTreeMap<String, i32>,
    /// The queue the group takes resources from.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// PriorityClass of the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Minimal resources to run the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::resource_list")]
    pub min_resources: Option<ResourceList>,
    /// Network topology constraint (HyperNodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_topology: Option<NetworkTopologySpec>,
}

/// Network topology mode.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkTopologyMode {
    /// Never across `highestTierAllowed`.
    Hard,
    /// Prefer one HyperNode.
    Soft,
}

fn default_mode() -> Option<NetworkTopologyMode> {
    Some(NetworkTopologyMode::Hard)
}

fn default_tier() -> Option<i32> {
    Some(1)
}

/// A PodGroup's network topology constraint.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkTopologySpec {
    /// hard: the job never crosses `highestTierAllowed`; soft: best effort.
    #[serde(default = "default_mode", skip_serializing_if = "Option::is_none")]
    pub mode: Option<NetworkTopologyMode>,
    /// Highest HyperNode tier the job may span.
    #[serde(default = "default_tier", skip_serializing_if = "Option::is_none")]
    pub highest_tier_allowed: Option<i32>,
}

/// The observed state of a pod group.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodGroupStatus {
    /// Pending, Inqueue, Running, Unknown or Completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Conditions (Scheduled, Unschedulable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PodGroupCondition>,
    /// Members running.
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub running: i32,
    /// Members succeeded.
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub succeeded: i32,
    /// Members failed.
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub failed: i32,
}

/// A condition of a pod group.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodGroupCondition {
    /// Scheduled or Unschedulable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    /// True, False or Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// ID of the transition.
    #[serde(
        rename = "transitionID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub transition_id: Option<String>,
    /// When the condition last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::date_time")]
    pub last_transition_time: Option<Time>,
    /// One-word CamelCase reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
