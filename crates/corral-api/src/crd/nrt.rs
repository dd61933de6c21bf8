//! NodeResourceTopology (`topology.node.k8s.io/v1alpha2`, the Topology-aware
//! Scheduling work group's API, as NFD / resource-topology-exporter publish it):
//! per-node NUMA zones with capacity/allocatable/available per resource. The object
//! has no `spec`: its fields sit at the root.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// The fields of a NodeResourceTopology (at the object's root).
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "topology.node.k8s.io",
    version = "v1alpha2",
    kind = "NodeResourceTopology",
    plural = "noderesourcetopologies",
    singular = "noderesourcetopology",
    shortname = "node-res-topo",
    no_spec,
    doc = "NodeResourceTopology describes a node's resources and their topology (NUMA zones).",
    label("app.kubernetes.io/part-of", "corral"),
    crates(
        kube_core = ::kube_core,
        k8s_openapi = ::k8s_openapi,
        schemars = ::schemars,
        serde = ::serde,
        serde_json = ::serde_json
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodeResourceTopologyFields {
    /// Deprecated: the kubelet's Topology Manager policy; use `attributes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_policies: Vec<String>,
    /// The zones (NUMA nodes, sockets, ...).
    pub zones: Vec<Zone>,
    /// Node-level attributes (`topologyManagerPolicy`, `topologyManagerScope`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeInfo>,
}

/// A topology zone, e.g. a NUMA node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct Zone {
    pub name: String,
    pub r#type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Distances to other zones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub costs: Vec<CostInfo>,
    /// Zone attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeInfo>,
    /// Resources of the zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceInfo>,
}

/// One resource of a zone.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct ResourceInfo {
    /// Resource name.
    pub name: String,
    /// Total amount in the zone.
    #[schemars(schema_with = "schema::quantity")]
    pub capacity: Quantity,
    /// Amount pods may use.
    #[schemars(schema_with = "schema::quantity")]
    pub allocatable: Quantity,
    /// Allocatable minus what running pods reserve.
    #[schemars(schema_with = "schema::quantity")]
    pub available: Quantity,
}

/// Cost (distance) to another zone.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct CostInfo {
    pub name: String,
    pub value: i64,
}

/// A name/value attribute.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct AttributeInfo {
    pub name: String,
    pub value: String,
}
