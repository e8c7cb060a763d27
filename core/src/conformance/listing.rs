//! Reading sessions: lists and their pages, retention of ended rows, metrics and metadata.

use std::time::Duration;

use super::*;

pub async fn list_paginates_in_creation_order_and_filters_ended(h: Harness) {
    let c = call("call-a");
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(h.start(&c).await);
        h.clock.advance(Duration::from_millis(10));
    }
    h.start(&call("call-b")).await;
    h.end(&ids[1], EndReason::Requested).await;
    let mut seen = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = h
            .registry
            .list(ListQuery {
                call_id: Some(c.clone()),
                include_ended: false,
                limit: 2,
                next_token: token,
                with_metrics: false,
            })
            .await
            .unwrap();
        assert!(page.sessions.len() <= 2);
        seen.extend(page.sessions.iter().map(|l| l.session.id));
        pages += 1;
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    let live: Vec<_> = ids
        .iter()
        .filter(|s| s.id != ids[1].id)
        .map(|s| s.id)
        .collect();
    assert_eq!(seen, live);
    assert_eq!(pages, 3);
    let all = h
        .registry
        .list(ListQuery {
            call_id: Some(c.clone()),
            include_ended: true,
            limit: 0,
            next_token: None,
            with_metrics: false,
        })
        .await
        .unwrap();
    assert_eq!(all.sessions.len(), 7);
    assert!(all.next_token.is_none());
    let ended = &all.sessions[1].session;
    assert_eq!(ended.status, SessionStatus::Ended);
    assert_eq!(ended.end_reason, Some(EndReason::Requested));
}

