//! The `events` Lambda function: the sessions table's stream → EventBridge and the webhook
//! queue (see `switchboard_functions::events`).

use std::sync::Arc;

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde_json::Value;
use switchboard_aws::calls::Role;
use switchboard_aws::emf::{Emf, EmfFleet};
use switchboard_core::SystemClock;
use switchboard_functions::events::{EventsConfig, Relay};
use switchboard_functions::init_logging;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let config = EventsConfig::from_lookup(|name| std::env::var(name).ok()).inspect_err(|e| {
        tracing::error!(error = %e, "invalid configuration");
    })?;
    let sdk = switchboard_aws::sdk_config_from_env().await;
    let relay = Arc::new(Relay {
        registry: Arc::new(switchboard_aws::DynamoRegistry::new(
            switchboard_aws::dynamodb::client_for(&sdk, Role::Events),
            config.table.clone(),
            Arc::new(SystemClock),
        )),
        bus: switchboard_functions::eventbridge_client(&sdk, Role::Events),
        sqs: switchboard_functions::sqs_client(&sdk, Role::Events),
        config,
        fleet: EmfFleet(Emf::from_env()),
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let relay = relay.clone();
        async move { Ok::<Value, lambda_runtime::Error>(relay.handle(event.payload).await) }
    }))
    .await
}
