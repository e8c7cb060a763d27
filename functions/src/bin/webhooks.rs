//! The `webhooks` Lambda function: the webhook FIFO queue → the receiver, signed (see
//! `switchboard_functions::webhooks`). The secret is read once, at init, from Secrets Manager.

use std::sync::Arc;

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde_json::Value;
use switchboard_aws::calls::Role;
use switchboard_aws::emf::{Emf, EmfFleet};
use switchboard_functions::init_logging;
use switchboard_functions::webhooks::{Deliverer, WEBHOOK_SECRET_ARN, WEBHOOK_URL};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let (Some(url), Some(secret_id)) = (var(WEBHOOK_URL), var(WEBHOOK_SECRET_ARN)) else {
        tracing::error!("{WEBHOOK_URL} and {WEBHOOK_SECRET_ARN} are required");
        return Err(format!("{WEBHOOK_URL} and {WEBHOOK_SECRET_ARN} are required").into());
    };
    let sdk = switchboard_aws::sdk_config_from_env().await;
    let secret = switchboard_functions::secrets::secret_string_as(&sdk, &secret_id, Role::Webhooks)
        .await
        .inspect_err(
            |e| tracing::error!(error = %format!("{e:#}"), "could not read the webhook secret"),
        )?;
    let endpoint = switchboard_webhooks::Endpoint::new(&url, secret.trim())
        .inspect_err(|e| tracing::error!(error = %e, "invalid webhook configuration"))?;
    let deliverer = Arc::new(Deliverer {
        endpoint,
        fleet: EmfFleet(Emf::from_env()),
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let deliverer = deliverer.clone();
        async move {
            let deadline = event.context.deadline();
            Ok::<Value, lambda_runtime::Error>(deliverer.handle(event.payload, deadline).await)
        }
    }))
    .await
}
