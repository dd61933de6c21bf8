//! The extender protocol's wire types (`k8s.io/kube-scheduler/extender/v1`) and
//! their case-insensitive decoding (see the module docs of [`super`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// MaxExtenderPriority.
pub const MAX_EXTENDER_PRIORITY: i64 = 10;

/// ExtenderArgs.
#[derive(Debug, Clone, Deserialize)]
pub struct ExtenderArgs {
    pub pod: Option<Pod>,
    #[serde(default)]
    pub nodes: Option<NodeList>,
    #[serde(default)]
    pub nodenames: Option<Vec<String>>,
}

/// A v1 NodeList (only `items` is used).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeList {
    #[serde(
        default,
        rename = "apiVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub items: Vec<Node>,
}

/// ExtenderFilterResult.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtenderFilterResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Value>,
    #[serde(default, rename = "nodenames", skip_serializing_if = "Option::is_none")]
    pub node_names: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_nodes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// HostPriority.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostPriority {
    pub host: String,
    pub score: i64,
}

/// ExtenderBindingArgs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct ExtenderBindingArgs {
    pub podname: String,
    pub podnamespace: String,
    #[serde(default)]
    pub poduid: String,
    pub node: String,
}

/// ExtenderBindingResult.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExtenderBindingResult {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// MetaPod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetaPod {
    pub uid: String,
}

/// MetaVictims.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetaVictims {
    pub pods: Vec<MetaPod>,
    #[serde(rename = "numPDBViolations")]
    pub num_pdb_violations: i64,
}

/// Victims (full pods).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct Victims {
    #[serde(default)]
    pub pods: Vec<Pod>,
    #[serde(default)]
    pub numpdbviolations: i64,
}

/// Lower-cased MetaVictims as received.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct MetaVictimsIn {
    #[serde(default)]
    pub pods: Vec<MetaPodIn>,
    #[serde(default)]
    pub numpdbviolations: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetaPodIn {
    #[serde(alias = "UID", alias = "Uid")]
    pub uid: String,
}

/// ExtenderPreemptionArgs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub struct ExtenderPreemptionArgs {
    pub pod: Option<Pod>,
    #[serde(default)]
    pub nodenametovictims: Option<BTreeMap<String, Victims>>,
    #[serde(default)]
    pub nodenametometavictims: Option<BTreeMap<String, MetaVictimsIn>>,
}

/// ExtenderPreemptionResult.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtenderPreemptionResult {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_name_to_meta_victims: BTreeMap<String, MetaVictims>,
}

/// Lower-cases the keys of the protocol envelope (not of the Kubernetes objects in
/// it, which have real JSON tags): Go's decoder matches field names case-insensitively.
fn lower_envelope(v: Value, depth: usize, object_keys: &[&str]) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let lk = k.to_ascii_lowercase();
                    let v = if object_keys.contains(&lk.as_str()) || depth == 0 {
                        v
                    } else {
                        lower_envelope(v, depth - 1, object_keys)
                    };
                    (lk, v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.into_iter()
                .map(|v| lower_envelope(v, depth, object_keys))
                .collect(),
        ),
        other => other,
    }
}

/// Parses a protocol body, naming the problem for the 400 answer.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, String> {
    corral_limits::check_json(
        body,
        corral_limits::MAX_NESTING_DEPTH,
        corral_limits::MAX_EXTENDER_BODY_BYTES,
    )
    .map_err(|e| format!("{what}: {e}"))?;
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("{what}: invalid JSON: {e}"))?;
    if !v.is_object() {
        return Err(format!("{what}: expected a JSON object"));
    }
    // Kubernetes objects inside the envelope keep their keys.
    let v = lower_envelope(v, 4, &["pod", "nodes", "items", "pods"]);
    serde_json::from_value(v).map_err(|e| format!("{what}: {e}"))
}
