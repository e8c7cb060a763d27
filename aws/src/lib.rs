//! AWS adapters behind the core ports.
//!
//! # Layout
//! - [`dynamodb`]: [`DynamoRegistry`], the cluster-wide `SessionRegistry` on one DynamoDB
//!   table (atomic limits, leases, close flags, history), and [`dynamodb::create_table`], which
//!   creates the table exactly as `template.yaml` declares it.
//! - [`ecs`]: [`EcsLauncher`], the `TaskLauncher` that runs each agent as its own ECS task.
//! - [`pool`]: the warm pool of standby tasks ([`pool::WarmPool`]) and the api's launcher
//!   that claims one before it starts a task ([`pool::PooledLauncher`]).
//! - [`emf`]: the fleet metrics as CloudWatch Embedded Metric Format lines on stdout.
//! - [`dynamodb::stream`]: the table's stream records as session changes (the events' source).
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
pub mod emf;
pub mod pool;

pub use dynamodb::DynamoRegistry;
pub use ecs::{EcsLauncher, EcsSettings};

/// Connection timeout of every client.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout of one attempt of a call (the ECS client allows `RunTask` longer).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of a call, its SDK retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The timeouts of one call: `attempt` and `operation` (and the connect timeout), or less
/// when less is left of the work's deadline ([`switchboard_core::deadline`]). `None` outside
/// a deadline: the client's own apply.
pub fn call_timeouts(
    attempt: Duration,
    operation: Duration,
) -> Option<aws_config::timeout::TimeoutConfig> {
    use switchboard_core::deadline::at_most;
    switchboard_core::deadline::remaining()?;
    Some(
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(at_most(CONNECT_TIMEOUT))
            .operation_attempt_timeout(at_most(attempt))
            .operation_timeout(at_most(operation))
            .build(),
    )
}

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
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}
