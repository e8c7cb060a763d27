//! The `reaper` Lambda function: ECS Task State Change STOPPED events (EventBridge rule) end
//! their session once; a schedule sweeps expired leases and stuck starts. A failed invocation
//! returns an error: EventBridge has already handed the event to Lambda (its own retry policy
//! and dead-letter queues only cover events Lambda could not accept), so Lambda retries it
//! twice and then sends it to the function's on-failure queue (`EventInvokeConfig`), which
//! has an alarm.

use std::sync::Arc;

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde_json::Value;
use switchboard_aws::dynamodb::StandbyRegistry;
use switchboard_core::SystemClock;
use switchboard_functions::reaper::Reaper;
use switchboard_functions::{ReaperConfig, init_logging, reaper_parts, reaper_pool};

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
        fleet: switchboard_aws::emf::EmfFleet(switchboard_aws::emf::Emf::from_env()),
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let reaper = reaper.clone();
        async move {
            let (payload, context) = event.into_parts();
            reaper
                .handle(payload, context.deadline())
                .await
                .map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}
