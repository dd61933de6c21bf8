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

/// SchedulingBasic with GPU sharing: every 4th node has 8 shared cards
/// (`tencent.com/vcuda-core` 800, `tencent.com/vcuda-memory` 8 × 64); every 2nd
/// pending pod asks for a 25 % share (+ 8 memory units), every 10th for one whole
/// card. The other pods and nodes are unchanged.
pub fn setup_gpu(nodes: u32, pods: u64) -> (Vec<Framework>, Prepared) {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let args = cluster::Args {
        nodes,
        pods,
        running: 0,
        profile: Profile::Basic,
        seed: 1,
        out: PathBuf::new(),
    };
    let mut c = cluster::generate(&args).expect("loadgen cluster");
    for (i, n) in c.nodes.iter_mut().enumerate() {
        if i % 4 != 0 {
            continue;
        }
        for m in n.status.iter_mut().flat_map(|s| s.allocatable.as_mut()) {
            m.insert("tencent.com/vcuda-core".into(), Quantity("800".into()));
            m.insert("tencent.com/vcuda-memory".into(), Quantity("512".into()));
        }
    }
    for (i, p) in c.pending.iter_mut().enumerate() {
        let core = match i {
            i if i % 10 == 0 => "100",
            i if i % 2 == 0 => "25",
            _ => continue,
        };
        for ct in p.spec.iter_mut().flat_map(|s| s.containers.iter_mut()) {
            let r = ct
                .resources
                .get_or_insert_with(Default::default)
                .requests
                .get_or_insert_with(Default::default);
            r.insert("tencent.com/vcuda-core".into(), Quantity(core.into()));
            r.insert("tencent.com/vcuda-memory".into(), Quantity("8".into()));
        }
    }
    let input =
        from_objects(c.nodes, c.pending, c.namespaces, c.priority_classes).expect("valid objects");
    let fws = default_frameworks();
    let prepared = prepare(input, &fws);
    (fws, prepared)
}

/// The default profile with one plugin disabled (multiPoint).
pub fn default_without(plugin: &str) -> Vec<Framework> {
    let yaml = format!(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
         profiles:\n- plugins:\n    multiPoint:\n      disabled: [{{name: {plugin}}}]\n"
    );
    corral_scheduler::config::KubeSchedulerConfiguration::from_yaml(&yaml, "bench")
        .and_then(|c| c.build())
        .expect("profile")
}
