//! A small OpenAI-compatible chat-completions server for tests (127.0.0.1, port 0): it answers
//! each request with the next scripted answer, streamed as server-sent events with pauses,
//! and records what it received.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One scripted answer: the status line and headers, then body parts written with a pause
/// before each.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status line and headers, with the blank line.
    pub head: &'static str,
    /// Body parts, each written after its pause.
    pub parts: Vec<(Duration, String)>,
}

/// A 200 event stream of `chunks` (each after its pause), then `data: [DONE]`.
pub fn sse(status_and_parts: Vec<(Duration, Value)>) -> Answer {
    let mut parts: Vec<(Duration, String)> = status_and_parts
        .into_iter()
        .map(|(pause, chunk)| (pause, format!("data: {chunk}\n\n")))
        .collect();
    parts.push((Duration::ZERO, "data: [DONE]\n\n".into()));
    Answer {
        head: "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
        parts,
    }
}

/// What the server received: the request head and its JSON body.
pub type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// Serves `answers` in order, one per request; returns its base URL and what it saw.
pub async fn fake_openai(answers: Vec<Answer>) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        for answer in answers {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let (head, body) = loop {
                let n = socket.read(&mut buf).await.unwrap();
                raw.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&raw).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break (head.to_owned(), body.to_owned());
                    }
                }
                assert!(n > 0, "the client hung up mid-request");
            };
            log.lock()
                .unwrap()
                .push((head, serde_json::from_str(&body).unwrap()));
            socket.write_all(answer.head.as_bytes()).await.unwrap();
            for (pause, part) in answer.parts {
                tokio::time::sleep(pause).await;
                if socket.write_all(part.as_bytes()).await.is_err() {
                    break;
                }
            }
            let _ = socket.shutdown().await;
        }
    });
    (base, seen)
}

/// A chunk with text.
pub fn text_chunk(text: &str) -> Value {
    json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
}

/// The final usage chunk.
pub fn usage_chunk(prompt: u64, completion: u64) -> Value {
    json!({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
}

/// A fragment of tool call 0.
pub fn tool_fragment(id: Option<&str>, name: Option<&str>, arguments: &str) -> Value {
    let mut function = json!({"arguments": arguments});
    if let Some(name) = name {
        function["name"] = json!(name);
    }
    let mut call = json!({"index": 0, "type": "function", "function": function});
    if let Some(id) = id {
        call["id"] = json!(id);
    }
    json!({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
}
