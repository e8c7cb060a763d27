//! Idempotency-Key replay: the same receipt, a mismatch, its scope and expiry, and a failed start's key.

use std::time::Duration;

use super::*;

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
