//! corral-scheduler command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corral_scheduler::simulate::{self, OutputFormat, SimulateArgs};
use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
#[command(
    name = "corral-scheduler",
    version,
    about = "Corral: a batch/queue scheduler for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Schedule the pending pods of Kubernetes manifests (files or directories) without
    /// a cluster; with no PATHS, the built-in example under examples/cluster.
    Simulate {
        /// Multi-document YAML/JSON files or directories of v1 Node, Pod, Namespace and
        /// scheduling.k8s.io/v1 PriorityClass objects.
        paths: Vec<PathBuf>,
        /// KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1) file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Output format.
        #[arg(long, short, value_enum, default_value = "table")]
        output: OutputFormat,
        /// Explain the decision for a pending pod (NAMESPACE/NAME); repeatable.
        #[arg(long, value_name = "NS/POD")]
        explain: Vec<String>,
        /// Seed for tie-breaking among equally scored nodes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Pods evaluated concurrently per batch (1 = strictly sequential).
        #[arg(long)]
        batch_size: Option<usize>,
        /// Best candidates kept per pod for the batch committer.
        #[arg(long)]
        candidates: Option<usize>,
    },
    /// Run as the cluster's scheduler: watch, schedule, bind, report, lead.
    Run(corral_scheduler::kube::cli::RunCli),
    /// Serve kube-scheduler's HTTP extender (v1) protocol.
    Extender(corral_scheduler::extender::ExtenderCli),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => corral_scheduler::kube::cli::main(&args),
        Command::Extender(args) => corral_scheduler::extender::main(&args),
        Command::Simulate {
            paths,
            config,
            output,
            explain,
            seed,
            batch_size,
            candidates,
        } => {
            for e in &explain {
                if e.split('/').count() != 2 || e.starts_with('/') || e.ends_with('/') {
                    eprintln!("corral-scheduler: error: --explain {e:?}: expected NAMESPACE/NAME");
                    return ExitCode::from(2);
                }
            }
            let args = SimulateArgs {
                paths,
                config,
                explain,
                seed,
                batch_size,
                candidates,
            };
            match simulate::run(&args, &mut |w| eprintln!("{w}")) {
                Ok(report) => {
                    let out = match output {
                        OutputFormat::Json => simulate::to_json(&report),
                        OutputFormat::Yaml => simulate::to_yaml(&report),
                        OutputFormat::Table => simulate::to_table(&report),
                    };
                    println!("{}", out.trim_end());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("corral-scheduler: error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
