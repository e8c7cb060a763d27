//! `LocalLlm`: a deterministic local model, the demo's default (`OPENAI_MODEL` switches to
//! `switchboard_openai::OpenAiLlm`). It streams its answer word by word and calls the
//! `get_weather` tool when asked about the weather somewhere. Token counts are words: the
//! stand-in has no tokenizer.

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use serde_json::json;
use switchboard_agent::llm::{ChatMessage, Llm, LlmEvent, Role, ToolCall, ToolSpec, Usage};

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
