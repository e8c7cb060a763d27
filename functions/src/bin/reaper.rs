//! The `reaper` Lambda function: ECS Task State Change STOPPED events (EventBridge rule) end
//! their session once; a schedule sweeps expired leases and stuck starts. A failed invocation
//! returns an error: EventBridge has already handed the event to Lambda (its own retry policy
//! and dead-letter queues only cover events Lambda could not accept), so Lambda retries it
//! twice and then sends it to the function's on-failure queue (`EventInvokeConfig`), which
//! has an alarm.

use std::sync::Arc;
use std::time::Duration;

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde_json::{Value, json};
use switchboard_aws::DynamoRegistry;
use switchboard_aws::dynamodb::StandbyRegistry;
use switchboard_aws::ecs_tasks::EcsTasks;
use switchboard_aws::pool::WarmPool;
use switchboard_core::SystemClock;
use switchboard_functions::reaper::{
    Skipped, Stopped, Sweeper, end_standby, end_stopped, parse_event,
};
use switchboard_functions::{ReaperConfig, init_logging, reaper_parts, reaper_pool};

struct Reaper {
    config: ReaperConfig,
    registry: DynamoRegistry,
    standbys: StandbyRegistry,
    tasks: EcsTasks,
    pool: Option<WarmPool>,
}

impl Reaper {
    async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, lambda_runtime::Error> {
        let (payload, context) = event.into_parts();
        if payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
            // Leave a margin before the function's own timeout. A deadline already past is
            // no real one (`cargo lambda watch` sends a constant 600000, i.e. 1970, and Lambda
            // would have stopped the invocation): then the template's 60 s timeout applies.
            let budget = match context
                .deadline()
                .duration_since(std::time::SystemTime::now())
            {
                Ok(left) => left.saturating_sub(Duration::from_secs(5)),
                Err(_) => {
                    tracing::warn!("the invocation's deadline is past; sweeping for 55 s at most");
                    Duration::from_secs(55)
                }
            };
            let sweeper = Sweeper {
                registry: &self.registry,
                tasks: &self.tasks,
                limits: &self.config.limits,
                start_deadline: self.config.start_deadline,
                clock: &SystemClock,
                pool: self.pool.as_ref(),
            };
            let report = sweeper.sweep(budget).await?;
            let pool = report.pool.unwrap_or_default();
            // Fields, not a debug string: the template's metric filter counts `failed`.
            tracing::info!(
                lease_expired = report.lease_expired,
                start_failed = report.start_failed,
                still_starting = report.still_starting,
                tasks_stopped = report.tasks_stopped,
                failed = report.failed,
                incomplete = report.incomplete,
                redispatched = report.redispatched,
                standbys_started = pool.started,
                standbys_stopped = pool.stopped,
                standbys_idle = pool.idle,
                "sweep done"
            );
            return Ok(json!({ "sweep": format!("{report:?}") }));
        }
        match parse_event(&payload, &self.config.container) {
            Ok(Stopped::Session(stopped)) => {
                let outcome = end_stopped(&self.registry, &stopped, &self.config.limits).await?;
                tracing::info!(session_id = %stopped.session_id, task_arn = %stopped.task_arn, ?outcome, "task stopped");
                Ok(json!({ "outcome": format!("{outcome:?}") }))
            }
            Ok(Stopped::Standby(stopped)) => {
                let outcome = end_standby(
                    &self.standbys,
                    &self.registry,
                    self.pool.as_ref(),
                    &self.tasks,
                    &stopped,
                    &self.config.limits,
                    self.config.start_deadline,
                    &SystemClock,
                )
                .await?;
                tracing::info!(task_arn = %stopped.task_arn, ?outcome, "standby task stopped");
                Ok(json!({ "outcome": format!("{outcome:?}") }))
            }
            Err(skipped @ (Skipped::NotStopped(_) | Skipped::OtherGroup(_))) => {
                tracing::debug!(%skipped, "ignored");
                Ok(json!({ "ignored": skipped.to_string() }))
            }
            Err(skipped) => {
                tracing::warn!(%skipped, "an event the reaper cannot use");
                Ok(json!({ "ignored": skipped.to_string() }))
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let mut config = ReaperConfig::from_env().inspect_err(|e| {
        tracing::error!(error = %e, "invalid configuration");
    })?;
    let sdk = switchboard_aws::sdk_config_from_env().await;
    config
        .resolve_task_definition(&sdk)
        .await
        .inspect_err(|e| {
            tracing::error!(error = %format!("{e:#}"), "could not resolve TASK_DEFINITION");
        })?;
    let (registry, tasks) = reaper_parts(&config, &sdk, Arc::new(SystemClock));
    let pool = reaper_pool(&config, &sdk, registry.clone());
    let reaper = Arc::new(Reaper {
        standbys: StandbyRegistry::new(registry.clone()),
        config,
        registry,
        tasks,
        pool,
    });
    lambda_runtime::run(service_fn(move |event| {
        let reaper = reaper.clone();
        async move { reaper.handle(event).await }
    }))
    .await
}
