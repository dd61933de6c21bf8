//! A classic Prometheus histogram for observations made concurrently from many
//! threads (the framework's per-plugin timings of sampled cycles, observed from
//! every evaluation thread for every node): each thread adds to one of a few shards
//! of atomic counters, so an observation takes no lock and rarely shares a cache
//! line with another thread's; the shards are summed when the registry is encoded.
//! Encodes exactly as `prometheus_client`'s `Histogram` with the same buckets
//! (counts per bucket with `le` inclusive, `+Inf` last, sum, count).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards per histogram (a power of two).
const SHARDS: usize = 8;

struct Shard {
    /// Sum of the observations, as `f64` bits.
    sum: AtomicU64,
    count: AtomicU64,
    /// Per bucket (same order as the bounds), not cumulative.
    buckets: Box<[AtomicU64]>,
}

/// Padded so that two shards never share a cache line.
#[repr(align(128))]
struct Padded(Shard);

struct Inner {
    /// Upper bounds, `+Inf` last.
    bounds: Box<[f64]>,
    shards: Box<[Padded]>,
}

/// See the module docs. Clones share the counters.
#[derive(Clone)]
pub struct ShardedHistogram(Arc<Inner>);

impl std::fmt::Debug for ShardedHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (sum, count, _) = self.get();
        f.debug_struct("ShardedHistogram")
            .field("sum", &sum)
            .field("count", &count)
            .finish()
    }
}

/// This thread's shard (assigned round-robin on first use).
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

impl ShardedHistogram {
    /// Buckets as `prometheus_client::metrics::histogram::Histogram::new`.
    pub fn new(buckets: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Box<[f64]> = buckets
            .into_iter()
            .filter(|b| b.is_finite())
            .chain(std::iter::once(f64::INFINITY))
            .collect();
        let shards = (0..SHARDS)
            .map(|_| {
                Padded(Shard {
                    sum: AtomicU64::new(0f64.to_bits()),
                    count: AtomicU64::new(0),
                    buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
                })
            })
            .collect();
        ShardedHistogram(Arc::new(Inner { bounds, shards }))
    }

    pub fn observe(&self, v: f64) {
        let s = &self.0.shards[shard_index()].0;
        // The first bucket whose bound is >= v (NaN: the last), as the classic
        // histogram does.
        let i = if v.is_nan() {
            self.0.bounds.len() - 1
        } else {
            self.0
                .bounds
                .partition_point(|b| *b < v)
                .min(self.0.bounds.len() - 1)
        };
        s.buckets[i].fetch_add(1, Ordering::Relaxed);
        s.count.fetch_add(1, Ordering::Relaxed);
        let _ = s
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + v).to_bits())
            });
    }

    /// (sum, count, per-bucket (upper bound, count)) over all shards.
    pub fn get(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut sum = 0.0;
        let mut count = 0;
        let mut buckets: Vec<(f64, u64)> = self.0.bounds.iter().map(|b| (*b, 0)).collect();
        for Padded(s) in self.0.shards.iter() {
            sum += f64::from_bits(s.sum.load(Ordering::Relaxed));
            count += s.count.load(Ordering::Relaxed);
            for (o, b) in buckets.iter_mut().zip(s.buckets.iter()) {
                o.1 += b.load(Ordering::Relaxed);
            }
        }
        (sum, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.get();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
    use prometheus_client::registry::Registry;

    /// Same observations from several threads: the text encoding equals the
    /// classic histogram's.
    #[test]
    fn encodes_as_the_classic_histogram_from_many_threads() {
        let vals: Vec<f64> = (0..4000)
            .map(|i| match i % 7 {
                0 => 0.000_01, // exactly a bound: `le` is inclusive
                1 => 1e9,      // beyond every bound: +Inf
                2 => 0.0,
                _ => (i as f64) * 1.3e-6,
            })
            .collect();
        let b = || exponential_buckets(0.000_01, 1.5, 20);
        let sharded = ShardedHistogram::new(b());
        let classic = Histogram::new(b());
        std::thread::scope(|sc| {
            for chunk in vals.chunks(500) {
                let h = sharded.clone();
                sc.spawn(move || chunk.iter().for_each(|v| h.observe(*v)));
            }
        });
        vals.iter().for_each(|v| classic.observe(*v));
        let text = |m: Box<dyn FnOnce(&mut Registry)>| {
            let mut r = Registry::default();
            m(&mut r);
            let mut s = String::new();
            prometheus_client::encoding::text::encode(&mut s, &r).expect("encode");
            s
        };
        let a = text(Box::new(move |r| r.register("h", "h", sharded)));
        let c = text(Box::new(move |r| r.register("h", "h", classic)));
        // The sums may differ in the last bits (other addition order): compare
        // the bucket and count lines exactly and the sum approximately.
        let lines = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.starts_with("h_sum"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(lines(&a), lines(&c));
        assert!(a.contains("h_count 4000"), "{a}");
        let sum = |s: &str| -> f64 {
            s.lines()
                .find_map(|l| l.strip_prefix("h_sum "))
                .and_then(|v| v.parse().ok())
                .expect("sum")
        };
        assert!(
            (sum(&a) - sum(&c)).abs() <= 1e-9 * sum(&c).abs(),
            "{a}\n{c}"
        );
    }
}
