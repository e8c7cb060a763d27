//! Per-session agent metrics: the anchor's 25 names, plus percentiles for every latency.
//!
//! - [`MetricsRecorder`]: what agents call on their hot paths (wait-free atomics, no locks).
//! - [`AgentMetrics`]: an immutable snapshot, flushed to the registry and served by the API.
//!
//! Names: every counter is `<name>__total` (0 when empty); every latency is `<name>__avg`
//! (null when empty, as the anchor) plus `__p50`, `__p95`, `__p99`, `__max` (null when empty)
//! and `__count` (0 when empty).

pub mod sketch;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;

pub use sketch::{LatencySketch, LatencyStats};

macro_rules! metric_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $(#[doc = concat!("`", $wire, "`")] $variant),+
        }

        impl $name {
            /// Every metric of this kind, in the anchor's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The base name (without the `__` suffix).
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

metric_enum!(
    /// A cumulative count (`<name>__total`).
    Counter {
        SttAudioDurationMs => "stt_audio_duration_ms",
        TtsAudioDurationMs => "tts_audio_duration_ms",
        TtsCharacters => "tts_characters",
        LlmInputTokens => "llm_input_tokens",
        LlmOutputTokens => "llm_output_tokens",
        LlmToolCalls => "llm_tool_calls",
        RealtimeAudioInputBytes => "realtime_audio_input_bytes",
        RealtimeAudioOutputBytes => "realtime_audio_output_bytes",
        RealtimeAudioInputDurationMs => "realtime_audio_input_duration_ms",
        RealtimeAudioOutputDurationMs => "realtime_audio_output_duration_ms",
        RealtimeUserTranscriptions => "realtime_user_transcriptions",
        RealtimeAgentTranscriptions => "realtime_agent_transcriptions",
        VlmInferences => "vlm_inferences",
        VlmInputTokens => "vlm_input_tokens",
        VlmOutputTokens => "vlm_output_tokens",
        VideoFramesProcessed => "video_frames_processed",
    }
);

metric_enum!(
    /// A latency distribution in milliseconds (`<name>__avg` and percentiles).
    Latency {
        SttLatencyMs => "stt_latency_ms",
        TtsLatencyMs => "tts_latency_ms",
        LlmLatencyMs => "llm_latency_ms",
        LlmTimeToFirstTokenMs => "llm_time_to_first_token_ms",
        LlmToolLatencyMs => "llm_tool_latency_ms",
        TurnDurationMs => "turn_duration_ms",
        TurnTrailingSilenceMs => "turn_trailing_silence_ms",
        VlmInferenceLatencyMs => "vlm_inference_latency_ms",
        VideoProcessingLatencyMs => "video_processing_latency_ms",
    }
);

const COUNTERS: usize = 16;
const LATENCIES: usize = 9;
const _: () = assert!(COUNTERS + LATENCIES == 25, "the anchor has 25 metrics");

/// The suffixes each latency carries beyond the anchor's `__avg`.
pub const LATENCY_EXTRA_SUFFIXES: [&str; 5] = ["p50", "p95", "p99", "max", "count"];

/// The anchor's 25 names (`…__total` and `…__avg`), in its order: counters, then latencies.
pub fn anchor_metric_names() -> Vec<String> {
    Counter::ALL
        .iter()
        .map(|c| format!("{}__total", c.name()))
        .chain(Latency::ALL.iter().map(|l| format!("{}__avg", l.name())))
        .collect()
}

/// Every name a snapshot reports: the anchor's 25 and the 45 percentile fields.
pub fn all_metric_names() -> Vec<String> {
    let mut names = anchor_metric_names();
    for l in Latency::ALL {
        for suffix in LATENCY_EXTRA_SUFFIXES {
            names.push(format!("{}__{suffix}", l.name()));
        }
    }
    names
}

/// An immutable snapshot of one session's metrics. Compact: latencies without samples take
/// no space (a registry keeps one snapshot per session).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentMetrics {
    totals: [u64; COUNTERS],
    /// Only the latencies with samples, by `Latency` index.
    latencies: Vec<(u8, LatencyStats)>,
}

static EMPTY_STATS: LatencyStats = LatencyStats {
    count: 0,
    sum_ms: 0.0,
    min_ms: None,
    max_ms: None,
    p50_ms: None,
    p95_ms: None,
    p99_ms: None,
};

