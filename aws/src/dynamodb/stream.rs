//! The table's stream (`NEW_AND_OLD_IMAGES`) as session changes: the durable record of every
//! state change, written by the same write as the change itself, whoever made it (the api
//! function, a task, the reaper). The `events` function reads it (a Lambda event source
//! mapping on AWS; `infra/local_event_sources.py` in the local stack).
//!
//! A record is a session change when its key is a session row (`SK` = `SESSION#<id>`) and it
//! has a new image; [`switchboard_core::events::Change::event_type`] then says whether it is an
//! event (a heartbeat is not). The event source mapping's filter (template.yaml) passes only
//! the records that are, so the function runs per state change, not per heartbeat.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use switchboard_core::{Error, Session, SessionStatus};

use super::item::{Item, session_from_item};

/// One session row's change, from one stream record.
#[derive(Debug, Clone)]
pub struct RowChange {
    /// The record's `SequenceNumber` (what a partial batch failure names).
    pub sequence_number: String,
    /// The status in the old image; `None` for an INSERT.
    pub before: Option<SessionStatus>,
    /// The row after the change.
    pub session: Session,
}

/// The session change in a stream record as Lambda delivers it (`Records[i]`), `None` for a
/// record of another item (counters, metadata, metrics, keys, the pool) or a removal (TTL).
pub fn row_change(record: &Value) -> Result<Option<RowChange>, Error> {
    let change = &record["dynamodb"];
    let is_session_row = change["Keys"]["SK"]["S"]
        .as_str()
        .is_some_and(|sk| sk.starts_with("SESSION#"));
    let Some(new) = change.get("NewImage").filter(|_| is_session_row) else {
        return Ok(None);
    };
    let session = session_from_item(&image(new)?)?;
    let before = match change.get("OldImage") {
        Some(old) => Some(
            old["status"]["S"]
                .as_str()
                .ok_or_else(|| bad("an old image without status"))?
                .parse()?,
        ),
        None => None,
    };
    let sequence_number = change["SequenceNumber"]
        .as_str()
        .ok_or_else(|| bad("a record without SequenceNumber"))?
        .to_owned();
    Ok(Some(RowChange {
        sequence_number,
        before,
        session,
    }))
}

fn bad(what: &str) -> Error {
    Error::Unexpected(anyhow::anyhow!("stream record: {what}"))
}

/// An image (`{"name": {"S": "..."}, ...}`) as an item.
pub fn image(value: &Value) -> Result<Item, Error> {
    let object = value
        .as_object()
        .ok_or_else(|| bad("an image that is not an object"))?;
    object
        .iter()
        .map(|(name, v)| Ok((name.clone(), attribute(v)?)))
        .collect()
}

/// One attribute value in DynamoDB's JSON.
fn attribute(value: &Value) -> Result<AttributeValue, Error> {
    let object = value.as_object().filter(|o| o.len() == 1);
    let Some((kind, v)) = object.and_then(|o| o.iter().next()) else {
        return Err(bad("an attribute value that is not {\"<type>\": value}"));
    };
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad("a non-string scalar"))
    };
    let texts = |v: &Value| -> Result<Vec<String>, Error> {
        v.as_array()
            .ok_or_else(|| bad("a set that is not an array"))?
            .iter()
            .map(text)
            .collect()
    };
    Ok(match kind.as_str() {
        "S" => AttributeValue::S(text(v)?),
        "N" => AttributeValue::N(text(v)?),
        "BOOL" => AttributeValue::Bool(v.as_bool().ok_or_else(|| bad("a BOOL that is not one"))?),
        "NULL" => AttributeValue::Null(true),
        "SS" => AttributeValue::Ss(texts(v)?),
        "NS" => AttributeValue::Ns(texts(v)?),
        "L" => AttributeValue::L(
            v.as_array()
                .ok_or_else(|| bad("a list that is not an array"))?
                .iter()
                .map(attribute)
                .collect::<Result<_, _>>()?,
        ),
        "M" => AttributeValue::M(image(v)?.into_iter().collect::<HashMap<_, _>>()),
        // The table has no binary attributes.
        other => return Err(bad(&format!("an attribute of type {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::dynamodb::item::session_item;

    fn json_of(item: &Item) -> Value {
        let mut out = serde_json::Map::new();
        for (k, v) in item {
            let v = match v {
                AttributeValue::S(s) => json!({"S": s}),
                AttributeValue::N(n) => json!({"N": n}),
                AttributeValue::Bool(b) => json!({"BOOL": b}),
                other => panic!("{other:?}"),
            };
            out.insert(k.clone(), v);
        }
        Value::Object(out)
    }

    #[test]
    fn a_session_rows_records_are_changes_and_others_are_not() {
        let request = switchboard_core::registry::StartRequest {
            session_id: switchboard_core::SessionId::generate(),
            call_id: switchboard_core::CallId::parse("call-1").unwrap(),
            call_type: Default::default(),
            metadata: None,
            idempotency: None,
            max_concurrent_sessions: None,
            max_sessions_per_call: None,
            lease: std::time::Duration::from_secs(30),
        };
        let session = Session::admitted(&request, switchboard_core::Timestamp::from_unix_micros(5));
        let item = session_item(&session);
        let keys = json!({"PK": item["PK"].as_s().unwrap(), "SK": item["SK"].as_s().unwrap()});
        let keys = json!({"PK": {"S": keys["PK"]}, "SK": {"S": keys["SK"]}});
        let insert = json!({"eventName": "INSERT", "dynamodb": {"Keys": keys, "NewImage": json_of(&item), "SequenceNumber": "100"}});
        let change = row_change(&insert).unwrap().unwrap();
        assert_eq!(
            (
                change.before,
                change.session.id,
                change.sequence_number.as_str()
            ),
            (None, session.id, "100")
        );
        let mut running = item.clone();
        running.insert("status".into(), AttributeValue::S("running".into()));
        let modify = json!({"eventName": "MODIFY", "dynamodb": {"Keys": keys, "OldImage": json_of(&item), "NewImage": json_of(&running), "SequenceNumber": "101"}});
        let change = row_change(&modify).unwrap().unwrap();
        assert_eq!(
            (change.before, change.session.status),
            (Some(SessionStatus::Starting), SessionStatus::Running)
        );
        let counter = json!({"eventName": "MODIFY", "dynamodb": {"Keys": {"PK": {"S": "COUNTER#GLOBAL"}, "SK": {"S": "COUNTER"}}, "NewImage": {"count": {"N": "1"}}, "SequenceNumber": "102"}});
        assert!(row_change(&counter).unwrap().is_none());
        let removed = json!({"eventName": "REMOVE", "dynamodb": {"Keys": keys, "OldImage": json_of(&item), "SequenceNumber": "103"}});
        assert!(row_change(&removed).unwrap().is_none());
        assert!(
            row_change(&json!({"dynamodb": {"Keys": keys, "NewImage": {"status": {"Q": 1}}}}))
                .is_err()
        );
    }
}
