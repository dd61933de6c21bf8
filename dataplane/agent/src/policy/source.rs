//! Static policy source: a directory of Kubernetes YAML/JSON manifests
//! (NetworkPolicy, Pod, Namespace, Node, Service, EndpointSlice; multi-document files
//! allowed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Deserialize;

use super::tiers::{self, NodeInfo, TierObject};
use super::{Labels, PodInfo};
use crate::api::NamedPort;

#[derive(Clone, Debug, Default)]
pub struct Manifests {
    pub policies: Vec<NetworkPolicy>,
    pub pods: Vec<PodInfo>,
    pub namespaces: BTreeMap<String, Labels>,
    /// ClusterNetworkPolicy / AdminNetworkPolicy / BaselineAdminNetworkPolicy
    pub tiers: Vec<TierObject>,
    /// Node objects as `nodes` peers of tier policies (labels, addresses)
    pub nodes: Vec<NodeInfo>,
    pub errors: Vec<String>,
    /// Node objects (pod CIDRs and InternalIPs, for multi-node routing and
    /// the CNI config); the same objects as `nodes` (tier peers), another view
    pub route_nodes: Vec<crate::routing::NodeInfo>,
    /// Service frontends (egress verdict deferred past the DNAT)
    pub services: Vec<crate::services::Frontend>,
    /// Services and EndpointSlices as given (`--kube-proxy-replacement`:
    /// `services::lb_table` turns them into frontend → backends)
    pub lb_services: Vec<k8s_openapi::api::core::v1::Service>,
    pub endpoint_slices: Vec<k8s_openapi::api::discovery::v1::EndpointSlice>,
}

/// Identifies the directory's content; changes when a file changes.
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    v.sort();
    Ok(v)
}

pub fn fingerprint(dir: &Path) -> Fingerprint {
    files(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).ok();
            let len = m.as_ref().map(|m| m.len()).unwrap_or(0);
            let mt = m.and_then(|m| m.modified().ok());
            (p, len, mt)
        })
        .collect()
}

