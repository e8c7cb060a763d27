//! The conformance suite every [`SessionRegistry`] implementation passes unchanged.
//!
//! Use it from a test binary with [`registry_conformance!`](crate::registry_conformance), passing an
//! async fn that builds a fresh registry (a new table, for DynamoDB) on the given clock:
//!
//! ```ignore
//! async fn make(clock: Arc<ManualClock>) -> Arc<dyn SessionRegistry> {
//!     Arc::new(MemoryRegistry::new(clock))
//! }
//! switchboard_core::registry_conformance!(make);
//! ```
//!
//! Time is a [`ManualClock`] the suite moves by hand, so lease, retention and idempotency
//! windows are tested without sleeping.
#![allow(missing_docs, clippy::missing_panics_doc)]

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{Counter, Latency, MetricsRecorder};
use crate::registry::{
    EndGuard, EndOutcome, EndRequest, Idempotency, ListQuery, StartOutcome, StartRequest,
};
use crate::{
    CallId, CallType, EndReason, Error, IdempotencyKey, LimitKind, ManualClock, Metadata, Session,
    SessionId, SessionRegistry, SessionStatus, StartType, Timestamp,
};

/// The suite's starting time: 2026-01-01T00:00:00Z.
pub const T0: Timestamp = Timestamp::from_unix_micros(1_767_225_600_000_000);
/// The lease the suite uses.
pub const LEASE: Duration = Duration::from_secs(30);

/// A registry under test and the clock it reads.
#[derive(Debug, Clone)]
pub struct Harness {
    pub registry: Arc<dyn SessionRegistry>,
    pub clock: Arc<ManualClock>,
}

/// Generates one `#[tokio::test]` per conformance case for the registry built by `$make`.
#[macro_export]
macro_rules! registry_conformance {
    ($make:path) => {
        $crate::registry_conformance!(@cases $make;
            start_then_get_returns_a_starting_session,
            lookups_are_scoped_by_call,
            global_limit_admits_exactly_k_of_200_concurrent_starts,
            per_call_limit_admits_exactly_k_and_spares_other_calls,
            a_limit_configured_later_counts_every_live_session,
            changing_or_removing_limits_never_over_admits_or_goes_negative,
            end_releases_slots_exactly_once_under_concurrent_enders,
            counts_return_to_zero_after_everything_ends,
            late_heartbeat_on_an_ended_session_changes_nothing,
            heartbeat_renews_the_lease_and_returns_the_close_flag,
            request_close_sets_the_flag_once_and_refuses_ended_sessions,
            mark_running_only_from_starting,
            attach_task_records_the_arn_until_the_session_ends,
            end_guards_hold_atomically,
            expired_leases_lists_only_live_sessions_past_their_lease,
            list_paginates_in_creation_order_and_filters_ended,
            list_across_calls,
            ended_sessions_keep_final_metrics_until_retention_expires,
            lists_carry_live_metrics_only_when_asked,
            metrics_round_trip_and_never_resurrect,
            metadata_is_stored_with_the_session,
            idempotent_replay_returns_the_same_receipt_without_a_new_session,
            idempotency_key_with_a_different_body_is_a_mismatch,
            idempotency_is_scoped_per_call_and_expires_after_24h,
            a_failed_start_releases_its_idempotency_key,
            a_start_repeated_with_the_same_id_is_the_same_start,
            invalid_next_token_is_invalid_input
        );
    };
    (@cases $make:path; $($case:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let clock = ::std::sync::Arc::new($crate::ManualClock::new($crate::conformance::T0));
                let registry = $make(clock.clone()).await;
                $crate::conformance::$case($crate::conformance::Harness { registry, clock }).await;
            }
        )+
    };
}

pub fn call(name: &str) -> CallId {
    CallId::parse(name).expect("valid call id")
}

pub fn request(call_id: &CallId) -> StartRequest {
    StartRequest {
        session_id: SessionId::generate(),
        call_id: call_id.clone(),
        call_type: CallType::default(),
        metadata: None,
        idempotency: None,
        max_concurrent_sessions: None,
        max_sessions_per_call: None,
        lease: LEASE,
    }
}

