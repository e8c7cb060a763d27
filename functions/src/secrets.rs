//! The JWT key from AWS Secrets Manager, read once at the api function's init
//! (`AUTH_JWT_KEY_SECRET_ID`): the HS256 secret, or the RS256/ES256 public key as PEM, as the
//! secret's `SecretString`. The value is never logged.

use anyhow::Context;

/// The secret's name or ARN.
pub const AUTH_JWT_KEY_SECRET_ID: &str = "AUTH_JWT_KEY_SECRET_ID";

/// The secret's current `SecretString`.
pub async fn secret_string(sdk: &aws_config::SdkConfig, secret_id: &str) -> anyhow::Result<String> {
    let mut builder = aws_sdk_secretsmanager::config::Builder::from(sdk);
    if let Some(recorder) =
        switchboard_aws::calls::CallRecorder::from_env(switchboard_aws::calls::Role::Api)
    {
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
