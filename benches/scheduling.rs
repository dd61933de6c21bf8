//! Scheduling throughput on scheduler_perf-shaped workloads (criterion).
//!
//! `cargo bench -p corral-benches --bench scheduling` — each iteration schedules all
//! pending pods of a fresh copy of the snapshot; throughput is reported in pods/s
//! (criterion "elements").

use corral_benches::setup;
use corral_loadgen::cluster::Profile;
use corral_scheduler::scheduler::{Options, Scheduler};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let cases: &[(&str, Profile, u32, u64)] = &[
        ("basic", Profile::Basic, 500, 1_000),
        ("basic", Profile::Basic, 5_000, 10_000),
        ("basic", Profile::Basic, 15_000, 10_000),
        ("affinity", Profile::Affinity, 5_000, 2_000),
        ("spread", Profile::Spread, 5_000, 2_000),
    ];
    let mut g = c.benchmark_group("schedule_all");
    g.sample_size(10);
    for &(name, profile, nodes, pods) in cases {
        let (fws, prepared) = setup(profile, nodes, pods, 0);
        g.throughput(Throughput::Elements(prepared.pending.len() as u64));
        g.bench_function(format!("{name}/{nodes}nodes/{pods}pods"), |b| {
            b.iter_batched(
                || (prepared.snapshot.clone(), prepared.pending.clone()),
                |(snap, pending)| {
                    let mut s = Scheduler::new(fws.clone(), snap, Options::default());
                    let r = s.schedule_all(pending);
                    assert_eq!(r.placements.len() + r.unschedulable.len(), pods as usize);
                    r
                },
                BatchSize::LargeInput,
            )
        });
    }
    // GPU sharing at 5,000 nodes: the basic workload without GpuShare in the profile,
    // with it (a no-op: no vcuda requests), and with GPU nodes and vcuda pods (with
    // and without GpuShare).
    let (_, basic) = setup(Profile::Basic, 5_000, 10_000, 0);
    let (gpu_fws, gpu) = corral_benches::setup_gpu(5_000, 10_000);
    let without = corral_benches::default_without("GpuShare");
    let gpu_cases = [
        (
            "gpu/basic-without-GpuShare/5000nodes/10000pods",
            &without,
            &basic,
        ),
        (
            "gpu/basic-with-GpuShare/5000nodes/10000pods",
            &gpu_fws,
            &basic,
        ),
        ("gpu/vcuda-pods/5000nodes/10000pods", &gpu_fws, &gpu),
        // Same workload, vcuda checked only as node totals by NodeResourcesFit.
        (
            "gpu/vcuda-pods-without-GpuShare/5000nodes/10000pods",
            &without,
            &gpu,
        ),
    ];
    for (name, fws, prepared) in gpu_cases {
        g.throughput(Throughput::Elements(prepared.pending.len() as u64));
        g.bench_function(name, |b| {
            b.iter_batched(
                || (prepared.snapshot.clone(), prepared.pending.clone()),
                |(snap, pending)| {
                    let mut s = Scheduler::new(fws.clone(), snap, Options::default());
                    let r = s.schedule_all(pending);
                    assert_eq!(r.placements.len(), 10_000, "every pod fits");
                    r
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();

    // FrameworkObserver cost: `run` attaches kube-scheduler's extension-point and
    // (sampled) plugin timings to every framework; the same workload without and
    // with them, in one run.
    let mut g = c.benchmark_group("observer");
    g.sample_size(10);
    let (fws, prepared) = setup(Profile::Basic, 5_000, 10_000, 0);
    let metrics = corral_scheduler::k8s::metrics::Metrics::new();
    let mut observed = fws.clone();
    for fw in &mut observed {
        fw.observer = Some(metrics.kube.framework_timings());
    }
    g.throughput(Throughput::Elements(prepared.pending.len() as u64));
    for (name, fws) in [("off", &fws), ("on", &observed)] {
        g.bench_function(format!("basic/5000nodes/10000pods/{name}"), |b| {
            b.iter_batched(
                || (prepared.snapshot.clone(), prepared.pending.clone()),
                |(snap, pending)| {
                    let mut s = Scheduler::new(fws.clone(), snap, Options::default());
                    let r = s.schedule_all(pending);
                    assert_eq!(r.placements.len(), 10_000);
                    r
                },
                BatchSize::LargeInput,
            )
        });
    }
    assert!(
        metrics
            .encode()
            .contains("scheduler_framework_extension_point_duration_seconds_count"),
        "the observer recorded"
    );
    g.finish();

    // NodeResourceTopologyMatch overhead (default profile): the same 5,000-node
    // cluster with and without a 2-zone NRT on every node, for Burstable pods
    // (plugin skips them) and for Guaranteed 1-CPU pods (filtered and scored).
    // `nrt-full`: zones as large as the node (decisions unchanged: pure overhead);
    // `nrt-split`: zones split the node (~1.95 CPUs each), where the pessimistic
    // same-batch accounting admits one 1-CPU pod per node, hence 5,000 pods.
    use corral_benches::Nrt;
    let mut g = c.benchmark_group("numa");
    g.sample_size(10);
    let nodes = 5_000;
    for (name, guaranteed, nrt, pods) in [
        ("burstable/no-nrt", false, Nrt::None, 10_000u64),
        ("burstable/nrt-split", false, Nrt::Split, 10_000),
        ("guaranteed/no-nrt", true, Nrt::None, 10_000),
        ("guaranteed/nrt-full", true, Nrt::Full, 10_000),
        ("guaranteed-5k/no-nrt", true, Nrt::None, 5_000),
        ("guaranteed-5k/nrt-split", true, Nrt::Split, 5_000),
    ] {
        let (fws, mut prepared) = setup(Profile::Basic, nodes, pods, 0);
        corral_benches::with_numa(&mut prepared, guaranteed, nrt);
        g.throughput(Throughput::Elements(prepared.pending.len() as u64));
        g.bench_function(format!("{name}/{nodes}nodes/{pods}pods"), |b| {
            b.iter_batched(
                || (prepared.snapshot.clone(), prepared.pending.clone()),
                |(snap, pending)| {
                    let mut s = Scheduler::new(fws.clone(), snap, Options::default());
                    let r = s.schedule_all(pending);
                    assert_eq!(r.placements.len(), pods as usize);
                    r
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
