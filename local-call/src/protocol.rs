//! The local call's wire protocol, version 1: typed JSON text frames on the local server's
//! `/calls/{call_id}/ws` WebSocket (docs/local-call.md has the design).
//!
//! Every frame is one JSON object with the protocol version `v` and a `type`:
//! - client → server: `join {name}`, `say {text}`, `leave`;
//! - server → client: `welcome {call_id, you, participants}`, `joined {participant}`,
//!   `left {participant}`, `message {from, text, at}`, `error {code, detail}`,
//!   `ended {reason}`.
//!
//! A bad frame never takes the call down: [`parse_client_frame`] turns anything a client can
//! send into either a [`ClientFrame`] or a [`FrameError`], which the server answers with an
//! `error` frame and carries on.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The protocol version every frame carries as `v`.
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest client frame accepted, in bytes.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// The longest message, in characters.
pub const MAX_TEXT_CHARS: usize = 4_000;
/// The longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Someone in the call: a person or the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// Unique within the call (assigned by the server).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Whether this participant is the agent.
    pub agent: bool,
}

/// What a client may send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Join the call under a display name (the first frame of a connection).
    Join {
        /// 1–64 characters, no control characters.
        name: String,
    },
    /// Say something to everyone in the call.
    Say {
        /// 1–4,000 characters.
        text: String,
    },
    /// Leave the call (closing the socket does the same).
    Leave,
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The answer to `join`: who you are and who is already there.
    Welcome {
        /// The call.
        call_id: String,
        /// You, with your assigned id.
        you: Participant,
        /// Everyone else in the call, the agent included.
        participants: Vec<Participant>,
    },
    /// Someone joined.
    Joined {
        /// Who.
        participant: Participant,
    },
    /// Someone left.
    Left {
        /// Who.
        participant: Participant,
    },
    /// Someone said something (your own messages come back too, in call order).
    Message {
        /// Who said it.
        from: Participant,
        /// What they said.
        text: String,
        /// When the server received it (RFC 3339 UTC).
        at: String,
    },
    /// Your last frame was refused; the connection stays open.
    Error {
        /// What was wrong.
        code: ErrorCode,
        /// A human-readable explanation.
        detail: String,
    },
    /// The call ended for everyone (the server closes the socket next).
    Ended {
        /// Why.
        reason: String,
    },
}

/// Why a client frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a JSON object.
    InvalidJson,
    /// `v` is missing or not a version this server speaks.
    UnsupportedVersion,
    /// `type` is missing or unknown.
    UnknownType,
    /// A field is missing, of the wrong type, unknown, or out of bounds.
    InvalidFrame,
    /// Larger than [`MAX_FRAME_BYTES`].
    FrameTooLarge,
    /// A binary frame (only text frames carry the protocol).
    BinaryNotSupported,
    /// `say` or `leave` before `join`.
    NotJoined,
    /// `join` twice on one connection.
    AlreadyJoined,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&name)
    }
}

/// A refused client frame: answered with an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// What was wrong.
    pub code: ErrorCode,
    /// Why, for people.
    pub detail: String,
}

impl FrameError {
    /// A refusal.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    /// The `error` frame that answers it.
    pub fn to_frame(&self) -> ServerFrame {
        ServerFrame::Error {
            code: self.code,
            detail: self.detail.clone(),
        }
    }
}

const CLIENT_TYPES: [&str; 3] = ["join", "say", "leave"];

fn bounded(field: &str, value: &str, max: usize) -> Result<(), FrameError> {
    let chars = value.chars().count();
    if chars == 0 || chars > max {
        return Err(FrameError::new(
            ErrorCode::InvalidFrame,
            format!("{field} must be 1-{max} characters, not {chars}"),
        ));
    }
    Ok(())
}