/// Where one wire value comes from.
#[derive(Clone, Copy)]
enum Slot {
    Total(usize),
    /// A latency and which of its six values (`avg, p50, p95, p99, max, count`).
    Latency(Latency, u8),
}

/// Every wire name with where its value comes from, in the wire's (sorted) order, built once.
fn names() -> &'static [(&'static str, Slot)] {
    static NAMES: std::sync::OnceLock<Vec<(&'static str, Slot)>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let mut sorted: Vec<(&'static str, Slot)> = Counter::ALL
            .iter()
            .map(|c| (leak(format!("{}__total", c.name())), Slot::Total(c.index())))
            .collect();
        for l in Latency::ALL {
            for (k, suffix) in ["avg", "p50", "p95", "p99", "max", "count"]
                .into_iter()
                .enumerate()
            {
                let name = leak(format!("{}__{suffix}", l.name()));
                sorted.push((name, Slot::Latency(*l, k as u8)));
            }
        }
        sorted.sort_unstable_by_key(|(name, _)| *name);
        sorted
    })
}

fn float(value: Option<f64>) -> Value {
    value
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

impl AgentMetrics {
    /// A counter's total.
    pub fn total(&self, counter: Counter) -> u64 {
        self.totals[counter.index()]
    }

    /// A latency's summary.
    pub fn latency(&self, latency: Latency) -> &LatencyStats {
        let index = latency.index() as u8;
        self.latencies
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(&EMPTY_STATS, |(_, stats)| stats)
    }

    /// Whether nothing was ever recorded.
    pub fn is_empty(&self) -> bool {
        self.totals.iter().all(|t| *t == 0) && self.latencies.iter().all(|(_, l)| l.count == 0)
    }

    /// One wire value (see [`AgentMetrics::to_map`]).
    fn value(&self, slot: Slot) -> Value {
        match slot {
            Slot::Total(i) => Value::from(self.totals[i]),
            Slot::Latency(l, k) => {
                let s = self.latency(l);
                match k {
                    0 => float(s.avg_ms()),
                    1 => float(s.p50_ms),
                    2 => float(s.p95_ms),
                    3 => float(s.p99_ms),
                    4 => float(s.max_ms),
                    _ => Value::from(s.count),
                }
            }
        }
    }

    /// The wire form as a serializable object, the same keys and values in the same order as
    /// [`AgentMetrics::to_map`], written straight to the serializer (no map is built: the
    /// metrics endpoint answers with it on every request).
    pub fn wire(&self) -> WireMetrics<'_> {
        WireMetrics {
            metrics: self,
            compact: false,
        }
    }

    /// The wire form without its empty entries (zero totals, and the latencies without
    /// samples): what a registry stores, since [`AgentMetrics::from_map`] reads a missing name
    /// as empty. A typical agent's metrics (a few counters and latencies) shrink from about
    /// 2.5 KB to under 1 KB, and a DynamoDB write is charged by size.
    pub fn compact(&self) -> WireMetrics<'_> {
        WireMetrics {
            metrics: self,
            compact: true,
        }
    }

    /// The wire form: every name of [`all_metric_names`] with its value (numbers or null).
    pub fn to_map(&self) -> BTreeMap<&'static str, Value> {
        names()
            .iter()
            .map(|(name, slot)| (*name, self.value(*slot)))
            .collect()
    }

    /// Rebuilds a snapshot from its wire form (as stored by a registry). Unknown keys are
    /// ignored and missing ones read as empty, so older and newer writers interoperate.
    pub fn from_map<K: std::borrow::Borrow<str> + Ord>(map: &BTreeMap<K, Value>) -> Self {
        let num = |key: String| map.get(key.as_str()).and_then(Value::as_f64);
        let mut metrics = Self::default();
        for c in Counter::ALL {
            metrics.totals[c.index()] = map
                .get(format!("{}__total", c.name()).as_str())
                .and_then(Value::as_u64)
                .unwrap_or(0);
        }
        for l in Latency::ALL {
            let name = l.name();
            let count = map
                .get(format!("{name}__count").as_str())
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let avg = num(format!("{name}__avg"));
            if count == 0 {
                continue;
            }
            let stats = LatencyStats {
                count,
                sum_ms: avg.map_or(0.0, |a| a * count as f64),
                min_ms: None,
                max_ms: num(format!("{name}__max")),
                p50_ms: num(format!("{name}__p50")),
                p95_ms: num(format!("{name}__p95")),
                p99_ms: num(format!("{name}__p99")),
            };
            metrics.latencies.push((l.index() as u8, stats));
        }
        metrics
    }
}

