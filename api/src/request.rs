//! Reading and validating requests by hand, so every failure gets the exact status and
//! FastAPI-shaped 422 the contract asks for (axum's extractors answer 400/415 with text).

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Query};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use serde_json::Value;
use switchboard_core::registry::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use switchboard_core::{CallId, CallType, IdempotencyKey, Metadata};

use crate::MAX_BODY_BYTES;
use crate::error::{ApiError, ValidationIssue};

/// The raw path parameters (validated after the permission hook).
pub(crate) struct PathParams {
    pub(crate) call_id: String,
    pub(crate) session_id: String,
}

pub(crate) async fn path_params(parts: &mut Parts) -> Result<PathParams, ApiError> {
    let Path(mut params) = Path::<HashMap<String, String>>::from_request_parts(parts, &())
        .await
        .map_err(|e| ApiError::invalid(&["path"], e.body_text(), "value_error"))?;
    Ok(PathParams {
        call_id: params.remove("call_id").unwrap_or_default(),
        session_id: params.remove("session_id").unwrap_or_default(),
    })
}

pub(crate) fn call_id_issue(raw: &str) -> Result<CallId, ValidationIssue> {
    CallId::parse(raw)
        .map_err(|e| ValidationIssue::new(&["path", "call_id"], e.to_string(), "value_error"))
}

pub(crate) fn parse_call_id(raw: &str) -> Result<CallId, ApiError> {
    call_id_issue(raw).map_err(|issue| ApiError::Validation(vec![issue]))
}

/// Reads the body up to [`MAX_BODY_BYTES`]; larger is 413 (checked on `Content-Length`
/// first, so an oversized body is refused before it is read).
pub(crate) async fn read_body(parts: &Parts, body: Body) -> Result<Bytes, ApiError> {
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let inner = e.into_inner();
            if inner
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::PayloadTooLarge
            } else {
                ApiError::invalid(
                    &["body"],
                    format!("Could not read the request body: {inner}"),
                    "body_read",
                )
            }
        })
}

fn is_json(parts: &Parts) -> bool {
    match parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        // FastAPI parses a body without a content type as JSON.
        None => true,
        Some(ct) => {
            let essence = ct
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        }
    }
}

/// The POST body, validated.
pub(crate) struct StartBody {
    pub(crate) call_type: CallType,
    pub(crate) metadata: Option<Metadata>,
}

/// Parses the start body, collecting every problem. An empty body (whatever its content
/// type) and `null` mean the defaults.
pub(crate) fn start_body(
    parts: &Parts,
    bytes: &[u8],
    issues: &mut Vec<ValidationIssue>,
) -> Option<StartBody> {
    let defaults = || StartBody {
        call_type: CallType::default(),
        metadata: None,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Some(defaults());
    }
    if !is_json(parts) {
        issues.push(ValidationIssue::new(
            &["body"],
            "Content-Type must be application/json",
            "content_type",
        ));
        return None;
    }
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            issues.push(ValidationIssue {
                loc: vec![Value::from("body"), Value::from(e.column())],
                msg: format!("JSON decode error: {e}"),
                kind: "json_invalid".into(),
            });
            return None;
        }
    };
    let mut object = match value {
        Value::Null => return Some(defaults()),
        Value::Object(map) => map,
        _ => {
            issues.push(ValidationIssue::new(
                &["body"],
                "Input should be a valid dictionary or object to extract fields from",
                "model_attributes_type",
            ));
            return None;
        }
    };
    let before = issues.len();
    let call_type = match object.remove("call_type") {
        None => CallType::default(),
        Some(Value::String(s)) => match CallType::parse(&s) {
            Ok(t) => t,
            Err(e) => {
                issues.push(ValidationIssue::new(
                    &["body", "call_type"],
                    e.to_string(),
                    "value_error",
                ));
                CallType::default()
            }
        },
        Some(_) => {
            issues.push(ValidationIssue::new(
                &["body", "call_type"],
                "Input should be a valid string",
                "string_type",
            ));
            CallType::default()
        }
    };
    let metadata = match object.remove("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => match Metadata::from_map(map) {
            Ok(m) => Some(m),
            Err(e) => {
                issues.push(ValidationIssue::new(
                    &["body", "metadata"],
                    e.to_string(),
                    "value_error",
                ));
                None
            }
        },
        Some(_) => {
            issues.push(ValidationIssue::new(
                &["body", "metadata"],
                "Input should be a valid dictionary",
                "dict_type",
            ));
            None
        }
    };
    (issues.len() == before).then_some(StartBody {
        call_type,
        metadata,
    })
}