/// Parses one text frame from a client. Never panics; anything refused is a [`FrameError`].
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(FrameError::new(
            ErrorCode::FrameTooLarge,
            format!("frames are at most {MAX_FRAME_BYTES} bytes"),
        ));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| FrameError::new(ErrorCode::InvalidJson, format!("not JSON: {e}")))?;
    let serde_json::Value::Object(mut object) = value else {
        return Err(FrameError::new(
            ErrorCode::InvalidJson,
            "a frame is a JSON object",
        ));
    };
    match object.remove("v") {
        Some(v) if v.as_u64() == Some(u64::from(PROTOCOL_VERSION)) => {}
        Some(v) => {
            return Err(FrameError::new(
                ErrorCode::UnsupportedVersion,
                format!("this server speaks version {PROTOCOL_VERSION}, not {v}"),
            ));
        }
        None => {
            return Err(FrameError::new(
                ErrorCode::UnsupportedVersion,
                format!("\"v\": {PROTOCOL_VERSION} is required"),
            ));
        }
    }
    match object.get("type").and_then(serde_json::Value::as_str) {
        Some(t) if CLIENT_TYPES.contains(&t) => {}
        Some(t) => {
            let shown: String = t.chars().take(32).collect();
            return Err(FrameError::new(
                ErrorCode::UnknownType,
                format!("unknown type '{shown}' (expected join, say or leave)"),
            ));
        }
        None => {
            return Err(FrameError::new(
                ErrorCode::UnknownType,
                "\"type\" is required (join, say or leave)",
            ));
        }
    }
    let frame: ClientFrame = serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| FrameError::new(ErrorCode::InvalidFrame, e.to_string()))?;
    match &frame {
        ClientFrame::Join { name } => {
            bounded("name", name, MAX_NAME_CHARS)?;
            if name.chars().any(char::is_control) {
                return Err(FrameError::new(
                    ErrorCode::InvalidFrame,
                    "name must not contain control characters",
                ));
            }
        }
        ClientFrame::Say { text } => bounded("text", text, MAX_TEXT_CHARS)?,
        ClientFrame::Leave => {}
    }
    Ok(frame)
}

/// A frame's JSON object with `v` added.
fn versioned<T: Serialize>(frame: &T) -> String {
    let mut value = serde_json::to_value(frame).unwrap_or_else(|_| serde_json::json!({}));
    if let serde_json::Value::Object(object) = &mut value {
        object.insert("v".into(), PROTOCOL_VERSION.into());
    }
    value.to_string()
}

/// Encodes a server frame as the text frame to send (with `v`).
pub fn encode(frame: &ServerFrame) -> String {
    versioned(frame)
}

/// A server frame with its text encoded once, shared by everyone it is sent to (a message to
/// a call of 100 people is serialized once, not 100 times).
#[derive(Debug, Clone)]
pub struct EncodedFrame(std::sync::Arc<(ServerFrame, Box<str>)>);

impl EncodedFrame {
    /// Encodes `frame`.
    pub fn new(frame: ServerFrame) -> Self {
        let text = encode(&frame).into_boxed_str();
        Self(std::sync::Arc::new((frame, text)))
    }

    /// The frame.
    pub fn frame(&self) -> &ServerFrame {
        &self.0.0
    }

    /// Its text, as [`encode`] writes it.
    pub fn text(&self) -> &str {
        &self.0.1
    }
}

/// Encodes a client frame (for clients written in Rust: tests, tools).
pub fn encode_client(frame: &ClientFrame) -> String {
    versioned(frame)
}

/// Parses a server frame (for clients written in Rust).
pub fn parse_server_frame(text: &str) -> Result<ServerFrame, FrameError> {
    let mut value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| FrameError::new(ErrorCode::InvalidJson, e.to_string()))?;
    let version = value
        .as_object_mut()
        .and_then(|o| o.remove("v"))
        .and_then(|v| v.as_u64());
    if version != Some(u64::from(PROTOCOL_VERSION)) {
        return Err(FrameError::new(
            ErrorCode::UnsupportedVersion,
            format!("expected version {PROTOCOL_VERSION}"),
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| FrameError::new(ErrorCode::InvalidFrame, e.to_string()))
}
