//! `spawn_app()`: the router over an in-process launcher of a simple agent, driven with
//! `tower::ServiceExt::oneshot`, plus typed request helpers.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use switchboard_agent::{
    Agent, AgentLauncher, AgentLauncherBuilder, CreateContext, JoinContext, Presence,
};
use switchboard_api::{AppState, ServeOptions};
use switchboard_core::{Metadata, SessionRegistry};
use tower::ServiceExt;

/// An agent that joins its call with one participant and stays until closed.
#[derive(Debug)]
pub struct ApiAgent {
    presence: Presence,
    pub metadata: Option<Metadata>,
}

impl ApiAgent {
    /// The session's presence (the runtime's, from `CreateContext`).
    pub fn presence(&self) -> &Presence {
        &self.presence
    }
}

impl Agent for ApiAgent {}

pub async fn create_for_tests(ctx: CreateContext) -> anyhow::Result<ApiAgent> {
    if ctx
        .session
        .as_ref()
        .is_some_and(|s| s.call_id.as_str().starts_with("createfail"))
    {
        anyhow::bail!("model credentials missing");
    }
    Ok(ApiAgent {
        presence: ctx.presence.clone(),
        metadata: ctx.metadata,
    })
}

pub async fn join_for_tests(agent: Arc<ApiAgent>, _ctx: JoinContext) -> anyhow::Result<()> {
    agent.presence().agent_joined();
    agent.presence().participant_joined("human");
    std::future::pending().await
}

pub type Builder = AgentLauncherBuilder<ApiAgent>;

pub struct TestApp {
    pub launcher: AgentLauncher<ApiAgent>,
    pub registry: Arc<dyn SessionRegistry>,
    pub router: Router,
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn detail(&self) -> Value {
        self.json()["detail"].clone()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A started launcher (configured by `configure`) behind the router built with `options`.
pub async fn spawn_app_with(
    configure: impl FnOnce(Builder) -> Builder,
    options: ServeOptions,
) -> TestApp {
    let launcher = configure(AgentLauncher::builder(create_for_tests, join_for_tests))
        .build()
        .expect("options");
    launcher.start().await.expect("start");
    app_for(launcher, options)
}

pub fn app_for(launcher: AgentLauncher<ApiAgent>, options: ServeOptions) -> TestApp {
    switchboard_testkit::test_log();
    let registry = launcher.registry();
    let state = AppState::new(
        registry.clone(),
        launcher.task_launcher(),
        *launcher.limits(),
    );
    let router = switchboard_api::router(state, options).expect("router");
    TestApp {
        launcher,
        registry,
        router,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|b| b, ServeOptions::default()).await
}

impl TestApp {
    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> TestResponse {
        self.call_with(method, uri, &[], body).await
    }

    /// Like [`TestApp::call`], with extra request headers.
    pub async fn call_with(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let body = match body {
            Some(json) => {
                builder = builder.header("content-type", "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).unwrap()).await
    }

    pub async fn get(&self, uri: &str) -> TestResponse {
        self.call(Method::GET, uri, None).await
    }

    pub async fn delete(&self, uri: &str) -> TestResponse {
        self.call(Method::DELETE, uri, None).await
    }

    pub async fn post(&self, uri: &str, body: Option<Value>) -> TestResponse {
        self.call(Method::POST, uri, body).await
    }

    /// Starts a session and returns its id.
    pub async fn start(&self, call_id: &str) -> String {
        let r = self
            .post(
                &format!("/calls/{call_id}/sessions"),
                Some(serde_json::json!({"call_type": "default"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        r.json()["session_id"].as_str().unwrap().to_owned()
    }

    /// Waits until the session's agent has ended (the close path is asynchronous).
    pub async fn wait_ended(&self, session_id: &str) {
        let id = switchboard_core::SessionId::parse(session_id).unwrap();
        if let Some(session) = self.launcher.get_session(id) {
            session.wait().await;
        }
    }
}
