//! Schemas of the Kubernetes types the CRD fields use (Quantity, ResourceList,
//! Time), written the way controller-gen writes them, so that the CRD types need no
//! `schemars` support from k8s-openapi.

use schemars::{Schema, SchemaGenerator, json_schema};

/// The pattern controller-gen puts on every `resource.Quantity`.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// A `resource.Quantity`: an integer or a quantity string.
pub fn quantity(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": true
    })
}

/// A `v1.ResourceList`: resource name → quantity.
pub fn resource_list(g: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": quantity(g),
        "description": "ResourceList is a set of (resource name, quantity) pairs."
    })
}

/// A `metav1.Time`: an RFC 3339 date-time string.
pub fn date_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "format": "date-time"})
}

/// An object whose fields the API server keeps as they are.
pub fn preserve_unknown(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}
