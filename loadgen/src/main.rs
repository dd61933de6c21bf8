mod net;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "corral-loadgen", about = "Corral load and traffic generator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// network traffic generator/receiver (TCP bulk, UDP at a rate, RTT)
    Net(net::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Net(a) => net::run(a),
    }
}
