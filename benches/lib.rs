//! Criterion benchmarks for Corral live in this crate (see `[[bench]]` targets).
