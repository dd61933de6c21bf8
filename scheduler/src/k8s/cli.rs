//! Command-line front ends of `corral-scheduler run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::settings::FlagOverrides;
use super::{RunArgs, RunOptions};

/// `corral-scheduler run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunCli {
    /// kubeconfig file (overrides clientConnection.kubeconfig); in-cluster
    /// configuration (or $KUBECONFIG) otherwise.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1) file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:10259")]
    pub listen: SocketAddr,
    /// Client QPS for writes (binds, status, events); 0 = unlimited. Overrides
    /// clientConnection.qps; default 5000.
    #[arg(long)]
    pub kube_api_qps: Option<f64>,
    /// Client burst for writes. Overrides clientConnection.burst; default 10000.
    #[arg(long)]
    pub kube_api_burst: Option<u32>,
    /// Concurrent binding requests.
    #[arg(long, default_value_t = 256)]
    pub bind_concurrency: usize,
    /// Pods per scheduling batch.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Enable Lease leader election (only the leader schedules and binds); the
    /// --leader-elect-* flags override the configuration's leaderElection when given.
    /// Default true.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub leader_elect: Option<bool>,
    /// Namespace of the Lease (default kube-system).
    #[arg(long)]
    pub leader_elect_resource_namespace: Option<String>,
    /// Name of the Lease (default corral-scheduler).
    #[arg(long)]
    pub leader_elect_resource_name: Option<String>,
    /// Identity in the Lease; defaults to $POD_NAME or the host name.
    #[arg(long)]
    pub leader_elect_identity: Option<String>,
    /// How long a standby waits after the last observed renewal before taking the
    /// Lease over (Go duration; default 15s).
    #[arg(long, value_parser = corral_api::duration::parse_positive)]
    pub leader_elect_lease_duration: Option<Duration>,
    /// How long the leader keeps retrying to renew before it stops leading
    /// (default 10s).
    #[arg(long, value_parser = corral_api::duration::parse_positive)]
    pub leader_elect_renew_deadline: Option<Duration>,
    /// Interval between acquire/renew attempts (default 2s).
    #[arg(long, value_parser = corral_api::duration::parse_positive)]
    pub leader_elect_retry_period: Option<Duration>,
    /// How often a CRD that is not installed (PodGroup, Queue,
    /// NodeResourceTopology) is looked for again.
    #[arg(long, default_value_t = 60)]
    pub crd_discovery_interval_seconds: u64,
    /// NodeHealth: Prometheus text endpoint per node, `{node}` = node name (e.g.
    /// `http://{node}:9100/metrics`), scraped every --health-interval.
    #[arg(long)]
    pub health_scrape: Option<String>,
    /// NodeHealth: model tick and scrape interval (Go duration: 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = corral_api::duration::parse_positive)]
    pub health_interval: Duration,
    /// NodeHealth: timeout of one scrape request.
    #[arg(long, default_value = "2s", value_parser = corral_api::duration::parse_positive)]
    pub health_scrape_timeout: Duration,
    /// NodeHealth: scrape requests in flight at most.
    #[arg(long, default_value_t = 32)]
    pub health_scrape_concurrency: usize,
    /// NodeHealth: file with a bearer token sent to the scrape endpoints
    /// (`Authorization: Bearer …`; https:// URLs are verified against the system
    /// CA roots).
    #[arg(long)]
    pub health_scrape_bearer_token_file: Option<PathBuf>,
    /// How preemption/reclaim victims are removed: `eviction` (policy/v1 Eviction;
    /// PodDisruptionBudgets are honoured) or `delete` (like kube-scheduler).
    #[arg(long, value_enum, default_value_t = super::evictor::EvictionMode::Eviction)]
    pub preemption_eviction: super::evictor::EvictionMode,
    /// On SIGTERM/SIGINT: how long in-flight binds may take before the Lease is
    /// released and the process exits (Go duration, e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = corral_api::duration::parse_positive)]
    pub shutdown_grace_period: Duration,
}

impl RunCli {
    pub fn to_args(&self) -> RunArgs {
        let identity = self.leader_elect_identity.clone().unwrap_or_else(|| {
            std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| format!("corral-{}", std::process::id()))
        });
        RunArgs {
            flags: FlagOverrides {
                kubeconfig: self.kubeconfig.clone(),
                qps: self.kube_api_qps,
                burst: self.kube_api_burst,
                leader_elect: self.leader_elect,
                resource_namespace: self.leader_elect_resource_namespace.clone(),
                resource_name: self.leader_elect_resource_name.clone(),
                lease_duration: self.leader_elect_lease_duration,
                renew_deadline: self.leader_elect_renew_deadline,
                retry_period: self.leader_elect_retry_period,
                identity,
            },
            config: self.config.clone(),
            listen: self.listen,
            opts: RunOptions {
                batch_size: self.batch_size.max(1),
                bind_concurrency: self.bind_concurrency.max(1),
                crd_retry: Duration::from_secs(self.crd_discovery_interval_seconds.max(1)),
                eviction: self.preemption_eviction,
                ..RunOptions::default()
            },
            health: crate::health::live::HealthFlags {
                scrape: self.health_scrape.clone(),
                interval: self.health_interval,
                scrape_timeout: self.health_scrape_timeout,
                scrape_concurrency: self.health_scrape_concurrency.max(1),
                scrape_token_file: self.health_scrape_bearer_token_file.clone(),
            },
            shutdown_grace: self.shutdown_grace_period,
        }
    }
}

/// Entry point of `corral-scheduler run`.
pub fn main(cli: &RunCli) -> ExitCode {
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
    match rt.block_on(super::run(cli.to_args())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral-scheduler: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
