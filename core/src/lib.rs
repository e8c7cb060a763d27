//! Switchboard's domain: everything both modes (local `serve` and AWS) agree on.
//!
//! # Layout
//! - [`ids`]: validated identifiers ([`SessionId`], [`CallId`], [`CallType`], [`IdempotencyKey`]).
//! - [`time`]: [`Timestamp`] and the [`Clock`] port, with system, tokio (pausable) and manual clocks.
//! - [`session`]: [`Session`], [`SessionStatus`], [`EndReason`], [`Metadata`].
//! - [`lease`]: the lease rules behind "never K+1" (stop deadline, end give-up, expiry) and
//!   [`lease::sweep_expired`], the sweep `serve` and the reaper both run.
//! - [`limits`]: [`Limits`], the launcher options, validated with the anchor's messages.
//! - [`metrics`]: the 25 anchor metric names, percentile fields, the bounded [`metrics::LatencySketch`],
//!   the snapshot [`AgentMetrics`] and the [`MetricsRecorder`] agents call on their hot paths.
//! - [`events`]: session events ([`events::SessionEvent`]), each derived from one registry
//!   write ([`events::Change`]), and the [`events::ChangeObserver`] registries report to.
//! - [`fleet`]: fleet metrics: the [`fleet::FleetObserver`] port and [`fleet::FleetMetrics`],
//!   the in-memory figures `serve` renders in the Prometheus text format.
//! - [`registry`]: the [`SessionRegistry`] port (admission, leases, close flags, history).
//! - [`launcher`]: the [`TaskLauncher`] port (in-process agents locally, ECS tasks in AWS).
//! - [`deadline`]: the deadline of the work in progress, for adapters' timeouts.
//! - [`service`]: the use cases the HTTP API and the launcher share (start a session, request a close).
//! - [`memory`]: [`MemoryRegistry`], the embedded registry with the DynamoDB registry's semantics.
//! - `conformance` (feature `conformance`): the suite every registry implementation must pass;
//!   `testing`: `OutageRegistry`, a registry with an injectable outage.
//!
//! # Must not depend on
//! No `aws-*`, `axum` or `lambda_*` crate and no network I/O: adapters live in other crates and
//! translate their errors into [`Error`] at the seam. Time comes from the [`Clock`] port so lease,
//! idle and duration rules run on paused or manual time in tests.

#![warn(missing_docs)]

pub mod deadline;
pub mod error;
pub mod events;
pub mod fleet;
pub mod ids;
pub mod launcher;
pub mod lease;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod registry;
pub mod service;
pub mod session;
pub mod time;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod testing;

pub use error::{Error, LimitKind, Result};
pub use ids::{CallId, CallType, IdempotencyKey, SessionId};
pub use launcher::{LaunchError, Launched, PoolStatus, Standby, StandbyState, TaskLauncher};
pub use limits::{LimitOptions, Limits};
pub use memory::{MemoryRegistry, MemoryRegistryConfig};
pub use metrics::{AgentMetrics, MetricsRecorder};
pub use registry::SessionRegistry;
pub use session::{EndReason, Metadata, Session, SessionStatus, StartType};
pub use time::{Clock, ManualClock, SystemClock, Timestamp, TokioClock};
