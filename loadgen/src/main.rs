//! `corral-loadgen`: workload generators for Corral.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use corral_loadgen::cluster;

use corral_loadgen::net;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load and workload generator for Corral.
#[derive(Debug, Parser)]
#[command(name = "corral-loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write Kubernetes manifests (Nodes, Pods, Namespaces, PriorityClasses) for a synthetic cluster.
    Cluster(cluster::Args),
    /// Create pods at a rate against an API server; report creation→bind latency.
    K8s(corral_loadgen::k8s::Args),
    /// Network traffic generator/receiver (TCP bulk, UDP at a rate, request/response RTT).
    Net(net::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Cluster(args) => cluster::run(&args),
        Command::K8s(args) => corral_loadgen::k8s::run(&args),
        Command::Net(args) => net::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral-loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_subcommand() {
        let cli = Cli::try_parse_from([
            "corral-loadgen",
            "cluster",
            "--nodes",
            "10",
            "--pods",
            "20",
            "--profile",
            "spread",
            "--seed",
            "7",
            "--out",
            "/tmp/x",
        ])
        .expect("valid arguments");
        let Command::Cluster(args) = cli.command else {
            panic!("expected the cluster subcommand");
        };
        assert_eq!(args.nodes, 10);
        assert_eq!(args.pods, 20);
        assert_eq!(args.running, 0);
        assert_eq!(args.seed, 7);
        assert_eq!(args.profile, cluster::Profile::Spread);
    }

    #[test]
    fn rejects_bad_arguments() {
        for bad in [
            &[
                "corral-loadgen",
                "cluster",
                "--nodes",
                "x",
                "--pods",
                "1",
                "--out",
                "d",
            ][..],
            &[
                "corral-loadgen",
                "cluster",
                "--nodes",
                "-1",
                "--pods",
                "1",
                "--out",
                "d",
            ],
            &["corral-loadgen", "cluster", "--nodes", "1", "--pods", "1"],
            &[
                "corral-loadgen",
                "cluster",
                "--nodes",
                "1",
                "--pods",
                "1",
                "--out",
                "d",
                "--profile",
                "bogus",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} should fail");
        }
    }
}
