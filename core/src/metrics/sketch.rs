//! A lock-free, bounded-memory quantile estimator for latencies (a DDSketch with a fixed,
//! lazily allocated logarithmic bucket layout).
//!
//! # Accuracy
//! Bucket `i` covers `(MIN·γ^(i-1), MIN·γ^i]` with `γ = (1+α)/(1-α)` and `α = 0.009`, and is
//! reported as `2·MIN·γ^i/(γ+1)`, within `α` of every value in the bucket. The rank is exact,
//! so p50/p95/p99 (nearest rank) are within **0.9 % relative error** for values in
//! `[MIN_VALUE, MAX_VALUE]` = 1 µs … 10⁸ ms (27.7 h). Estimates are clamped to the exact
//! observed min and max. Values below 1 µs count as `0`; values above 10⁸ ms report the exact max.
//! NaN, infinite and negative samples are ignored.
//!
//! # Memory
//! Inline: 64 bytes. Buckets live in [`CHUNKS`] chunks of [`CHUNK_LEN`] `u32` counters, each
//! allocated on its first sample (256 bytes), behind a chunk table allocated on the first
//! sample (368 bytes). Bound: `MAX_HEAP_BYTES` = 368 + 23 × 256 = **6 256 bytes** per sketch,
//! whatever the number of samples; a latency that spans one order of magnitude touches 2–3
//! chunks. Counters are `u32` per bucket: 4.29 billion samples in one bucket before wrapping.
//!
//! # Cost
//! `record` is wait-free: a logarithm, one `fetch_add` on the bucket and four on the summary
//! atomics; it allocates only the first time a chunk is touched.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// Relative accuracy of the bucket layout.
pub const ALPHA: f64 = 0.009;
/// Smallest value (ms) tracked with relative accuracy; smaller values count as 0.
pub const MIN_VALUE: f64 = 1e-3;
/// Largest value (ms) tracked with relative accuracy; larger values report the exact max.
pub const MAX_VALUE: f64 = 1e8;
/// Counters per chunk.
pub const CHUNK_LEN: usize = 64;
/// Chunks in the layout.
pub const CHUNKS: usize = 23;
/// Upper bound on the heap bytes one sketch allocates.
pub const MAX_HEAP_BYTES: usize =
    CHUNKS * std::mem::size_of::<OnceLock<Box<Chunk>>>() + CHUNKS * std::mem::size_of::<Chunk>();

const GAMMA: f64 = (1.0 + ALPHA) / (1.0 - ALPHA);

type Chunk = [AtomicU32; CHUNK_LEN];
type ChunkTable = [OnceLock<Box<Chunk>>; CHUNKS];

fn ln_gamma() -> f64 {
    GAMMA.ln()
}

#[cfg(test)]
/// Number of buckets actually needed to cover `[MIN_VALUE, MAX_VALUE]`.
fn bucket_count() -> usize {
    ((MAX_VALUE / MIN_VALUE).ln() / ln_gamma()).ceil() as usize + 1
}

fn bucket_of(value: f64) -> usize {
    // value in (MIN_VALUE, MAX_VALUE]; index >= 1.
    let idx = ((value / MIN_VALUE).ln() / ln_gamma()).ceil();
    (idx.max(1.0) as usize).min(CHUNKS * CHUNK_LEN - 1)
}

fn bucket_value(index: usize) -> f64 {
    2.0 * MIN_VALUE * GAMMA.powi(index as i32) / (GAMMA + 1.0)
}

/// Summary of a sketch at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencyStats {
    /// Number of samples.
    pub count: u64,
    /// Sum of samples (ms), at nanosecond resolution (wraps after 584 years of summed latency).
    pub sum_ms: f64,
    /// Smallest sample (ms), when any.
    pub min_ms: Option<f64>,
    /// Largest sample (ms), when any.
    pub max_ms: Option<f64>,
    /// Median estimate.
    pub p50_ms: Option<f64>,
    /// 95th percentile estimate.
    pub p95_ms: Option<f64>,
    /// 99th percentile estimate.
    pub p99_ms: Option<f64>,
}

impl LatencyStats {
    /// The mean, `None` before the first sample (the anchor's `__avg`).
    pub fn avg_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ms / self.count as f64)
    }
}

/// The estimator. See the module docs for its accuracy, memory and cost.
#[derive(Debug, Default)]
pub struct LatencySketch {
    count: AtomicU64,
    sum_nanos: AtomicU64,
    min_bits: AtomicU64,
    max_bits: AtomicU64,
    zeros: AtomicU64,
    overflow: AtomicU64,
    table: OnceLock<Box<ChunkTable>>,
}

impl LatencySketch {
    /// An empty sketch (no heap allocation).
    pub fn new() -> Self {
        Self {
            min_bits: AtomicU64::new(f64::INFINITY.to_bits()),
            ..Self::default()
        }
    }

