//! Secrets from AWS Secrets Manager, read once at a function's init: the api's JWT key
//! (`AUTH_JWT_KEY_SECRET_ID`: the HS256 secret, or the RS256/ES256 public key as PEM) and the
//! webhooks function's signing secret (`WEBHOOK_SECRET_ARN`: `whsec_...`), each the secret's
//! `SecretString`. Values are never logged.

use anyhow::Context;

/// The secret's name or ARN.
pub const AUTH_JWT_KEY_SECRET_ID: &str = "AUTH_JWT_KEY_SECRET_ID";

/// The secret's current `SecretString`, read by the api function.
pub async fn secret_string(sdk: &aws_config::SdkConfig, secret_id: &str) -> anyhow::Result<String> {
    secret_string_as(sdk, secret_id, switchboard_aws::calls::Role::Api).await
}

/// The secret's current `SecretString`, read by `role` (its call recorded as that role's).
pub async fn secret_string_as(
    sdk: &aws_config::SdkConfig,
    secret_id: &str,
    role: switchboard_aws::calls::Role,
) -> anyhow::Result<String> {
    let mut builder = aws_sdk_secretsmanager::config::Builder::from(sdk);
    if let Some(recorder) = switchboard_aws::calls::CallRecorder::from_env(role) {
        builder = builder.interceptor(recorder);
    }
    let client = aws_sdk_secretsmanager::Client::from_conf(builder.build());
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .with_context(|| format!("GetSecretValue {secret_id}"))?;
    out.secret_string()
        .map(str::to_owned)
        .with_context(|| format!("the secret {secret_id} has no SecretString"))
}
