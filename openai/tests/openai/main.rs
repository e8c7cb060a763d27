//! `OpenAiLlm` against a small OpenAI-compatible server started by the test (127.0.0.1, port
//! 0) that streams scripted server-sent events: text, tool calls in fragments, usage, the
//! errors a real server sends, and a conversation through `respond` with its metrics.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use switchboard_agent::llm::{
    ChatMessage, FunctionRegistry, Llm, LlmEvent, Role, ToolCall, ToolSpec, Usage, respond,
};
use switchboard_core::MetricsRecorder;
use switchboard_core::metrics::{Counter, Latency};
use switchboard_openai::{OpenAiConfig, OpenAiLlm};
use switchboard_testkit::openai::{
    Answer, fake_openai, sse, text_chunk, tool_fragment, usage_chunk,
};
use tokio::net::TcpListener;

async fn events(llm: &OpenAiLlm, messages: &[ChatMessage]) -> Vec<anyhow::Result<LlmEvent>> {
    llm.stream(messages, &[]).await.unwrap().collect().await
}

fn weather() -> FunctionRegistry {
    let mut functions = FunctionRegistry::new();
    functions.register(
        ToolSpec {
            name: "get_weather".into(),
            description: "Get the current weather for a location".into(),
            parameters: json!({"type": "object", "properties": {"location": {"type": "string"}}}),
        },
        |args| async move {
            Ok(format!(
                "The weather in {} is sunny and 72°F.",
                args["location"].as_str().unwrap_or("?")
            ))
        },
    );
    functions
}

#[tokio::test]
async fn text_streams_as_it_arrives_with_the_usage_and_the_key_as_bearer() {
    let (base, seen) = fake_openai(vec![sse(vec![
        (Duration::ZERO, text_chunk("Hel")),
        (Duration::ZERO, text_chunk("lo°")),
        (Duration::ZERO, usage_chunk(12, 2)),
    ])])
    .await;
    let llm =
        OpenAiLlm::new(OpenAiConfig::new(&base, "test-model").with_api_key("sk-test")).unwrap();
    let got: Vec<LlmEvent> = events(&llm, &[ChatMessage::new(Role::User, "hi")])
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        got,
        [
            LlmEvent::TextDelta("Hel".into()),
            LlmEvent::TextDelta("lo°".into()),
            LlmEvent::Done(Usage {
                input_tokens: 12,
                output_tokens: 2
            }),
        ]
    );
    let seen = seen.lock().unwrap();
    let (head, body) = &seen[0];
    assert!(
        head.starts_with("POST /v1/chat/completions HTTP/1.1"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer sk-test"),
        "{head}"
    );
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
}

