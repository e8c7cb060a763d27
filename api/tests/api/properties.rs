//! Property tests of the parsers against the published contract: the OpenAPI document's
//! patterns and bounds are exactly what the id parsers accept, and no body, path or header a
//! client can send makes the API answer 5xx (schemathesis, run by the test command, fuzzes
//! the running server the same way from the outside).

use axum::body::Body;
use http::{Method, Request, StatusCode};
use proptest::prelude::*;
use serde_json::Value;
use switchboard_core::{CallId, IdempotencyKey, SessionId};

use crate::support::spawn_app;

/// The schema the document publishes for a parameter of `POST /calls/{call_id}/sessions`.
fn published(name: &str) -> Value {
    let doc = serde_json::to_value(switchboard_api::openapi::document()).unwrap();
    doc["paths"]["/calls/{call_id}/sessions"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no parameter {name}"))["schema"]
        .clone()
}

/// Whether `value` satisfies a published string schema (pattern and length in characters).
fn satisfies(schema: &Value, value: &str) -> bool {
    let pattern = regex::Regex::new(schema["pattern"].as_str().unwrap()).unwrap();
    let chars = value.chars().count() as u64;
    pattern.is_match(value)
        && chars >= schema["minLength"].as_u64().unwrap()
        && chars <= schema["maxLength"].as_u64().unwrap()
}

/// Strings that hit the edges: control characters, '/', multi-byte characters, long runs.
fn edgy_string() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        "[a-zA-Z0-9_.:-]{1,8}",
        Just("/".to_owned()),
        Just("\u{0}".to_owned()),
        Just("\u{7f}".to_owned()),
        Just("\u{85}".to_owned()),
        Just("\n".to_owned()),
        Just("é".to_owned()),
        Just("🦀".to_owned()),
        "\\PC{1,4}",
        "[a]{60,130}",
    ];
    prop::collection::vec(pieces, 0..6).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A call id (and call type) parses iff it matches the published pattern and length and
    /// fits in 256 bytes (the one rule JSON Schema cannot state).
    #[test]
    fn call_ids_parse_exactly_when_the_published_schema_and_byte_limit_allow(s in edgy_string()) {
        let schema = published("call_id");
        let expected = satisfies(&schema, &s) && s.len() <= switchboard_core::ids::MAX_NAME_BYTES;
        prop_assert_eq!(CallId::parse(&s).is_ok(), expected, "{:?}", s);
    }

    #[test]
    fn idempotency_keys_parse_exactly_when_the_published_schema_allows(s in edgy_string()) {
        let schema = published("Idempotency-Key");
        prop_assert_eq!(IdempotencyKey::parse(&s).is_ok(), satisfies(&schema, &s), "{:?}", s);
    }

    #[test]
    fn session_ids_round_trip_and_anything_else_is_not_found(bytes in any::<[u8; 16]>(), s in edgy_string()) {
        let id = uuid::Uuid::from_bytes(bytes);
        let parsed = SessionId::parse(&id.hyphenated().to_string()).unwrap();
        prop_assert_eq!(parsed.to_string(), id.hyphenated().to_string());
        if uuid::Uuid::try_parse(&s).is_err() {
            prop_assert!(matches!(SessionId::parse(&s), Err(switchboard_core::Error::NotFound)));
        }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        edgy_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("call_type".to_owned()),
                    Just("metadata".to_owned()),
                    "[a-z_]{1,10}"
                ],
                inner,
                0..4,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What a client can send: a JSON value, or raw bytes, under some content type.
fn body() -> impl Strategy<Value = (Option<&'static str>, Vec<u8>)> {
    let content_type = prop_oneof![
        Just(None),
        Just(Some("application/json")),
        Just(Some("text/plain")),
        Just(Some("application/json; charset=utf-8")),
    ];
    let bytes = prop_oneof![
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        prop::collection::vec(any::<u8>(), 0..64),
    ];
    (content_type, bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// Any body, call id, header and query: never a 5xx, always `{"detail": ...}` on errors.
    #[test]
    fn nothing_a_client_sends_gets_a_5xx(
        (content_type, bytes) in body(),
        call in edgy_string(),
        key in proptest::option::of(edgy_string()),
        limit in proptest::option::of(edgy_string()),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let app = spawn_app().await;
            let call: String = form_urlencoded::byte_serialize(call.as_bytes()).collect();
            let mut request = Request::builder()
                .method(Method::POST)
                .uri(format!("/calls/{call}/sessions"));
            if let Some(ct) = content_type {
                request = request.header("content-type", ct);
            }
            if let Some(key) = key.as_deref().and_then(|k| http::HeaderValue::from_str(k).ok()) {
                request = request.header("idempotency-key", key);
            }
            let started = app.send(request.body(Body::from(bytes)).unwrap()).await;
            assert_status_and_shape(&started)?;

            let limit: String = limit.map_or_else(String::new, |l| {
                form_urlencoded::byte_serialize(l.as_bytes()).collect()
            });
            let listed = app.get(&format!("/calls/{call}/sessions?limit={limit}")).await;
            assert_status_and_shape(&listed)?;
            Ok::<(), TestCaseError>(())
        })?;
    }
}

fn assert_status_and_shape(r: &crate::support::TestResponse) -> Result<(), TestCaseError> {
    prop_assert!(!r.status.is_server_error(), "{} {}", r.status, r.text());
    if r.status != StatusCode::CREATED && r.status != StatusCode::OK {
        prop_assert!(
            r.json().get("detail").is_some(),
            "{} {}",
            r.status,
            r.text()
        );
    }
    Ok(())
}
