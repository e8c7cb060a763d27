//! The `Llm` port: a model that streams a response and may call registered functions (tools).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde_json::Value;

/// Who said a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions.
    System,
    /// A participant.
    User,
    /// The agent.
    Assistant,
    /// A tool's result.
    Tool,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// What was said (a tool's result for [`Role::Tool`]).
    pub content: String,
    /// For [`Role::Tool`]: the call it answers. For [`Role::Assistant`]: the calls it made.
    pub tool_call_id: Option<String>,
    /// The tool calls an assistant message made.
    pub tool_calls: Vec<ToolCall>,
}

impl ChatMessage {
    /// A message with no tool calls.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_call_id: None,
            tool_calls: Vec::new(),
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Its name.
    pub name: String,
    /// What it does (shown to the model).
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: Value,
}

impl ToolSpec {
    /// A function named `name` that takes no arguments (add them with
    /// [`string_param`](Self::string_param), or set [`parameters`](Self::parameters)).
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            parameters: serde_json::json!({"type": "object", "properties": {}, "required": []}),
        }
    }

    /// With a required string argument `name`.
    pub fn string_param(mut self, name: &str) -> Self {
        if let Some(properties) = self.parameters["properties"].as_object_mut() {
            properties.insert(name.to_owned(), serde_json::json!({"type": "string"}));
        }
        if let Some(required) = self.parameters["required"].as_array_mut() {
            required.push(Value::String(name.to_owned()));
        }
        self
    }
}

/// The model asking to call a function.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The call's id, echoed in the tool's result message.
    pub id: String,
    /// The function.
    pub name: String,
    /// Its arguments.
    pub arguments: Value,
}

pub use switchboard_core::metrics::Usage;

/// One item of a streamed response.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    /// More text.
    TextDelta(String),
    /// A function call request.
    ToolCall(ToolCall),
    /// The end of the response.
    Done(Usage),
}

/// A model.
#[async_trait]
pub trait Llm: Send + Sync {
    /// Streams the response to `messages`, offering `tools`.
    async fn stream(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSpec],
    ) -> anyhow::Result<BoxStream<'static, anyhow::Result<LlmEvent>>>;
}

type Handler = Arc<
    dyn Fn(Value) -> Pin<Box<dyn Future<Output = anyhow::Result<String>> + Send>> + Send + Sync,
>;

/// The functions an agent registers for its model (the anchor's `llm.register_function`).
#[derive(Clone, Default)]
pub struct FunctionRegistry {
    functions: BTreeMap<String, Handler>,
    // Kept beside the handlers, in name order, so offering them to the model copies nothing.
    specs: Vec<ToolSpec>,
}

impl fmt::Debug for FunctionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.functions.keys()).finish()
    }
}

impl FunctionRegistry {
    /// No functions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` under `spec.name` (replacing any previous one).
    pub fn register<F, Fut>(&mut self, spec: ToolSpec, handler: F)
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<String>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |args| Box::pin(handler(args)));
        self.functions.insert(spec.name.clone(), handler);
        self.specs.retain(|s| s.name != spec.name);
        let at = self.specs.partition_point(|s| s.name < spec.name);
        self.specs.insert(at, spec);
    }

    /// With `handler` registered under `spec.name` (see [`register`](Self::register)).
    pub fn with<F, Fut>(mut self, spec: ToolSpec, handler: F) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<String>> + Send + 'static,
    {
        self.register(spec, handler);
        self
    }

    /// The specs to offer the model, in name order.
    pub fn specs(&self) -> &[ToolSpec] {
        &self.specs
    }

    /// Runs the function a tool call names. An unknown name is an error the caller can hand
    /// back to the model.
    pub async fn call(&self, call: &ToolCall) -> anyhow::Result<String> {
        let handler = self
            .functions
            .get(&call.name)
            .ok_or_else(|| anyhow::anyhow!("unknown function '{}'", call.name))?;
        handler(call.arguments.clone()).await
    }
}

/// How many tool-call rounds one response may take before giving up.
pub const MAX_TOOL_ROUNDS: usize = 5;

