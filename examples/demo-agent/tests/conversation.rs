//! The Basic Example's behaviour, in-process on paused time: greet, welcome the participant,
//! answer with the tool,
//! the participant leaves, the idle timeout closes the session, and the metrics are what
//! really happened.

use std::sync::Arc;
use std::time::Duration;

use demo_agent::{GREETING, create_agent, join_call};
use switchboard::AgentLauncher;
use switchboard_core::metrics::{Counter, Latency};
use switchboard_core::registry::ListQuery;
use switchboard_core::{CallId, CallType, Clock, EndReason, Metadata, TokioClock};

#[tokio::test(start_paused = true)]
async fn greets_answers_with_the_weather_tool_and_closes_when_left_alone() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let launcher = AgentLauncher::builder(create_agent, join_call)
        .clock(clock)
        .build()
        .unwrap();
    launcher.start().await.unwrap();
    let call = CallId::parse("weather-call").unwrap();
    let started = tokio::time::Instant::now();
    let metadata = Metadata::parse(serde_json::json!({"participant_seconds": 5})).unwrap();
    let session = launcher
        .start_session(call.clone(), CallType::default(), Some(metadata))
        .await
        .unwrap();
    let agent = session.agent().unwrap();

    let end = session.wait().await;
    let elapsed = started.elapsed();
    assert_eq!(end.reason, EndReason::Idle);
    // The participant joins at 0.2 s and stays 5 s; then 60 s alone (the default idle timeout).
    assert!(
        elapsed >= Duration::from_millis(65_200) && elapsed <= Duration::from_millis(70_200),
        "{elapsed:?}"
    );
    assert_eq!(
        agent.said(),
        vec![
            GREETING.to_owned(),
            format!("Welcome, Demo User! {GREETING}"),
            "The weather in Paris is sunny and 72°F.".to_owned()
        ]
    );

    let page = launcher
        .registry()
        .list(ListQuery {
            call_id: Some(call),
            include_ended: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let metrics = &page.sessions[0].final_metrics.as_ref().unwrap().metrics;
    assert_eq!(metrics.total(Counter::LlmToolCalls), 1);
    assert_eq!(metrics.latency(Latency::LlmToolLatencyMs).count, 1);
    // Greeting (1 model call) + the question (a tool round, then the answer).
    assert_eq!(metrics.latency(Latency::LlmLatencyMs).count, 3);
    assert_eq!(
        metrics.latency(Latency::LlmTimeToFirstTokenMs).count,
        2,
        "the tool round streams no text"
    );
    assert!(metrics.total(Counter::LlmInputTokens) > 0);
    assert_eq!(
        metrics.total(Counter::LlmOutputTokens),
        7 + 1 + 8,
        "words of the greeting, the tool call, the answer"
    );
}

#[tokio::test(start_paused = true)]
async fn a_close_request_ends_the_conversation_at_once() {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let launcher = AgentLauncher::builder(create_agent, join_call)
        .clock(clock)
        .build()
        .unwrap();
    launcher.start().await.unwrap();
    let call = CallId::parse("c").unwrap();
    let session = launcher
        .start_session(call.clone(), CallType::default(), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = tokio::time::Instant::now();
    launcher
        .request_close_session(&call, session.id())
        .await
        .unwrap();
    assert_eq!(session.wait().await.reason, EndReason::Requested);
    assert_eq!(tokio::time::Instant::now(), before);
    assert!(
        !session.presence().state().joined,
        "the agent left the call"
    );
}

#[test]
fn the_local_model_finds_the_location() {
    assert_eq!(
        demo_agent::llm::weather_location("What's the weather in Paris?").as_deref(),
        Some("Paris")
    );
    assert_eq!(
        demo_agent::llm::weather_location("weather in New York, please").as_deref(),
        Some("New York")
    );
    assert_eq!(demo_agent::llm::weather_location("hello"), None);
}

/// The README's Basic Example is this crate's `lib.rs`, as it is.
#[test]
fn the_readme_shows_the_basic_example_as_it_is() {
    let readme = include_str!("../../../README.md");
    let lib = include_str!("../src/lib.rs");
    let marker = "<!-- the-basic-example: examples/demo-agent/src/lib.rs -->\n```rust\n";
    let start = readme
        .find(marker)
        .expect("the README marks its Basic Example")
        + marker.len();
    let end = start + readme[start..].find("```\n").expect("the block ends");
    assert_eq!(
        &readme[start..end],
        lib,
        "the README's snippet differs from src/lib.rs"
    );
}

/// As short as the anchor's: at most 60 lines that are neither blank nor comments.
#[test]
fn the_basic_example_is_at_most_60_lines_of_code() {
    let code = include_str!("../src/lib.rs")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .count();
    assert!(code <= 60, "{code} lines of code");
}
