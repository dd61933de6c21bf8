//! Batch sizes: the fixed default, the opt-in conflict-driven adaptive size, and
//! the default latency budget (the next batch sized so that its pods' decisions
//! are expected within the budget, from the per-pod cost of the previous batch).
//! Decisions do not depend on the batch size (the committer decides every pod as
//! the sequential procedure would), so a size that follows the measured time moves
//! no placement; only `batches` and the latencies vary between runs.

use std::time::Duration;

/// Default (largest) batch size. Not lowered to 32 (which measured faster for
/// SchedulingBasic in session 4): the health timeline's thundering-herd bound
/// (`example_timeline_meets_targets`, herd ratio <= 1.5) failed with 32 (1.71).
pub const DEFAULT_BATCH_SIZE: usize = 64;

/// Smallest (and first) batch of the adaptive batch size.
pub const ADAPTIVE_BATCH_MIN: usize = 8;

/// The adaptive batch size after a batch of `taken` pods (of a target `cur`) with
/// `conflicts` (pods none of whose candidates survived re-validation: their
/// batch-parallel evaluation was wasted and they were evaluated again
/// sequentially): doubles up to `max` after a full batch without conflicts, halves
/// down to [`ADAPTIVE_BATCH_MIN`] when more than a quarter conflicted, else stays.
/// Stale pods (a related pod committed ahead of them) do not count: their
/// PreFilter state is updated incrementally, and larger batches share more work.
pub fn next_batch_size(cur: usize, taken: usize, conflicts: usize, max: usize) -> usize {
    let max = max.max(1);
    let min = ADAPTIVE_BATCH_MIN.min(max);
    let next = if conflicts * 4 > taken {
        cur / 2
    } else if conflicts == 0 && taken == cur {
        cur * 2
    } else {
        cur
    };
    next.clamp(min, max)
}

/// Default latency budget per batch (see [`Options::latency_budget`](crate::scheduler::Options)):
/// a pod's recorded decision latency is the time from its batch's start to its
/// commit, so a batch expected to finish within 500 µs keeps the p99 under 1 ms
/// with room for the machine's noise.
pub const DEFAULT_LATENCY_BUDGET: Duration = Duration::from_micros(500);

/// The batch size after a batch of `taken` pods that took `elapsed` (evaluation
/// and commit): as many pods as the budget holds at that batch's cost per pod, at
/// most twice the previous size `cur`, between `min` and `max`.
pub fn budget_batch_size(
    cur: usize,
    taken: usize,
    elapsed: Duration,
    budget: Duration,
    min: usize,
    max: usize,
) -> usize {
    let max = max.max(1);
    let min = min.clamp(1, max);
    if taken == 0 {
        return cur.clamp(min, max);
    }
    let per_pod = (elapsed.as_nanos() / taken as u128).max(1);
    let fit = usize::try_from(budget.as_nanos() / per_pod).unwrap_or(usize::MAX);
    fit.min(cur.max(1).saturating_mul(2)).clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_batch_size_follows_the_cost_per_pod() {
        let us = Duration::from_micros;
        // 64 pods in 1.6 ms (25 µs each): 20 fit in 500 µs.
        assert_eq!(budget_batch_size(64, 64, us(1600), us(500), 8, 64), 20);
        // Cheap pods: grows at most by doubling, up to the maximum.
        assert_eq!(budget_batch_size(8, 8, us(8), us(500), 8, 64), 16);
        assert_eq!(budget_batch_size(64, 64, us(64), us(500), 8, 64), 64);
        // A partial batch measures the cost per pod as well.
        assert_eq!(budget_batch_size(32, 4, us(400), us(500), 8, 64), 8);
        // Never below the minimum, never above the maximum (batch size 1 wins).
        assert_eq!(budget_batch_size(16, 16, us(16_000), us(500), 8, 64), 8);
        assert_eq!(budget_batch_size(1, 1, us(1), us(500), 8, 1), 1);
        // Nothing taken: the current size, within bounds.
        assert_eq!(budget_batch_size(100, 0, us(0), us(500), 8, 64), 64);
    }

    #[test]
    fn adaptive_batch_size_doubles_halves_and_stays_in_bounds() {
        // A clean full batch doubles, up to the maximum.
        assert_eq!(next_batch_size(8, 8, 0, 64), 16);
        assert_eq!(next_batch_size(32, 32, 0, 64), 64);
        assert_eq!(next_batch_size(64, 64, 0, 64), 64);
        // A partial (last) batch says nothing about a larger one.
        assert_eq!(next_batch_size(16, 5, 0, 64), 16);
        // Some re-evaluations, at most a quarter: unchanged.
        assert_eq!(next_batch_size(16, 16, 4, 64), 16);
        // More than a quarter: halves, down to the minimum.
        assert_eq!(next_batch_size(32, 32, 9, 64), 16);
        assert_eq!(next_batch_size(8, 8, 8, 64), ADAPTIVE_BATCH_MIN);
        // A maximum below the minimum wins (batch size 1 = sequential).
        assert_eq!(next_batch_size(1, 1, 0, 1), 1);
        assert_eq!(next_batch_size(2, 2, 2, 2), 2);
    }
}
