//! Bad input never yields a 500: each case with its status and body shape, and the order of
//! checks 413 → permission hook → 422 → 404.

use axum::body::Body;
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use switchboard_api::{Permission, PermissionHooks, Rejection, ServeOptions};

use crate::support::{TestApp, TestResponse, spawn_app, spawn_app_with};

async fn raw(
    app: &TestApp,
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> TestResponse {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    app.send(b.body(body.into()).unwrap()).await
}

fn assert_422(r: &TestResponse, loc: Value, kind: &str) {
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    let issues = r.detail();
    let issue = issues
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} issue in {issues}"));
    assert_eq!(issue["loc"], loc);
    assert!(issue["msg"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn malformed_json_is_422_json_invalid() {
    let app = spawn_app().await;
    let r = raw(
        &app,
        Method::POST,
        "/calls/c/sessions",
        Some("application/json"),
        "{\"call_type\": ",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let issue = &r.detail()[0];
    assert_eq!(issue["type"], "json_invalid");
    assert_eq!(issue["loc"][0], "body");
}

#[tokio::test]
async fn wrong_types_are_422_with_the_field() {
    let app = spawn_app().await;
    let r = app
        .post("/calls/c/sessions", Some(json!({"call_type": 5})))
        .await;
    assert_422(&r, json!(["body", "call_type"]), "string_type");
    let r = app
        .post("/calls/c/sessions", Some(json!({"call_type": null})))
        .await;
    assert_422(&r, json!(["body", "call_type"]), "string_type");
    let r = app
        .post("/calls/c/sessions", Some(json!({"metadata": "x"})))
        .await;
    assert_422(&r, json!(["body", "metadata"]), "dict_type");
    let r = app.post("/calls/c/sessions", Some(json!([1, 2]))).await;
    assert_422(&r, json!(["body"]), "model_attributes_type");
    let r = app
        .post("/calls/c/sessions", Some(json!({"call_type": "a/b"})))
        .await;
    assert_422(&r, json!(["body", "call_type"]), "value_error");
    // Several problems are reported together.
    let r = app
        .post(
            "/calls/c/sessions",
            Some(json!({"call_type": 1, "metadata": 2})),
        )
        .await;
    assert_eq!(r.detail().as_array().unwrap().len(), 2);
    assert!(app.launcher.node_sessions().is_empty());
}

#[tokio::test]
async fn a_wrong_content_type_with_a_body_is_422() {
    let app = spawn_app().await;
    let r = raw(
        &app,
        Method::POST,
        "/calls/c/sessions",
        Some("text/plain"),
        "{\"call_type\": \"default\"}",
    )
    .await;
    assert_422(&r, json!(["body"]), "content_type");
    let r = raw(
        &app,
        Method::POST,
        "/calls/c/sessions",
        Some("application/x-www-form-urlencoded"),
        "call_type=x",
    )
    .await;
    assert_422(&r, json!(["body"]), "content_type");
    let r = raw(
        &app,
        Method::POST,
        "/calls/c/sessions",
        Some("application/json; charset=utf-8"),
        "{}",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn oversized_bodies_are_413_declared_or_streamed() {
    let app = spawn_app().await;
    let big = format!("{{\"metadata\": {{\"k\": \"{}\"}}}}", "x".repeat(20_000));
    let r = raw(
        &app,
        Method::POST,
        "/calls/c/sessions",
        Some("application/json"),
        big.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.detail().as_str().unwrap().contains("16384"));
    // Without Content-Length (streamed): still 413.
    let stream = futures::stream::iter(
        big.into_bytes()
            .chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = raw(
        &app,
        Method::POST,
        "/calls/c/sessions",
        Some("application/json"),
        Body::from_stream(stream),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Metadata over 4 KiB inside a body under 16 KiB: 422.
    let r = app
        .post(
            "/calls/c/sessions",
            Some(json!({"metadata": {"k": "x".repeat(5000)}})),
        )
        .await;
    assert_422(&r, json!(["body", "metadata"]), "value_error");
}

#[tokio::test]
async fn invalid_call_ids_are_422() {
    let app = spawn_app().await;
    let long = "a".repeat(257);
    for uri in [
        "/calls/a%2Fb/sessions".to_owned(),
        "/calls/a%0Ab/sessions".to_owned(),
        format!("/calls/{long}/sessions"),
    ] {
        let r = app.post(&uri, None).await;
        assert_422(&r, json!(["path", "call_id"]), "value_error");
        let r = app
            .get(&format!(
                "{}/{}",
                uri,
                switchboard_core::SessionId::generate()
            ))
            .await;
        assert_422(&r, json!(["path", "call_id"]), "value_error");
    }
    let r = app.post("/calls/%FF%FE/sessions", None).await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid UTF-8 in the path"
    );
}

#[tokio::test]
async fn unparsable_session_ids_are_404() {
    let app = spawn_app().await;
    for uri in [
        "/calls/c/sessions/not-a-uuid",
        "/calls/c/sessions/not-a-uuid/metrics",
    ] {
        let r = app.get(uri).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.detail(), "Session with id 'not-a-uuid' not found");
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_are_404_and_405_with_detail() {
    let app = spawn_app().await;
    let r = app.get("/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.detail(), "Not Found");
    let r = app.call(Method::PUT, "/calls/c/sessions", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.detail(), "Method Not Allowed");
    let r = app.call(Method::PATCH, "/health", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn bad_idempotency_keys_and_list_queries_are_422() {
    let app = spawn_app().await;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/calls/c/sessions")
        .header("idempotency-key", "x".repeat(300))
        .body(Body::empty())
        .unwrap();
    assert_422(
        &app.send(request).await,
        json!(["header", "idempotency-key"]),
        "value_error",
    );
    assert_422(
        &app.get("/sessions?limit=0").await,
        json!(["query", "limit"]),
        "greater_than_equal",
    );
    assert_422(
        &app.get("/sessions?limit=501").await,
        json!(["query", "limit"]),
        "less_than_equal",
    );
    assert_422(
        &app.get("/calls/c/sessions?limit=ten").await,
        json!(["query", "limit"]),
        "int_parsing",
    );
    assert_422(
        &app.get("/sessions?include_ended=maybe").await,
        json!(["query", "include_ended"]),
        "bool_parsing",
    );
    assert_422(
        &app.get("/calls/c/sessions?include_metrics=maybe").await,
        json!(["query", "include_metrics"]),
        "bool_parsing",
    );
    assert_422(
        &app.get("/sessions?next_token=zz").await,
        json!(["query", "next_token"]),
        "value_error",
    );
    assert_eq!(
        app.get("/sessions?limit=500&include_ended=1&other=x")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_order_of_checks_is_413_then_hook_then_422_then_404() {
    let hooks = PermissionHooks {
        can_start_session: Some(Permission::new(|_, _| async {
            Err(Rejection::unauthorized("Authorization required"))
        })),
        can_view_session: Some(Permission::new(|_, _| async {
            Err(Rejection::unauthorized("Authorization required"))
        })),
        ..Default::default()
    };
    let app = spawn_app_with(
        |b| b,
        ServeOptions {
            hooks,
            ..Default::default()
        },
    )
    .await;
    let big = "x".repeat(20_000);
    let r = raw(
        &app,
        Method::POST,
        "/calls/c/sessions",
        Some("application/json"),
        big,
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "413 first");
    let r = raw(
        &app,
        Method::POST,
        "/calls/a%2Fb/sessions",
        Some("application/json"),
        "{bad json",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the hook before 422");
    assert_eq!(r.detail(), "Authorization required");
    let r = app.get("/calls/c/sessions/not-a-uuid").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the hook before 404");
}

#[tokio::test]
async fn hooks_may_answer_any_status_and_json_detail() {
    let hooks = PermissionHooks {
        can_start_session: Some(Permission::new(|_, req| async move {
            let has_auth = req.headers.contains_key("authorization");
            if has_auth {
                Ok(())
            } else {
                Err(Rejection {
                    status: StatusCode::PAYMENT_REQUIRED,
                    detail: json!({"reason": "quota"}),
                    headers: Default::default(),
                })
            }
        })),
        ..Default::default()
    };
    let app = spawn_app_with(
        |b| b,
        ServeOptions {
            hooks,
            ..Default::default()
        },
    )
    .await;
    let r = app.post("/calls/c/sessions", None).await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(r.detail(), json!({"reason": "quota"}));
    let request = Request::builder()
        .method(Method::POST)
        .uri("/calls/c/sessions")
        .header("authorization", "Bearer x")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(request).await.status, StatusCode::CREATED);
}

/// Oversized paths and headers are refused before anything else runs (414, 431), with a
/// `detail`; requests just under the limits are served.
#[tokio::test]
async fn oversized_paths_and_headers_are_414_and_431() {
    use switchboard_api::{MAX_HEADER_BYTES, MAX_HEADERS_BYTES, MAX_URI_BYTES};
    let hooks = PermissionHooks {
        can_view_session: Some(Permission::new(|_, _| async {
            panic!("a hook ran for an oversized request")
        })),
        ..Default::default()
    };
    let app = spawn_app_with(
        |b| b,
        ServeOptions {
            hooks,
            ..Default::default()
        },
    )
    .await;
    let send = |uri: String, headers: Vec<(String, String)>| {
        let app = &app;
        async move {
            let mut builder = Request::builder().method(Method::GET).uri(uri);
            for (name, value) in headers {
                builder = builder.header(name, value);
            }
            app.send(builder.body(Body::empty()).unwrap()).await
        }
    };
    let path = "/calls/c/sessions/x";
    let long_query = format!("{path}?pad={}", "a".repeat(MAX_URI_BYTES));
    let r = send(long_query, vec![]).await;
    assert_eq!(r.status, StatusCode::URI_TOO_LONG, "{}", r.text());
    assert!(r.detail().as_str().unwrap().contains("32768"));

    let r = send(
        "/health".into(),
        vec![("x-big".into(), "v".repeat(MAX_HEADER_BYTES + 1))],
    )
    .await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(r.detail().is_string());
    let many: Vec<(String, String)> = (0..=MAX_HEADERS_BYTES / 4000)
        .map(|i| (format!("x-h{i}"), "v".repeat(4000)))
        .collect();
    let r = send("/health".into(), many).await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    // Just under the limits: a long query and a header of exactly the limit are served.
    let r = send(
        format!("/health?pad={}", "a".repeat(MAX_URI_BYTES - 20)),
        vec![("x-big".into(), "v".repeat(MAX_HEADER_BYTES))],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// The beacon's `?token=` is bounded as the document states, even when no policy reads it.
#[tokio::test]
async fn an_overlong_beacon_token_is_422() {
    let app = spawn_app().await;
    let id = app.start("beacon-limit").await;
    let base = format!("/calls/beacon-limit/sessions/{id}/close");
    let r = app
        .post(
            &format!(
                "{base}?token={}",
                "t".repeat(switchboard_api::MAX_TOKEN_CHARS + 1)
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(r.detail()[0]["loc"], json!(["query", "token"]));
    let r = app
        .post(
            &format!(
                "{base}?token={}",
                "t".repeat(switchboard_api::MAX_TOKEN_CHARS)
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
}
