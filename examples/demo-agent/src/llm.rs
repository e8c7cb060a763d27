//! The demo's model: [`LocalLlm`], a deterministic local model, unless `OPENAI_MODEL` names
//! an OpenAI-compatible one (with `OPENAI_BASE_URL` and `OPENAI_API_KEY`; the `openai`
//! feature). Built once per process, in the warmup cache, so every agent shares its client
//! and a configuration error stops the server at start-up (the process warmup creates an
//! agent), not at the first session.
//!
//! `LocalLlm` It streams its answer word by word and calls the
//! `get_weather` tool when asked about the weather somewhere. Token counts are words: the
//! stand-in has no tokenizer.

use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt};
use serde_json::json;
use switchboard::CreateContext;
use switchboard::async_trait;
use switchboard::llm::{ChatMessage, Llm, LlmEvent, Role, ToolCall, ToolSpec, Usage};

/// The local model.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalLlm;

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// `Paris` from "What's the weather in Paris?".
pub fn weather_location(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let start = lower.find("weather in ")? + "weather in ".len();
    let rest = &text[start..];
    let end = rest.find(['?', '.', '!', ',']).unwrap_or(rest.len());
    let location = rest[..end].trim();
    (!location.is_empty()).then(|| location.to_owned())
}

/// What the local model answers to `messages`: text, or one tool call.
pub fn reply(messages: &[ChatMessage], tools: &[ToolSpec]) -> Result<String, ToolCall> {
    let Some(last) = messages.last() else {
        return Ok("Hello!".to_owned());
    };
    match last.role {
        Role::Tool => Ok(last.content.clone()),
        Role::User => {
            if let Some(location) = weather_location(&last.content)
                && tools.iter().any(|t| t.name == "get_weather")
            {
                let id = format!("call_{}", messages.len());
                return Err(ToolCall {
                    id,
                    name: "get_weather".into(),
                    arguments: json!({ "location": location }),
                });
            }
            if messages.iter().any(|m| m.role == Role::Assistant) {
                Ok("I am a local stand-in model: ask me about the weather somewhere, like \"What's the weather in Paris?\"".into())
            } else {
                // The first turn: say what the agent was asked to say (the greeting).
                Ok(last.content.clone())
            }
        }
        Role::System | Role::Assistant => Ok("Hello!".to_owned()),
    }
}

#[async_trait]
impl Llm for LocalLlm {
    async fn stream(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSpec],
    ) -> anyhow::Result<BoxStream<'static, anyhow::Result<LlmEvent>>> {
        let input_tokens = messages.iter().map(|m| words(&m.content)).sum();
        let events: Vec<LlmEvent> = match reply(messages, tools) {
            Ok(text) => {
                let output_tokens = words(&text);
                let mut events: Vec<LlmEvent> = text
                    .split_inclusive(' ')
                    .map(|w| LlmEvent::TextDelta(w.to_owned()))
                    .collect();
                events.push(LlmEvent::Done(Usage {
                    input_tokens,
                    output_tokens,
                }));
                events
            }
            Err(call) => vec![
                LlmEvent::ToolCall(call),
                LlmEvent::Done(Usage {
                    input_tokens,
                    output_tokens: 1,
                }),
            ],
        };
        Ok(stream::iter(events.into_iter().map(Ok)).boxed())
    }
}

/// The demo's model, built once per process (see the module docs).
pub async fn model(ctx: &CreateContext) -> anyhow::Result<Arc<dyn Llm>> {
    let model = ctx
        .cache
        .get_or_try_init("demo-agent/model", || async {
            build_model(|name| std::env::var(name).ok())
        })
        .await?;
    Ok(Arc::clone(&model))
}

/// The model the variables read through `var` configure (see [`model`]).
pub fn build_model(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Arc<dyn Llm>> {
    #[cfg(feature = "openai")]
    if let Some(config) = switchboard::openai::OpenAiConfig::from_vars(&var)? {
        tracing::info!(model = %config.model, base_url = %config.base_url, "the demo answers with an OpenAI-compatible model");
        return Ok(Arc::new(switchboard::openai::OpenAiLlm::new(config)?));
    }
    #[cfg(not(feature = "openai"))]
    anyhow::ensure!(
        var("OPENAI_MODEL").is_none_or(|m| m.trim().is_empty()),
        "OPENAI_MODEL is set but this demo-agent was built without the `openai` feature (cargo run -p demo-agent --features openai -- serve)"
    );
    Ok(Arc::new(LocalLlm))
}
