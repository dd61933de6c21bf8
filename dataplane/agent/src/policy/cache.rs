//! The policy inputs as last applied by a source (today: the Kubernetes
//! source), cached in the agent's state dir so that a restarted agent
//! enforces them before its source has synced. Below both the agent (which
//! reads the cache at start) and the sources (which write it), so neither
//! imports the other for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::tiers::{NodeInfo, TierObject};
use super::{Labels, PodInfo, source};

/// Last applied Kubernetes inputs, in the agent's state dir.
pub const CACHE_FILE: &str = "kube-policy-inputs.json";

/// The policy inputs as applied (and cached).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub policies: Vec<NetworkPolicy>,
    pub pods: Vec<PodInfo>,
    pub namespaces: BTreeMap<String, Labels>,
    #[serde(default)]
    pub tiers: Vec<TierObject>,
    #[serde(default)]
    pub nodes: Vec<NodeInfo>,
    pub errors: Vec<String>,
    /// Service frontends (older caches have none)
    #[serde(default)]
    pub services: Vec<crate::services::Frontend>,
    /// Services and EndpointSlices for `--kube-proxy-replacement`
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lb_services: Vec<k8s_openapi::api::core::v1::Service>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoint_slices: Vec<k8s_openapi::api::discovery::v1::EndpointSlice>,
}

impl Inputs {
    pub fn into_manifests(self) -> source::Manifests {
        source::Manifests {
            policies: self.policies,
            pods: self.pods,
            namespaces: self.namespaces,
            tiers: self.tiers,
            nodes: self.nodes,
            errors: self.errors,
            route_nodes: Vec::new(),
            services: self.services,
            lb_services: self.lb_services,
            endpoint_slices: self.endpoint_slices,
        }
    }

    pub fn from_manifests(m: &source::Manifests) -> Inputs {
        Inputs {
            policies: m.policies.clone(),
            pods: m.pods.clone(),
            namespaces: m.namespaces.clone(),
            tiers: m.tiers.clone(),
            nodes: m.nodes.clone(),
            errors: m.errors.clone(),
            services: m.services.clone(),
            lb_services: m.lb_services.clone(),
            endpoint_slices: m.endpoint_slices.clone(),
        }
    }
}

fn cache_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CACHE_FILE)
}

/// Writes the cache atomically (tmp + rename).
pub fn save_cache(state_dir: &Path, m: &source::Manifests) -> Result<()> {
    let p = cache_path(state_dir);
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&Inputs::from_manifests(m))?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))?;
    Ok(())
}

/// The cached inputs, if any. A corrupt cache is reported and ignored.
pub fn load_cache(state_dir: &Path) -> Option<source::Manifests> {
    let p = cache_path(state_dir);
    let bytes = std::fs::read(&p).ok()?;
    match serde_json::from_slice::<Inputs>(&bytes) {
        Ok(i) => Some(i.into_manifests()),
        Err(e) => {
            warn!(file = %p.display(), error = %e, "ignoring unreadable policy cache");
            None
        }
    }
}

/// Removes the cache (the agent runs without Kubernetes).
pub fn remove_cache(state_dir: &Path) {
    let _ = std::fs::remove_file(cache_path(state_dir));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_round_trip() {
        let d = tempfile::tempdir().unwrap();
        assert!(load_cache(d.path()).is_none());
        let mut m = source::Manifests::default();
        source::parse_text(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}}\n",
            "t",
            &mut m,
        );
        m.namespaces.insert("x".into(), Labels::new());
        save_cache(d.path(), &m).unwrap();
        let back = load_cache(d.path()).unwrap();
        assert_eq!(Inputs::from_manifests(&back), Inputs::from_manifests(&m));
        std::fs::write(d.path().join(CACHE_FILE), "{").unwrap();
        assert!(load_cache(d.path()).is_none(), "corrupt cache ignored");
        remove_cache(d.path());
        assert!(load_cache(d.path()).is_none());
    }
}
