//! Error paths moto cannot produce (aws-smithy-mocks): transaction conflicts and throttling
//! are retried with jitter within the deadline, then `Unavailable` (503 + Retry-After).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::error::ErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::{
    TransactWriteItemsError, TransactWriteItemsOutput,
};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::error::{
    InternalServerError, ProvisionedThroughputExceededException, TransactionCanceledException,
};
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason};
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

type Tokens = Arc<std::sync::Mutex<Vec<Option<String>>>>;

/// The ClientRequestToken of every TransactWriteItems a mock sees, and its matcher.
fn token_log() -> (
    Tokens,
    impl Fn(&aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput) -> bool
    + Send
    + Sync
    + 'static,
) {
    let tokens: Tokens = Arc::default();
    let seen = tokens.clone();
    (tokens, move |req| {
        seen.lock()
            .unwrap()
            .push(req.client_request_token().map(str::to_owned));
        true
    })
}

#[tokio::test]
async fn a_start_whose_response_was_lost_is_retried_with_the_same_token() {
    let (tokens, seen) = token_log();
    // The first attempt committed but its response was lost (a 500 with no body); DynamoDB
    // answers the retry with the same ClientRequestToken as a success without applying it twice.
    let rule = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(seen)
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
async fn a_retry_after_a_definite_cancellation_goes_with_a_fresh_token() {
    let (tokens, seen) = token_log();
    // F17: a cancelled transaction (a conflict on the hot global counter) is definite: nothing
    // was applied. DynamoDB may replay that outcome for a token it has seen, so the retry
    // carries a fresh token (the session's attribute_not_exists(PK) still rules out a double
    // commit), and keeps it across the ambiguous 500 that follows: had that attempt committed,
    // its retry must be recognised as the same request.
    let rule = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .match_requests(seen)
        .sequence()
        .error(|| cancelled("TransactionConflict"))
        // Past the SDK's own attempts (which re-send the same input): the registry's retry.
        .http_status(500, None)
        .times(3)
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
    let tokens = tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 3, "{tokens:?}");
    assert_eq!(tokens[0].as_deref(), Some(id.as_str()), "the first attempt");
    assert!(
        tokens[1].is_some() && tokens[1].as_deref() != Some(id.as_str()),
        "a fresh token after the cancellation: {tokens:?}"
    );
    assert_eq!(
        tokens[2], tokens[1],
        "the same one after the ambiguous failure"
    );
}

#[tokio::test]
async fn a_start_whose_own_hidden_commit_holds_its_key_is_created_not_replayed() {
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    // An attempt committed behind an ambiguous failure; the next attempt (another token after
    // a cancellation) finds the Idempotency-Key taken, by this very session. Replaying it would
    // answer 201 without ever launching its agent: it is created, and the launch goes on.
    let mut req = request(&call("c"));
    let idem = switchboard_core::registry::Idempotency::new(
        switchboard_core::IdempotencyKey::parse("k-1").unwrap(),
        &switchboard_core::CallType::default(),
        None,
    );
    let fingerprint = idem.fingerprint.clone();
    req.idempotency = Some(idem);
    let id = req.session_id.to_string();
    let key_taken = || {
        let reason = |code: &str| CancellationReason::builder().code(code).build();
        TransactWriteItemsError::TransactionCanceledException(
            TransactionCanceledException::builder()
                .message("Transaction cancelled")
                .cancellation_reasons(reason("None"))
                .cancellation_reasons(reason("None"))
                .cancellation_reasons(reason("None"))
                .cancellation_reasons(reason("ConditionalCheckFailed"))
                .build(),
        )
    };
    let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .sequence()
        .error(key_taken)
        .build();
    let ours = id.clone();
    let get = mock!(aws_sdk_dynamodb::Client::get_item)
        .sequence()
        .output(|| GetItemOutput::builder().build())
        .output(move || {
            GetItemOutput::builder()
                .item("PK", AttributeValue::S("CALL#c".into()))
                .item("SK", AttributeValue::S("IDEM#k-1".into()))
                .item("fingerprint", AttributeValue::S(fingerprint.clone()))
                .item("session_id", AttributeValue::S(ours.clone()))
                .item("created_at", AttributeValue::N("1".into()))
                .build()
        })
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&tx, &get]);
    let outcome = registry(client, Duration::from_secs(5))
        .start(req)
        .await
        .unwrap();
    match outcome {
        StartOutcome::Created(session) => assert_eq!(session.id.to_string(), id),
        StartOutcome::Replayed(r) => panic!("replayed its own start: {r:?}"),
    }
}

