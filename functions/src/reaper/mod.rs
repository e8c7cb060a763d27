//! The reaper's first trigger: ECS "Task State Change" events with `lastStatus` STOPPED.
//!
//! The row is found from the event's container override (`CALL_ID`, `SESSION_ID`, exactly as
//! `EcsLauncher` set them). A row whose agent never joined (still `starting`, or closed while
//! starting) ends `start_failed`, any other live row `task_stopped`, with the stopped reason,
//! stop code and the agent container's exit code as the detail. Events repeat and arrive out
//! of order: anything but STOPPED is ignored, and an already ended row is left as it is, so a
//! session ends (and its slots are released) once.
//!
//! The second trigger, a schedule, runs [`Sweeper::sweep`]: live rows whose lease expired end
//! `lease_expired` (their agent stopped itself before that, or is gone) and any task still
//! attached is stopped; rows whose agent never joined (`starting`, or closed while starting)
//! past their lease are checked against ECS first (PROVISIONING can last minutes): while a
//! task exists and the start deadline has not passed they are left alone, otherwise their
//! tasks are stopped and they end `start_failed`. Every end is guarded (`LeaseExpired`), so a
//! row renewed meanwhile stays.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;
use switchboard_aws::dynamodb::StandbyRegistry;
use switchboard_aws::ecs_tasks::EcsTasks;
use switchboard_aws::pool::{PoolSweep, WarmPool};
use switchboard_core::lease::{self, ExpiredResolver, Resolution};
use switchboard_core::registry::{EndGuard, EndOutcome, EndRequest};
use switchboard_core::{
    CallId, Clock, EndReason, Error, LaunchError, Limits, Session, SessionId, SessionRegistry,
    SessionStatus, StandbyState, StartType, TaskLauncher,
};
use tracing::{info, warn};
mod events;
mod handler;
mod standby;
mod sweep;

pub use self::events::*;
pub use self::handler::{Reaper, sweep_budget};
pub use self::standby::*;
pub use self::sweep::*;