/// [`AgentMetrics::wire`] and [`AgentMetrics::compact`]: serializes as the JSON object
/// `to_map` would give (without its empty entries when compact).
#[derive(Debug, Clone, Copy)]
pub struct WireMetrics<'a> {
    metrics: &'a AgentMetrics,
    compact: bool,
}

impl serde::Serialize for WireMetrics<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let sorted = names();
        let mut map = serializer.serialize_map((!self.compact).then_some(sorted.len()))?;
        for (name, slot) in sorted {
            if self.compact {
                // A latency without samples has count 0 and null values; skip all six.
                if let Slot::Latency(l, _) = slot
                    && self.metrics.latency(*l).count == 0
                {
                    continue;
                }
                if let Slot::Total(i) = slot
                    && self.metrics.totals[*i] == 0
                {
                    continue;
                }
            }
            map.serialize_entry(name, &self.metrics.value(*slot))?;
        }
        map.end()
    }
}

#[derive(Debug)]
struct RecorderInner {
    totals: [AtomicU64; COUNTERS],
    /// Allocated on a latency's first sample: most agents record a few of the nine, and a
    /// recorder lives as long as its session.
    latencies: [OnceLock<Box<LatencySketch>>; LATENCIES],
    version: AtomicU64,
}

/// What an agent calls to record its metrics. Cheap to clone (one `Arc`), safe to share
/// across threads, and wait-free: every call is a handful of relaxed atomic operations with no
/// lock; a latency allocates only the first time a new range of values is seen (see
/// [`sketch`]'s memory bound).
#[derive(Debug, Clone)]
pub struct MetricsRecorder(Arc<RecorderInner>);

