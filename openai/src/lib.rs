//! An OpenAI-compatible chat-completions model (`POST {base_url}/chat/completions` with
//! `stream: true`): OpenAI itself, or any server that speaks the same protocol (vLLM, llama.cpp,
//! Ollama, LM Studio…). Built with the `openai` feature.
//!
//! The response is read as it streams (server-sent events): text deltas are handed on as
//! they arrive, so the agent's time to first token is the model's; tool calls, whose
//! arguments arrive in fragments, are assembled and handed on once complete; token counts
//! come from the stream's final usage chunk (`stream_options.include_usage`). A server that
//! sends no usage reports 0 tokens (logged once per response at debug).
//!
//! Errors carry the HTTP status and the server's own message, never the API key. A stream
//! that ends before `data: [DONE]`, or a chunk that is not JSON, is an error: a truncated
//! answer is not passed off as a complete one.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use serde_json::{Value, json};
use tracing::debug;

use switchboard_agent::llm::{ChatMessage, Llm, LlmEvent, Role, ToolCall, ToolSpec, Usage};

/// `OPENAI_BASE_URL`: the API's base URL (default `https://api.openai.com/v1`).
pub const OPENAI_BASE_URL: &str = "OPENAI_BASE_URL";
/// `OPENAI_API_KEY`: the bearer key (optional: local servers often need none).
pub const OPENAI_API_KEY: &str = "OPENAI_API_KEY";
/// `OPENAI_MODEL`: the model; setting it is what turns the OpenAI-compatible model on.
pub const OPENAI_MODEL: &str = "OPENAI_MODEL";
/// The default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The longest error body read from a failed request (the rest is dropped).
const MAX_ERROR_BODY: usize = 4096;

/// Where and what to ask.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// The API's base URL, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// The bearer key, if the server needs one.
    pub api_key: Option<String>,
    /// The model.
    pub model: String,
    /// How long to wait for the connection.
    pub connect_timeout: Duration,
    /// How long the stream may stay silent before the response is abandoned.
    pub read_timeout: Duration,
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl OpenAiConfig {
    /// `model` at `base_url`, with default timeouts (10 s to connect, 60 s of silence).
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
        }
    }

    /// With a bearer key.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// From `OPENAI_MODEL`, `OPENAI_BASE_URL` and `OPENAI_API_KEY` read through `var`;
    /// `None` when no model is set. Empty values count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let Some(model) = get(OPENAI_MODEL) else {
            return Ok(None);
        };
        let base_url = get(OPENAI_BASE_URL).unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let parsed = reqwest::Url::parse(&base_url)
            .map_err(|e| anyhow::anyhow!("{OPENAI_BASE_URL} '{base_url}' is not a URL: {e}"))?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "http" | "https"),
            "{OPENAI_BASE_URL} must be an http or https URL, not '{base_url}'"
        );
        let mut config = Self::new(base_url, model.trim());
        config.api_key = get(OPENAI_API_KEY);
        Ok(Some(config))
    }
}

/// The OpenAI-compatible model. Cheap to share: one connection pool for every agent.
#[derive(Debug, Clone)]
pub struct OpenAiLlm {
    client: reqwest::Client,
    config: OpenAiConfig,
    endpoint: String,
}

impl OpenAiLlm {
    /// A model client for `config`.
    pub fn new(config: OpenAiConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .build()
            .map_err(|e| anyhow::anyhow!("could not build the HTTP client: {e}"))?;
        let endpoint = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        Ok(Self {
            client,
            config,
            endpoint,
        })
    }

    /// The request body for `messages` and `tools`.
    pub fn request_body(&self, messages: &[ChatMessage], tools: &[ToolSpec]) -> Value {
        let mut body = json!({
            "model": self.config.model,
            "messages": messages.iter().map(wire_message).collect::<Vec<_>>(),
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if !tools.is_empty() {
            body["tools"] = tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters,
                    }})
                })
                .collect();
        }
        body
    }
}

fn wire_message(message: &ChatMessage) -> Value {
    match message.role {
        Role::System => json!({"role": "system", "content": message.content}),
        Role::User => json!({"role": "user", "content": message.content}),
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": message.tool_call_id,
            "content": message.content,
        }),
        Role::Assistant if message.tool_calls.is_empty() => {
            json!({"role": "assistant", "content": message.content})
        }
        Role::Assistant => json!({
            "role": "assistant",
            "content": (!message.content.is_empty()).then_some(&message.content),
            "tool_calls": message.tool_calls.iter().map(|c| json!({
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments.to_string()},
            })).collect::<Vec<_>>(),
        }),
    }
}

