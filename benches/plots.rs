//! `plots`: turns benchmark results (JSON lines) into the SVG plots shown in
//! BENCHMARKS.md.
//!
//! ```sh
//! cargo run -p corral-benches --bin plots -- benches/results/*.jsonl --out benches/plots
//! ```
//!
//! Input lines (other lines are ignored):
//! - `{"bench":"e2e", …}`: written by `benches/gang-e2e.sh` (three processes) or
//!   `cargo bench -p corral-test-apiserver --bench k8s -- e2e … --json FILE` (the
//!   `corral-loadgen k8s` report with its latency CDF and created/bound timeline,
//!   plus gang size, running pods and API latency);
//! - `{"bench":"cluster","workload":W,"nodes":N,"pods_per_second":R, …}`: one
//!   `simulate` run per workload and cluster size (`benches/scaling.sh`).
//!
//! Output: `pods_per_second_vs_nodes.svg`, `e2e_latency_cdf.svg`,
//! `gang_e2e_timeline.svg`. Of the repeats of a configuration, the run with the
//! median p99 latency is drawn.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use corral_benches::plots::{Inputs, render_all};

fn main() -> ExitCode {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut out = PathBuf::from("benches/plots");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => match args.next() {
                Some(o) => out = PathBuf::from(o),
                None => {
                    eprintln!("plots: --out needs a directory");
                    return ExitCode::FAILURE;
                }
            },
            "-h" | "--help" => {
                println!("usage: plots RESULTS.jsonl... [--out DIR]");
                return ExitCode::SUCCESS;
            }
            _ => files.push(PathBuf::from(a)),
        }
    }
    if files.is_empty() {
        eprintln!("plots: no input files (usage: plots RESULTS.jsonl... [--out DIR])");
        return ExitCode::FAILURE;
    }
    let mut inputs = Inputs::default();
    for f in &files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("plots: {}: {e}", f.display());
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = inputs.add_lines(&text, &f.display().to_string()) {
            eprintln!("plots: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("plots: {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    let svgs: BTreeMap<&str, String> = match render_all(&inputs) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("plots: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (name, svg) in svgs {
        let p = out.join(name);
        if let Err(e) = std::fs::write(&p, svg) {
            eprintln!("plots: {}: {e}", p.display());
            return ExitCode::FAILURE;
        }
        println!("{}", p.display());
    }
    ExitCode::SUCCESS
}
