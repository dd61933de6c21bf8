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

/// NUMA variants of a prepared cluster (NodeResourceTopologyMatch overhead):
/// `guaranteed` turns every pending pod into a Guaranteed pod with 1 exclusive CPU
/// (requests == limits); `nrt` gives every node a NodeResourceTopology with two
/// NUMA zones (policy single-numa-node, container scope), parsed like `simulate`
/// input: `Nrt::Split` splits the node's allocatable CPU and memory between them
/// (realistic), `Nrt::Full` gives each zone the node's whole allocatable, so the
/// topology never changes a decision and only the plugin's cost is measured.
pub fn with_numa(prepared: &mut Prepared, guaranteed: bool, nrt: Nrt) {
    use std::sync::Arc;

    use corral_scheduler::snapshot::PodInfo;
    use serde_json::json;

    if guaranteed {
        for p in prepared.pending.iter_mut() {
            let mut pod = (*p.pod).clone();
            if let Some(spec) = pod.spec.as_mut() {
                for c in spec.containers.iter_mut() {
                    let r: std::collections::BTreeMap<String, _> =
                        serde_json::from_value(json!({"cpu": "1", "memory": "500Mi"}))
                            .expect("resource list");
                    let res = c.resources.get_or_insert_with(Default::default);
                    res.requests = Some(r.clone());
                    res.limits = Some(r);
                }
            }
            *p = PodInfo::new(pod, p.seq).expect("valid pod");
        }
    }
    if nrt != Nrt::None {
        let div = if nrt == Nrt::Split { 2 } else { 1 };
        let names: Vec<(String, i64, i64)> = prepared
            .snapshot
            .nodes()
            .iter()
            .map(|n| {
                (
                    n.name.to_string(),
                    n.allocatable.milli_cpu,
                    n.allocatable.memory,
                )
            })
            .collect();
        for (name, cpu_m, mem) in names {
            let zone = |i: usize| {
                let c = format!("{}m", cpu_m / div);
                let m = (mem / div).to_string();
                json!({"name": format!("node-{i}"), "type": "Node", "resources": [
                    {"name": "cpu", "capacity": c, "allocatable": c, "available": c},
                    {"name": "memory", "capacity": m, "allocatable": m, "available": m}]})
            };
            let v = json!({
                "apiVersion": "topology.node.k8s.io/v1alpha2", "kind": "NodeResourceTopology",
                "metadata": {"name": name},
                "attributes": [{"name": "topologyManagerPolicy", "value": "single-numa-node"},
                               {"name": "topologyManagerScope", "value": "container"}],
                "zones": [zone(0), zone(1)]
            });
            let (node, topo) = corral_scheduler::topology::parse_nrt(&v).expect("valid NRT");
            prepared.snapshot.set_topology(&node, Some(Arc::new(topo)));
        }
    }
}

/// NodeResourceTopology shape for [`with_numa`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nrt {
    None,
    Full,
    Split,
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

#[path = "plots_lib.rs"]
pub mod plots;