pub async fn list_across_calls(h: Harness) {
    let a = h.start(&call("call-a")).await;
    let b = h.start(&call("call-b")).await;
    let b2 = h.start(&call("call-b")).await;
    h.end(&b2, EndReason::Idle).await;
    let page = h
        .registry
        .list(ListQuery {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.sessions.len(), 1);
    let rest = h
        .registry
        .list(ListQuery {
            limit: 10,
            next_token: page.next_token,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ids: Vec<_> = page
        .sessions
        .iter()
        .chain(&rest.sessions)
        .map(|l| l.session.id)
        .collect();
    ids.sort();
    let mut want = vec![a.id, b.id];
    want.sort();
    assert_eq!(ids, want);
    let with_ended = h
        .registry
        .list(ListQuery {
            include_ended: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(with_ended.sessions.len(), 3);
}

pub async fn ended_sessions_keep_final_metrics_until_retention_expires(h: Harness) {
    let c = call("call-a");
    let s = h.start(&c).await;
    let recorder = MetricsRecorder::new();
    recorder.on_llm_response(
        Duration::from_millis(42),
        Some(Duration::from_millis(10)),
        crate::metrics::Usage::new(100, 50),
    );
    let retention = Duration::from_secs(3600);
    h.registry
        .end(
            &c,
            s.id,
            EndRequest::new(EndReason::AgentFinished)
                .metrics(recorder.snapshot())
                .retention(retention),
        )
        .await
        .unwrap();
    let ended = h.get(&s).await.unwrap();
    assert_eq!(ended.status, SessionStatus::Ended);
    assert_eq!(ended.ended_at, Some(T0));
    assert_eq!(ended.expires_at, Some(T0 + retention));
    let page = h
        .registry
        .list(ListQuery {
            call_id: Some(c.clone()),
            include_ended: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let report = page.sessions[0]
        .final_metrics
        .as_ref()
        .expect("final metrics");
    assert_eq!(report.metrics.total(Counter::LlmInputTokens), 100);
    assert_eq!(
        report.metrics.latency(Latency::LlmLatencyMs).avg_ms(),
        Some(42.0)
    );
    h.clock.advance(retention);
    assert!(
        h.get(&s).await.is_none(),
        "reads ignore rows past retention"
    );
    let page = h
        .registry
        .list(ListQuery {
            call_id: Some(c),
            include_ended: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(page.sessions.is_empty());
}

pub async fn lists_carry_live_metrics_only_when_asked(h: Harness) {
    let c = call("call-a");
    let flushed = h.start(&c).await;
    let fresh = h.start(&c).await;
    let recorder = MetricsRecorder::new();
    recorder.on_llm_response(
        Duration::from_millis(42),
        Some(Duration::from_millis(10)),
        crate::metrics::Usage::new(100, 50),
    );
    h.registry
        .flush_metrics(&c, flushed.id, &recorder.snapshot())
        .await
        .unwrap();
    for call_id in [Some(c.clone()), None] {
        let plain = h
            .registry
            .list(ListQuery {
                call_id: call_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(plain.sessions.len(), 2);
        assert!(plain.sessions.iter().all(|l| l.live_metrics.is_none()));
        let with = h
            .registry
            .list(ListQuery {
                call_id,
                with_metrics: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let by_id = |id| {
            with.sessions
                .iter()
                .find(|l| l.session.id == id)
                .expect("listed")
        };
        let report = by_id(flushed.id)
            .live_metrics
            .as_ref()
            .expect("the latest flush");
        assert_eq!(report.metrics.total(Counter::LlmInputTokens), 100);
        assert!(
            by_id(fresh.id).live_metrics.is_none(),
            "no flush yet: no report"
        );
        assert!(with.sessions.iter().all(|l| l.final_metrics.is_none()));
    }
}

pub async fn metrics_round_trip_and_never_resurrect(h: Harness) {
    let s = h.start(&call("call-a")).await;
    let fresh = h
        .registry
        .get_metrics(&s.call_id, s.id)
        .await
        .unwrap()
        .unwrap();
    assert!(fresh.report.is_none());
    let recorder = MetricsRecorder::new();
    recorder.record(Latency::LlmLatencyMs, 42.0);
    h.clock.advance(Duration::from_secs(5));
    h.registry
        .flush_metrics(&s.call_id, s.id, &recorder.snapshot())
        .await
        .unwrap();
    let got = h
        .registry
        .get_metrics(&s.call_id, s.id)
        .await
        .unwrap()
        .unwrap();
    let report = got.report.unwrap();
    assert_eq!(report.generated_at, T0 + Duration::from_secs(5));
    assert_eq!(
        report.metrics.latency(Latency::LlmLatencyMs).avg_ms(),
        Some(42.0)
    );
    h.end(&s, EndReason::Requested).await;
    recorder.record(Latency::LlmLatencyMs, 1000.0);
    assert!(matches!(
        h.registry
            .flush_metrics(&s.call_id, s.id, &recorder.snapshot())
            .await,
        Err(Error::Conflict(_))
    ));
    let after = h
        .registry
        .get_metrics(&s.call_id, s.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.session.status, SessionStatus::Ended);
    assert_eq!(
        after
            .report
            .unwrap()
            .metrics
            .latency(Latency::LlmLatencyMs)
            .avg_ms(),
        Some(42.0)
    );
}

pub async fn metadata_is_stored_with_the_session(h: Harness) {
    let c = call("call-a");
    let mut req = request(&c);
    let metadata =
        Metadata::parse(serde_json::json!({"user": "u-1", "lang": "fr", "n": 3})).unwrap();
    req.metadata = Some(metadata.clone());
    let id = req.session_id;
    h.registry.start(req).await.unwrap();
    assert_eq!(
        h.registry.get_metadata(&c, id).await.unwrap(),
        Some(metadata)
    );
    let bare = h.start(&c).await;
    assert_eq!(h.registry.get_metadata(&c, bare.id).await.unwrap(), None);
}

pub async fn invalid_next_token_is_invalid_input(h: Harness) {
    h.start(&call("call-a")).await;
    for token in ["zz", "not a token", "abc"] {
        let r = h
            .registry
            .list(ListQuery {
                next_token: Some(token.into()),
                ..Default::default()
            })
            .await;
        assert!(matches!(r, Err(Error::Invalid(_))), "{token}: {r:?}");
    }
}