impl Harness {
    pub async fn start(&self, call_id: &CallId) -> Session {
        match self.registry.start(request(call_id)).await.expect("start") {
            StartOutcome::Created(session) => session,
            StartOutcome::Replayed(r) => panic!("unexpected replay {r:?}"),
        }
    }

    pub async fn end(&self, session: &Session, reason: EndReason) -> EndOutcome {
        self.registry
            .end(&session.call_id, session.id, EndRequest::new(reason))
            .await
            .expect("end")
    }

    pub async fn get(&self, session: &Session) -> Option<Session> {
        self.registry
            .get(&session.call_id, session.id)
            .await
            .expect("get")
    }
}

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

pub async fn late_heartbeat_on_an_ended_session_changes_nothing(h: Harness) {
    let s = h.start(&call("call-a")).await;
    h.end(&s, EndReason::Idle).await;
    let before = h.get(&s).await.unwrap();
    h.clock.advance(Duration::from_secs(5));
    assert!(matches!(
        h.registry.heartbeat(&s.call_id, s.id, LEASE).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        h.registry.mark_running(&s.call_id, s.id).await,
        Err(Error::Conflict(_))
    ));
    let after = h.get(&s).await.unwrap();
    assert_eq!(before, after);
    assert_eq!(after.status, SessionStatus::Ended);
    assert_eq!(h.registry.counts(&s.call_id).await.unwrap().global, 0);
}

pub async fn heartbeat_renews_the_lease_and_returns_the_close_flag(h: Harness) {
    let s = h.start(&call("call-a")).await;
    let other = h.start(&call("call-a")).await;
    h.clock.advance(Duration::from_secs(10));
    let hb = h.registry.heartbeat(&s.call_id, s.id, LEASE).await.unwrap();
    assert!(!hb.close_requested);
    assert_eq!(hb.lease_expires_at, T0 + Duration::from_secs(10) + LEASE);
    let got = h.get(&s).await.unwrap();
    assert_eq!(got.lease_expires_at, hb.lease_expires_at);
    assert_eq!(got.heartbeat_at, Some(T0 + Duration::from_secs(10)));
    h.registry.request_close(&s.call_id, s.id).await.unwrap();
    let hb = h.registry.heartbeat(&s.call_id, s.id, LEASE).await.unwrap();
    assert!(hb.close_requested);
    assert_eq!(hb.status, SessionStatus::Closing);
    let hb = h
        .registry
        .heartbeat(&other.call_id, other.id, LEASE)
        .await
        .unwrap();
    assert!(
        !hb.close_requested,
        "a close flag belongs to one session only"
    );
}

pub async fn request_close_sets_the_flag_once_and_refuses_ended_sessions(h: Harness) {
    let s = h.start(&call("call-a")).await;
    let closing = h.registry.request_close(&s.call_id, s.id).await.unwrap();
    assert_eq!(closing.status, SessionStatus::Closing);
    assert_eq!(closing.close_requested_at, Some(T0));
    h.clock.advance(Duration::from_secs(1));
    let again = h.registry.request_close(&s.call_id, s.id).await.unwrap();
    assert_eq!(
        again.close_requested_at,
        Some(T0),
        "the first request's time is kept"
    );
    assert!(matches!(
        h.registry
            .request_close(&s.call_id, SessionId::generate())
            .await,
        Err(Error::NotFound)
    ));
    h.end(&s, EndReason::Requested).await;
    assert!(matches!(
        h.registry.request_close(&s.call_id, s.id).await,
        Err(Error::Conflict(_))
    ));
}

pub async fn mark_running_only_from_starting(h: Harness) {
    let s = h.start(&call("call-a")).await;
    h.clock.advance(Duration::from_secs(2));
    let running = h.registry.mark_running(&s.call_id, s.id).await.unwrap();
    assert_eq!(running.status, SessionStatus::Running);
    assert_eq!(running.running_at, Some(T0 + Duration::from_secs(2)));
    assert_eq!(
        h.registry
            .mark_running(&s.call_id, s.id)
            .await
            .unwrap()
            .status,
        SessionStatus::Running
    );
    let closing = h.start(&call("call-a")).await;
    h.registry
        .request_close(&closing.call_id, closing.id)
        .await
        .unwrap();
    assert!(matches!(
        h.registry.mark_running(&closing.call_id, closing.id).await,
        Err(Error::Conflict(_))
    ));
}

