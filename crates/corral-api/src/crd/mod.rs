//! The CRDs Corral reads and writes, as kube `#[derive(CustomResource)]` types with
//! schemars schemas (feature `crd`), and the generator of `deploy/crds`.
//!
//! Data flow: the types here → [`manifests`] (each type's `crd()`, normalised to
//! what controller-gen writes for the upstream Go types) → YAML files in
//! `deploy/crds` (written by `examples/crdgen.rs`; `tests/crds_in_sync.rs` fails when
//! a file differs from what the types generate).
//!
//! Invariants: the group/version/kind, scope, field names and types are the
//! upstream APIs' (Volcano's `volcano.sh/apis`, scheduler-plugins', the Topology-aware
//! Scheduling work group's NodeResourceTopology), so objects written for those
//! projects apply unchanged and their controllers work against these CRDs. The
//! scheduler itself reads these objects through its strict, field-naming decoders
//! (`corral_batch::objects`, `corral_core::topology`), not through these types.

pub mod coscheduling;
pub mod hypernode;
pub mod nrt;
pub mod schema;
pub mod volcano;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_core::CustomResourceExt;
use serde_json::{Value, json};

const GENERATED: &str = "# Generated from corral-api's CRD types (crates/corral-api/src/crd); do not edit.\n# Regenerate: cargo run -p corral-api --features crd --example crdgen\n";

/// One generated CRD file of `deploy/crds`.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// File name inside `deploy/crds` (`<group>_<plural>.yaml`, as controller-gen names them).
    pub file: String,
    /// The file's content.
    pub yaml: String,
}

/// Where a CRD comes from and when not to apply Corral's copy.
struct Source {
    crd: CustomResourceDefinition,
    note: &'static str,
    /// The upstream type has no `+kubebuilder:subresource:status`: status is part
    /// of the main resource (Volcano's PodGroup; Volcano writes it with Update).
    no_status_subresource: bool,
}

fn sources() -> Vec<Source> {
    vec![
        Source {
            crd: volcano::PodGroup::crd(),
            note: "# Same group/version/kind/schema as Volcano's PodGroup CRD (no status subresource,\n# as Volcano's), so Volcano YAML applies unchanged. Skip this file when Volcano is\n# installed (it owns the CRD).\n",
            no_status_subresource: true,
        },
        Source {
            crd: volcano::Queue::crd(),
            note: "# Same group/version/kind/schema as Volcano's Queue CRD; the weight/reclaimable\n# defaults and bounds stand in for Volcano's admission webhook. Skip when Volcano is installed.\n",
            no_status_subresource: false,
        },
        Source {
            crd: hypernode::HyperNode::crd(),
            note: "# Same group/version/kind/schema as Volcano's HyperNode CRD (network topology).\n# Skip when Volcano is installed.\n",
            no_status_subresource: false,
        },
        Source {
            crd: coscheduling::PodGroup::crd(),
            note: "# Same group/version/kind/schema as scheduler-plugins' (coscheduling) PodGroup CRD.\n# Skip when scheduler-plugins is installed.\n",
            no_status_subresource: false,
        },
        Source {
            crd: nrt::NodeResourceTopology::crd(),
            note: "# Same group/version/kind/schema as the NodeResourceTopology API v1alpha2 (published by\n# NFD or resource-topology-exporter). Skip when one of those installs it.\n",
            no_status_subresource: false,
        },
    ]
}

/// `skip_serializing_if` for counters (Go's `omitempty`; also keeps schemars from
/// writing a `default: 0` controller-gen does not write).
pub(crate) fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// What controller-gen writes and schemars/kube do not (or the other way round),
/// over the whole schema: no `nullable` on optional fields and no `title`; integral
/// bounds as integers; an
/// int-or-string's `anyOf` keeps its two types (kube's structural rewrite empties
/// them).
fn normalise_schema(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("nullable");
            m.remove("title");
            // `minimum: 1`, not `1.0` (JSONSchemaProps holds them as f64).
            for k in ["minimum", "maximum"] {
                if let Some(f) = m.get(k).and_then(Value::as_f64)
                    && f.fract() == 0.0
                    && f.abs() < 1e15
                {
                    m.insert(k.into(), json!(f as i64));
                }
            }
            if m.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
                && m.contains_key("anyOf")
            {
                m.insert(
                    "anyOf".into(),
                    json!([{"type": "integer"}, {"type": "string"}]),
                );
            }
            m.values_mut().for_each(normalise_schema);
        }
        Value::Array(a) => a.iter_mut().for_each(normalise_schema),
        _ => {}
    }
}

/// The CRD as controller-gen writes one: `listKind`; the root schema lists
/// `apiVersion`, `kind` and `metadata` and does not require `spec` (the upstream
/// Go types mark it optional).
fn normalise(crd: &mut Value) {
    let kind = crd["spec"]["names"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    crd["spec"]["names"]["listKind"] = Value::String(format!("{kind}List"));
    let Some(versions) = crd["spec"]["versions"].as_array_mut() else {
        return;
    };
    for ver in versions {
        let root = &mut ver["schema"]["openAPIV3Schema"];
        normalise_schema(root);
        if let Some(props) = root["properties"].as_object_mut() {
            props.insert(
                "apiVersion".into(),
                json!({"type": "string", "description": "The versioned schema of this object."}),
            );
            props.insert("kind".into(), json!({"type": "string", "description": "The REST resource this object represents."}));
            props.insert("metadata".into(), json!({"type": "object"}));
        }
        if let Some(obj) = root.as_object_mut() {
            let left: Vec<Value> = obj
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter(|f| f.as_str() != Some("spec"))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if left.is_empty() {
                obj.remove("required");
            } else {
                obj.insert("required".into(), Value::Array(left));
            }
        }
    }
}

/// The CRDs as the files of `deploy/crds`, in file-name order.
pub fn manifests() -> Vec<Manifest> {
    let mut out: Vec<Manifest> = sources()
        .into_iter()
        .map(|s| {
            let mut crd = s.crd;
            if s.no_status_subresource {
                for v in &mut crd.spec.versions {
                    v.subresources = None;
                }
            }
            let file = format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural);
            let mut v = serde_json::to_value(&crd).expect("a CRD serializes");
            normalise(&mut v);
            let body = serde_yaml_ng::to_string(&v).expect("JSON serializes as YAML");
            Manifest {
                file,
                yaml: format!("{GENERATED}{}{body}", s.note),
            }
        })
        .collect();
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}
