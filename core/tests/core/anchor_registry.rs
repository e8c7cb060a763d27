//! The anchor's `test_session_registry/test_registry.py` (anchor-study §9.4), ported one for
//! one on `MemoryRegistry`. Their TTL cases become lease cases: a session is not deleted when
//! its heartbeats stop; its lease expires and a guarded end frees it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_core::conformance::{Harness, T0, call, request};
use switchboard_core::metrics::{AgentMetrics, Counter, Latency, MetricsRecorder};
use switchboard_core::registry::{EndGuard, EndRequest, ListQuery};
use switchboard_core::{
    EndReason, Error, LimitOptions, Limits, ManualClock, MemoryRegistry, SessionStatus,
};

fn harness() -> Harness {
    let clock = Arc::new(ManualClock::new(T0));
    Harness {
        registry: Arc::new(MemoryRegistry::new(clock.clone())),
        clock,
    }
}

#[tokio::test]
async fn test_register_and_get() {
    let h = harness();
    let s = h.start(&call("call-1")).await;
    let got = h.get(&s).await.unwrap();
    assert_eq!((got.id, got.call_id.as_str()), (s.id, "call-1"));
    // The anchor checks `node_id`; our rows name their owner through the lease instead.
    assert_eq!(got.lease_expires_at, T0 + Duration::from_secs(30));
}

