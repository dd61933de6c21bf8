//! Cost of the input limits (criterion).
//!
//! `cargo bench -p corral-benches --bench input_limits`
//!
//! - `prescan/examples_cluster`: the YAML nesting-depth/size pre-scan over the
//!   built-in example cluster (examples/cluster, ~2.6 MB, 5,000 nodes + pods) next to
//!   `load/examples_cluster`, the whole loader (pre-scan, parse, decode, API-server
//!   defaulting) over the same files: the pre-scan's share of loading.
//! - `prescan/deep_100k`: the 100,000-`[` manifest from the fuzzing report (took
//!   ~24 s in the YAML parser before the pre-scan) failing at the limit.

use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn cluster_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/cluster")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

fn bench(c: &mut Criterion) {
    let files = cluster_files();
    let texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("read"))
        .collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    let mut g = c.benchmark_group("prescan");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("examples_cluster", |b| {
        b.iter(|| {
            for t in &texts {
                corral_limits::check_yaml(
                    t,
                    corral_limits::MAX_NESTING_DEPTH,
                    corral_limits::MAX_MANIFEST_BYTES,
                )
                .expect("within limits");
            }
        })
    });
    let deep = format!("x: {}", "[".repeat(100_000));
    g.throughput(Throughput::Bytes(deep.len() as u64));
    g.bench_function("deep_100k", |b| {
        b.iter(|| {
            assert!(
                corral_limits::check_yaml(
                    &deep,
                    corral_limits::MAX_NESTING_DEPTH,
                    corral_limits::MAX_MANIFEST_BYTES
                )
                .is_err()
            )
        })
    });
    g.finish();
    let mut g = c.benchmark_group("load");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(10);
    g.bench_function("examples_cluster", |b| {
        b.iter(|| {
            let inp = corral_scheduler::input::load_paths(&files, &[]).expect("load");
            assert!(!inp.nodes.is_empty());
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
