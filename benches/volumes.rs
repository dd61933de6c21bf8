//! Volume-aware scheduling throughput (scheduler_perf's SchedulingInTreePVs /
//! SchedulingCSIPVs shape): 5,000 nodes, 10,000 pending pods each with one claim —
//! half bound to a local PV pinned to one node, half WaitForFirstConsumer on a CSI
//! class whose `allowedTopologies` admits half the zones, with a CSIDriver tracking
//! capacity and one CSIStorageCapacity per admitted zone — against the same pods
//! without claims, in the same process. Prints pods/s and decision latency per
//! repetition and the medians.
//!
//! `cargo bench -p corral-benches --bench volumes [-- REPS [NODES PODS]]` (default 3
//! repetitions of 5,000 nodes / 10,000 pods). `CORRAL_BENCH_ARM=plain` or `claims`
//! runs one arm only.

use std::collections::HashMap;
use std::time::Instant;

use corral_benches::setup;
use corral_loadgen::cluster::Profile;
use corral_scheduler::scheduler::{Options, Report, Scheduler};
use corral_scheduler::snapshot::PodInfo;
use corral_scheduler::volumes::VolumeObject;
use serde_json::{Value, json};

fn obj(kind: &str, v: Value) -> VolumeObject {
    VolumeObject::decode(kind, v)
        .expect("valid volume object")
        .expect("volume kind")
}

