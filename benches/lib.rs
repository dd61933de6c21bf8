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