#[async_trait]
impl Llm for OpenAiLlm {
    async fn stream(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSpec],
    ) -> anyhow::Result<BoxStream<'static, anyhow::Result<LlmEvent>>> {
        let mut request = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&self.request_body(messages, tools));
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "the model at {} did not answer: {}",
                self.endpoint,
                e.without_url()
            )
        })?;
        let status = response.status();
        if !status.is_success() {
            let mut body = response.text().await.unwrap_or_default();
            body.truncate(body.floor_char_boundary(MAX_ERROR_BODY));
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or(body);
            anyhow::bail!(
                "the model at {} answered {status}: {message}",
                self.endpoint
            );
        }
        let reader = Reader {
            body: response.bytes_stream().boxed(),
            decoder: SseDecoder::default(),
            pending: VecDeque::new(),
            calls: BTreeMap::new(),
            usage: None,
            done: false,
        };
        Ok(futures::stream::unfold(reader, |mut reader| async move {
            let event = reader.next().await?;
            Some((event, reader))
        })
        .boxed())
    }
}

/// A tool call being assembled from its fragments.
#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// The state of one streamed response.
struct Reader {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    decoder: SseDecoder,
    pending: VecDeque<anyhow::Result<LlmEvent>>,
    calls: BTreeMap<u64, PartialCall>,
    usage: Option<Usage>,
    done: bool,
}

impl Reader {
    async fn next(&mut self) -> Option<anyhow::Result<LlmEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    for data in self.decoder.push(&bytes) {
                        if let Err(e) = self.on_data(&data) {
                            self.fail(e);
                            break;
                        }
                    }
                }
                Some(Err(e)) => self.fail(anyhow::anyhow!(
                    "the model's stream failed: {}",
                    e.without_url()
                )),
                None => self.fail(anyhow::anyhow!(
                    "the model's stream ended before [DONE]: the answer is incomplete"
                )),
            }
        }
    }

    fn fail(&mut self, error: anyhow::Error) {
        self.pending.clear();
        self.pending.push_back(Err(error));
        self.done = true;
    }

    /// One `data:` payload.
    fn on_data(&mut self, data: &str) -> anyhow::Result<()> {
        if self.done {
            return Ok(());
        }
        if data.trim() == "[DONE]" {
            return self.finish();
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| anyhow::anyhow!("the model sent a chunk that is not JSON: {e}"))?;
        if let Some(error) = chunk.get("error") {
            let message = error["message"].as_str().unwrap_or("no message");
            anyhow::bail!("the model reported an error mid-stream: {message}");
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(Usage {
                input_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
                output_tokens: usage["completion_tokens"].as_u64().unwrap_or(0),
            });
        }
        let Some(delta) = chunk["choices"].get(0).map(|c| &c["delta"]) else {
            return Ok(()); // the usage chunk has no choices
        };
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            self.pending
                .push_back(Ok(LlmEvent::TextDelta(text.to_owned())));
        }
        for fragment in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = fragment["index"].as_u64().unwrap_or(0);
            let call = self.calls.entry(index).or_default();
            if let Some(id) = fragment["id"].as_str() {
                call.id = id.to_owned();
            }
            let function = &fragment["function"];
            if let Some(name) = function["name"].as_str() {
                call.name.push_str(name);
            }
            if let Some(arguments) = function["arguments"].as_str() {
                call.arguments.push_str(arguments);
            }
        }
        Ok(())
    }

    /// `[DONE]`: the assembled tool calls, then the usage.
    fn finish(&mut self) -> anyhow::Result<()> {
        for (index, call) in std::mem::take(&mut self.calls) {
            anyhow::ensure!(
                !call.name.is_empty(),
                "the model's tool call {index} has no function name"
            );
            let arguments = if call.arguments.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(&call.arguments).map_err(|e| {
                    anyhow::anyhow!(
                        "the model's arguments for '{}' are not JSON: {e}",
                        call.name
                    )
                })?
            };
            let id = if call.id.is_empty() {
                format!("call_{index}")
            } else {
                call.id
            };
            self.pending.push_back(Ok(LlmEvent::ToolCall(ToolCall {
                id,
                name: call.name,
                arguments,
            })));
        }
        let usage = self.usage.unwrap_or_else(|| {
            debug!("the model's stream reported no usage; counting 0 tokens");
            Usage::default()
        });
        self.pending.push_back(Ok(LlmEvent::Done(usage)));
        self.done = true;
        Ok(())
    }
}