#[tokio::test]
async fn a_tool_call_in_fragments_is_assembled_then_the_conversation_answers_with_its_metrics() {
    let first_token_after = Duration::from_millis(80);
    let (base, seen) = fake_openai(vec![
        sse(vec![
            (
                Duration::ZERO,
                tool_fragment(Some("call_abc"), Some("get_weather"), ""),
            ),
            (Duration::ZERO, tool_fragment(None, None, "{\"loc")),
            (
                Duration::ZERO,
                tool_fragment(None, None, "ation\": \"Paris\"}"),
            ),
            (Duration::ZERO, usage_chunk(40, 9)),
        ]),
        sse(vec![
            (first_token_after, text_chunk("The weather in Paris ")),
            (Duration::ZERO, text_chunk("is sunny and 72°F.")),
            (Duration::ZERO, usage_chunk(60, 11)),
        ]),
    ])
    .await;
    let llm = OpenAiLlm::new(OpenAiConfig::new(&base, "m")).unwrap();
    let metrics = MetricsRecorder::new();
    let mut history = vec![
        ChatMessage::new(Role::System, "You are a helpful voice assistant."),
        ChatMessage::new(Role::User, "What's the weather in Paris?"),
    ];
    let answer = respond(&llm, &weather(), &mut history, &metrics)
        .await
        .unwrap();
    assert_eq!(answer, "The weather in Paris is sunny and 72°F.");
    assert_eq!(
        history[2].tool_calls,
        [ToolCall {
            id: "call_abc".into(),
            name: "get_weather".into(),
            arguments: json!({"location": "Paris"}),
        }]
    );

    // The second request carried the tool's result back under the call's id, and the tools.
    let seen = seen.lock().unwrap();
    let second = &seen[1].1;
    assert_eq!(
        second["messages"][3],
        json!({"role": "tool", "tool_call_id": "call_abc", "content": "The weather in Paris is sunny and 72°F."})
    );
    assert_eq!(second["tools"][0]["function"]["name"], "get_weather");
    assert!(
        !seen[0].0.to_ascii_lowercase().contains("authorization"),
        "no key configured, none sent"
    );

    // The metrics are the stream's: two model calls, tokens from the usage chunks, a time to
    // first token only for the answer that streamed text, at least the server's pause.
    let m = metrics.snapshot();
    assert_eq!(m.latency(Latency::LlmLatencyMs).count, 2);
    assert_eq!(m.latency(Latency::LlmTimeToFirstTokenMs).count, 1);
    let ttft = m.latency(Latency::LlmTimeToFirstTokenMs).avg_ms().unwrap();
    assert!(
        ttft >= first_token_after.as_secs_f64() * 1000.0,
        "time to first token {ttft} ms is measured from the stream"
    );
    assert_eq!(m.total(Counter::LlmInputTokens), 100);
    assert_eq!(m.total(Counter::LlmOutputTokens), 20);
    assert_eq!(m.total(Counter::LlmToolCalls), 1);
}

#[tokio::test]
async fn failures_are_errors_with_the_server_s_reason_and_never_the_key() {
    let unauthorized = Answer {
        head: "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n",
        parts: vec![(
            Duration::ZERO,
            json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
                .to_string(),
        )],
    };
    let truncated = Answer {
        parts: vec![(Duration::ZERO, format!("data: {}\n\n", text_chunk("Hel")))],
        ..sse(Vec::new())
    };
    let not_json = Answer {
        parts: vec![(Duration::ZERO, "data: {not json\n\n".into())],
        ..sse(Vec::new())
    };
    let mid_stream_error = sse(vec![(
        Duration::ZERO,
        json!({"error": {"message": "model overloaded"}}),
    )]);
    let bad_arguments = sse(vec![(
        Duration::ZERO,
        tool_fragment(Some("c"), Some("get_weather"), "{\"location\": "),
    )]);
    let (base, _) = fake_openai(vec![
        unauthorized,
        truncated,
        not_json,
        mid_stream_error,
        bad_arguments,
    ])
    .await;
    let llm = OpenAiLlm::new(OpenAiConfig::new(&base, "m").with_api_key("sk-do-not-show")).unwrap();
    let messages = [ChatMessage::new(Role::User, "hi")];

    let err = llm.stream(&messages, &[]).await.err().unwrap().to_string();
    assert!(
        err.contains("401") && err.contains("Incorrect API key provided"),
        "{err}"
    );
    assert!(!err.contains("sk-do-not-show"));

    for want in [
        "ended before [DONE]",
        "not JSON",
        "model overloaded",
        "arguments for 'get_weather' are not JSON",
    ] {
        let got = events(&llm, &messages).await;
        let last = got.last().expect("at least the error");
        let err = last
            .as_ref()
            .expect_err("the stream ends with an error")
            .to_string();
        assert!(err.contains(want), "{want}: {err}");
        assert!(
            !got.iter().any(|e| matches!(e, Ok(LlmEvent::Done(_)))),
            "{want}: a failed answer is never Done"
        );
    }

    // Nothing listening: a clear error naming the endpoint.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let llm = OpenAiLlm::new(OpenAiConfig::new(&gone, "m")).unwrap();
    let err = llm.stream(&messages, &[]).await.err().unwrap().to_string();
    assert!(
        err.contains("did not answer") && err.contains(&gone),
        "{err}"
    );
}
