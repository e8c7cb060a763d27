//! The HTTP API's tests, one binary: the anchor's contract tests (§9.3) ported one for one,
//! the rest of the contract (docs/api.md) (lists, idempotency, metadata, metrics, readiness), bad input,
//! CORS, and the OpenAPI document with `/docs`.
#![allow(unreachable_pub)]

mod anchor_contract;
mod auth;
mod bad_input;
mod contract;
mod cors;
mod docs;
#[cfg(feature = "jwks")]
mod jwks;
mod pool;
mod properties;
mod support;