#[tokio::test]
async fn live_lists_read_the_live_index_and_never_scan_the_table() {
    use aws_sdk_dynamodb::operation::query::QueryOutput;
    use aws_sdk_dynamodb::operation::scan::ScanOutput;
    use switchboard_core::registry::ListQuery;
    // F3: a dashboard's `GET /sessions` every few seconds must not read the table's history.
    let index = mock!(aws_sdk_dynamodb::Client::query)
        .match_requests(|r| r.index_name() == Some("live") && r.consistent_read() != Some(true))
        .then_output(|| QueryOutput::builder().build());
    let scan = mock!(aws_sdk_dynamodb::Client::scan).then_output(|| ScanOutput::builder().build());
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&index, &scan]);
    let registry = registry(client, Duration::from_secs(1));
    for call_id in [None, Some(call("c"))] {
        let page = registry
            .list(ListQuery {
                call_id,
                with_metrics: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.sessions.is_empty() && page.next_token.is_none());
    }
    assert_eq!(scan.num_calls(), 0, "no Scan for live sessions");
    assert_eq!(index.num_calls(), 32, "16 shards of the live index, twice");
}

#[tokio::test]
async fn a_list_with_ended_sessions_does_a_bounded_amount_of_work() {
    use aws_sdk_dynamodb::operation::scan::ScanOutput;
    use switchboard_core::registry::ListQuery;
    // F3: a table whose Scan pages hold no session rows (metadata, metrics, counters of
    // sessions long gone) answers after a bounded number of reads, with a next_token for the
    // rest, even on an empty page.
    let scan = mock!(aws_sdk_dynamodb::Client::scan)
        .match_requests(|r| r.consistent_read() != Some(true) && r.limit().is_some())
        .then_output(|| {
            ScanOutput::builder()
                .last_evaluated_key("PK", AttributeValue::S("CALL#old".into()))
                .last_evaluated_key("SK", AttributeValue::S("META#old".into()))
                .build()
        });
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&scan]);
    let registry = registry(client, Duration::from_secs(1));
    let page = tokio::time::timeout(
        Duration::from_secs(10),
        registry.list(ListQuery {
            include_ended: true,
            limit: 50,
            ..Default::default()
        }),
    )
    .await
    .expect("bounded: answered")
    .unwrap();
    assert!(page.sessions.is_empty());
    let token = page.next_token.expect("a next_token on a short page");
    assert_eq!(scan.num_calls(), switchboard_aws::dynamodb::list::MAX_READS);
    // The token resumes the scan where it stopped.
    let next = registry
        .list(ListQuery {
            include_ended: true,
            limit: 50,
            next_token: Some(token),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(next.next_token.is_some());
    assert_eq!(
        scan.num_calls(),
        2 * switchboard_aws::dynamodb::list::MAX_READS
    );
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_works_deadline_not_only_the_registrys() {
    // F10: inside a start's deadline (the api function), a conflicting transaction is retried
    // only while the start has time left, not for the registry's own 5 s.
    let rule = mock!(aws_sdk_dynamodb::Client::transact_write_items)
        .sequence()
        .error(|| cancelled("TransactionConflict"))
        .repeatedly()
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule]);
    let registry = registry(client, Duration::from_secs(5));
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_millis(300);
    let err =
        switchboard_core::deadline::within(Some(deadline), registry.start(request(&call("c"))))
            .await
            .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(
        started.elapsed() <= Duration::from_millis(300),
        "gave up by the deadline (virtual time): {:?}",
        started.elapsed()
    );
    assert!(rule.num_calls() >= 2, "retried meanwhile");
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

mod ecs {
    //! `RunTask` outcomes moto cannot produce: 5xx retried with the same client token, then
    //! ambiguous; failures and throttling mapped to capacity (503) or rejection (500).

    use std::sync::Arc;
    use std::time::Duration;

    use aws_sdk_ecs::error::ErrorMetadata;
    use aws_sdk_ecs::operation::run_task::{RunTaskError, RunTaskOutput};
    use aws_sdk_ecs::types::error::{InvalidParameterException, ServerException};
    use aws_sdk_ecs::types::{Failure, Task};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use switchboard_aws::ecs::{Capacity, EcsLauncher, EcsSettings, ProviderShare};
    use switchboard_core::conformance::{T0, call, request};
    use switchboard_core::registry::StartOutcome;
    use switchboard_core::{
        LaunchError, Limits, ManualClock, MemoryRegistry, Session, SessionRegistry, TaskLauncher,
    };

    fn launcher(client: aws_sdk_ecs::Client, budget: Duration) -> EcsLauncher {
        EcsLauncher::new(
            client,
            EcsSettings {
                cluster: "cluster".into(),
                task_definition: "agent:1".into(),
                container: "agent".into(),
                subnets: vec!["subnet-1".into()],
                security_groups: vec!["sg-1".into()],
                assign_public_ip: false,
                capacity: Capacity::Providers(vec![
                    ProviderShare::named("FARGATE_SPOT"),
                    ProviderShare::named("FARGATE"),
                ]),
                table: "table".into(),
                limits: Limits::default(),
                retry_budget: budget,
            },
        )
    }

    async fn session() -> Session {
        let registry = MemoryRegistry::new(Arc::new(ManualClock::new(T0)));
        match registry.start(request(&call("c"))).await.unwrap() {
            StartOutcome::Created(s) => s,
            StartOutcome::Replayed(_) => unreachable!(),
        }
    }

    fn meta(code: &str) -> ErrorMetadata {
        ErrorMetadata::builder()
            .code(code)
            .message("mocked")
            .build()
    }

    fn server_error() -> RunTaskError {
        RunTaskError::ServerException(
            ServerException::builder()
                .message("internal")
                .meta(meta("ServerException"))
                .build(),
        )
    }

    fn started() -> RunTaskOutput {
        RunTaskOutput::builder()
            .tasks(
                Task::builder()
                    .task_arn("arn:aws:ecs:task/cluster/1")
                    .build(),
            )
            .build()
    }

    #[tokio::test]
    async fn a_server_error_is_retried_with_the_same_client_token() {
        let s = session().await;
        let id = s.id.to_string();
        let token = id.clone();
        let rule = mock!(aws_sdk_ecs::Client::run_task)
            .match_requests(move |r| {
                r.client_token() == Some(token.as_str())
                    && r.started_by() == Some(token.as_str())
                    && r.capacity_provider_strategy().len() == 2
                    && r.launch_type().is_none()
            })
            .sequence()
            .error(server_error)
            .times(2)
            .output(started)
            .build();
        let client = mock_client!(aws_sdk_ecs, RuleMode::Sequential, [&rule]);
        let launched = launcher(client, Duration::from_secs(5))
            .launch(&s)
            .await
            .expect("launched on the third attempt");
        assert_eq!(
            launched.task_arn.as_deref(),
            Some("arn:aws:ecs:task/cluster/1")
        );
        assert_eq!(rule.num_calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_launch_budget_is_what_is_left_of_the_starts_deadline() {
        // F10: a 5 s retry budget, but 400 ms left of the start: ambiguous by then.
        let s = session().await;
        let rule = mock!(aws_sdk_ecs::Client::run_task)
            .sequence()
            .error(server_error)
            .repeatedly()
            .build();
        let client = mock_client!(aws_sdk_ecs, RuleMode::Sequential, [&rule]);
        let launcher = launcher(client, Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let err = switchboard_core::deadline::within(
            Some(started + Duration::from_millis(400)),
            launcher.launch(&s),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, LaunchError::Ambiguous { .. }), "{err:?}");
        assert!(
            started.elapsed() <= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn server_errors_past_the_budget_leave_the_outcome_ambiguous() {
        let s = session().await;
        let rule = mock!(aws_sdk_ecs::Client::run_task)
            .sequence()
            .error(server_error)
            .repeatedly()
            .build();
        let client = mock_client!(aws_sdk_ecs, RuleMode::Sequential, [&rule]);
        let err = launcher(client, Duration::from_millis(300))
            .launch(&s)
            .await
            .unwrap_err();
        assert!(matches!(err, LaunchError::Ambiguous { .. }), "{err:?}");
        assert!(rule.num_calls() >= 2, "retried: {}", rule.num_calls());
    }

    #[tokio::test]
    async fn failures_and_errors_map_to_capacity_or_rejection() {
        let s = session().await;
        let failed = |reason: &'static str| {
            move || {
                RunTaskOutput::builder()
                    .failures(Failure::builder().reason(reason).detail("mocked").build())
                    .build()
            }
        };
        // (rule, outcome, calls): throttling is retried by the SDK itself (3 attempts), never by
        // the launcher; the rest is answered once.
        let cases: Vec<(aws_smithy_mocks::Rule, &str, usize)> = vec![
            (
                mock!(aws_sdk_ecs::Client::run_task).then_output(failed("RESOURCE:MEMORY")),
                "capacity",
                1,
            ),
            (
                mock!(aws_sdk_ecs::Client::run_task).then_output(failed("MISSING")),
                "rejected",
                1,
            ),
            (
                mock!(aws_sdk_ecs::Client::run_task)
                    .then_error(|| RunTaskError::generic(meta("ThrottlingException"))),
                "capacity",
                3,
            ),
            (
                mock!(aws_sdk_ecs::Client::run_task).then_error(|| {
                    RunTaskError::InvalidParameterException(
                        InvalidParameterException::builder()
                            .message("bad subnet")
                            .meta(meta("InvalidParameterException"))
                            .build(),
                    )
                }),
                "rejected",
                1,
            ),
            // ECS wraps EC2's throttling in InvalidParameterException (F9): not now, 503.
            (
                mock!(aws_sdk_ecs::Client::run_task).then_error(|| {
                    RunTaskError::InvalidParameterException(
                        InvalidParameterException::builder()
                            .message("Error retrieving security group information for [sg-1]: Request limit exceeded. (ErrorCode: RequestLimitExceeded)")
                            .meta(meta("InvalidParameterException"))
                            .build(),
                    )
                }),
                "capacity",
                1,
            ),
        ];
        for (rule, want, calls) in cases {
            let client = mock_client!(aws_sdk_ecs, RuleMode::Sequential, [&rule]);
            let err = launcher(client, Duration::from_secs(5))
                .launch(&s)
                .await
                .unwrap_err();
            let got = match err {
                LaunchError::NoCapacity { .. } => "capacity",
                LaunchError::Rejected(_) => "rejected",
                LaunchError::Ambiguous { .. } => "ambiguous",
            };
            assert_eq!(got, want, "{err:?}");
            assert_eq!(
                rule.num_calls(),
                calls,
                "a definite answer is not retried: {want}"
            );
        }
    }

    #[tokio::test]
    async fn the_reaper_lists_a_sessions_tasks_with_started_by_as_the_only_filter() {
        use aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput;
        use aws_sdk_ecs::operation::list_tasks::ListTasksOutput;
        use switchboard_aws::ecs_tasks::EcsTasks;
        // ECS: "When you specify startedBy as the filter, it must be the only filter that you
        // use" (the cluster is not a filter). Any other filter must never come back.
        let list = mock!(aws_sdk_ecs::Client::list_tasks)
            .match_requests(|r| {
                r.cluster() == Some("cluster")
                    && r.started_by() == Some("session-1")
                    && r.desired_status().is_none()
                    && r.family().is_none()
                    && r.service_name().is_none()
                    && r.container_instance().is_none()
                    && r.launch_type().is_none()
            })
            .then_output(|| {
                ListTasksOutput::builder()
                    .task_arns("arn:aws:ecs:task/cluster/1")
                    .task_arns("arn:aws:ecs:task/cluster/2")
                    .build()
            });
        let describe = mock!(aws_sdk_ecs::Client::describe_tasks).then_output(|| {
            DescribeTasksOutput::builder()
                .tasks(
                    Task::builder()
                        .task_arn("arn:aws:ecs:task/cluster/1")
                        .last_status("PROVISIONING")
                        .build(),
                )
                .tasks(
                    Task::builder()
                        .task_arn("arn:aws:ecs:task/cluster/2")
                        .last_status("STOPPED")
                        .build(),
                )
                .build()
        });
        let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&list, &describe]);
        let live = EcsTasks::new(client, "cluster")
            .live_tasks_started_by("session-1")
            .await
            .expect("the request matched");
        assert_eq!(list.num_calls(), 1);
        assert_eq!(
            live.iter().map(|t| t.arn.as_str()).collect::<Vec<_>>(),
            ["arn:aws:ecs:task/cluster/1"],
            "a task that stopped meanwhile is not live"
        );
    }
}
