//! A session's life after admission: heartbeats and the close flag, running, the task ARN, guarded ends, expired leases.

use std::time::Duration;

use super::*;

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
