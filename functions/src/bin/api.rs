//! The `api` Lambda function: the whole HTTP API behind the HTTP API's `$default` route.
//! Configuration and AWS clients are set up once, at init; a bad configuration fails the init
//! with the variable's name (and Lambda reports the init error).

use switchboard_functions::{ApiConfig, api_router, fill_pool_at_init, init_logging};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_logging();
    let mut config = ApiConfig::from_env().inspect_err(|e| {
        tracing::error!(error = %e, "invalid configuration");
    })?;
    let sdk = switchboard_aws::sdk_config_from_env().await;
    // The JWT key, when it lives in Secrets Manager: read once, here.
    config.load_auth(&sdk).await.inspect_err(|e| {
        tracing::error!(error = %format!("{e:#}"), "could not load the JWT key");
    })?;
    // With a warm pool, the task definition as an ARN (claims compare ARNs).
    config
        .resolve_task_definition(&sdk)
        .await
        .inspect_err(|e| {
            tracing::error!(error = %format!("{e:#}"), "could not resolve TASK_DEFINITION");
        })?;
    let router = api_router(&config, &sdk)?;
    fill_pool_at_init(&config, &sdk).await;
    tracing::info!(
        table = %config.table,
        cluster = %config.ecs.cluster,
        warm_pool_size = config.pool.size,
        auth = if config.auth.is_some() { "jwt" } else { "none" },
        "api function ready"
    );
    lambda_http::run(router).await
}
