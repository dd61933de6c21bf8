//! `corral-scheduler extender`: flags, start-up (configuration, client, caches) and
//! the server with graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::*;

/// `corral-scheduler extender`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExtenderCli {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8888")]
    pub listen: SocketAddr,
    /// KubeSchedulerConfiguration; the first profile is used.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// kubeconfig for /bind, the node/pod cache (nodeCacheCapable mode) and gang
    /// admission (PodGroup watches); in a pod, in-cluster credentials are used.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// On SIGTERM/SIGINT: how long requests in progress (e.g. /bind) may take
    /// before the process exits (Go duration, e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = corral_api::duration::parse_positive)]
    pub shutdown_grace_period: Duration,
}

/// Entry point of `corral-scheduler extender`.
pub fn main(cli: &ExtenderCli) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corral-scheduler: error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(cli.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral-scheduler: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: ExtenderCli) -> anyhow::Result<()> {
    let mut file_kubeconfig = None;
    let fws = match &cli.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("config {}: {e}", p.display()))?;
            // A Volcano scheduler configuration (its profile), or a
            // KubeSchedulerConfiguration.
            let (cfg, _) = crate::batch::volcano_conf::load_any(&text, &p.display().to_string())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            file_kubeconfig = crate::k8s::settings::apply_extender(&cfg, &p.display().to_string())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            cfg.build()?
        }
        None => crate::config::default_frameworks(),
    };
    let fw = fws
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no profile configured"))?;
    let mut ext = Extender::new(fw);
    let mut _tasks = Vec::new();
    // A kubeconfig, else in-cluster credentials when running in a pod.
    let client = match cli.kubeconfig.as_ref().or(file_kubeconfig.as_ref()) {
        Some(p) => Some(crate::k8s::client(Some(p)).await?),
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            Some(crate::k8s::client(None).await?)
        }
        None => None,
    };
    if let Some(client) = client {
        ext.client = Some(client.clone());
        if let Ok(mut g) = ext.gangs.lock() {
            g.active = true;
        }
        let ext = Arc::new(ext);
        _tasks = cache::spawn_snapshot_cache(client.clone(), ext.clone());
        _tasks.extend(crate::k8s::volumes::spawn_for_extender(
            &client,
            ext.clone(),
        ));
        _tasks.extend(cache::spawn_gang_watches(client, ext.clone()));
        let r = listen(cli.listen, ext, cli.shutdown_grace_period).await;
        for t in &_tasks {
            t.abort();
        }
        return r;
    }
    listen(cli.listen, Arc::new(ext), cli.shutdown_grace_period).await
}

/// Serves until SIGTERM/SIGINT, then stops accepting and lets requests in progress
/// finish (at most `grace`).
async fn listen(addr: SocketAddr, ext: Arc<Extender>, grace: Duration) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("listen {addr}: {e}"))?;
    eprintln!("corral-scheduler extender listening on {addr}");
    let lim = crate::http_server::ServerLimits {
        max_body_bytes: corral_limits::MAX_EXTENDER_BODY_BYTES,
        ..Default::default()
    };
    let signal = async {
        let s = crate::shutdown::signal().await;
        tracing::info!("{s}: shutting down (grace {grace:?})");
    };
    crate::http_server::serve_until(listener, router(ext), lim, signal, grace).await?;
    Ok(())
}