/// The `Idempotency-Key` header, if any.
pub(crate) fn idempotency_key(
    parts: &Parts,
    issues: &mut Vec<ValidationIssue>,
) -> Option<IdempotencyKey> {
    let value = parts.headers.get("idempotency-key")?;
    let parsed = value
        .to_str()
        .map_err(|_| "Idempotency-Key must contain only visible ASCII characters".to_owned())
        .and_then(|v| IdempotencyKey::parse(v).map_err(|e| e.to_string()));
    match parsed {
        Ok(key) => Some(key),
        Err(msg) => {
            issues.push(ValidationIssue::new(
                &["header", "idempotency-key"],
                msg,
                "value_error",
            ));
            None
        }
    }
}

/// `?include_ended=&include_metrics=&limit=&next_token=`.
pub(crate) struct ListParams {
    pub(crate) include_ended: bool,
    pub(crate) include_metrics: bool,
    pub(crate) limit: u32,
    pub(crate) next_token: Option<String>,
}

pub(crate) fn list_params(parts: &Parts, issues: &mut Vec<ValidationIssue>) -> ListParams {
    let mut params = ListParams {
        include_ended: false,
        include_metrics: false,
        limit: DEFAULT_PAGE_SIZE,
        next_token: None,
    };
    let pairs = match Query::<Vec<(String, String)>>::try_from_uri(&parts.uri) {
        Ok(Query(pairs)) => pairs,
        Err(e) => {
            issues.push(ValidationIssue::new(
                &["query"],
                e.body_text(),
                "query_invalid",
            ));
            return params;
        }
    };
    for (key, value) in pairs {
        match key.as_str() {
            "include_ended" => {
                if let Some(b) = boolean("include_ended", &value, issues) {
                    params.include_ended = b;
                }
            }
            "include_metrics" => {
                if let Some(b) = boolean("include_metrics", &value, issues) {
                    params.include_metrics = b;
                }
            }
            "limit" => match value.trim().parse::<i64>() {
                Ok(n) if n < 1 => issues.push(ValidationIssue::new(
                    &["query", "limit"],
                    "Input should be greater than or equal to 1",
                    "greater_than_equal",
                )),
                Ok(n) if n > i64::from(MAX_PAGE_SIZE) => issues.push(ValidationIssue::new(
                    &["query", "limit"],
                    format!("Input should be less than or equal to {MAX_PAGE_SIZE}"),
                    "less_than_equal",
                )),
                Ok(n) => params.limit = n as u32,
                Err(_) => issues.push(ValidationIssue::new(
                    &["query", "limit"],
                    "Input should be a valid integer, unable to parse string as an integer",
                    "int_parsing",
                )),
            },
            "next_token" => params.next_token = (!value.is_empty()).then_some(value),
            _ => {}
        }
    }
    params
}

/// A query boolean as FastAPI reads one.
fn boolean(name: &'static str, value: &str, issues: &mut Vec<ValidationIssue>) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
        "false" | "0" | "no" | "off" | "f" | "n" => Some(false),
        _ => {
            issues.push(ValidationIssue::new(
                &["query", name],
                "Input should be a valid boolean, unable to interpret input",
                "bool_parsing",
            ));
            None
        }
    }
}

pub(crate) fn fail_if_any(issues: Vec<ValidationIssue>) -> Result<(), ApiError> {
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(issues))
    }
}

/// A `?token=` (the beacon close's, the local call's WebSocket join's) is at most
/// [`crate::MAX_TOKEN_CHARS`] (as the document states), whether or not a policy reads it.
pub fn check_query_token(uri: &http::Uri) -> Result<(), ApiError> {
    let too_long = uri.query().is_some_and(|query| {
        form_urlencoded::parse(query.as_bytes())
            .any(|(name, value)| name == "token" && value.chars().count() > crate::MAX_TOKEN_CHARS)
    });
    if too_long {
        return Err(ApiError::invalid(
            &["query", "token"],
            format!(
                "String should have at most {} characters",
                crate::MAX_TOKEN_CHARS
            ),
            "string_too_long",
        ));
    }
    Ok(())
}