pub async fn attach_task_records_the_arn_until_the_session_ends(h: Harness) {
    let s = h.start(&call("call-a")).await;
    let arn = "arn:aws:ecs:us-east-1:123456789012:task/switchboard/0123456789abcdef";
    h.registry
        .attach_task(&s.call_id, s.id, arn, Some(StartType::Cold))
        .await
        .unwrap();
    h.registry
        .attach_task(&s.call_id, s.id, arn, None)
        .await
        .unwrap();
    let row = h.registry.get(&s.call_id, s.id).await.unwrap().unwrap();
    assert_eq!(row.task_arn.as_deref(), Some(arn));
    assert_eq!(
        row.start_type,
        Some(StartType::Cold),
        "an attach without a start type keeps the one recorded"
    );
    h.registry
        .attach_task(&s.call_id, s.id, arn, Some(StartType::Warm))
        .await
        .unwrap();
    let row = h.registry.get(&s.call_id, s.id).await.unwrap().unwrap();
    assert_eq!(
        row.start_type,
        Some(StartType::Warm),
        "a start type given is written"
    );
    // Another task: refused, the row keeps its host (a second agent must not join).
    assert!(matches!(
        h.registry
            .attach_task(&s.call_id, s.id, "arn:another", Some(StartType::Cold))
            .await,
        Err(Error::Conflict(_))
    ));
    let row = h.registry.get(&s.call_id, s.id).await.unwrap().unwrap();
    assert_eq!(row.task_arn.as_deref(), Some(arn));
    assert_eq!(row.start_type, Some(StartType::Warm));
    assert_eq!(
        row.status,
        SessionStatus::Starting,
        "attaching changes no status"
    );
    h.registry
        .end(&s.call_id, s.id, EndRequest::new(EndReason::Requested))
        .await
        .unwrap();
    assert!(matches!(
        h.registry
            .attach_task(&s.call_id, s.id, "arn:other", Some(StartType::Cold))
            .await,
        Err(Error::Conflict(_))
    ));
    let row = h.registry.get(&s.call_id, s.id).await.unwrap().unwrap();
    assert_eq!(
        row.task_arn.as_deref(),
        Some(arn),
        "the ended row keeps its task"
    );
    assert!(matches!(
        h.registry
            .attach_task(&call("call-b"), s.id, arn, None)
            .await,
        Err(Error::NotFound)
    ));
}

pub async fn end_guards_hold_atomically(h: Harness) {
    let s = h.start(&call("call-a")).await;
    let lease_guard = || EndRequest::new(EndReason::LeaseExpired).guard(EndGuard::LeaseExpired);
    assert!(matches!(
        h.registry.end(&s.call_id, s.id, lease_guard()).await,
        Err(Error::Conflict(_))
    ));
    h.clock.advance(LEASE);
    let ended = h
        .registry
        .end(&s.call_id, s.id, lease_guard())
        .await
        .unwrap();
    assert!(matches!(ended, EndOutcome::Ended(_)));
    assert_eq!(ended.session().end_reason, Some(EndReason::LeaseExpired));

    let r = h.start(&call("call-a")).await;
    h.registry.mark_running(&r.call_id, r.id).await.unwrap();
    let starting_guard = EndRequest::new(EndReason::StartFailed).guard(EndGuard::Starting);
    assert!(matches!(
        h.registry
            .end(&r.call_id, r.id, starting_guard.clone())
            .await,
        Err(Error::Conflict(_))
    ));
    let st = h.start(&call("call-a")).await;
    assert!(matches!(
        h.registry
            .end(&st.call_id, st.id, starting_guard)
            .await
            .unwrap(),
        EndOutcome::Ended(_)
    ));
    assert_eq!(h.registry.counts(&s.call_id).await.unwrap().per_call, 1);
}

pub async fn expired_leases_lists_only_live_sessions_past_their_lease(h: Harness) {
    let c = call("call-a");
    let stale = h.start(&c).await;
    let fresh = h.start(&c).await;
    let ended = h.start(&c).await;
    h.end(&ended, EndReason::Requested).await;
    assert!(h.registry.expired_leases(100).await.unwrap().is_empty());
    h.clock.advance(Duration::from_secs(20));
    h.registry.heartbeat(&c, fresh.id, LEASE).await.unwrap();
    h.clock.advance(Duration::from_secs(10));
    let expired: Vec<_> = h
        .registry
        .expired_leases(100)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(expired, vec![stale.id]);
}

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

