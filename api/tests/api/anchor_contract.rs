//! The anchor's `tests/test_agents/test_runner.py::TestRunnerServe` (anchor-study §9.3),
//! ported one for one.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use serde_json::json;
use switchboard_api::{Permission, PermissionHooks, Rejection, ServeOptions};
use switchboard_core::metrics::{Counter, Latency, MetricsRecorder};
use switchboard_core::{CallId, SessionId};

use crate::support::{spawn_app, spawn_app_with};

fn deny() -> Option<Permission> {
    Some(Permission::new(|_, _| async {
        Err(Rejection::forbidden("Forbidden"))
    }))
}

/// A hook that records the call id it saw and allows.
fn recording() -> (Option<Permission>, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let hook = Permission::new(move |call_id, _| {
        s.lock().unwrap().push(call_id);
        async { Ok(()) }
    });
    (Some(hook), seen)
}

fn with_hooks(hooks: PermissionHooks) -> ServeOptions {
    ServeOptions {
        hooks,
        ..Default::default()
    }
}

#[tokio::test]
async fn test_health() {
    let app = spawn_app().await;
    let r = app.get("/health").await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn test_ready() {
    let app = spawn_app().await;
    assert_eq!(app.get("/ready").await.status, StatusCode::OK);
}

#[tokio::test]
async fn test_start_session_success() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/calls/test/sessions",
            Some(json!({"call_type": "default"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let body = r.json();
    assert_eq!(body["call_id"], "test");
    let id = body["session_id"].as_str().unwrap();
    assert!(!id.is_empty());
    assert!(body["session_started_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        app.launcher
            .get_session(SessionId::parse(id).unwrap())
            .is_some()
    );
}

#[tokio::test]
async fn test_start_session_no_permissions_fail() {
    let app = spawn_app_with(
        |b| b,
        with_hooks(PermissionHooks {
            can_start_session: deny(),
            ..Default::default()
        }),
    )
    .await;
    let r = app
        .post(
            "/calls/test/sessions",
            Some(json!({"call_type": "default"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.detail(), "Forbidden");
    assert!(app.launcher.node_sessions().is_empty());
}

#[tokio::test]
async fn test_start_session_permission_receives_call_id() {
    let (hook, seen) = recording();
    let app = spawn_app_with(
        |b| b,
        with_hooks(PermissionHooks {
            can_start_session: hook,
            ..Default::default()
        }),
    )
    .await;
    let r = app
        .post(
            "/calls/my-call-123/sessions",
            Some(json!({"call_type": "default"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(*seen.lock().unwrap(), vec!["my-call-123".to_owned()]);
}

#[tokio::test]
async fn test_close_session_success() {
    let app = spawn_app().await;
    let id = app.start("test").await;
    let r = app.delete(&format!("/calls/test/sessions/{id}")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn test_close_session_not_found() {
    let app = spawn_app().await;
    let r = app.delete("/calls/test/sessions/some-id").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.detail(), "Session with id 'some-id' not found");
}

#[tokio::test]
async fn test_close_session_no_permissions_fail() {
    let app = spawn_app_with(
        |b| b,
        with_hooks(PermissionHooks {
            can_close_session: deny(),
            ..Default::default()
        }),
    )
    .await;
    // Checked before existence: an unknown session is 403 too.
    let r = app.delete("/calls/test/sessions/some-id").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .delete(&format!("/calls/test/sessions/{}", SessionId::generate()))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn test_close_session_beacon_success() {
    let app = spawn_app().await;
    let id = app.start("test").await;
    let r = app
        .post(&format!("/calls/test/sessions/{id}/close"), None)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn test_close_session_beacon_not_found() {
    let app = spawn_app().await;
    let r = app.post("/calls/test/sessions/some-id/close", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.detail(), "Session with id 'some-id' not found");
}

#[tokio::test]
async fn test_close_session_beacon_no_permissions_fail() {
    let app = spawn_app_with(
        |b| b,
        with_hooks(PermissionHooks {
            can_close_session: deny(),
            ..Default::default()
        }),
    )
    .await;
    let id = app.start("test").await;
    let r = app
        .post(&format!("/calls/test/sessions/{id}/close"), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.get(&format!("/calls/test/sessions/{id}")).await.status,
        StatusCode::OK,
        "not closed"
    );
}

#[tokio::test]
async fn test_get_session_success() {
    let app = spawn_app().await;
    let id = app.start("test").await;
    let r = app.get(&format!("/calls/test/sessions/{id}")).await;
    assert_eq!(r.status, StatusCode::OK);
    let body = r.json();
    assert_eq!(body["session_id"], id.as_str());
    assert_eq!(body["call_id"], "test");
    assert!(body["session_started_at"].is_string());
}

#[tokio::test]
async fn test_get_session_no_permissions_fail() {
    let app = spawn_app_with(
        |b| b,
        with_hooks(PermissionHooks {
            can_view_session: deny(),
            ..Default::default()
        }),
    )
    .await;
    let id = app.start("test").await;
    assert_eq!(
        app.get(&format!("/calls/test/sessions/{id}")).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn test_get_session_doesnt_exist_404() {
    let app = spawn_app().await;
    let r = app.get("/calls/test/sessions/123123").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.detail(), "Session with id '123123' not found");
}

#[tokio::test]
async fn test_get_session_metrics_success() {
    let app = spawn_app().await;
    let id = app.start("test").await;
    let recorder = MetricsRecorder::new();
    for latency in [
        Latency::LlmLatencyMs,
        Latency::LlmTimeToFirstTokenMs,
        Latency::SttLatencyMs,
        Latency::TtsLatencyMs,
    ] {
        recorder.record(latency, 250.0);
    }
    recorder.add(Counter::LlmInputTokens, 250);
    recorder.add(Counter::LlmOutputTokens, 250);
    let call = CallId::parse("test").unwrap();
    let sid = SessionId::parse(&id).unwrap();
    app.registry
        .flush_metrics(&call, sid, &recorder.snapshot())
        .await
        .unwrap();
    let r = app.get(&format!("/calls/test/sessions/{id}/metrics")).await;
    assert_eq!(r.status, StatusCode::OK);
    let body = r.json();
    let m = &body["metrics"];
    for name in [
        "llm_latency_ms__avg",
        "llm_time_to_first_token_ms__avg",
        "stt_latency_ms__avg",
        "tts_latency_ms__avg",
    ] {
        assert_eq!(m[name], 250.0, "{name}");
    }
    assert_eq!(m["llm_input_tokens__total"], 250);
    assert_eq!(m["llm_output_tokens__total"], 250);
    assert!(body["metrics_generated_at"].is_string());
    assert!(body["session_started_at"].is_string());
}

#[tokio::test]
async fn test_get_session_metrics_doesnt_exist_404() {
    let app = spawn_app().await;
    let r = app.get("/calls/test/sessions/123123/metrics").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn test_get_session_metrics_no_permissions_fail() {
    let app = spawn_app_with(
        |b| b,
        with_hooks(PermissionHooks {
            can_view_metrics: deny(),
            ..Default::default()
        }),
    )
    .await;
    let id = app.start("test").await;
    assert_eq!(
        app.get(&format!("/calls/test/sessions/{id}/metrics"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn test_fastapi_bypass() {
    let custom = Router::new().route("/hello-world", get(|| async { "Hello world" }));
    let app = spawn_app_with(
        |b| b,
        ServeOptions {
            custom_router: Some(custom),
            ..Default::default()
        },
    )
    .await;
    let r = app.get("/hello-world").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "Hello world");
    assert_eq!(
        app.get("/health").await.status,
        StatusCode::NOT_FOUND,
        "no default routes"
    );
}

#[tokio::test]
async fn test_close_session_permission_receives_call_id() {
    let (hook, seen) = recording();
    let app = spawn_app_with(
        |b| b,
        with_hooks(PermissionHooks {
            can_close_session: hook,
            ..Default::default()
        }),
    )
    .await;
    let id = app.start("my-call-456").await;
    assert_eq!(
        app.delete(&format!("/calls/my-call-456/sessions/{id}"))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(*seen.lock().unwrap(), vec!["my-call-456".to_owned()]);
}

#[tokio::test]
async fn test_view_session_permission_receives_call_id() {
    let (hook, seen) = recording();
    let app = spawn_app_with(
        |b| b,
        with_hooks(PermissionHooks {
            can_view_session: hook,
            ..Default::default()
        }),
    )
    .await;
    let id = app.start("my-call-789").await;
    assert_eq!(
        app.get(&format!("/calls/my-call-789/sessions/{id}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(*seen.lock().unwrap(), vec!["my-call-789".to_owned()]);
}

#[tokio::test]
async fn test_view_metrics_permission_receives_call_id() {
    let (hook, seen) = recording();
    let app = spawn_app_with(
        |b| b,
        with_hooks(PermissionHooks {
            can_view_metrics: hook,
            ..Default::default()
        }),
    )
    .await;
    let id = app.start("my-call-abc").await;
    assert_eq!(
        app.get(&format!("/calls/my-call-abc/sessions/{id}/metrics"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(*seen.lock().unwrap(), vec!["my-call-abc".to_owned()]);
}

#[tokio::test]
async fn test_start_session_max_concurrent_sessions_exceeded() {
    let app = spawn_app_with(|b| b.max_concurrent_sessions(1), ServeOptions::default()).await;
    app.start("call-1").await;
    let r = app
        .post(
            "/calls/call-2/sessions",
            Some(json!({"call_type": "default"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.detail(), "Reached maximum number of concurrent sessions");
}

#[tokio::test]
async fn test_start_session_max_sessions_per_call_exceeded() {
    let app = spawn_app_with(|b| b.max_sessions_per_call(1), ServeOptions::default()).await;
    app.start("test").await;
    let r = app
        .post(
            "/calls/test/sessions",
            Some(json!({"call_type": "default"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.detail(),
        "Reached maximum number of sessions for this call"
    );
}

#[tokio::test]
async fn custom_routes_and_middleware_join_the_default_app() {
    use axum::middleware::map_response;
    let extra = Router::new().route("/custom", get(|| async { "custom" }));
    let app = spawn_app_with(
        |b| b,
        ServeOptions {
            extra_routes: Some(extra),
            ..Default::default()
        },
    )
    .await;
    let router =
        app.router
            .clone()
            .layer(map_response(|mut r: axum::response::Response| async move {
                r.headers_mut()
                    .insert("x-served-by", http::HeaderValue::from_static("switchboard"));
                r
            }));
    let app = crate::support::TestApp { router, ..app };
    let request = http::Request::builder()
        .uri("/custom")
        .header("origin", "https://a.example")
        .body(axum::body::Body::empty())
        .unwrap();
    let r = app.send(request).await;
    assert_eq!(r.text(), "custom");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example"),
        "under the CORS layer"
    );
    assert_eq!(r.header("x-served-by"), Some("switchboard"));
    assert_eq!(
        app.get("/health").await.header("x-served-by"),
        Some("switchboard"),
        "middleware covers default routes"
    );
}