    /// Records one sample in milliseconds. Ignores NaN, infinite and negative values.
    pub fn record(&self, value_ms: f64) {
        if !value_ms.is_finite() || value_ms < 0.0 {
            return;
        }
        // Positive IEEE-754 doubles order like their bit patterns, so min/max are integer ops.
        let bits = value_ms.to_bits();
        self.max_bits.fetch_max(bits, Relaxed);
        self.min_bits.fetch_min(bits, Relaxed);
        self.sum_nanos
            .fetch_add((value_ms * 1e6).round() as u64, Relaxed);
        if value_ms < MIN_VALUE {
            self.zeros.fetch_add(1, Relaxed);
        } else if value_ms > MAX_VALUE {
            self.overflow.fetch_add(1, Relaxed);
        } else {
            let index = bucket_of(value_ms);
            let table = self
                .table
                .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
            let chunk = table[index / CHUNK_LEN]
                .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU32::new(0))));
            chunk[index % CHUNK_LEN].fetch_add(1, Relaxed);
        }
        // Counted last: a reader that sees the count also sees a bucket for it (or a newer one).
        self.count.fetch_add(1, Relaxed);
    }

    /// Number of samples recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Bytes currently allocated on the heap by this sketch (≤ [`MAX_HEAP_BYTES`]).
    pub fn heap_bytes(&self) -> usize {
        self.table.get().map_or(0, |table| {
            std::mem::size_of::<ChunkTable>()
                + table.iter().filter(|c| c.get().is_some()).count() * std::mem::size_of::<Chunk>()
        })
    }

    /// Nearest-rank quantile estimate for `q` in `[0, 1]`, `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let counts = self.bucket_counts();
        let (min, max) = (self.min(), self.max());
        Self::quantile_from(&counts, q, min?, max?)
    }

    /// Everything the snapshot needs, reading the buckets once.
    pub fn stats(&self) -> LatencyStats {
        let counts = self.bucket_counts();
        let count = self.count.load(Relaxed);
        let (min, max) = (self.min(), self.max());
        let q = |q| Self::quantile_from(&counts, q, min?, max?);
        LatencyStats {
            count,
            sum_ms: self.sum_nanos.load(Relaxed) as f64 / 1e6,
            min_ms: min,
            max_ms: max,
            p50_ms: q(0.50),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
        }
    }

    fn min(&self) -> Option<f64> {
        let bits = self.min_bits.load(Relaxed);
        let v = f64::from_bits(bits);
        v.is_finite().then_some(v)
    }

    fn max(&self) -> Option<f64> {
        // `min` becomes finite on the first valid sample, after `max` was raised.
        self.min()
            .map(|_| f64::from_bits(self.max_bits.load(Relaxed)))
    }

    /// `[zeros, bucket 1.., overflow]` as one sparse list of (index, count); index
    /// `usize::MAX` marks overflow.
    fn bucket_counts(&self) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        let zeros = self.zeros.load(Relaxed);
        if zeros > 0 {
            out.push((0, zeros));
        }
        if let Some(table) = self.table.get() {
            for (c, chunk) in table.iter().enumerate() {
                if let Some(chunk) = chunk.get() {
                    for (i, n) in chunk.iter().enumerate() {
                        let n = n.load(Relaxed);
                        if n > 0 {
                            out.push((c * CHUNK_LEN + i, u64::from(n)));
                        }
                    }
                }
            }
        }
        let overflow = self.overflow.load(Relaxed);
        if overflow > 0 {
            out.push((usize::MAX, overflow));
        }
        out
    }

    fn quantile_from(counts: &[(usize, u64)], q: f64, min: f64, max: f64) -> Option<f64> {
        let total: u64 = counts.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(index, n) in counts {
            seen += n;
            if seen >= rank {
                let estimate = match index {
                    0 => 0.0,
                    usize::MAX => max,
                    i => bucket_value(i),
                };
                return Some(estimate.clamp(min, max));
            }
        }
        Some(max)
    }
}

const _: () = assert!(
    CHUNKS * CHUNK_LEN >= 1409,
    "layout must cover MIN_VALUE..MAX_VALUE"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_covers_the_range() {
        assert!(bucket_count() <= CHUNKS * CHUNK_LEN, "{}", bucket_count());
        assert_eq!(MAX_HEAP_BYTES, 6256);
    }

    #[test]
    fn empty_sketch_reports_nothing_and_allocates_nothing() {
        let s = LatencySketch::new();
        assert_eq!(
            s.stats(),
            LatencyStats {
                count: 0,
                ..Default::default()
            }
        );
        assert_eq!(s.stats().avg_ms(), None);
        assert_eq!(s.heap_bytes(), 0);
    }

    #[test]
    fn invalid_samples_are_ignored() {
        let s = LatencySketch::new();
        for v in [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY] {
            s.record(v);
        }
        assert_eq!(s.stats().count, 0);
        s.record(0.0);
        s.record(2e8);
        let st = s.stats();
        assert_eq!((st.count, st.min_ms, st.max_ms), (2, Some(0.0), Some(2e8)));
        assert_eq!(st.p50_ms, Some(0.0));
        assert_eq!(st.p99_ms, Some(2e8));
    }

    #[test]
    fn single_sample_is_exact() {
        let s = LatencySketch::new();
        s.record(250.0);
        let st = s.stats();
        assert_eq!(st.avg_ms(), Some(250.0));
        assert_eq!(
            (st.p50_ms, st.p95_ms, st.p99_ms),
            (Some(250.0), Some(250.0), Some(250.0))
        );
    }
}
