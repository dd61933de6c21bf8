//! The randomized tests' shared generator and pending pods.

use super::*;

/// A small LCG: repeatable streams without a dependency.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self, m: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % m
    }
}

/// A pod of app `db`, `web` or none, version `v0`/`v1`, sometimes in namespace
/// `other`; with `terminating`, one in eight carries a deletion timestamp (the
/// draw is only taken then, so each caller's stream stays its own).
pub(super) fn random_pod(r: &mut Rng, i: usize, terminating: bool) -> PodInfo {
    let mut b = pod(&format!("q{i}"));
    match r.next(4) {
        0 => b = b.label("app", "db"),
        1 => {}
        _ => b = b.label("app", "web"),
    }
    b = b.label("ver", &format!("v{}", r.next(2)));
    if r.next(5) == 0 {
        b = b.ns("other");
    }
    if terminating && r.next(8) == 0 {
        b.0["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    b.info()
}
