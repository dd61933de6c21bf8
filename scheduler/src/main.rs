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
    /// Log format on stderr (as kube-scheduler's --logging-format).
    #[arg(long, global = true, value_enum, default_value = "text")]
    logging_format: LogFormat,
    /// Log verbosity as kube-scheduler's -v/--v (klog levels): 0 the command's
    /// default (info for run/extender, warnings for simulate), 1-2 info, 3-4 debug,
    /// 5 and more trace. RUST_LOG, when set, takes precedence.
    #[arg(short = 'v', long = "v", global = true, value_parser = clap::value_parser!(u8).range(0..=10))]
    verbosity: Option<u8>,
}

/// The tracing level for a command's default and kube-scheduler's `-v`.
fn log_level(default: &'static str, v: Option<u8>) -> &'static str {
    match v {
        None | Some(0) => default,
        Some(1..=2) => "info",
        Some(3..=4) => "debug",
        Some(_) => "trace",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
        /// Pods evaluated concurrently per batch, fixed (1 = strictly sequential);
        /// default: sized per batch by a 500 µs latency budget, at most 64.
        #[arg(long)]
        batch_size: Option<usize>,
        /// Best candidates kept per pod for the batch committer.
        #[arg(long)]
        candidates: Option<usize>,
        /// Health timeline file: replay pod arrivals with node health series
        /// (see examples/health/timeline.yaml); PATHS and --explain are not used.
        #[arg(long, value_name = "FILE")]
        timeline: Option<PathBuf>,
        /// Timeline length (e.g. 30m); overrides the file.
        #[arg(long, requires = "timeline")]
        duration: Option<String>,
        /// Timeline interval (e.g. 10s); overrides the file.
        #[arg(long, requires = "timeline")]
        step: Option<String>,
        /// Write an SVG plot of the timeline run(s).
        #[arg(long, value_name = "OUT.svg", requires = "timeline")]
        plot: Option<PathBuf>,
        /// Also run the timeline with a naive policy and print both.
        #[arg(long, value_enum, requires = "timeline")]
        compare: Option<CompareWith>,
        /// Prometheus text endpoint per node for NodeHealth, `{node}` = node name
        /// (e.g. http://{node}:9100/metrics).
        #[arg(long, value_name = "URL_TEMPLATE")]
        health_scrape: Option<String>,
        /// Batch scheduling sessions to run; evictions are applied between sessions
        /// (implies batch mode).
        #[arg(long)]
        cycles: Option<usize>,
        /// A node fails before scheduling (as if deleted): its pods (not DaemonSet or
        /// mirror pods) are re-placed in priority order before the other pending
        /// pods; repeatable. See corral.haReserve for keeping capacity for them.
        #[arg(long, value_name = "NODE")]
        fail_node: Vec<String>,
    },
    /// Run as the cluster's scheduler: watch, schedule, bind, report, lead.
    Run(corral_scheduler::k8s::cli::RunCli),
    /// Serve kube-scheduler's HTTP extender (v1) protocol.
    Extender(corral_scheduler::extender::ExtenderCli),
    /// Volcano Queues of a live cluster: state, weight, capability, allocated,
    /// PodGroups by phase.
    Queues(corral_scheduler::views::QueuesCli),
    /// Volcano PodGroups of a live cluster: queue, priority, phase, running/min,
    /// age, time to start, why waiting.
    Jobs(corral_scheduler::views::JobsCli),
    /// Why a pod of a live cluster is pending, or why on its node: simulate's
    /// --explain on a fresh snapshot listed from the API.
    Explain(corral_scheduler::views::ExplainCli),
}

/// Policies `--compare` can run next to the health-weighted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CompareWith {
    /// Threshold filter on raw values: no EWMA, no hysteresis, no slew.
    Naive,
}

fn run_timeline(
    args: simulate::timeline::TimelineArgs,
    plot: Option<PathBuf>,
    output: OutputFormat,
) -> ExitCode {
    let report = match simulate::timeline::run_all(&args, &mut |w| eprintln!("warning: {w}")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("corral-scheduler: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(p) = plot {
        let svg = match simulate::plot::render_svg(&report) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("corral-scheduler: error: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = std::fs::write(&p, svg) {
            eprintln!("corral-scheduler: error: {}: {e}", p.display());
            return ExitCode::FAILURE;
        }
    }
    let out = match output {
        OutputFormat::Json => serde_json::to_string_pretty(&report).unwrap_or_default(),
        OutputFormat::Yaml => serde_yaml_ng::to_string(&report).unwrap_or_default(),
        OutputFormat::Table => simulate::timeline::to_table(&report),
    };
    println!("{}", out.trim_end());
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The long-running commands log at info (start-up summary, leadership, shutdown);
    // the one-shot ones only warnings. RUST_LOG overrides either.
    let level = log_level(
        match cli.command {
            Command::Run(_) | Command::Extender(_) => "info",
            Command::Simulate { .. }
            | Command::Queues(_)
            | Command::Jobs(_)
            | Command::Explain(_) => "warn",
        },
        cli.verbosity,
    );
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.logging_format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
    match cli.command {
        Command::Run(args) => corral_scheduler::k8s::cli::main(&args),
        Command::Extender(args) => corral_scheduler::extender::main(&args),
        Command::Queues(args) => corral_scheduler::views::queues_main(&args),
        Command::Jobs(args) => corral_scheduler::views::jobs_main(&args),
        Command::Explain(args) => corral_scheduler::views::explain_main(&args),
        Command::Simulate {
            paths,
            config,
            output,
            explain,
            seed,
            batch_size,
            candidates,
            timeline,
            duration,
            step,
            plot,
            compare,
            health_scrape,
            cycles,
            fail_node,
        } => {
            if let Some(file) = timeline {
                let args = simulate::timeline::TimelineArgs {
                    file,
                    duration,
                    step,
                    compare_naive: compare == Some(CompareWith::Naive),
                    seed: (seed != 0).then_some(seed),
                };
                return run_timeline(args, plot, output);
            }
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
                health_scrape,
                cycles,
                fail_nodes: fail_node,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_maps_klog_levels() {
        assert_eq!(log_level("warn", None), "warn");
        assert_eq!(log_level("info", Some(0)), "info");
        assert_eq!(log_level("warn", Some(2)), "info");
        assert_eq!(log_level("info", Some(4)), "debug");
        assert_eq!(log_level("info", Some(10)), "trace");
        for args in [
            &["corral-scheduler", "-v", "4", "simulate"][..],
            &["corral-scheduler", "simulate", "--v=4"][..],
            &["corral-scheduler", "simulate", "-v4"][..],
        ] {
            let c = Cli::try_parse_from(args).expect("parses");
            assert_eq!(c.verbosity, Some(4), "{args:?}");
        }
        let e = Cli::try_parse_from(["corral-scheduler", "--v=11", "simulate"])
            .err()
            .expect("out of range");
        assert!(e.to_string().contains("--v"), "{e}");
    }
}