impl Default for MetricsRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self(Arc::new(RecorderInner {
            totals: std::array::from_fn(|_| AtomicU64::new(0)),
            latencies: std::array::from_fn(|_| OnceLock::new()),
            version: AtomicU64::new(0),
        }))
    }

    /// Adds `n` to a counter.
    pub fn add(&self, counter: Counter, n: u64) {
        if n > 0 {
            self.0.totals[counter.index()].fetch_add(n, Relaxed);
            self.0.version.fetch_add(1, Relaxed);
        }
    }

    /// Records one latency sample in milliseconds (NaN, infinite and negative are ignored).
    pub fn record(&self, latency: Latency, ms: f64) {
        self.0.latencies[latency.index()]
            .get_or_init(|| Box::new(LatencySketch::new()))
            .record(ms);
        self.0.version.fetch_add(1, Relaxed);
    }

    /// A change counter: the supervisor flushes only when it moved since the last flush.
    pub fn version(&self) -> u64 {
        self.0.version.load(Relaxed)
    }

    /// The current values.
    pub fn snapshot(&self) -> AgentMetrics {
        AgentMetrics {
            totals: std::array::from_fn(|i| self.0.totals[i].load(Relaxed)),
            latencies: self
                .0
                .latencies
                .iter()
                .enumerate()
                .filter_map(|(i, sketch)| Some((i, sketch.get()?)))
                .filter(|(_, sketch)| sketch.count() > 0)
                .map(|(i, sketch)| (i as u8, sketch.stats()))
                .collect(),
        }
    }

    /// Heap bytes held by the latency sketches (bounded by 9 × ([`sketch::MAX_HEAP_BYTES`] +
    /// the sketch itself)).
    pub fn heap_bytes(&self) -> usize {
        self.0
            .latencies
            .iter()
            .filter_map(OnceLock::get)
            .map(|sketch| std::mem::size_of::<LatencySketch>() + sketch.heap_bytes())
            .sum()
    }

    // The anchor's collector events, one per pipeline stage. Times are `Duration`s (recorded
    // in milliseconds, as the anchor's names say), token counts a [`Usage`].

    /// An LLM response: total latency, time to first token (when streamed), token usage.
    pub fn on_llm_response(
        &self,
        latency: Duration,
        time_to_first_token: Option<Duration>,
        usage: Usage,
    ) {
        self.record(Latency::LlmLatencyMs, millis(latency));
        if let Some(ttft) = time_to_first_token {
            self.record(Latency::LlmTimeToFirstTokenMs, millis(ttft));
        }
        self.add(Counter::LlmInputTokens, usage.input_tokens);
        self.add(Counter::LlmOutputTokens, usage.output_tokens);
    }

    /// A tool (function) call and how long it ran.
    pub fn on_tool_call(&self, execution: Duration) {
        self.add(Counter::LlmToolCalls, 1);
        self.record(Latency::LlmToolLatencyMs, millis(execution));
    }

    /// A speech-to-text transcript: how long it took, and how much audio it covered.
    pub fn on_stt_transcript(&self, processing: Duration, audio: Duration) {
        self.record(Latency::SttLatencyMs, millis(processing));
        self.add(Counter::SttAudioDurationMs, whole_millis(audio));
    }

    /// A text-to-speech synthesis: how long it took, the audio it made, its characters.
    pub fn on_tts_synthesis(&self, synthesis: Duration, audio: Duration, characters: u64) {
        self.record(Latency::TtsLatencyMs, millis(synthesis));
        self.add(Counter::TtsAudioDurationMs, whole_millis(audio));
        self.add(Counter::TtsCharacters, characters);
    }

    /// The end of a conversational turn.
    pub fn on_turn_ended(&self, duration: Duration, trailing_silence: Duration) {
        self.record(Latency::TurnDurationMs, millis(duration));
        self.record(Latency::TurnTrailingSilenceMs, millis(trailing_silence));
    }

    /// Audio sent to a realtime model.
    pub fn on_realtime_audio_input(&self, bytes: u64, duration: Duration) {
        self.add(Counter::RealtimeAudioInputBytes, bytes);
        self.add(
            Counter::RealtimeAudioInputDurationMs,
            whole_millis(duration),
        );
    }

    /// Audio received from a realtime model.
    pub fn on_realtime_audio_output(&self, bytes: u64, duration: Duration) {
        self.add(Counter::RealtimeAudioOutputBytes, bytes);
        self.add(
            Counter::RealtimeAudioOutputDurationMs,
            whole_millis(duration),
        );
    }

    /// A user transcription from a realtime model.
    pub fn on_realtime_user_transcription(&self) {
        self.add(Counter::RealtimeUserTranscriptions, 1);
    }

    /// An agent transcription from a realtime model.
    pub fn on_realtime_agent_transcription(&self) {
        self.add(Counter::RealtimeAgentTranscriptions, 1);
    }

    /// A vision-language model inference: its latency and token usage.
    pub fn on_vlm_inference(&self, latency: Duration, usage: Usage) {
        self.add(Counter::VlmInferences, 1);
        self.record(Latency::VlmInferenceLatencyMs, millis(latency));
        self.add(Counter::VlmInputTokens, usage.input_tokens);
        self.add(Counter::VlmOutputTokens, usage.output_tokens);
    }

    /// One processed video frame.
    pub fn on_video_frame_processed(&self, latency: Duration) {
        self.add(Counter::VideoFramesProcessed, 1);
        self.record(Latency::VideoProcessingLatencyMs, millis(latency));
    }
}

/// Token usage of one model response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

impl Usage {
    /// `input_tokens` in, `output_tokens` out.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens,
            output_tokens,
        }
    }
}