fn idem_request(c: &CallId, key: &str, call_type: &str) -> StartRequest {
    let mut req = request(c);
    req.call_type = CallType::parse(call_type).unwrap();
    req.idempotency = Some(Idempotency::new(
        IdempotencyKey::parse(key).unwrap(),
        &req.call_type,
        None,
    ));
    req
}

pub async fn idempotent_replay_returns_the_same_receipt_without_a_new_session(h: Harness) {
    let c = call("call-a");
    let first = h
        .registry
        .start(idem_request(&c, "key-1", "default"))
        .await
        .unwrap();
    let StartOutcome::Created(session) = first else {
        panic!("first start must create")
    };
    h.clock.advance(Duration::from_secs(60));
    let again = h
        .registry
        .start(idem_request(&c, "key-1", "default"))
        .await
        .unwrap();
    let StartOutcome::Replayed(receipt) = again else {
        panic!("a repeat must replay")
    };
    assert_eq!(receipt, session.receipt());
    let counts = h.registry.counts(&c).await.unwrap();
    assert_eq!(counts.per_call, 1);
    // Replays hold even after the session ended.
    h.end(&session, EndReason::Requested).await;
    let StartOutcome::Replayed(receipt) = h
        .registry
        .start(idem_request(&c, "key-1", "default"))
        .await
        .unwrap()
    else {
        panic!("replay after end")
    };
    assert_eq!(receipt.session_id, session.id);
}

pub async fn idempotency_key_with_a_different_body_is_a_mismatch(h: Harness) {
    let c = call("call-a");
    h.registry
        .start(idem_request(&c, "key-1", "default"))
        .await
        .unwrap();
    assert!(matches!(
        h.registry
            .start(idem_request(&c, "key-1", "livestream"))
            .await,
        Err(Error::IdempotencyMismatch)
    ));
    assert_eq!(h.registry.counts(&c).await.unwrap().per_call, 1);
}

pub async fn idempotency_is_scoped_per_call_and_expires_after_24h(h: Harness) {
    let a = call("call-a");
    let b = call("call-b");
    h.registry
        .start(idem_request(&a, "key-1", "default"))
        .await
        .unwrap();
    assert!(matches!(
        h.registry
            .start(idem_request(&b, "key-1", "default"))
            .await
            .unwrap(),
        StartOutcome::Created(_)
    ));
    h.clock.advance(Duration::from_secs(24 * 3600 - 1));
    assert!(matches!(
        h.registry
            .start(idem_request(&a, "key-1", "default"))
            .await
            .unwrap(),
        StartOutcome::Replayed(_)
    ));
    h.clock.advance(Duration::from_secs(1));
    assert!(matches!(
        h.registry
            .start(idem_request(&a, "key-1", "default"))
            .await
            .unwrap(),
        StartOutcome::Created(_)
    ));
}

pub async fn a_failed_start_releases_its_idempotency_key(h: Harness) {
    let c = call("call-a");
    let StartOutcome::Created(s) = h
        .registry
        .start(idem_request(&c, "key-1", "default"))
        .await
        .unwrap()
    else {
        panic!("create")
    };
    h.end(&s, EndReason::StartFailed).await;
    let StartOutcome::Created(retry) = h
        .registry
        .start(idem_request(&c, "key-1", "default"))
        .await
        .unwrap()
    else {
        panic!("a retry after a failed start must start anew")
    };
    assert_ne!(retry.id, s.id);
    assert!(matches!(
        h.registry
            .start(idem_request(&c, "key-1", "default"))
            .await
            .unwrap(),
        StartOutcome::Replayed(_)
    ));
}

