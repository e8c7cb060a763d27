//! Item ⇄ domain conversion for the session table (keys, attribute names, parsing).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use switchboard_core::session::Counted;
use switchboard_core::{
    CallId, CallType, Error, IdempotencyKey, Session, SessionId, SessionStatus, Timestamp,
};

pub(crate) type Item = HashMap<String, AttributeValue>;

/// Partition key of a call's items (sessions, metadata, metrics, idempotency, its counter).
pub(crate) fn call_pk(call_id: &CallId) -> String {
    format!("CALL#{call_id}")
}
pub(crate) fn session_sk(id: SessionId) -> String {
    format!("SESSION#{id}")
}
pub(crate) fn meta_sk(id: SessionId) -> String {
    format!("META#{id}")
}
pub(crate) fn metrics_sk(id: SessionId) -> String {
    format!("METRICS#{id}")
}
pub(crate) fn idem_sk(key: &IdempotencyKey) -> String {
    format!("IDEM#{}", key.as_str())
}
/// The global counter's partition.
pub(crate) const GLOBAL_PK: &str = "COUNTER#GLOBAL";
/// On a session row: it has a metadata item (`META#<id>`), whose TTL the end sets.
pub(crate) const HAS_META: &str = "has_meta";
/// On a session row: it has a metrics item (`METRICS#<id>`), whose TTL the end sets.
pub(crate) const HAS_METRICS: &str = "has_metrics";
/// The sort key of both counters.
pub(crate) const COUNTER_SK: &str = "COUNTER";
/// Number of live-index shards.
pub(crate) const LIVE_SHARDS: u8 = 16;

/// The live index's partition for a session: spread by the random tail of its UUID v7.
pub(crate) fn live_pk(id: SessionId) -> String {
    format!("LIVE#{:02}", id.as_uuid().as_bytes()[15] % LIVE_SHARDS)
}

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}
pub(crate) fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}
pub(crate) fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("PK".to_owned(), s(pk)), ("SK".to_owned(), s(sk))])
}

fn malformed(what: &str) -> Error {
    Error::Unexpected(anyhow::anyhow!("malformed session item: {what}"))
}

pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}
pub(crate) fn get_n(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}
fn get_ts(item: &Item, name: &str) -> Option<Timestamp> {
    get_n(item, name).map(Timestamp::from_unix_micros)
}
pub(crate) fn get_bool(item: &Item, name: &str) -> bool {
    item.get(name)
        .and_then(|v| v.as_bool().ok())
        .copied()
        .unwrap_or(false)
}

/// Rounds up to whole seconds (DynamoDB TTL's unit), so a row never disappears early.
pub(crate) fn ttl_seconds(at: Timestamp) -> i64 {
    (at.unix_micros() + 999_999).div_euclid(1_000_000)
}

/// Whether a row with TTL `expires_at` (seconds) is past it at `now` (TTL deletion is lazy,
/// so reads filter).
pub(crate) fn expired(item: &Item, now: Timestamp) -> bool {
    get_n(item, "expires_at")
        .is_some_and(|secs| secs.saturating_mul(1_000_000) <= now.unix_micros())
}

/// The item written when a session is admitted.
pub(crate) fn session_item(session: &Session) -> Item {
    let mut item = key(call_pk(&session.call_id), session_sk(session.id));
    item.insert("session_id".into(), s(session.id.to_string()));
    item.insert("call_id".into(), s(session.call_id.as_str()));
    item.insert("call_type".into(), s(session.call_type.as_str()));
    item.insert("status".into(), s(session.status.as_str()));
    item.insert("created_at".into(), n(session.created_at.unix_micros()));
    item.insert(
        "lease_expires_at".into(),
        n(session.lease_expires_at.unix_micros()),
    );
    item.insert(
        "counted_global".into(),
        AttributeValue::Bool(session.counted.global),
    );
    item.insert(
        "counted_call".into(),
        AttributeValue::Bool(session.counted.per_call),
    );
    if let Some(key) = &session.idempotency_key {
        item.insert("idem_key".into(), s(key.as_str()));
    }
    // The sparse live index: attributes that never change while the session lives.
    item.insert("live_pk".into(), s(live_pk(session.id)));
    item.insert("live_sk".into(), s(session.id.to_string()));
    item
}

/// Parses a session item.
pub(crate) fn session_from_item(item: &Item) -> Result<Session, Error> {
    let id = get_s(item, "session_id").ok_or_else(|| malformed("session_id"))?;
    let id = SessionId::parse(id).map_err(|_| malformed("session_id"))?;
    let call_id = CallId::parse(get_s(item, "call_id").ok_or_else(|| malformed("call_id"))?)?;
    let call_type =
        CallType::parse(get_s(item, "call_type").ok_or_else(|| malformed("call_type"))?)?;
    let status: SessionStatus = get_s(item, "status")
        .ok_or_else(|| malformed("status"))?
        .parse()?;
    Ok(Session {
        id,
        call_id,
        call_type,
        status,
        created_at: get_ts(item, "created_at").ok_or_else(|| malformed("created_at"))?,
        running_at: get_ts(item, "running_at"),
        heartbeat_at: get_ts(item, "heartbeat_at"),
        lease_expires_at: get_ts(item, "lease_expires_at")
            .ok_or_else(|| malformed("lease_expires_at"))?,
        close_requested_at: get_ts(item, "close_requested_at"),
        ended_at: get_ts(item, "ended_at"),
        end_reason: get_s(item, "end_reason").map(str::parse).transpose()?,
        end_detail: get_s(item, "end_detail").map(str::to_owned),
        task_arn: get_s(item, "task_arn").map(str::to_owned),
        start_type: get_s(item, "start_type").map(str::parse).transpose()?,
        counted: Counted {
            global: get_bool(item, "counted_global"),
            per_call: get_bool(item, "counted_call"),
        },
        idempotency_key: get_s(item, "idem_key")
            .map(IdempotencyKey::parse)
            .transpose()?,
        expires_at: get_n(item, "expires_at")
            .map(|secs| Timestamp::from_unix_micros(secs.saturating_mul(1_000_000))),
    })
}
