//! Shared setup for Corral's criterion benchmarks: synthetic clusters from
//! corral-loadgen, turned into a scheduler snapshot plus pending pods.

use std::path::PathBuf;

use corral_loadgen::cluster::{self, Profile};
use corral_scheduler::config::default_frameworks;
use corral_scheduler::framework::Framework;
use corral_scheduler::input::from_objects;
use corral_scheduler::simulate::{Prepared, prepare};

/// Generates a loadgen cluster and prepares it for scheduling.
pub fn setup(profile: Profile, nodes: u32, pods: u64, running: u64) -> (Vec<Framework>, Prepared) {
    let args = cluster::Args {
        nodes,
        pods,
        running,
        profile,
        seed: 1,
        out: PathBuf::new(),
    };
    let c = cluster::generate(&args).expect("loadgen cluster");
    let mut all = c.running;
    all.extend(c.pending);
    let input =
        from_objects(c.nodes, all, c.namespaces, c.priority_classes).expect("valid objects");
    let fws = default_frameworks();
    let prepared = prepare(input, &fws);
    (fws, prepared)
}
