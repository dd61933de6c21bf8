//! scheduler-plugins' (coscheduling) `scheduling.x-k8s.io/v1alpha1` PodGroup.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// The desired behaviour of a coscheduling pod group.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "scheduling.x-k8s.io",
    version = "v1alpha1",
    kind = "PodGroup",
    plural = "podgroups",
    singular = "podgroup",
    namespaced,
    shortname = "pg",
    shortname = "pgs",
    status = "PodGroupStatus",
    doc = "PodGroup (coscheduling) groups pods that must start together.",
    label("app.kubernetes.io/part-of", "corral"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "MinMember", type_ = "integer", json_path = ".spec.minMember"),
    printcolumn(name = "Running", type_ = "integer", json_path = ".status.running"),
    printcolumn(name = "Succeeded", type_ = "integer", json_path = ".status.succeeded"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
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
    /// Minimal number of members to start the group (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_member: Option<i32>,
    /// Minimal resources to start the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::resource_list")]
    pub min_resources: Option<BTreeMap<String, Quantity>>,
    /// How long members wait for the rest of the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_timeout_seconds: Option<i32>,
}

/// The observed state of a coscheduling pod group.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodGroupStatus {
    /// Current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// UID of the workload that occupies the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occupied_by: Option<String>,
    /// Members running.
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub running: i32,
    /// Members succeeded.
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub succeeded: i32,
    /// Members failed.
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub failed: i32,
    /// When the group started scheduling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::date_time")]
    pub schedule_start_time: Option<Time>,
}