/// A duration in milliseconds, as the latencies are recorded.
fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A duration in whole milliseconds, as the duration counters count.
fn whole_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_25_anchor_names_and_70_in_all() {
        let anchor = anchor_metric_names();
        assert_eq!(anchor.len(), 25);
        for name in [
            "stt_latency_ms__avg",
            "llm_time_to_first_token_ms__avg",
            "realtime_audio_output_duration_ms__total",
            "video_processing_latency_ms__avg",
            "vlm_output_tokens__total",
        ] {
            assert!(anchor.contains(&name.to_owned()), "{name}");
        }
        let all = all_metric_names();
        assert_eq!(all.len(), 70);
        let map = AgentMetrics::default().to_map();
        assert_eq!(
            map.keys()
                .map(|k| k.to_string())
                .collect::<std::collections::BTreeSet<_>>(),
            all.into_iter().collect()
        );
    }

    #[test]
    fn empty_snapshot_has_null_averages_and_zero_totals() {
        let map = AgentMetrics::default().to_map();
        assert_eq!(map["llm_latency_ms__avg"], Value::Null);
        assert_eq!(map["llm_latency_ms__p99"], Value::Null);
        assert_eq!(map["llm_latency_ms__count"], Value::from(0));
        assert_eq!(map["llm_input_tokens__total"], Value::from(0));
    }

    #[test]
    fn every_event_reaches_its_metrics() {
        let r = MetricsRecorder::new();
        let ms = Duration::from_millis;
        r.on_llm_response(ms(250), Some(ms(120)), Usage::new(1500, 800));
        r.on_tool_call(ms(12));
        r.on_stt_transcript(ms(85), ms(1000));
        r.on_tts_synthesis(ms(95), ms(2000), 42);
        r.on_turn_ended(ms(3000), ms(400));
        r.on_realtime_audio_input(3200, ms(100));
        r.on_realtime_audio_output(6400, ms(200));
        r.on_realtime_user_transcription();
        r.on_realtime_agent_transcription();
        r.on_vlm_inference(ms(300), Usage::new(10, 20));
        r.on_video_frame_processed(Duration::from_micros(4_500));
        let m = r.snapshot();
        for c in Counter::ALL {
            assert!(m.total(*c) > 0, "{} never recorded", c.name());
        }
        for l in Latency::ALL {
            assert_eq!(m.latency(*l).count, 1, "{} never recorded", l.name());
        }
        let map = m.to_map();
        assert_eq!(map["llm_latency_ms__avg"], Value::from(250.0));
        assert_eq!(map["llm_input_tokens__total"], Value::from(1500));
        assert_eq!(map["tts_characters__total"], Value::from(42));
        assert_eq!(map["stt_audio_duration_ms__total"], Value::from(1000));
        assert_eq!(
            map["video_processing_latency_ms__avg"],
            Value::from(4.5),
            "a sub-millisecond part is kept"
        );
    }

    #[test]
    fn version_moves_only_on_change() {
        let r = MetricsRecorder::new();
        let v0 = r.version();
        r.add(Counter::LlmToolCalls, 0);
        assert_eq!(r.version(), v0);
        r.add(Counter::LlmToolCalls, 1);
        assert!(r.version() > v0);
    }

    #[test]
    fn wire_map_round_trips() {
        let r = MetricsRecorder::new();
        let ms = Duration::from_millis;
        r.on_llm_response(ms(100), Some(ms(50)), Usage::new(3, 4));
        r.on_llm_response(ms(300), None, Usage::new(1, 1));
        let m = r.snapshot();
        let back = AgentMetrics::from_map(&m.to_map());
        assert_eq!(back.to_map(), m.to_map());
        assert_eq!(back.latency(Latency::LlmLatencyMs).avg_ms(), Some(200.0));
    }

    #[test]
    fn the_streamed_wire_form_is_the_map_byte_for_byte() {
        let r = MetricsRecorder::new();
        r.on_llm_response(
            Duration::from_millis(100),
            Some(Duration::from_millis(50)),
            Usage::new(3, 4),
        );
        r.on_tool_call(Duration::from_micros(12_500));
        r.add(Counter::LlmInputTokens, 7);
        for m in [AgentMetrics::default(), r.snapshot()] {
            let streamed = serde_json::to_string(&m.wire()).unwrap();
            assert_eq!(streamed, serde_json::to_string(&m.to_map()).unwrap());
            let keys = serde_json::from_str::<serde_json::Map<String, Value>>(&streamed)
                .unwrap()
                .len();
            assert_eq!(keys, 70);
            // What a registry stores: the empty entries left out, the same metrics read back.
            let compact = serde_json::to_string(&m.compact()).unwrap();
            let stored: BTreeMap<String, Value> = serde_json::from_str(&compact).unwrap();
            assert_eq!(AgentMetrics::from_map(&stored).to_map(), m.to_map());
            assert!(!stored.values().any(Value::is_null), "{compact}");
        }
        let typical = r.snapshot();
        let (full, compact) = (
            serde_json::to_string(&typical.wire()).unwrap(),
            serde_json::to_string(&typical.compact()).unwrap(),
        );
        assert!(
            compact.len() * 3 < full.len(),
            "{} vs {}",
            compact.len(),
            full.len()
        );
        assert_eq!(
            serde_json::to_string(&AgentMetrics::default().compact()).unwrap(),
            "{}"
        );
    }
}
