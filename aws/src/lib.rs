//! AWS adapters behind the core ports.
//!
//! # Layout
//! - [`dynamodb`]: [`DynamoRegistry`], the cluster-wide `SessionRegistry` on one DynamoDB
//!   table (atomic limits, leases, close flags, history), and [`dynamodb::create_table`], which
//!   creates the table exactly as `template.yaml` declares it.
//! - [`ecs`]: [`EcsLauncher`], the `TaskLauncher` that runs each agent as its own ECS task.
//! - [`calls`]: the interceptor that records each deployed role's AWS calls for the IAM test.
//!
//! # Must not depend on
//! No `axum` or `lambda_*`: the HTTP router and the Lambda binaries use these adapters through
//! the core ports. SDK errors are translated here, at the seam, into `switchboard_core` errors.

use std::time::Duration;

pub mod calls;
pub mod dynamodb;
pub mod ecs;
pub mod ecs_tasks;

pub use dynamodb::DynamoRegistry;
pub use ecs::{EcsLauncher, EcsSettings};

/// The SDK configuration from the environment (region, credentials, and `AWS_ENDPOINT_URL`
/// for an emulator), with a timeout on every call and bounded SDK retries: 1 s to connect,
/// 2 s per attempt, 5 s per operation, 3 attempts. Load it once per process (Lambda: at init)
/// and build every client from it.
pub async fn sdk_config_from_env() -> aws_config::SdkConfig {
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_attempt_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(5))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}