/// Server-sent events: bytes in, complete events' `data` out (several `data:` lines of one
/// event joined with `\n`; comments and other fields ignored). Lines may be split anywhere
/// between chunks, even inside a UTF-8 character.
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseDecoder {
    /// Feeds `bytes`; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &byte in bytes {
            if byte != b'\n' {
                self.line.push(byte);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = String::from_utf8_lossy(&self.line).into_owned();
            self.line.clear();
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    events.push(data);
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                }
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_decode_the_same() {
        let stream = "data: {\"a\": \"72°F\"}\r\n\r\n: a comment\nevent: x\ndata: one\ndata: two\n\ndata: [DONE]\n\n";
        let bytes = stream.as_bytes();
        let want = vec![
            "{\"a\": \"72°F\"}".to_owned(),
            "one\ntwo".to_owned(),
            "[DONE]".to_owned(),
        ];
        for split in 0..=bytes.len() {
            let mut decoder = SseDecoder::default();
            let mut got = decoder.push(&bytes[..split]);
            got.extend(decoder.push(&bytes[split..]));
            assert_eq!(got, want, "split at {split}");
        }
        // One byte at a time.
        let mut decoder = SseDecoder::default();
        let got: Vec<String> = bytes.iter().flat_map(|b| decoder.push(&[*b])).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn configuration_comes_from_the_environment_and_never_shows_the_key() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(OpenAiConfig::from_vars(vars(&[])).unwrap().is_none());
        assert!(
            OpenAiConfig::from_vars(vars(&[(OPENAI_MODEL, " ")]))
                .unwrap()
                .is_none()
        );
        let config = OpenAiConfig::from_vars(vars(&[
            (OPENAI_MODEL, "gpt-4o-mini"),
            (OPENAI_API_KEY, "sk-secret"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(config.base_url, DEFAULT_BASE_URL);
        assert_eq!(config.api_key.as_deref(), Some("sk-secret"));
        assert!(!format!("{config:?}").contains("sk-secret"));
        let err =
            OpenAiConfig::from_vars(vars(&[(OPENAI_MODEL, "m"), (OPENAI_BASE_URL, "ftp://x")]))
                .unwrap_err();
        assert!(err.to_string().contains("http or https"), "{err}");
        assert!(
            OpenAiConfig::from_vars(vars(&[(OPENAI_MODEL, "m"), (OPENAI_BASE_URL, "not a url")]))
                .is_err()
        );
    }

    #[test]
    fn the_request_carries_the_conversation_tools_and_stream_options() {
        let llm = OpenAiLlm::new(OpenAiConfig::new("http://127.0.0.1:1/v1/", "m")).unwrap();
        assert_eq!(llm.endpoint, "http://127.0.0.1:1/v1/chat/completions");
        let call = ToolCall {
            id: "c1".into(),
            name: "get_weather".into(),
            arguments: json!({"location": "Paris"}),
        };
        let messages = vec![
            ChatMessage::new(Role::System, "be brief"),
            ChatMessage::new(Role::User, "weather in Paris?"),
            ChatMessage {
                role: Role::Assistant,
                content: String::new(),
                tool_call_id: None,
                tool_calls: vec![call],
            },
            ChatMessage {
                role: Role::Tool,
                content: "sunny".into(),
                tool_call_id: Some("c1".into()),
                tool_calls: Vec::new(),
            },
        ];
        let tools = [ToolSpec {
            name: "get_weather".into(),
            description: "weather".into(),
            parameters: json!({"type": "object"}),
        }];
        let body = llm.request_body(&messages, &tools);
        assert_eq!(
            body,
            json!({
                "model": "m",
                "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "weather in Paris?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                ],
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "weather", "parameters": {"type": "object"}}}],
            })
        );
        assert!(llm.request_body(&messages, &[]).get("tools").is_none());
    }
}