pub async fn a_start_repeated_with_the_same_id_is_the_same_start(h: Harness) {
    let c = call("call-a");
    let req = request(&c);
    let StartOutcome::Created(first) = h.registry.start(req.clone()).await.unwrap() else {
        panic!("created")
    };
    h.clock.advance(Duration::from_secs(1));
    let StartOutcome::Created(again) = h.registry.start(req).await.unwrap() else {
        panic!("the same start")
    };
    assert_eq!(again.id, first.id);
    assert_eq!(
        again.created_at, first.created_at,
        "the original row, not a new one"
    );
    assert_eq!(
        h.registry.counts(&c).await.unwrap().per_call,
        1,
        "counted once"
    );
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

/// A registry that fails every call with `Unavailable` while `outage` is set: a store that is
/// down, for tests of what runs on top of a registry (supervisors, sweeps, readiness). While
/// `hang_flushes` is set, `flush_metrics` never answers: a store that stops answering
/// between two calls (an SDK stuck in timeouts and retries).
#[derive(Debug)]
pub struct OutageRegistry<R = crate::MemoryRegistry> {
    pub inner: R,
    pub outage: std::sync::atomic::AtomicBool,
    pub hang_flushes: std::sync::atomic::AtomicBool,
}

impl OutageRegistry {
    /// Over a fresh `MemoryRegistry` on `clock`.
    pub fn memory(clock: Arc<dyn crate::Clock>) -> Self {
        Self {
            inner: crate::MemoryRegistry::new(clock),
            outage: std::sync::atomic::AtomicBool::new(false),
            hang_flushes: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl<R> OutageRegistry<R> {
    fn check(&self) -> crate::Result<()> {
        if self.outage.load(std::sync::atomic::Ordering::SeqCst) {
            Err(Error::unavailable(anyhow::anyhow!(
                "injected registry outage"
            )))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl<R: SessionRegistry> SessionRegistry for OutageRegistry<R> {
    async fn start(&self, request: StartRequest) -> crate::Result<StartOutcome> {
        self.check()?;
        self.inner.start(request).await
    }
    async fn mark_running(&self, call_id: &CallId, id: SessionId) -> crate::Result<Session> {
        self.check()?;
        self.inner.mark_running(call_id, id).await
    }
    async fn attach_task(
        &self,
        call_id: &CallId,
        id: SessionId,
        arn: &str,
        start_type: Option<StartType>,
    ) -> crate::Result<()> {
        self.check()?;
        self.inner.attach_task(call_id, id, arn, start_type).await
    }
    async fn heartbeat(
        &self,
        call_id: &CallId,
        id: SessionId,
        lease: Duration,
    ) -> crate::Result<crate::registry::Heartbeat> {
        self.check()?;
        self.inner.heartbeat(call_id, id, lease).await
    }
    async fn flush_metrics(
        &self,
        call_id: &CallId,
        id: SessionId,
        metrics: &crate::AgentMetrics,
    ) -> crate::Result<()> {
        self.check()?;
        if self.hang_flushes.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.flush_metrics(call_id, id, metrics).await
    }
    async fn request_close(&self, call_id: &CallId, id: SessionId) -> crate::Result<Session> {
        self.check()?;
        self.inner.request_close(call_id, id).await
    }
    async fn end(
        &self,
        call_id: &CallId,
        id: SessionId,
        request: EndRequest,
    ) -> crate::Result<EndOutcome> {
        self.check()?;
        self.inner.end(call_id, id, request).await
    }
    async fn get(&self, call_id: &CallId, id: SessionId) -> crate::Result<Option<Session>> {
        self.check()?;
        self.inner.get(call_id, id).await
    }
    async fn get_metadata(
        &self,
        call_id: &CallId,
        id: SessionId,
    ) -> crate::Result<Option<Metadata>> {
        self.check()?;
        self.inner.get_metadata(call_id, id).await
    }
    async fn get_metrics(
        &self,
        call_id: &CallId,
        id: SessionId,
    ) -> crate::Result<Option<crate::registry::SessionMetrics>> {
        self.check()?;
        self.inner.get_metrics(call_id, id).await
    }
    async fn list(&self, query: ListQuery) -> crate::Result<crate::registry::SessionPage> {
        self.check()?;
        self.inner.list(query).await
    }
    async fn expired_leases(&self, limit: usize) -> crate::Result<Vec<Session>> {
        self.check()?;
        self.inner.expired_leases(limit).await
    }
    async fn counts(&self, call_id: &CallId) -> crate::Result<crate::registry::Counts> {
        self.check()?;
        self.inner.counts(call_id).await
    }
}
