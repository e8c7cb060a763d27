//! Error paths moto cannot produce (aws-smithy-mocks): transaction conflicts and throttling
//! are retried with jitter within the deadline, then `Unavailable` (503 + Retry-After).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::error::ErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::{
    TransactWriteItemsError, TransactWriteItemsOutput,
};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::CancellationReason;
use aws_sdk_dynamodb::types::error::{
    InternalServerError, ProvisionedThroughputExceededException, TransactionCanceledException,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use switchboard_aws::DynamoRegistry;
use switchboard_core::conformance::{T0, call, request};
use switchboard_core::registry::StartOutcome;
use switchboard_core::{Error, ManualClock, SessionId, SessionRegistry};

fn cancelled(code: &str) -> TransactWriteItemsError {
    let reason = || CancellationReason::builder().code(code).build();
    TransactWriteItemsError::TransactionCanceledException(
        TransactionCanceledException::builder()
            .message("Transaction cancelled")
            .cancellation_reasons(reason())
            .cancellation_reasons(reason())
            .cancellation_reasons(reason())
            .build(),
    )
}

/// Real responses carry their error code in the metadata; so do these.
fn meta(code: &str) -> ErrorMetadata {
    ErrorMetadata::builder()
        .code(code)
        .message("mocked")
        .build()
}

fn registry(client: aws_sdk_dynamodb::Client, deadline: Duration) -> DynamoRegistry {
    DynamoRegistry::new(client, "table", Arc::new(ManualClock::new(T0)))
        .with_retry_deadline(deadline)
}

#[tokio::test]
async fn a_transaction_conflict_is_retried_and_the_start_commits() {
    let rule = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .sequence()
        .error(|| cancelled("TransactionConflict"))
        .times(2)
        .output(|| TransactWriteItemsOutput::builder().build())
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule]);
    let outcome = registry(client, Duration::from_secs(5))
        .start(request(&call("c")))
        .await
        .unwrap();
    assert!(matches!(outcome, StartOutcome::Created(_)));
    assert_eq!(rule.num_calls(), 3);
}

#[tokio::test]
async fn throttling_beyond_the_deadline_is_unavailable() {
    let rule = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .sequence()
        .error(|| {
            TransactWriteItemsError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder()
                    .message("slow down")
                    .meta(meta("ProvisionedThroughputExceededException"))
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule]);
    let err = registry(client, Duration::from_millis(300))
        .start(request(&call("c")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(
        rule.num_calls() > 1,
        "retried before giving up ({} calls)",
        rule.num_calls()
    );
}

#[tokio::test]
async fn a_server_error_on_a_heartbeat_is_unavailable_not_an_end() {
    let rule = mock!(aws_sdk_dynamodb::Client::update_item)
        .sequence()
        .error(|| {
            UpdateItemError::InternalServerError(
                InternalServerError::builder()
                    .message("boom")
                    .meta(meta("InternalServerError"))
                    .build(),
            )
        })
        .repeatedly()
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule]);
    let err = registry(client, Duration::from_secs(1))
        .heartbeat(&call("c"), SessionId::generate(), Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_start_whose_response_was_lost_is_retried_with_the_same_token() {
    use std::sync::Mutex;
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let seen = tokens.clone();
    // The first attempt committed but its response was lost (a 500 with no body); DynamoDB
    // answers the retry with the same ClientRequestToken as a success without applying it twice.
    let rule = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(move |req| {
            seen.lock()
                .unwrap()
                .push(req.client_request_token().map(str::to_owned));
            true
        })
        .sequence()
        .http_status(500, None)
        .output(|| TransactWriteItemsOutput::builder().build())
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule]);
    let req = request(&call("c"));
    let id = req.session_id.to_string();
    let outcome = registry(client, Duration::from_secs(5))
        .start(req)
        .await
        .unwrap();
    assert!(matches!(outcome, StartOutcome::Created(_)));
    // The SDK's retry re-sends the same input (one match, two responses served).
    assert_eq!(rule.num_calls(), 2);
    let tokens = tokens.lock().unwrap().clone();
    assert!(
        !tokens.is_empty() && tokens.iter().all(|t| t.as_deref() == Some(id.as_str())),
        "{tokens:?}"
    );
}

#[tokio::test]
async fn a_store_that_never_answers_times_out_as_unavailable() {
    use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    // A server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://{addr}"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "static"))
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_millis(100))
                .operation_timeout(Duration::from_millis(300))
                .build(),
        )
        .build();
    let registry = registry(
        aws_sdk_dynamodb::Client::from_conf(config),
        Duration::from_millis(500),
    );
    let started = std::time::Instant::now();
    let err = registry
        .get(&call("c"), SessionId::generate())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    let err = registry.start(request(&call("c"))).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded: {:?}",
        started.elapsed()
    );
    held.abort();
}
