//! Admission: the limits under concurrent starts, the counters, and the end that releases exactly what the start took.

use super::*;

async fn concurrent_starts(
    h: &Harness,
    n: usize,
    calls: impl Fn(usize) -> CallId,
    global: Option<u32>,
    per_call: Option<u32>,
) -> Vec<Result<StartOutcome, Error>> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let registry = h.registry.clone();
            let mut req = request(&calls(i));
            req.max_concurrent_sessions = global;
            req.max_sessions_per_call = per_call;
            tokio::spawn(async move { registry.start(req).await })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

pub async fn start_then_get_returns_a_starting_session(h: Harness) {
    let c = call("call-a");
    let s = h.start(&c).await;
    assert_eq!(s.status, SessionStatus::Starting);
    assert_eq!(s.created_at, T0);
    assert_eq!(s.lease_expires_at, T0 + LEASE);
    assert_eq!(s.call_type.as_str(), "default");
    let got = h.get(&s).await.expect("session exists");
    assert_eq!(got.id, s.id);
    assert_eq!(got.call_id, c);
    assert_eq!(got.status, SessionStatus::Starting);
    assert_eq!(got.created_at, T0);
    assert!(got.ended_at.is_none() && got.end_reason.is_none());
    let counts = h.registry.counts(&c).await.unwrap();
    assert_eq!((counts.global, counts.per_call), (1, 1));
}

pub async fn lookups_are_scoped_by_call(h: Harness) {
    let s = h.start(&call("call-a")).await;
    let other = call("call-b");
    assert!(h.registry.get(&other, s.id).await.unwrap().is_none());
    assert!(
        h.registry
            .get(&s.call_id, SessionId::generate())
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        h.registry.request_close(&other, s.id).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        h.registry
            .end(&other, s.id, EndRequest::new(EndReason::Requested))
            .await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        h.registry.heartbeat(&other, s.id, LEASE).await,
        Err(Error::NotFound)
    ));
    assert!(
        h.registry
            .get_metrics(&other, s.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(h.get(&s).await.unwrap().status, SessionStatus::Starting);
}

pub async fn global_limit_admits_exactly_k_of_200_concurrent_starts(h: Harness) {
    let results = concurrent_starts(&h, 200, |i| call(&format!("call-{i}")), Some(10), None).await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(Error::LimitReached(LimitKind::Global))))
        .count();
    assert_eq!((admitted, refused), (10, 190));
    assert_eq!(h.registry.counts(&call("call-0")).await.unwrap().global, 10);
}

pub async fn per_call_limit_admits_exactly_k_and_spares_other_calls(h: Harness) {
    let c = call("busy-call");
    let results = concurrent_starts(&h, 50, |_| c.clone(), None, Some(3)).await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(Error::LimitReached(LimitKind::PerCall))))
        .count();
    assert_eq!((admitted, refused), (3, 47));
    let mut other = request(&call("quiet-call"));
    other.max_sessions_per_call = Some(3);
    assert!(h.registry.start(other).await.is_ok());
    let counts = h.registry.counts(&c).await.unwrap();
    assert_eq!((counts.global, counts.per_call), (4, 3));
}

pub async fn a_limit_configured_later_counts_every_live_session(h: Harness) {
    let c = call("call-a");
    for _ in 0..3 {
        h.start(&c).await;
    }
    let mut req = request(&c);
    req.max_sessions_per_call = Some(3);
    assert!(matches!(
        h.registry.start(req).await,
        Err(Error::LimitReached(LimitKind::PerCall))
    ));
    let mut req = request(&call("call-b"));
    req.max_concurrent_sessions = Some(3);
    assert!(matches!(
        h.registry.start(req).await,
        Err(Error::LimitReached(LimitKind::Global))
    ));
}

pub async fn changing_or_removing_limits_never_over_admits_or_goes_negative(h: Harness) {
    let c = call("call-a");
    let start = |global: Option<u32>, per_call: Option<u32>| {
        let mut req = request(&c);
        req.max_concurrent_sessions = global;
        req.max_sessions_per_call = per_call;
        h.registry.start(req)
    };
    let mut live = Vec::new();
    for _ in 0..3 {
        live.push(start(Some(3), Some(3)).await.unwrap());
    }
    assert!(matches!(
        start(Some(3), Some(3)).await,
        Err(Error::LimitReached(_))
    ));
    // Limits removed: more sessions are admitted and counted.
    for _ in 0..2 {
        live.push(start(None, None).await.unwrap());
    }
    // Limits lowered below the live count: nothing is admitted.
    assert!(matches!(
        start(Some(2), None).await,
        Err(Error::LimitReached(LimitKind::Global))
    ));
    assert!(matches!(
        start(None, Some(2)).await,
        Err(Error::LimitReached(LimitKind::PerCall))
    ));
    for outcome in &live {
        let StartOutcome::Created(s) = outcome else {
            panic!("created")
        };
        h.end(s, EndReason::Requested).await;
        h.end(s, EndReason::Requested).await;
    }
    let counts = h.registry.counts(&c).await.unwrap();
    assert_eq!(
        (counts.global, counts.per_call),
        (0, 0),
        "back to zero, never below"
    );
    // The lowered limit now admits exactly its size.
    assert!(start(Some(2), Some(2)).await.is_ok());
    assert!(start(Some(2), Some(2)).await.is_ok());
    assert!(matches!(
        start(Some(2), Some(2)).await,
        Err(Error::LimitReached(_))
    ));
}

pub async fn end_releases_slots_exactly_once_under_concurrent_enders(h: Harness) {
    let c = call("call-a");
    let keep = h.start(&c).await;
    let s = h.start(&c).await;
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let registry = h.registry.clone();
            let (c, id) = (s.call_id.clone(), s.id);
            tokio::spawn(async move {
                registry
                    .end(&c, id, EndRequest::new(EndReason::Requested))
                    .await
            })
        })
        .collect();
    let mut ended = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            EndOutcome::Ended(_) => ended += 1,
            EndOutcome::AlreadyEnded(s) => assert_eq!(s.end_reason, Some(EndReason::Requested)),
        }
    }
    assert_eq!(ended, 1);
    let counts = h.registry.counts(&c).await.unwrap();
    assert_eq!((counts.global, counts.per_call), (1, 1));
    assert_eq!(h.get(&keep).await.unwrap().status, SessionStatus::Starting);
}

pub async fn counts_return_to_zero_after_everything_ends(h: Harness) {
    let mut sessions = Vec::new();
    for i in 0..12 {
        sessions.push(h.start(&call(&format!("call-{}", i % 3))).await);
    }
    let reasons = EndReason::ALL;
    for (i, s) in sessions.iter().enumerate() {
        h.end(s, reasons[i % reasons.len()]).await;
        h.end(s, EndReason::Requested).await; // a repeat changes nothing
    }
    for i in 0..3 {
        let counts = h
            .registry
            .counts(&call(&format!("call-{i}")))
            .await
            .unwrap();
        assert_eq!((counts.global, counts.per_call), (0, 0));
    }
}
