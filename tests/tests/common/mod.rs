//! Shared setup of the workload-level tests.

use std::path::PathBuf;

use corral_loadgen::cluster::{Args, Profile, generate};
use corral_scheduler::config::default_frameworks;
use corral_scheduler::input::from_objects;
use corral_scheduler::simulate::prepare;
use corral_scheduler::snapshot::{PodInfo, Snapshot};

/// A `corral-loadgen cluster` workload as `simulate` prepares it: the snapshot
/// (nodes and `running` running pods) and the pending pods.
pub fn workload(
    profile: Profile,
    nodes: u32,
    pods: u64,
    running: u64,
    seed: u64,
) -> (Snapshot, Vec<PodInfo>) {
    let c = generate(&Args {
        nodes,
        pods,
        running,
        profile,
        seed,
        out: PathBuf::new(),
    })
    .expect("generate workload");
    let all: Vec<_> = c.running.into_iter().chain(c.pending).collect();
    let input =
        from_objects(c.nodes, all, c.namespaces, c.priority_classes).expect("decode workload");
    let prepared = prepare(input, &default_frameworks());
    (prepared.snapshot, prepared.pending)
}
