//! SDK errors translated at the seam into `switchboard_core::Error`.

use std::time::Duration;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use switchboard_core::Error;

/// Error codes DynamoDB uses for throttling and transient failures.
const TRANSIENT_CODES: [&str; 7] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
];

/// What a failed call means to us.
pub(crate) enum Failure {
    /// The request's condition did not hold.
    ConditionFailed,
    /// Worth retrying (throttling, conflict, timeout, network).
    Transient(Error),
    /// Anything else.
    Fatal(Error),
}

/// Classifies an SDK error (a 5xx without a known code is transient too). `what` names the operation for the error's context.
pub(crate) fn classify<E>(err: SdkError<E, HttpResponse>, what: &'static str) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            if code == "ConditionalCheckFailedException" {
                Failure::ConditionFailed
            } else if TRANSIENT_CODES.contains(&code) || service.raw().status().is_server_error() {
                Failure::Transient(unavailable(err, what))
            } else {
                Failure::Fatal(Error::Unexpected(anyhow::Error::new(err).context(what)))
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failure::Transient(unavailable(err, what))
        }
        _ => Failure::Fatal(Error::Unexpected(anyhow::Error::new(err).context(what))),
    }
}

fn unavailable<E, R>(err: SdkError<E, R>, what: &'static str) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    Error::Unavailable {
        retry_after: Duration::from_secs(1),
        source: anyhow::Error::new(err).context(what),
    }
}

/// Maps a failure of a call that has no condition.
pub(crate) fn plain<E>(err: SdkError<E, HttpResponse>, what: &'static str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match classify(err, what) {
        Failure::ConditionFailed => Error::Conflict(format!("{what}: condition failed")),
        Failure::Transient(e) | Failure::Fatal(e) => e,
    }
}
