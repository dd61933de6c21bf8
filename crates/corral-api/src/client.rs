//! The one kube client builder (scheduler, data-plane agent, loadgen).

use std::path::Path;

/// Client settings that differ between components.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// kube's transparent retries of 429/503 (up to 15, backoff up to 1000 s).
    /// The scheduler turns them off: it handles these errors itself.
    pub retry: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { retry: true }
    }
}

/// Why no client could be built; the message names the kubeconfig file.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("no kubeconfig given and {0}")]
    Infer(String),
    #[error("building Kubernetes client: {0}")]
    Build(String),
}

/// Builds a client from a kubeconfig file, or infers one (in-cluster service
/// account, `KUBECONFIG`, `~/.kube/config`) when `kubeconfig` is `None`.
pub async fn client(
    kubeconfig: Option<&Path>,
    opts: ClientOptions,
) -> Result<kube::Client, ClientError> {
    let mut config = match kubeconfig {
        Some(p) => {
            let err = |e: &dyn std::fmt::Display| ClientError::Kubeconfig {
                path: p.display().to_string(),
                message: e.to_string(),
            };
            let kc = kube::config::Kubeconfig::read_from(p).map_err(|e| err(&e))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| err(&e))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| ClientError::Infer(e.to_string()))?,
    };
    if !opts.retry {
        config.default_retry = false;
    }
    kube::Client::try_from(config).map_err(|e| ClientError::Build(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_kubeconfig_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kc.yaml");
        std::fs::write(&p, "apiVersion: v1\nkind: Config\nclusters: 7\n").unwrap();
        let Err(e) = client(Some(&p), ClientOptions::default()).await else {
            panic!("a malformed kubeconfig built a client");
        };
        let e = e.to_string();
        assert!(
            e.starts_with(&format!("kubeconfig {}:", p.display())),
            "{e}"
        );
        let missing = dir.path().join("absent.yaml");
        let Err(e) = client(Some(&missing), ClientOptions::default()).await else {
            panic!("a missing kubeconfig built a client");
        };
        let e = e.to_string();
        assert!(e.contains("absent.yaml"), "{e}");
    }
}
