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
//! - `running150k`: one session (open, run, close) over 5,000 nodes that already run
//!   150,000 pods (120,000 plain pods in 4 queues and 10 namespaces, 300 running
//!   gangs of 100) for a small burst: one 8-pod gang, or 20 x 500. `warm` reuses
//!   the `Carry` of an earlier session over the same cluster (the steady state of
//!   `corral-scheduler run`), `cold` starts from an empty one (the first session).
//!   `core_floor` places the same 8 pods without PodGroups through the core alone
//!   (`Scheduler::schedule_all`) on the same cluster: the placement's own cost.

use std::sync::Arc;

use corral_scheduler::batch::objects::{GroupApi, GroupSpec, QueueSpec};
use corral_scheduler::batch::session::{Carry, Closed, Session};
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
        labels: Default::default(),
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

/// The same pods without annotations (no PodGroup, no queue): core-only floors.
fn without_annotations<'a>(pods: impl Iterator<Item = &'a PodInfo>) -> Vec<PodInfo> {
    pods.map(|p| {
        let mut pod = (*p.pod).clone();
        pod.metadata.annotations = None;
        PodInfo::new(pod, p.seq).expect("pod info")
    })
    .collect()
}

/// A running pod (plain, or a member of `group` when given) in queue `queue`.
fn running_pod(ns: &str, name: &str, queue: &str, group: Option<&str>, seq: u64) -> PodInfo {
    let mut ann = serde_json::Map::new();
    ann.insert("scheduling.volcano.sh/queue-name".into(), json!(queue));
    if let Some(g) = group {
        ann.insert("scheduling.k8s.io/group-name".into(), json!(g));
    }
    let p = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": ann,
            "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"schedulerName": "corral", "priority": 0, "containers": [{"name": "c",
            "image": "img", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]},
        "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z"}
    }))
    .expect("pod");
    PodInfo::new(p, seq).expect("pod info")
}

/// 5,000 nodes running 150,000 pods: 120,000 plain pods (4 queues, 10 namespaces)
/// and 300 gangs of 100 running members, 30 pods per node; plus the queues and
/// PodGroups of those gangs and of `burst` pending gangs of `size` pods (queue q0).
fn busy_cluster(burst: usize, size: usize) -> (Snapshot, BatchObjects, Vec<PodInfo>) {
    let mut snap = nodes(5_000);
    let mut objs = BatchObjects::default();
    for q in 0..4 {
        let mut qs = QueueSpec::implicit(&format!("q{q}"));
        qs.weight = 1 + q as u32;
        objs.queues.push(qs);
    }
    let mut seq = 0;
    let mut plain = 0;
    let mut gang_pods = 0;
    for n in 0..5_000 {
        let node = format!("node-{n}");
        for k in 0..30 {
            seq += 1;
            // Every fifth pod is a gang member: 30,000 members in 300 gangs.
            let pod = if k % 5 == 4 {
                let g = gang_pods / 100;
                gang_pods += 1;
                let name = format!("run-g{g}");
                running_pod(
                    "gangs",
                    &format!("{name}-{}", gang_pods % 100),
                    &format!("q{}", g % 4),
                    Some(&name),
                    seq,
                )
            } else {
                plain += 1;
                running_pod(
                    &format!("ns{}", plain % 10),
                    &format!("p{plain}"),
                    &format!("q{}", plain % 4),
                    None,
                    seq,
                )
            };
            snap.add_pod(Arc::new(pod), &node);
        }
    }
    for g in 0..300 {
        let mut gs = group("gangs", &format!("run-g{g}"), &format!("q{}", g % 4), 100);
        gs.phase = Some("Running".into());
        objs.groups.push(gs);
    }
    let mut pods = Vec::new();
    for b in 0..burst {
        let name = format!("burst{b}");
        objs.groups.push(group("bench", &name, "q0", size as u32));
        for i in 0..size {
            seq += 1;
            pods.push(member("bench", &name, i, seq));
        }
    }
    (snap, objs, pods)
}

/// One session over `sched` with `carry`; returns it closed (dropped by criterion
/// outside the measurement).
fn one_session(
    sched: Scheduler,
    pods: Vec<Arc<PodInfo>>,
    objs: &BatchObjects,
    carry: &Carry,
) -> Closed {
    let cfg = SessionConfig::default();
    let mut ssn = Session::open(
        sched,
        pods,
        objs,
        cfg.plugins().expect("plugins"),
        cfg.actions(),
        1_800_000_000,
        carry,
    );
    corral_scheduler::batch::actions::run(&mut ssn);
    ssn.close()
}

fn bench_running(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_session");
    g.sample_size(10);
    for &(burst, size) in &[(1usize, 8usize), (20, 500)] {
        let (snap, objs, pods) = busy_cluster(burst, size);
        let base = Scheduler::new(default_frameworks(), snap, Options::default());
        let pods: Vec<Arc<PodInfo>> = pods.into_iter().map(Arc::new).collect();
        let n = pods.len();
        // The carry of an earlier session over the same running pods.
        let cfg = SessionConfig::default();
        let mut warmup = Session::open(
            Scheduler::new(
                default_frameworks(),
                base.snapshot.clone(),
                Options::default(),
            ),
            Vec::new(),
            &objs,
            cfg.plugins().expect("plugins"),
            cfg.actions(),
            1_800_000_000,
            &Carry::default(),
        );
        corral_scheduler::batch::actions::run(&mut warmup);
        let warm = warmup.close().carry;
        g.throughput(Throughput::Elements(n as u64));
        if burst == 1 {
            let plain = without_annotations(pods.iter().map(|p| &**p));
            g.bench_function("running150k/core_floor_8pods/5000nodes", |b| {
                b.iter_batched(
                    || {
                        let s = Scheduler::new(
                            default_frameworks(),
                            base.snapshot.clone(),
                            Options::default(),
                        );
                        (s, plain.clone())
                    },
                    |(mut s, p)| {
                        assert_eq!(s.schedule_all(p).placements.len(), n);
                        s
                    },
                    BatchSize::LargeInput,
                )
            });
        }
        for (label, cold) in [("warm", false), ("cold", true)] {
            g.bench_function(
                format!("running150k/{burst}x{size}/5000nodes/{label}"),
                |b| {
                    b.iter_batched(
                        || {
                            let s = Scheduler::new(
                                default_frameworks(),
                                base.snapshot.clone(),
                                Options::default(),
                            );
                            (s, pods.clone(), Carry::default())
                        },
                        |(s, p, fresh)| {
                            let carry = if cold { &fresh } else { &warm };
                            let closed = one_session(s, p, &objs, carry);
                            assert_eq!(closed.placements.len(), n);
                            closed
                        },
                        BatchSize::LargeInput,
                    )
                },
            );
        }
    }
    g.finish();
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
    let plain = without_annotations(pods.iter());
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

criterion_group!(benches, bench, bench_running);
criterion_main!(benches);