#[tokio::test]
async fn test_get_for_call() {
    let h = harness();
    let c = call("call-1");
    let a = h.start(&c).await;
    let b = h.start(&c).await;
    let page = h
        .registry
        .list(ListQuery {
            call_id: Some(c),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = page.sessions.iter().map(|l| l.session.id).collect();
    assert_eq!(ids, vec![a.id, b.id]);
}

#[tokio::test]
async fn test_remove() {
    let h = harness();
    let s = h.start(&call("call-1")).await;
    h.end(&s, EndReason::Requested).await;
    // "Removed" means ended: invisible to GET/close in the API, kept for the history.
    let got = h.get(&s).await.unwrap();
    assert_eq!(got.status, SessionStatus::Ended);
    let live = h
        .registry
        .list(ListQuery {
            call_id: Some(call("call-1")),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(live.sessions.is_empty());
}

#[tokio::test]
async fn test_request_close_and_get_close_requests() {
    let h = harness();
    let close = h.start(&call("call-c")).await;
    let other = h.start(&call("call-x")).await;
    h.registry
        .request_close(&close.call_id, close.id)
        .await
        .unwrap();
    let flag = |s: &switchboard_core::Session| {
        let (r, c, id) = (h.registry.clone(), s.call_id.clone(), s.id);
        async move {
            r.heartbeat(&c, id, Duration::from_secs(30))
                .await
                .unwrap()
                .close_requested
        }
    };
    assert!(flag(&close).await);
    assert!(!flag(&other).await);
}

#[tokio::test]
async fn test_update_metrics() {
    let h = harness();
    let s = h.start(&call("call-1")).await;
    let recorder = MetricsRecorder::new();
    recorder.record(Latency::LlmLatencyMs, 42.0);
    h.registry
        .flush_metrics(&s.call_id, s.id, &recorder.snapshot())
        .await
        .unwrap();
    let report = h
        .registry
        .get_metrics(&s.call_id, s.id)
        .await
        .unwrap()
        .unwrap()
        .report
        .unwrap();
    assert_eq!(
        report.metrics.latency(Latency::LlmLatencyMs).avg_ms(),
        Some(42.0)
    );
}

#[tokio::test]
async fn test_update_metrics_skipped_for_expired_session() {
    let h = harness();
    let s = h.start(&call("call-1")).await;
    h.clock.advance(Duration::from_secs(31));
    h.registry
        .end(
            &s.call_id,
            s.id,
            EndRequest::new(EndReason::LeaseExpired).guard(EndGuard::LeaseExpired),
        )
        .await
        .unwrap();
    let recorder = MetricsRecorder::new();
    recorder.add(Counter::LlmInputTokens, 5);
    let flush = h
        .registry
        .flush_metrics(&s.call_id, s.id, &recorder.snapshot())
        .await;
    assert!(matches!(flush, Err(Error::Conflict(_))));
    let heartbeat = h
        .registry
        .heartbeat(&s.call_id, s.id, Duration::from_secs(30))
        .await;
    assert!(
        matches!(heartbeat, Err(Error::Conflict(_))),
        "no resurrection"
    );
    let row = h.get(&s).await.unwrap();
    assert_eq!(row.status, SessionStatus::Ended);
    assert!(
        h.registry
            .get_metrics(&s.call_id, s.id)
            .await
            .unwrap()
            .unwrap()
            .report
            .is_none()
    );
}

#[tokio::test]
async fn test_session_expires_after_ttl() {
    let h = harness();
    let s = h.start(&call("call-1")).await;
    h.clock.advance(Duration::from_secs(29));
    assert!(h.registry.expired_leases(10).await.unwrap().is_empty());
    h.clock.advance(Duration::from_secs(1));
    let expired = h.registry.expired_leases(10).await.unwrap();
    assert_eq!(expired.iter().map(|s| s.id).collect::<Vec<_>>(), vec![s.id]);
}

#[tokio::test]
async fn test_get_ignores_extra_keys() {
    // Stored metrics written by a newer version carry names we do not know: ignored.
    let mut map: BTreeMap<String, Value> = AgentMetrics::default()
        .to_map()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    map.insert("future_metric__total".into(), json!(9));
    map.insert("llm_input_tokens__total".into(), json!(10));
    let metrics = AgentMetrics::from_map(&map);
    assert_eq!(metrics.total(Counter::LlmInputTokens), 10);
    assert!(!metrics.to_map().contains_key("future_metric__total"));
}

#[tokio::test]
async fn test_get_for_call_ignores_extra_keys() {
    // Calls whose ids share a prefix are distinct (the anchor's Redis SCAN glob risk).
    let h = harness();
    let a = h.start(&call("test")).await;
    h.start(&call("test-2")).await;
    h.start(&call("tes*")).await;
    let page = h
        .registry
        .list(ListQuery {
            call_id: Some(call("test")),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.sessions
            .iter()
            .map(|l| l.session.id)
            .collect::<Vec<_>>(),
        vec![a.id]
    );
}

#[test]
fn test_invalid_ttl() {
    for bad in [0.0, -5.0] {
        let err = Limits::new(LimitOptions {
            session_lease_seconds: Some(bad),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "session_lease_seconds must be > 0");
    }
}

#[test]
fn test_from_dict_exact_keys() {
    let mut map = BTreeMap::new();
    map.insert("llm_input_tokens__total".to_owned(), json!(10));
    assert_eq!(
        AgentMetrics::from_map(&map).total(Counter::LlmInputTokens),
        10
    );
}

#[test]
fn test_from_dict_extra_keys_ignored() {
    let mut map = BTreeMap::new();
    map.insert("llm_input_tokens__total".to_owned(), json!(10));
    map.insert("nope".to_owned(), json!("x"));
    assert_eq!(
        AgentMetrics::from_map(&map).total(Counter::LlmInputTokens),
        10
    );
}

/// The anchor raises on a missing required key; our stored metrics are forward and backward
/// compatible instead: a missing name reads as empty (0 or null), never as an error.
#[test]
fn test_from_dict_missing_key_reads_as_empty() {
    let metrics = AgentMetrics::from_map(&BTreeMap::<String, Value>::new());
    assert!(metrics.is_empty());
    assert_eq!(metrics.to_map()["llm_latency_ms__avg"], Value::Null);
}

#[tokio::test]
async fn start_request_without_limits_counts_but_never_refuses() {
    let h = harness();
    for _ in 0..50 {
        h.registry.start(request(&call("c"))).await.unwrap();
    }
    assert_eq!(h.registry.counts(&call("c")).await.unwrap().per_call, 50);
}