pub fn pod_info(pod: &Pod) -> PodInfo {
    let mut ips: Vec<std::net::IpAddr> = Vec::new();
    if let Some(st) = &pod.status {
        for ip in st.pod_ips.iter().flatten() {
            if let Ok(a) = ip.ip.parse() {
                ips.push(a);
            }
        }
        if let Some(a) = st.pod_ip.as_ref().and_then(|s| s.parse().ok())
            && !ips.contains(&a)
        {
            ips.push(a);
        }
    }
    let mut ports = Vec::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        for p in c.ports.iter().flatten() {
            if let (Some(name), Ok(port)) = (&p.name, u16::try_from(p.container_port)) {
                ports.push(NamedPort {
                    name: name.clone(),
                    port,
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                });
            }
        }
    }
    PodInfo {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ips,
        ports,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Kind {
    kind: Option<String>,
    api_version: Option<String>,
}

/// A Node as a policy peer: labels and its InternalIP/ExternalIP addresses.
pub fn node_info(n: &Node) -> NodeInfo {
    let ips = n
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    NodeInfo {
        name: n.metadata.name.clone().unwrap_or_default(),
        labels: n.metadata.labels.clone().unwrap_or_default(),
        ips,
    }
}

/// Decodes a tier object of `kind` (its apiVersion must be the one Corral
/// implements for that kind); Ok(None) when the kind is not a tier kind.
pub fn decode_tier(
    kind: &str,
    api_version: &str,
    value: serde_json::Value,
) -> Result<Option<TierObject>, String> {
    let want = match kind {
        "ClusterNetworkPolicy" => "v1alpha2",
        "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy" => "v1alpha1",
        _ => return Ok(None),
    };
    let want = format!("{}/{want}", tiers::GROUP);
    if api_version != want {
        // other groups (e.g. Antrea's crd.antrea.io ClusterNetworkPolicy)
        // are not ours
        if !api_version.starts_with(&format!("{}/", tiers::GROUP)) {
            return Ok(None);
        }
        return Err(format!(
            "apiVersion {api_version:?} is not supported for {kind} (use {want})"
        ));
    }
    let r = match kind {
        "ClusterNetworkPolicy" => serde_json::from_value(value).map(TierObject::Cnp),
        "AdminNetworkPolicy" => serde_json::from_value(value).map(TierObject::Anp),
        _ => serde_json::from_value(value).map(TierObject::Banp),
    };
    r.map(Some).map_err(|e| e.to_string())
}

/// Parses one manifest text; `origin` names it in errors.
pub fn parse_text(text: &str, origin: &str, out: &mut Manifests) {
    // Linear pre-scan: deep nesting fails here, not in the parser's recursion.
    if let Err(e) = corral_limits::check_yaml(
        text,
        corral_limits::MAX_NESTING_DEPTH,
        corral_limits::MAX_MANIFEST_BYTES,
    ) {
        out.errors.push(format!("{origin}: {e}"));
        return;
    }
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = match serde_yaml_ng::Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                out.errors
                    .push(format!("{origin} document {i}: invalid YAML: {e}"));
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        let (kind, api_version) = serde_yaml_ng::from_value::<Kind>(value.clone())
            .map(|k| {
                (
                    k.kind.unwrap_or_default(),
                    k.api_version.unwrap_or_default(),
                )
            })
            .unwrap_or_default();
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("<unnamed>")
            .to_string();
        let id = format!("{origin} document {i} ({kind} {name})");
        match kind.as_str() {
            "NetworkPolicy" => match serde_yaml_ng::from_value::<NetworkPolicy>(value) {
                Ok(p) => out.policies.push(p),
                Err(e) => out.errors.push(format!("{id}: {e} (skipped)")),
            },
            "Pod" => match serde_yaml_ng::from_value::<Pod>(value) {
                Ok(p) => out.pods.push(pod_info(&p)),
                Err(e) => out.errors.push(format!("{id}: {e} (skipped)")),
            },
            "Namespace" => match serde_yaml_ng::from_value::<Namespace>(value) {
                Ok(n) => {
                    out.namespaces.insert(
                        n.metadata.name.clone().unwrap_or_default(),
                        n.metadata.labels.clone().unwrap_or_default(),
                    );
                }
                Err(e) => out.errors.push(format!("{id}: {e} (skipped)")),
            },
            // one Node object, two views: tier peers (labels, addresses) and
            // routing (pod CIDRs, InternalIPs; invalid CIDRs skip it there)
            "Node" => match serde_yaml_ng::from_value::<Node>(value) {
                Ok(n) => {
                    out.nodes.push(node_info(&n));
                    match crate::routing::NodeInfo::from_node(&n) {
                        Ok(r) => out.route_nodes.push(r),
                        Err(e) => out.errors.push(format!("{id}: {e} (skipped)")),
                    }
                }
                Err(e) => out.errors.push(format!("{id}: {e} (skipped)")),
            },
            "Service" => {
                match serde_yaml_ng::from_value::<k8s_openapi::api::core::v1::Service>(value)
                    .map_err(|e| e.to_string())
                    .and_then(|s| crate::services::frontends(&s).map(|f| (f, s)))
                {
                    Ok((f, svc)) => {
                        out.services.extend(f);
                        out.lb_services.push(svc);
                    }
                    Err(e) => out.errors.push(format!("{id}: {e} (skipped)")),
                }
            }
            "EndpointSlice" => match serde_yaml_ng::from_value::<
                k8s_openapi::api::discovery::v1::EndpointSlice,
            >(value)
            {
                Ok(es) => out.endpoint_slices.push(es),
                Err(e) => out.errors.push(format!("{id}: {e} (skipped)")),
            },
            "ClusterNetworkPolicy" | "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy" => {
                let json = serde_yaml_ng::from_value::<serde_json::Value>(value)
                    .map_err(|e| e.to_string())
                    .and_then(|v| decode_tier(&kind, &api_version, v));
                match json {
                    Ok(Some(t)) => out.tiers.push(t),
                    Ok(None) => {}
                    Err(e) => out.errors.push(format!("{id}: {e} (skipped)")),
                }
            }
            "" => out.errors.push(format!("{id}: no kind (skipped)")),
            _ => {} // other kinds are not ours
        }
    }
}

pub fn load_dir(dir: &Path) -> Manifests {
    let mut out = Manifests::default();
    match files(dir) {
        Err(e) => out
            .errors
            .push(format!("manifests dir {}: {e}", dir.display())),
        Ok(fs) => {
            for f in fs {
                match std::fs::read_to_string(&f) {
                    Ok(t) => parse_text(&t, &f.display().to_string(), &mut out),
                    Err(e) => out.errors.push(format!("{}: {e}", f.display())),
                }
            }
        }
    }
    out
}
