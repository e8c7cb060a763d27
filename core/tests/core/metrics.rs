//! The latency estimator against exact values: accuracy (≤ 1 % relative error at p50, p95,
//! p99) and the memory bound, measured with a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use switchboard_core::metrics::LatencySketch;
use switchboard_core::metrics::sketch::{MAX_HEAP_BYTES, MAX_VALUE, MIN_VALUE};

struct CountingAllocator;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

#[allow(unsafe_code)]
// SAFETY: forwards to the system allocator; only adds thread-local bookkeeping.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.with(|a| a.set(a.get() + layout.size()));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.with(|a| a.set(a.get().saturating_sub(layout.size())));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Bytes this thread allocated (net) while running `f`.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATED.with(Cell::get);
    let out = f();
    (out, ALLOCATED.with(Cell::get) - before)
}

fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

fn relative_error(estimate: f64, exact: f64) -> f64 {
    if exact == 0.0 {
        estimate.abs()
    } else {
        (estimate - exact).abs() / exact
    }
}

fn samples() -> impl Strategy<Value = Vec<f64>> {
    // Log-uniform over the tracked range, as latencies spread over orders of magnitude.
    let lo = MIN_VALUE.ln();
    let hi = MAX_VALUE.ln();
    prop::collection::vec((lo..hi).prop_map(f64::exp), 1..3000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn quantiles_are_within_one_percent_of_exact(values in samples()) {
        let sketch = LatencySketch::new();
        for v in &values {
            sketch.record(*v);
        }
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let stats = sketch.stats();
        for (q, est) in [(0.5, stats.p50_ms), (0.95, stats.p95_ms), (0.99, stats.p99_ms)] {
            let exact = exact_quantile(&sorted, q);
            let err = relative_error(est.unwrap(), exact);
            prop_assert!(err <= 0.01, "q={q} est={est:?} exact={exact} err={err}");
        }
        prop_assert_eq!(stats.count, values.len() as u64);
        prop_assert_eq!(stats.max_ms, sorted.last().copied());
        let exact_avg = values.iter().sum::<f64>() / values.len() as f64;
        prop_assert!(relative_error(stats.avg_ms().unwrap(), exact_avg) < 1e-3 || (stats.avg_ms().unwrap() - exact_avg).abs() < 1e-3);
    }

    #[test]
    fn narrow_latency_ranges_are_accurate_too(base in 1.0f64..5000.0, spread in prop::collection::vec(0.0f64..1.0, 1..2000)) {
        let values: Vec<f64> = spread.iter().map(|s| base * (1.0 + s)).collect();
        let sketch = LatencySketch::new();
        values.iter().for_each(|v| sketch.record(*v));
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for q in [0.5, 0.95, 0.99] {
            let err = relative_error(sketch.quantile(q).unwrap(), exact_quantile(&sorted, q));
            prop_assert!(err <= 0.01, "q={q} err={err}");
        }
    }
}

#[test]
fn memory_stays_within_the_stated_bound_whatever_the_input() {
    let sketch = LatencySketch::new();
    let ((), bytes) = allocated_by(|| {
        // Every bucket of the layout, many times over, plus out-of-range values.
        let mut v = MIN_VALUE / 10.0;
        while v < MAX_VALUE * 10.0 {
            for _ in 0..3 {
                sketch.record(v);
            }
            v *= 1.001;
        }
    });
    assert!(bytes <= MAX_HEAP_BYTES, "{bytes} > {MAX_HEAP_BYTES}");
    assert_eq!(
        sketch.heap_bytes(),
        bytes,
        "heap_bytes() reports what was allocated"
    );
    assert_eq!(MAX_HEAP_BYTES, 6256);
}

#[test]
fn a_typical_latency_touches_few_chunks_and_recording_does_not_allocate_after_warmup() {
    let sketch = LatencySketch::new();
    let ((), first) = allocated_by(|| sketch.record(250.0));
    assert!(
        first > 0 && first <= 368 + 256,
        "first sample allocates the table and one chunk: {first}"
    );
    let ((), steady) = allocated_by(|| {
        for i in 0..100_000 {
            sketch.record(240.0 + f64::from(i % 20));
        }
    });
    assert_eq!(steady, 0, "steady-state recording must not allocate");
}

/// The per-frame path (`on_video_frame_processed`) is safe to call for every video frame:
/// after the first frame of each latency range, it allocates nothing, takes no lock (two
/// threads record at once) and loses no sample.
#[test]
fn the_per_frame_path_allocates_nothing_and_loses_no_sample_across_threads() {
    use std::sync::Arc;
    use switchboard_core::MetricsRecorder;
    use switchboard_core::metrics::{Counter, Latency};

    let recorder = Arc::new(MetricsRecorder::new());
    for ms in [15, 16, 17, 18] {
        recorder.on_video_frame_processed(std::time::Duration::from_millis(ms)); // the chunks these frames land in
    }
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let recorder = recorder.clone();
            std::thread::spawn(move || {
                let ((), bytes) = allocated_by(|| {
                    for i in 0..200_000u32 {
                        recorder.on_video_frame_processed(std::time::Duration::from_millis(
                            15 + u64::from(i % 4),
                        ));
                    }
                });
                bytes
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), 0, "a frame must not allocate");
    }
    let metrics = recorder.snapshot();
    assert_eq!(metrics.total(Counter::VideoFramesProcessed), 400_004);
    assert_eq!(
        metrics.latency(Latency::VideoProcessingLatencyMs).count,
        400_004
    );
}

/// A recorder lives as long as its session, so one that records nothing stays small: its
/// sketches are allocated on each latency's first sample, and `heap_bytes` reports them.
#[test]
fn a_recorder_allocates_a_sketch_only_for_the_latencies_it_records() {
    use switchboard_core::MetricsRecorder;
    use switchboard_core::metrics::Latency;

    let (recorder, empty) = allocated_by(MetricsRecorder::new);
    assert!(
        empty <= 320,
        "an empty recorder is counters and nine empty slots: {empty} bytes"
    );
    assert_eq!(recorder.heap_bytes(), 0);
    assert!(recorder.snapshot().is_empty());

    let ((), first) = allocated_by(|| recorder.record(Latency::LlmLatencyMs, 250.0));
    let sketch = std::mem::size_of::<LatencySketch>();
    assert!(
        first > sketch && first <= sketch + 368 + 256,
        "a first sample allocates one sketch, its table and one chunk: {first} bytes"
    );
    assert_eq!(recorder.heap_bytes(), first);
    let ((), again) = allocated_by(|| recorder.record(Latency::LlmLatencyMs, 251.0));
    assert_eq!(
        again, 0,
        "a second sample in the same range allocates nothing"
    );
    let snapshot = recorder.snapshot();
    assert_eq!(snapshot.latency(Latency::LlmLatencyMs).count, 2);
}
