//! The local call: a call on this machine, with no video service, that people join from the
//! demo page and agents join through the [`Edge`](switchboard_agent::edge::Edge) port.
//!
//! # Layout
//! - [`protocol`]: the WebSocket wire protocol (version 1): the frames a person and the
//!   server exchange, their limits and their parsing (never a panic on a client's bytes).
//! - [`hub`]: the rooms ([`CallHub`]), a person's handle in them, and [`HubEdge`], the
//!   agent's side: the `Edge` a process that serves the local call offers its agents.
//! - [`route`]: `GET /calls/{call_id}/ws` (axum; guarded by the `can_join_call` hook) and the
//!   demo page at `/`.
//!
//! # Must not depend on
//! No `aws-*` or `lambda_*` crate: the local call is what `serve` and `run` offer on one
//! machine. The agent runtime does not know this crate: the runner hands a [`HubEdge`] to the
//! launcher as the process's call transport.

pub mod hub;
pub mod protocol;
pub mod route;

pub use hub::{CallHub, HubEdge, PersonHandle};
pub use route::LocalCall;