fn run(with_claims: bool, nodes_n: u32, pods_n: u64) -> (Report, f64) {
    let (fws, mut prepared) = setup(Profile::Basic, nodes_n, pods_n, 0);
    // Local-PV pods: pod key → the PV's node.
    let mut expected: HashMap<String, String> = HashMap::new();
    if with_claims {
        let nodes: Vec<(String, String)> = prepared
            .snapshot
            .nodes()
            .iter()
            .map(|n| {
                (
                    n.name.to_string(),
                    n.labels
                        .get("topology.kubernetes.io/zone")
                        .cloned()
                        .unwrap_or_default(),
                )
            })
            .collect();
        let mut zones: Vec<String> = nodes.iter().map(|(_, z)| z.clone()).collect();
        zones.sort();
        zones.dedup();
        let allowed: Vec<String> = zones
            .iter()
            .take(zones.len().div_ceil(2))
            .cloned()
            .collect();
        let mut objs = vec![
            obj(
                "StorageClass",
                json!({"metadata": {"name": "local"}, "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer"}),
            ),
            obj(
                "StorageClass",
                json!({"metadata": {"name": "zonal"}, "provisioner": "csi.bench", "volumeBindingMode": "WaitForFirstConsumer",
                "allowedTopologies": [{"matchLabelExpressions": [{"key": "topology.kubernetes.io/zone", "values": allowed}]}]}),
            ),
            obj(
                "CSIDriver",
                json!({"metadata": {"name": "csi.bench"}, "spec": {"storageCapacity": true}}),
            ),
        ];
        for z in &allowed {
            objs.push(obj(
                "CSIStorageCapacity",
                json!({"metadata": {"name": format!("cap-{z}"), "namespace": "kube-system"},
                "storageClassName": "zonal", "capacity": "100Ti",
                "nodeTopology": {"matchLabels": {"topology.kubernetes.io/zone": z}}}),
            ));
        }
        for (i, p) in prepared.pending.iter_mut().enumerate() {
            let claim = format!("claim-{i}");
            let ns = p.namespace.clone();
            if i % 2 == 0 {
                let (node, _) = &nodes[(i / 2) % nodes.len()];
                expected.insert(p.key.clone(), node.clone());
                let pv = format!("local-{i}");
                objs.push(obj("PersistentVolume", json!({"metadata": {"name": pv},
                    "spec": {"storageClassName": "local", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                        "local": {"path": "/mnt/d"}, "claimRef": {"namespace": ns, "name": claim},
                        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
                    "status": {"phase": "Bound"}})));
                objs.push(obj("PersistentVolumeClaim", json!({"metadata": {"name": claim, "namespace": ns,
                        "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
                    "spec": {"storageClassName": "local", "volumeName": pv, "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}})));
            } else {
                objs.push(obj(
                    "PersistentVolumeClaim",
                    json!({"metadata": {"name": claim, "namespace": ns},
                    "spec": {"storageClassName": "zonal", "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}}),
                ));
            }
            let mut pod = (*p.pod).clone();
            if let Some(spec) = pod.spec.as_mut() {
                spec.volumes = Some(vec![
                    serde_json::from_value(
                        json!({"name": "data", "persistentVolumeClaim": {"claimName": claim}}),
                    )
                    .expect("volume"),
                ]);
            }
            *p = PodInfo::new(pod, p.seq).expect("valid pod");
        }
        let v = prepared.snapshot.volumes_mut();
        for o in objs {
            v.upsert(o);
        }
    }
    let mut s = Scheduler::new(fws, prepared.snapshot, Options::default());
    let t0 = Instant::now();
    let r = s.schedule_all(prepared.pending);
    let secs = t0.elapsed().as_secs_f64();
    // Sanity: every local-PV pod on its PV's node; a WFFC pod's provisioning on
    // its own node.
    for pl in &r.placements {
        if let Some(n) = expected.get(&pl.pod) {
            assert_eq!(n, &pl.node, "{} not on its local PV's node", pl.pod);
        }
        if let Some(b) = s.snapshot.volumes().pod_bindings(&pl.pod) {
            assert_eq!(b.node, pl.node);
        }
    }
    (r, secs)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // Positional args: REPS [NODES PODS] (cargo bench passes `--bench` too).
    let nums: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let reps = nums.first().copied().unwrap_or(3) as usize;
    let nodes_n = nums.get(1).copied().unwrap_or(5_000) as u32;
    let pods_n = nums.get(2).copied().unwrap_or(10_000);
    println!("nodes {nodes_n}, pending pods {pods_n}, {reps} repetitions (alternating)");
    let mut rates = [Vec::new(), Vec::new()];
    let mut p99 = [Vec::new(), Vec::new()];
    // CORRAL_BENCH_ARM=plain|claims runs one arm only (for callgrind, which counts
    // one process: `benches/callgrind-volumes.sh`).
    let arm = std::env::var("CORRAL_BENCH_ARM").unwrap_or_default();
    for rep in 0..reps {
        for (k, with) in [false, true].into_iter().enumerate() {
            if (arm == "plain" && with) || (arm == "claims" && !with) {
                continue;
            }
            let (r, secs) = run(with, nodes_n, pods_n);
            let rate = r.stats.pods as f64 / secs;
            println!(
                "rep {rep} {:>13}: placed {:>5}/{}, unschedulable {:>4}, {:>9.0} pods/s, p50 {:>8.0} us, p99 {:>8.0} us, conflicts {}, evaluate {:.0} ms, commit {:.0} ms",
                if with { "with claims" } else { "no claims" },
                r.placements.len(),
                r.stats.pods,
                r.unschedulable.len(),
                rate,
                r.stats.decision_latency_us.p50,
                r.stats.decision_latency_us.p99,
                r.stats.conflicts,
                r.stats.evaluate_ms,
                r.stats.commit_ms
            );
            rates[k].push(rate);
            p99[k].push(r.stats.decision_latency_us.p99);
        }
    }
    if rates.iter().any(|r| r.is_empty()) {
        return;
    }
    let (a, b) = (median(&mut rates[0]), median(&mut rates[1]));
    println!(
        "median: no claims {a:.0} pods/s (p99 {:.0} us), with claims {b:.0} pods/s (p99 {:.0} us); ratio {:.2}",
        median(&mut p99[0]),
        median(&mut p99[1]),
        b / a
    );
}
