//! Batch scheduling sessions (criterion).
//!
//! `cargo bench -p corral-benches --bench batch`
//!
//! - `gang_burst`: 20 PodGroups x 500 pods (minMember 500) on 5,000 nodes; every
//!   iteration is one full session (enqueue, allocate, preempt, reclaim, backfill)
//!   and asserts that all 10,000 pods are bound.
//! - `core_baseline`: the same 10,000 pods without PodGroups through the core loop
//!   alone (`Scheduler::schedule_all`), for comparison on the same machine.
//! - `queues`: Q queues x J jobs (PodGroups of 5 pods, minMember 5) on 5,000 nodes:
//!   session time as queues and jobs grow.

use std::sync::Arc;

use corral_scheduler::batch::objects::{GroupApi, GroupSpec, QueueSpec};
use corral_scheduler::batch::{BatchObjects, SessionConfig, run_sessions};
use corral_scheduler::config::default_frameworks;
use corral_scheduler::scheduler::{Options, Scheduler};
use corral_scheduler::snapshot::{NodeInfo, PodInfo, Snapshot};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

fn nodes(n: usize) -> Snapshot {
    let mut s = Snapshot::new();
    let mut all = Vec::with_capacity(n);
    for i in 0..n {
        let node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": format!("node-{i}"), "labels": {
                "kubernetes.io/hostname": format!("node-{i}"),
                "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
            "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"}}
        }))
        .expect("node");
        all.push(NodeInfo::new(node).expect("node info"));
    }
    s.add_nodes(all);
    s
}

fn member(ns: &str, group: &str, i: usize, seq: u64) -> PodInfo {
    let p = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{group}-{i}"), "namespace": ns,
            "annotations": {"scheduling.k8s.io/group-name": group}},
        "spec": {"schedulerName": "corral", "priority": 0, "containers": [{"name": "c", "image": "img",
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}]}
    }))
    .expect("pod");
    PodInfo::new(p, seq).expect("pod info")
}

fn group(ns: &str, name: &str, queue: &str, min: u32) -> GroupSpec {
    GroupSpec {
        api: GroupApi::Volcano,
        namespace: ns.into(),
        name: name.into(),
        min_member: min,
        min_task_member: Default::default(),
        min_resources: None,
        queue: queue.into(),
        priority: None,
        schedule_timeout_seconds: None,
        annotations: Default::default(),
        created: 0,
        phase: None,
        error: None,
    }
}

/// Q queues x J jobs of `size` pods each.
fn workload(queues: usize, jobs: usize, size: usize) -> (BatchObjects, Vec<PodInfo>) {
    let mut objs = BatchObjects::default();
    let mut pods = Vec::new();
    let mut seq = 0;
    for q in 0..queues {
        let qname = format!("q{q}");
        let mut qs = QueueSpec::implicit(&qname);
        qs.weight = 1 + (q % 4) as u32;
        objs.queues.push(qs);
        for j in 0..jobs {
            let name = format!("{qname}-job{j}");
            objs.groups.push(group("bench", &name, &qname, size as u32));
            for i in 0..size {
                seq += 1;
                pods.push(member("bench", &name, i, seq));
            }
        }
    }
    (objs, pods)
}

fn session(snap: &Snapshot, objs: &BatchObjects, pods: Vec<PodInfo>) -> usize {
    let sched = Scheduler::new(default_frameworks(), snap.clone(), Options::default());
    let cfg = SessionConfig::default();
    let (r, _) = run_sessions(sched, pods, objs, &cfg, 1).expect("session");
    r.placements.len()
}

fn bench(c: &mut Criterion) {
    let snap = Arc::new(nodes(5_000));
    let mut g = c.benchmark_group("batch_session");
    g.sample_size(10);

    // Gang burst: 20 x 500, minMember 500.
    let (objs, pods) = workload(1, 20, 500);
    g.throughput(Throughput::Elements(pods.len() as u64));
    g.bench_function("gang_burst/20x500/5000nodes", |b| {
        b.iter_batched(
            || pods.clone(),
            |p| assert_eq!(session(&snap, &objs, p), 10_000),
            BatchSize::LargeInput,
        )
    });

    // The same 10,000 pods without PodGroups through the core loop alone (no
    // session): the floor the gang burst is compared against on the same machine.
    let plain: Vec<PodInfo> = pods
        .iter()
        .map(|p| {
            let mut pod = (*p.pod).clone();
            pod.metadata.annotations = None;
            PodInfo::new(pod, p.seq).expect("pod info")
        })
        .collect();
    g.bench_function("core_baseline/10000pods/5000nodes", |b| {
        b.iter_batched(
            || plain.clone(),
            |p| {
                let mut sched =
                    Scheduler::new(default_frameworks(), (*snap).clone(), Options::default());
                assert_eq!(sched.schedule_all(p).placements.len(), 10_000)
            },
            BatchSize::LargeInput,
        )
    });

    for &(q, j) in &[
        (10usize, 10usize),
        (100, 10),
        (1_000, 10),
        (1_000, 5),
        (500, 20),
    ] {
        let (objs, pods) = workload(q, j, 5);
        let n = pods.len();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("queues/{q}q_x_{j}jobs_x5pods/5000nodes"), |b| {
            b.iter_batched(
                || pods.clone(),
                |p| assert_eq!(session(&snap, &objs, p), n),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