/// Answers the conversation in `history` with `llm`, running the tool calls it asks for,
/// and records what really happened in `metrics`: per model call its latency, time to first
/// token and token usage (`on_llm_response`), per tool call its run time (`on_tool_call`).
/// Appends the assistant's (and tools') messages to `history` and returns the final text.
pub async fn respond(
    llm: &dyn Llm,
    functions: &FunctionRegistry,
    history: &mut Vec<ChatMessage>,
    metrics: &switchboard_core::MetricsRecorder,
) -> anyhow::Result<String> {
    use futures::StreamExt;
    let specs = functions.specs();
    for _ in 0..MAX_TOOL_ROUNDS {
        let started = std::time::Instant::now();
        let mut stream = llm.stream(history, specs).await?;
        let mut first_token = None;
        let mut text = String::new();
        let mut calls = Vec::new();
        let mut usage = Usage::default();
        while let Some(event) = stream.next().await {
            match event? {
                LlmEvent::TextDelta(delta) => {
                    first_token.get_or_insert_with(|| started.elapsed());
                    text.push_str(&delta);
                }
                LlmEvent::ToolCall(call) => calls.push(call),
                LlmEvent::Done(u) => usage = u,
            }
        }
        metrics.on_llm_response(started.elapsed(), first_token, usage);
        if calls.is_empty() {
            history.push(ChatMessage::new(Role::Assistant, text.clone()));
            return Ok(text);
        }
        history.push(ChatMessage {
            role: Role::Assistant,
            content: text,
            tool_call_id: None,
            tool_calls: calls.clone(),
        });
        for call in calls {
            let started = std::time::Instant::now();
            // A failing tool is reported to the model, which can recover; it does not end the turn.
            let result = functions
                .call(&call)
                .await
                .unwrap_or_else(|e| format!("error: {e:#}"));
            metrics.on_tool_call(started.elapsed());
            history.push(ChatMessage {
                role: Role::Tool,
                content: result,
                tool_call_id: Some(call.id.clone()),
                tool_calls: Vec::new(),
            });
        }
    }
    anyhow::bail!("the model kept calling tools after {MAX_TOOL_ROUNDS} rounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn registered_functions_are_offered_and_called() {
        let mut fns = FunctionRegistry::new();
        fns.register(
            ToolSpec {
                name: "get_weather".into(),
                description: "Get the current weather for a location".into(),
                parameters: serde_json::json!({"type": "object", "properties": {"location": {"type": "string"}}}),
            },
            |args| async move {
                let location = args["location"].as_str().unwrap_or("nowhere").to_owned();
                Ok(format!("The weather in {location} is sunny and 72°F."))
            },
        );
        assert_eq!(fns.specs()[0].name, "get_weather");
        let out = fns
            .call(&ToolCall {
                id: "1".into(),
                name: "get_weather".into(),
                arguments: serde_json::json!({"location": "Paris"}),
            })
            .await
            .unwrap();
        assert_eq!(out, "The weather in Paris is sunny and 72°F.");
        let unknown = ToolCall {
            id: "2".into(),
            name: "nope".into(),
            arguments: Value::Null,
        };
        assert!(fns.call(&unknown).await.is_err());
    }

    /// A model that plays back one scripted response per call.
    struct Scripted(std::sync::Mutex<std::collections::VecDeque<Vec<LlmEvent>>>);

    #[async_trait]
    impl Llm for Scripted {
        async fn stream(
            &self,
            _messages: &[ChatMessage],
            _tools: &[ToolSpec],
        ) -> anyhow::Result<BoxStream<'static, anyhow::Result<LlmEvent>>> {
            use futures::StreamExt;
            let events = self
                .0
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| vec![LlmEvent::Done(Usage::default())]);
            Ok(futures::stream::iter(events.into_iter().map(Ok)).boxed())
        }
    }

    fn weather() -> FunctionRegistry {
        let mut fns = FunctionRegistry::new();
        let spec = ToolSpec {
            name: "get_weather".into(),
            description: String::new(),
            parameters: Value::Null,
        };
        fns.register(spec, |_| async { Ok("sunny".to_owned()) });
        fns
    }

    fn call(name: &str) -> LlmEvent {
        LlmEvent::ToolCall(ToolCall {
            id: "c1".into(),
            name: name.into(),
            arguments: Value::Null,
        })
    }

    #[tokio::test]
    async fn respond_runs_tools_then_answers_and_records_what_happened() {
        use switchboard_core::metrics::{Counter, Latency};
        let llm = Scripted(std::sync::Mutex::new(
            [
                vec![
                    call("get_weather"),
                    LlmEvent::Done(Usage {
                        input_tokens: 5,
                        output_tokens: 1,
                    }),
                ],
                vec![
                    LlmEvent::TextDelta("It is ".into()),
                    LlmEvent::TextDelta("sunny".into()),
                    LlmEvent::Done(Usage {
                        input_tokens: 9,
                        output_tokens: 3,
                    }),
                ],
            ]
            .into(),
        ));
        let metrics = switchboard_core::MetricsRecorder::new();
        let mut history = vec![ChatMessage::new(Role::User, "weather?")];
        let answer = respond(&llm, &weather(), &mut history, &metrics)
            .await
            .unwrap();
        assert_eq!(answer, "It is sunny");
        let roles: Vec<Role> = history.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            vec![Role::User, Role::Assistant, Role::Tool, Role::Assistant]
        );
        assert_eq!(history[2].content, "sunny");
        assert_eq!(history[2].tool_call_id.as_deref(), Some("c1"));
        let m = metrics.snapshot();
        assert_eq!(m.latency(Latency::LlmLatencyMs).count, 2);
        assert_eq!(m.latency(Latency::LlmTimeToFirstTokenMs).count, 1);
        assert_eq!(m.total(Counter::LlmToolCalls), 1);
        assert_eq!(
            (
                m.total(Counter::LlmInputTokens),
                m.total(Counter::LlmOutputTokens)
            ),
            (14, 4)
        );
    }

    #[tokio::test]
    async fn an_unknown_tool_is_reported_to_the_model_and_endless_tool_calls_stop() {
        let llm = Scripted(std::sync::Mutex::new(
            [
                vec![call("nope")],
                vec![
                    LlmEvent::TextDelta("sorry".into()),
                    LlmEvent::Done(Usage::default()),
                ],
            ]
            .into(),
        ));
        let metrics = switchboard_core::MetricsRecorder::new();
        let mut history = Vec::new();
        assert_eq!(
            respond(&llm, &weather(), &mut history, &metrics)
                .await
                .unwrap(),
            "sorry"
        );
        assert_eq!(history[1].content, "error: unknown function 'nope'");

        let endless = Scripted(std::sync::Mutex::new(
            (0..10).map(|_| vec![call("get_weather")]).collect(),
        ));
        let err = respond(&endless, &weather(), &mut Vec::new(), &metrics)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the model kept calling tools after 5 rounds"
        );
    }
}
