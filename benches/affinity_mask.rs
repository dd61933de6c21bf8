//! InterPodAffinity's Filter over every node, per node (`filter`) against the bulk
//! verdict (`filter_mask`), at 5,000 nodes (criterion).
//!
//! `cargo bench -p corral-benches --bench affinity_mask` — the affinity and mixed
//! workloads' pending pods whose InterPodAffinity PreFilter applies (not Skip), with
//! running pods in place; each iteration computes every such pod's verdict on every
//! node, so per-element time is the cost of one pod's Filter over all nodes.
//! Before timing, the two verdicts are checked equal for every pod and node.

use corral_benches::setup;
use corral_loadgen::cluster::Profile;
use corral_scheduler::framework::{CycleState, FilterPlugin, PreFilterPlugin};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("inter_pod_affinity_filter");
    g.sample_size(10);
    for (name, profile) in [("affinity", Profile::Affinity), ("mixed", Profile::Mixed)] {
        let (_, prepared) = setup(profile, 5_000, 500, 20_000);
        let snap = &prepared.snapshot;
        let pl = corral_scheduler::plugins::inter_pod_affinity::InterPodAffinity::default();
        let n = snap.num_nodes();
        // (state, pod) of every pending pod the plugin applies to.
        let cases: Vec<_> = prepared
            .pending
            .iter()
            .filter_map(|p| {
                let mut st = CycleState::new();
                let (_, s) = pl.pre_filter(&mut st, p, snap);
                s.is_success().then_some((st, p))
            })
            .collect();
        assert!(!cases.is_empty(), "{name}: no pod applies");
        let mut out = vec![0u64; n.div_ceil(64)];
        for (st, p) in &cases {
            out.fill(0);
            assert!(pl.filter_mask(st, p, snap, &mut out));
            for (i, node) in snap.nodes().iter().enumerate() {
                let bit = out[i / 64] >> (i % 64) & 1 == 1;
                assert_eq!(bit, pl.filter(st, p, node, snap).is_success());
            }
        }
        g.throughput(Throughput::Elements(cases.len() as u64));
        g.bench_function(format!("{name}/filter-per-node/{n}nodes"), |b| {
            b.iter(|| {
                let mut pass = 0usize;
                for (st, p) in &cases {
                    for node in snap.nodes() {
                        pass += usize::from(pl.filter(st, p, node, snap).is_success());
                    }
                }
                pass
            })
        });
        g.bench_function(format!("{name}/filter-mask/{n}nodes"), |b| {
            b.iter(|| {
                let mut pass = 0u32;
                for (st, p) in &cases {
                    out.fill(0);
                    pl.filter_mask(st, p, snap, &mut out);
                    pass += out.iter().map(|w| w.count_ones()).sum::<u32>();
                }
                pass
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
