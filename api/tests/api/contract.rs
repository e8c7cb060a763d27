//! The rest of the contract (docs/api.md): lifecycle and 404 after the end, additive fields, metrics before
//! the first flush, lists with pagination and `include_ended`, Idempotency-Key, metadata,
//! readiness, 429/500/503 shapes.

use std::sync::Arc;

use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use switchboard_api::{CallFilter, ListPermission, PermissionHooks, ServeOptions};
use switchboard_core::SessionId;
use switchboard_core::metrics::all_metric_names;

use crate::support::{app_for, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_closed_session_answers_404_on_get_metrics_and_close() {
    let app = spawn_app().await;
    let id = app.start("call-1").await;
    let base = format!("/calls/call-1/sessions/{id}");
    let got = app.get(&base).await.json();
    assert_eq!(got["status"], "running");
    assert_eq!(got["call_type"], "default");
    assert_eq!(got["close_requested_at"], Value::Null);
    assert_eq!(app.delete(&base).await.status, StatusCode::ACCEPTED);
    app.wait_ended(&id).await;
    for r in [
        app.get(&base).await,
        app.get(&format!("{base}/metrics")).await,
        app.delete(&base).await,
    ] {
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.detail(), format!("Session with id '{id}' not found"));
    }
    assert_eq!(
        app.post(&format!("{base}/close"), None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn lookups_are_scoped_by_call() {
    let app = spawn_app().await;
    let id = app.start("call-a").await;
    assert_eq!(
        app.get(&format!("/calls/call-b/sessions/{id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&format!("/calls/call-b/sessions/{id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/calls/call-a/sessions/{id}"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn all_metric_names_are_present_before_the_first_flush() {
    let app = spawn_app().await;
    let id = app.start("call-1").await;
    let body = app
        .get(&format!("/calls/call-1/sessions/{id}/metrics"))
        .await
        .json();
    let metrics = body["metrics"].as_object().unwrap();
    for name in all_metric_names() {
        assert!(metrics.contains_key(&name), "{name} missing");
    }
    assert_eq!(metrics.len(), 70);
    assert_eq!(metrics["llm_latency_ms__avg"], Value::Null);
    assert_eq!(metrics["llm_input_tokens__total"], 0);
    assert_eq!(
        body["metrics_generated_at"], body["session_started_at"],
        "start time until the first flush"
    );
}

#[tokio::test]
async fn include_metrics_puts_each_live_sessions_metrics_in_the_list() {
    // One request per dashboard refresh (F3): the list carries the live sessions' metrics.
    let app = spawn_app().await;
    let id = app.start("call-m").await;
    for url in ["/sessions", "/calls/call-m/sessions"] {
        let plain = app.get(url).await.json();
        assert!(
            plain["sessions"][0].get("metrics").is_none(),
            "no metrics unless asked: {plain}"
        );
        let with = app.get(&format!("{url}?include_metrics=true")).await.json();
        let item = &with["sessions"][0];
        assert_eq!(item["session_id"], id.as_str());
        let metrics = item["metrics"].as_object().expect("a metrics object");
        let single = app
            .get(&format!("/calls/call-m/sessions/{id}/metrics"))
            .await
            .json();
        assert_eq!(
            metrics.keys().collect::<Vec<_>>(),
            single["metrics"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            "the same names as the metrics route"
        );
    }
}

#[tokio::test]
async fn lists_paginate_and_include_ended_sessions_with_their_end() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.start("call-1").await);
    }
    app.start("call-2").await;
    assert_eq!(
        app.delete(&format!("/calls/call-1/sessions/{}", ids[0]))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    app.wait_ended(&ids[0]).await;

    let mut seen = Vec::new();
    let mut uri = "/calls/call-1/sessions?limit=2".to_owned();
    loop {
        let page = app.get(&uri).await.json();
        for s in page["sessions"].as_array().unwrap() {
            assert_eq!(s["status"], "running");
            assert_eq!(s["ended_at"], Value::Null);
            seen.push(s["session_id"].as_str().unwrap().to_owned());
        }
        match page["next_token"].as_str() {
            Some(token) => uri = format!("/calls/call-1/sessions?limit=2&next_token={token}"),
            None => break,
        }
    }
    assert_eq!(seen, ids[1..].to_vec());

    let all = app
        .get("/calls/call-1/sessions?include_ended=true")
        .await
        .json();
    let sessions = all["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 5);
    let ended = &sessions[0];
    assert_eq!(ended["status"], "ended");
    assert_eq!(ended["end_reason"], "requested");
    assert!(ended["ended_at"].is_string());
    assert_eq!(
        ended["metrics"].as_object().unwrap().len(),
        70,
        "final metrics"
    );
    assert!(
        sessions[1].get("metrics").is_none(),
        "live rows carry no final metrics"
    );

    let everything = app.get("/sessions").await.json();
    assert_eq!(
        everything["sessions"].as_array().unwrap().len(),
        5,
        "4 live on call-1 + 1 on call-2"
    );
}

#[tokio::test]
async fn list_all_sessions_is_filtered_by_its_hook() {
    let hooks = PermissionHooks {
        can_list_sessions: Some(ListPermission::new(|_| async {
            Ok(CallFilter::Only(Arc::new(
                |call: &switchboard_core::CallId| call.as_str().starts_with("team-a-"),
            )))
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
    app.start("team-a-1").await;
    app.start("team-b-1").await;
    let page = app.get("/sessions").await.json();
    let calls: Vec<_> = page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["call_id"].clone())
        .collect();
    assert_eq!(calls, vec![json!("team-a-1")]);
}

async fn post_with_key(
    app: &crate::support::TestApp,
    call: &str,
    key: &str,
    body: Value,
) -> crate::support::TestResponse {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/calls/{call}/sessions"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    app.send(request).await
}

#[tokio::test]
async fn idempotency_key_replays_the_same_response_and_refuses_a_different_body() {
    let app = spawn_app().await;
    let body = json!({"call_type": "default", "metadata": {"a": 1}});
    let first = post_with_key(&app, "call-1", "key-1", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    // Same meaning, different formatting: still a replay.
    let again = post_with_key(&app, "call-1", "key-1", json!({"metadata": {"a": 1}})).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.json(), first.json());
    assert_eq!(app.launcher.node_sessions().len(), 1, "no second agent");
    let other = post_with_key(&app, "call-1", "key-1", json!({"call_type": "livestream"})).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        other.detail()[0]["loc"],
        json!(["header", "idempotency-key"])
    );
    let elsewhere = post_with_key(&app, "call-2", "key-1", body).await;
    assert_eq!(elsewhere.status, StatusCode::CREATED);
    assert_ne!(elsewhere.json()["session_id"], first.json()["session_id"]);
}

#[tokio::test]
async fn metadata_reaches_create_agent() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/calls/call-1/sessions",
            Some(json!({"metadata": {"user": "u-1", "lang": "fr"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = SessionId::parse(r.json()["session_id"].as_str().unwrap()).unwrap();
    let agent = app.launcher.get_session(id).unwrap().agent().unwrap();
    assert_eq!(agent.metadata.as_ref().unwrap().as_map()["user"], "u-1");
}

#[tokio::test]
async fn an_empty_or_missing_body_means_the_defaults() {
    let app = spawn_app().await;
    let r = app.post("/calls/call-1/sessions", None).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["call_type"], "default");
    let request = Request::builder()
        .method(Method::POST)
        .uri("/calls/call-1/sessions")
        .header("content-type", "text/plain")
        .body(axum::body::Body::from("  "))
        .unwrap();
    assert_eq!(app.send(request).await.status, StatusCode::CREATED);
    let r = app.post("/calls/call-1/sessions", Some(Value::Null)).await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_failing_agent_factory_is_500_failed_to_start_agent() {
    let app = spawn_app().await;
    let r = app.post("/calls/createfail-1/sessions", None).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.detail(), "Failed to start agent");
    let listed = app
        .get("/calls/createfail-1/sessions?include_ended=true")
        .await
        .json();
    assert_eq!(listed["sessions"][0]["end_reason"], "start_failed");
}

#[tokio::test]
async fn ready_is_503_before_start_and_while_draining_and_starts_are_503_with_retry_after() {
    let launcher = switchboard_agent::AgentLauncher::builder(
        |_| async { anyhow::bail!("unused") },
        |_: Arc<crate::support::ApiAgent>, _| async { Ok(()) },
    )
    .build()
    .unwrap();
    let app = app_for(launcher, ServeOptions::default());
    let r = app.get("/ready").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.detail(), "Server is not ready to accept requests");
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
    let r = app.post("/calls/call-1/sessions", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.header("retry-after").is_some());

    let app = spawn_app().await;
    assert_eq!(app.get("/ready").await.status, StatusCode::OK);
    app.launcher.drain();
    assert_eq!(
        app.get("/ready").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// A launch that takes a minute, and tells when it got past its wait.
#[derive(Debug, Default)]
struct MinuteLaunch {
    finished: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl switchboard_core::TaskLauncher for MinuteLaunch {
    async fn launch(
        &self,
        _session: &switchboard_core::Session,
    ) -> Result<switchboard_core::Launched, switchboard_core::LaunchError> {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        self.finished
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(switchboard_core::Launched::default())
    }
}

#[tokio::test(start_paused = true)]
async fn a_bounded_start_answers_503_by_its_deadline_and_nothing_of_it_runs_afterwards() {
    // Lambda (F10): the environment freezes once the response is sent; a start that went on
    // would resume at the next thaw, minutes later, for a client that saw a 503.
    let registry: Arc<dyn switchboard_core::SessionRegistry> = Arc::new(
        switchboard_core::MemoryRegistry::new(Arc::new(switchboard_core::SystemClock)),
    );
    let launch = Arc::new(MinuteLaunch::default());
    let state = switchboard_api::AppState::new(
        registry.clone(),
        launch.clone(),
        switchboard_core::Limits::default(),
    )
    .with_request_deadline(std::time::Duration::from_secs(8))
    .with_bounded_starts();
    let router = switchboard_api::router(state, ServeOptions::default()).unwrap();
    let started = tokio::time::Instant::now();
    let response = tower::ServiceExt::oneshot(
        router,
        Request::post("/calls/slow/sessions")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(
        started.elapsed() <= std::time::Duration::from_secs(8),
        "answered by the deadline (virtual time): {:?}",
        started.elapsed()
    );
    // Long after the response, the launch never got past its wait: it was cut off.
    tokio::time::sleep(std::time::Duration::from_secs(120)).await;
    assert!(
        !launch.finished.load(std::sync::atomic::Ordering::SeqCst),
        "no part of the start ran after the response"
    );
    let page = registry
        .list(switchboard_core::registry::ListQuery {
            call_id: Some(switchboard_core::CallId::parse("slow").unwrap()),
            include_ended: true,
            limit: 10,
            next_token: None,
            with_metrics: false,
        })
        .await
        .unwrap();
    assert_eq!(
        page.sessions.len(),
        1,
        "the admitted row stays for the reaper"
    );
}

#[tokio::test(start_paused = true)]
async fn a_start_slower_than_the_deadline_is_503_and_goes_on_in_the_background() {
    use switchboard_agent::AgentLauncher;
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let launcher = AgentLauncher::builder(
        move |ctx: switchboard_agent::CreateContext| {
            let g = g.clone();
            async move {
                if !ctx.is_warmup() {
                    g.notified().await; // a slow model load
                }
                crate::support::create_for_tests(ctx).await
            }
        },
        crate::support::join_for_tests,
    )
    .build()
    .unwrap();
    launcher.start().await.unwrap();
    let registry = launcher.registry();
    let state = switchboard_api::AppState::new(
        registry.clone(),
        launcher.task_launcher(),
        *launcher.limits(),
    )
    .with_request_deadline(std::time::Duration::from_secs(8));
    let router = switchboard_api::router(state, ServeOptions::default()).unwrap();
    let app = crate::support::TestApp {
        launcher,
        registry,
        router,
    };
    let r = app.post("/calls/slow/sessions", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    let listed = app.get("/calls/slow/sessions").await.json();
    assert_eq!(
        listed["sessions"][0]["status"], "starting",
        "admitted, still starting"
    );
    gate.notify_one();
    let id = SessionId::parse(listed["sessions"][0]["session_id"].as_str().unwrap()).unwrap();
    while app
        .launcher
        .get_session(id)
        .and_then(|s| s.agent())
        .is_none()
    {
        tokio::task::yield_now().await;
    }
    let got = app.get(&format!("/calls/slow/sessions/{id}")).await.json();
    assert_eq!(
        got["status"], "running",
        "the start went on and the agent joined"
    );
}
