//! API Gateway HTTP API (payload 2.0) events from the fixtures in `infra/events/` (copied
//! from aws_lambda_events), and the exact adapter `lambda_http::run` wraps the router in.

use axum::Router;
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use lambda_http::request::LambdaRequest;
use lambda_http::tower::ServiceExt;
use serde_json::{Value, json};

/// An event for `method path?query` with `headers` and a body; IAM-authorized like the
/// session routes of template.yaml, or with no authorizer like `/health`.
#[derive(Debug, Clone)]
pub struct Event {
    pub method: &'static str,
    pub path: String,
    pub query: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<String>,
    pub base64: bool,
    pub iam: bool,
}

pub fn get(path: impl Into<String>) -> Event {
    Event {
        method: "GET",
        path: path.into(),
        query: String::new(),
        headers: vec![],
        body: None,
        base64: false,
        iam: true,
    }
}

impl Event {
    pub fn method(mut self, method: &'static str) -> Self {
        self.method = method;
        self
    }
    pub fn json(mut self, body: Value) -> Self {
        self.headers
            .push(("content-type", "application/json".to_owned()));
        self.body = Some(body.to_string());
        self
    }
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    pub fn query(mut self, query: &str) -> Self {
        self.query = query.to_owned();
        self
    }
    pub fn base64_body(mut self, raw: &[u8]) -> Self {
        self.body = Some(BASE64_STANDARD.encode(raw));
        self.base64 = true;
        self
    }
    pub fn unauthenticated(mut self) -> Self {
        self.iam = false;
        self
    }

    /// The event JSON API Gateway would send.
    pub fn to_json(&self) -> Value {
        let fixture = if self.iam {
            include_str!("../../../infra/events/apigw-v2-request-iam.json")
        } else {
            include_str!("../../../infra/events/apigw-v2-request-no-authorizer.json")
        };
        let mut event: Value = serde_json::from_str(fixture).expect("fixture");
        let mut headers = serde_json::Map::new();
        headers.insert(
            "host".into(),
            json!("api-id.execute-api.us-east-1.amazonaws.com"),
        );
        headers.insert("user-agent".into(), json!("switchboard-tests"));
        for (k, v) in &self.headers {
            headers.insert((*k).to_owned(), json!(v));
        }
        let mut query = serde_json::Map::new();
        for pair in self.query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            query.insert(k.to_owned(), json!(v));
        }
        event["rawPath"] = json!(self.path);
        event["rawQueryString"] = json!(self.query);
        event["queryStringParameters"] = Value::Object(query);
        event["pathParameters"] = json!({ "proxy": self.path.trim_start_matches('/') });
        event["headers"] = Value::Object(headers);
        event["requestContext"]["http"]["method"] = json!(self.method);
        event["requestContext"]["http"]["path"] = json!(self.path);
        if let Some(obj) = event.as_object_mut() {
            obj.remove("cookies");
        }
        match &self.body {
            Some(body) => event["body"] = json!(body),
            None => {
                if let Some(obj) = event.as_object_mut() {
                    obj.remove("body");
                }
            }
        }
        event["isBase64Encoded"] = json!(self.base64);
        event
    }
}

/// What API Gateway gets back, parsed from the function's response JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: serde_json::Map<String, Value>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(Value::as_str)
    }
}

/// Invokes the router exactly as `lambda_http::run` does: event JSON → `LambdaRequest` →
/// the adapter → `LambdaResponse` → response JSON.
pub async fn invoke(router: &Router, event: &Event) -> Reply {
    let payload: LambdaRequest =
        serde_json::from_value(event.to_json()).expect("an API Gateway v2 event");
    let adapter = lambda_http::Adapter::from(router.clone());
    let response = adapter
        .oneshot(LambdaEvent::new(payload, Context::default()))
        .await
        .expect("the router never fails");
    let raw = serde_json::to_value(&response).expect("response JSON");
    let status = raw["statusCode"].as_u64().expect("statusCode") as u16;
    let headers = raw["headers"].as_object().cloned().unwrap_or_default();
    let body = match raw.get("body") {
        Some(Value::String(s)) if raw["isBase64Encoded"] == json!(true) => {
            String::from_utf8(BASE64_STANDARD.decode(s).expect("base64 body")).expect("utf-8 body")
        }
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    Reply {
        status,
        headers,
        body,
    }
}
