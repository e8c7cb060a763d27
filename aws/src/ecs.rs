//! [`EcsLauncher`]: the `TaskLauncher` that runs each session's agent as its own ECS task
//! (Fargate, or a capacity-provider strategy such as `FARGATE_SPOT`).
//!
//! The row is written first (`starting`, by the registry); then one `RunTask` carries the
//! session in its container overrides (`SESSION_ID`, `CALL_ID`, `CALL_TYPE`, `TABLE_NAME` and
//! the supervisor settings), with `clientToken` and `startedBy` = the session id, `group` =
//! [`TASK_GROUP`] and tags. The agent task finds its session from that environment.
//!
//! Outcomes, mapped to [`LaunchError`] (and by `service::start_session` to the API's status):
//! - the task was accepted → its ARN, answered 201 while the session is `starting`;
//! - a definite rejection (a 4xx, or `failures` in the response) → `NoCapacity` (capacity,
//!   throttling: 503) or `Rejected` (500); the service ends the session `start_failed`;
//! - an ambiguous failure (timeout, 5xx, reset) → retried with the same `clientToken` within
//!   the retry budget (ECS starts at most one task per token), then `Ambiguous`: the session
//!   stays `starting` and the reaper resolves it with `ListTasks(startedBy = session id)`.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ecs::Client;
use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::operation::run_task::{RunTaskError, RunTaskOutput};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, ContainerOverride,
    KeyValuePair, LaunchType, NetworkConfiguration, Tag, TaskOverride,
};
use switchboard_core::{LaunchError, Launched, Limits, Session, TaskLauncher};
use tracing::{info, instrument, warn};

/// The `group` of every task Switchboard starts (the reaper's EventBridge rule filters on it).
pub const TASK_GROUP: &str = "switchboard";

/// The environment variables a task's container override carries (read by `<agent> task`).
pub mod env {
    /// The session the task hosts.
    pub const SESSION_ID: &str = "SESSION_ID";
    /// Its call.
    pub const CALL_ID: &str = "CALL_ID";
    /// The call's type.
    pub const CALL_TYPE: &str = "CALL_TYPE";
    /// The DynamoDB table of the registry.
    pub const TABLE_NAME: &str = "TABLE_NAME";
    /// `1` on a warm standby (which has no session ids until it is claimed).
    pub const STANDBY: &str = "STANDBY";
}

/// Where the tasks run: the Fargate launch type, or a capacity-provider strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capacity {
    /// `launchType = FARGATE`.
    Fargate,
    /// `capacityProviderStrategy`. ECS first runs each provider's `base` tasks, then splits
    /// the rest by `weight`; it never falls back from one provider to another (a Spot
    /// shortage is a `RunTask` failure, not a launch on `FARGATE`).
    Providers(Vec<ProviderShare>),
}

/// One capacity provider of a strategy: `name[:weight[:base]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderShare {
    /// The provider (`FARGATE`, `FARGATE_SPOT`, or a cluster's own).
    pub name: String,
    /// Its relative share of the tasks beyond the bases (0-1000; default 1).
    pub weight: i32,
    /// Tasks that run on it before any weight applies (0-100000; default 0; at most one
    /// provider of a strategy may have one).
    pub base: i32,
}

impl ProviderShare {
    /// Parses `name[:weight[:base]]`, e.g. `FARGATE:1:2` or `FARGATE_SPOT:3`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.trim().split(':');
        let name = parts.next().unwrap_or_default().trim();
        if name.is_empty() {
            return Err(format!("{text:?}: a capacity provider needs a name"));
        }
        let number = |part: Option<&str>, what: &str, max: i32, default: i32| match part {
            None => Ok(default),
            Some(p) => p
                .trim()
                .parse::<i32>()
                .ok()
                .filter(|v| (0..=max).contains(v))
                .ok_or_else(|| format!("{text:?}: the {what} must be a whole number 0-{max}")),
        };
        let weight = number(parts.next(), "weight", 1000, 1)?;
        let base = number(parts.next(), "base", 100_000, 0)?;
        if parts.next().is_some() {
            return Err(format!("{text:?}: expected name[:weight[:base]]"));
        }
        Ok(Self {
            name: name.to_owned(),
            weight,
            base,
        })
    }

    /// `name` with weight 1 and no base.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            weight: 1,
            base: 0,
        }
    }
}

/// Parses a comma-separated strategy; checks ECS's rules (at most one base, some weight).
pub fn parse_strategy(text: &str) -> Result<Vec<ProviderShare>, String> {
    let shares = text
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(ProviderShare::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if shares.iter().filter(|s| s.base > 0).count() > 1 {
        return Err("only one capacity provider may have a base".into());
    }
    if !shares.is_empty() && shares.iter().all(|s| s.weight == 0) {
        return Err("at least one capacity provider needs a weight above 0".into());
    }
    Ok(shares)
}

/// How to run an agent's task.
#[derive(Clone)]
pub struct EcsSettings {
    /// The cluster name or ARN.
    pub cluster: String,
    /// The task definition (family, `family:revision` or ARN).
    pub task_definition: String,
    /// The agent's container name in the task definition.
    pub container: String,
    /// The awsvpc subnets.
    pub subnets: Vec<String>,
    /// The awsvpc security groups.
    pub security_groups: Vec<String>,
    /// Whether the task gets a public IP (subnets without a NAT gateway need one).
    pub assign_public_ip: bool,
    /// Launch type or capacity providers.
    pub capacity: Capacity,
    /// The registry's DynamoDB table, passed to the task as `TABLE_NAME`.
    pub table: String,
    /// The supervisor settings, passed to the task as `SWITCHBOARD_*` variables.
    pub limits: Limits,
    /// How long an ambiguous `RunTask` is retried (same `clientToken`) before the session is
    /// left to the reaper. Keep it inside the API's request deadline (8 s) minus the start
    /// transaction.
    pub retry_budget: Duration,
}

impl fmt::Debug for EcsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcsSettings")
            .field("cluster", &self.cluster)
            .field("task_definition", &self.task_definition)
            .field("container", &self.container)
            .field("capacity", &self.capacity)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// What one `RunTask` starts: `count` tasks with this container environment.
pub(crate) struct RunSpec {
    pub(crate) environment: Vec<(String, String)>,
    pub(crate) count: i32,
    /// ECS starts at most one set of tasks per token (retries of an ambiguous attempt).
    pub(crate) client_token: Option<String>,
    pub(crate) started_by: String,
    pub(crate) tags: Vec<(&'static str, String)>,
}

/// One `RunTask` attempt may take this long (awsvpc launches take a few seconds).
const RUN_TASK_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);

/// The default [`EcsSettings::retry_budget`].
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(5);

/// When a client should retry after a capacity refusal or throttling.
const NO_CAPACITY_RETRY_AFTER: Duration = Duration::from_secs(5);
/// When a client should retry after an ambiguous launch (the reaper resolves it meanwhile).
const AMBIGUOUS_RETRY_AFTER: Duration = Duration::from_secs(2);

/// An ECS client from `config` (see [`crate::sdk_config_from_env`]) for a deployed `role`,
/// with a longer attempt timeout than the shared 2 s: `RunTask` with awsvpc can take a few
/// seconds, and an attempt cut short is only retried (same `clientToken`), never doubled.
/// Its calls are recorded for the IAM test when [`crate::calls::RECORD_AWS_CALLS`] is set.
pub fn client(config: &aws_config::SdkConfig, role: crate::calls::Role) -> Client {
    use aws_config::timeout::TimeoutConfig;
    let mut builder = aws_sdk_ecs::config::Builder::from(config);
    if let Some(recorder) = crate::calls::CallRecorder::from_env(role) {
        builder = builder.interceptor(recorder);
    }
    let config = builder
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(crate::CONNECT_TIMEOUT)
                .operation_attempt_timeout(RUN_TASK_ATTEMPT_TIMEOUT)
                .operation_timeout(crate::OPERATION_TIMEOUT)
                .build(),
        )
        .build();
    Client::from_conf(config)
}

/// The ECS `TaskLauncher`.
#[derive(Debug, Clone)]
pub struct EcsLauncher {
    client: Client,
    settings: std::sync::Arc<EcsSettings>,
}

/// What one `RunTask` attempt came to.
enum Attempt {
    Started(String),
    Definite(LaunchError),
    Ambiguous(anyhow::Error),
}

impl EcsLauncher {
    /// A launcher on `client` (see [`crate::sdk_config_from_env`]).
    pub fn new(client: Client, settings: EcsSettings) -> Self {
        Self {
            client,
            settings: std::sync::Arc::new(settings),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &EcsSettings {
        &self.settings
    }

    /// The container environment for `session`.
    pub fn environment(&self, session: &Session) -> Vec<(String, String)> {
        let vars = vec![
            (env::SESSION_ID.to_owned(), session.id.to_string()),
            (env::CALL_ID.to_owned(), session.call_id.to_string()),
            (env::CALL_TYPE.to_owned(), session.call_type.to_string()),
        ];
        self.with_table_and_supervisor(vars)
    }

    /// `vars`, then `TABLE_NAME` and the supervisor settings (`SWITCHBOARD_*`).
    fn with_table_and_supervisor(&self, mut vars: Vec<(String, String)>) -> Vec<(String, String)> {
        vars.push((env::TABLE_NAME.to_owned(), self.settings.table.clone()));
        vars.extend(
            self.settings
                .limits
                .supervisor_env()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v)),
        );
        vars
    }

    /// The container environment of a standby: `STANDBY=1` and no session (it learns its
    /// session from its claim), the table and the supervisor settings.
    pub fn standby_environment(&self) -> Vec<(String, String)> {
        self.with_table_and_supervisor(vec![(env::STANDBY.to_owned(), "1".to_owned())])
    }

    fn request(
        &self,
        session: &Session,
    ) -> Result<aws_sdk_ecs::operation::run_task::builders::RunTaskFluentBuilder, LaunchError> {
        let id = session.id.to_string();
        self.run_task(RunSpec {
            environment: self.environment(session),
            count: 1,
            client_token: Some(id.clone()),
            started_by: id.clone(),
            tags: vec![
                ("switchboard:session-id", id),
                ("switchboard:call-id", session.call_id.to_string()),
                ("switchboard:call-type", session.call_type.to_string()),
            ],
        })
        .map_err(|e| LaunchError::Rejected(anyhow::Error::new(e).context("building RunTask")))
    }

    /// A `RunTask` of the agent's task definition on the configured network and capacity.
    pub(crate) fn run_task(
        &self,
        spec: RunSpec,
    ) -> Result<
        aws_sdk_ecs::operation::run_task::builders::RunTaskFluentBuilder,
        aws_sdk_ecs::error::BuildError,
    > {
        let s = &*self.settings;
        let mut container = ContainerOverride::builder().name(&s.container);
        for (name, value) in spec.environment {
            container =
                container.environment(KeyValuePair::builder().name(name).value(value).build());
        }
        let vpc = AwsVpcConfiguration::builder()
            .set_subnets(Some(s.subnets.clone()))
            .set_security_groups(Some(s.security_groups.clone()))
            .assign_public_ip(if s.assign_public_ip {
                AssignPublicIp::Enabled
            } else {
                AssignPublicIp::Disabled
            })
            .build()?;
        let mut request = self
            .client
            .run_task()
            .cluster(&s.cluster)
            .task_definition(&s.task_definition)
            .count(spec.count)
            .set_client_token(spec.client_token)
            .started_by(spec.started_by)
            .group(TASK_GROUP)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            )
            .overrides(
                TaskOverride::builder()
                    .container_overrides(container.build())
                    .build(),
            );
        for (key, value) in spec.tags {
            request = request.tags(Tag::builder().key(key).value(tag_value(&value)).build());
        }
        request = match &s.capacity {
            Capacity::Fargate => request.launch_type(LaunchType::Fargate),
            Capacity::Providers(providers) => {
                for provider in providers {
                    request = request.capacity_provider_strategy(
                        CapacityProviderStrategyItem::builder()
                            .capacity_provider(&provider.name)
                            .weight(provider.weight)
                            .base(provider.base)
                            .build()?,
                    );
                }
                request
            }
        };
        Ok(request)
    }

    async fn attempt(&self, session: &Session) -> Result<Attempt, LaunchError> {
        // The client's RunTask timeouts, or less when less is left of the start's deadline.
        let mut overrides = aws_sdk_ecs::config::Builder::default();
        if let Some(timeouts) =
            crate::call_timeouts(RUN_TASK_ATTEMPT_TIMEOUT, crate::OPERATION_TIMEOUT)
        {
            overrides = overrides.timeout_config(timeouts);
        }
        let result = self
            .request(session)?
            .customize()
            .config_override(overrides)
            .send()
            .await;
        Ok(match result {
            Ok(output) => from_output(output),
            Err(err) => from_error(err),
        })
    }
}

/// ECS tag values allow letters, digits, spaces and `+ - = . _ : / @`, up to 256 characters;
/// anything else in a call id becomes `_` (the environment carries the exact value).
fn tag_value(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ' ' || "+-=._:/@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(256)
        .collect()
}

fn from_output(output: RunTaskOutput) -> Attempt {
    if let Some(arn) = output
        .tasks()
        .iter()
        .find_map(|task| task.task_arn().map(str::to_owned))
    {
        return Attempt::Started(arn);
    }
    let failures: Vec<String> = output
        .failures()
        .iter()
        .map(|f| {
            format!(
                "{}{}",
                f.reason().unwrap_or("unknown reason"),
                f.detail().map(|d| format!(" ({d})")).unwrap_or_default()
            )
        })
        .collect();
    if failures.is_empty() {
        return Attempt::Ambiguous(anyhow::anyhow!(
            "RunTask answered with neither a task nor a failure"
        ));
    }
    let source = anyhow::anyhow!("RunTask failed: {}", failures.join("; "));
    // RESOURCE:* (CPU, memory, ENI, ...) and capacity shortages may clear up; the rest
    // (MISSING, ATTRIBUTE, a bad task definition) will not.
    let capacity = failures
        .iter()
        .any(|f| f.starts_with("RESOURCE") || f.to_ascii_lowercase().contains("capacity"));
    Attempt::Definite(if capacity {
        LaunchError::NoCapacity {
            retry_after: NO_CAPACITY_RETRY_AFTER,
            source,
        }
    } else {
        LaunchError::Rejected(source)
    })
}

/// Error codes that mean "not now": the request was refused and may succeed later.
const THROTTLING_CODES: [&str; 4] = [
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "LimitExceededException",
];

/// Whether a client error's message says "not now": ECS wraps the throttling and shortages of
/// the services it calls for a launch (EC2 security groups, ENIs, quotas) in
/// `InvalidParameterException`/`ClientException`, e.g. "Error retrieving security group
/// information for [sg-…]: Request limit exceeded. (ErrorCode: RequestLimitExceeded)".
///
/// Specific phrases only: a permanent mistake must stay a 500, never a 503 that clients retry
/// for ever ("The specified capacity provider strategy cannot contain a capacity provider that
/// is not associated with the cluster" names capacity too).
fn transient_message(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    if message.contains("capacity provider") {
        return false;
    }
    [
        "request limit exceeded",
        "requestlimitexceeded",
        "rate exceeded",
        "throttl",
        "capacity is unavailable",
        "insufficient capacity",
        "reached the limit on the number of tasks",
        "limit exceeded",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

fn from_error(err: SdkError<RunTaskError, HttpResponse>) -> Attempt {
    match &err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default().to_owned();
            let server = service.raw().status().is_server_error()
                || matches!(service.err(), RunTaskError::ServerException(_));
            let wrapped = match service.err() {
                RunTaskError::InvalidParameterException(e) => e.message(),
                RunTaskError::ClientException(e) => e.message(),
                _ => None,
            }
            .or_else(|| service.err().message())
            .is_some_and(transient_message);
            let source = anyhow::Error::new(err).context("RunTask");
            if server {
                Attempt::Ambiguous(source)
            } else if THROTTLING_CODES.contains(&code.as_str()) || wrapped {
                Attempt::Definite(LaunchError::NoCapacity {
                    retry_after: NO_CAPACITY_RETRY_AFTER,
                    source,
                })
            } else {
                Attempt::Definite(LaunchError::Rejected(source))
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Attempt::Ambiguous(anyhow::Error::new(err).context("RunTask"))
        }
        _ => Attempt::Definite(LaunchError::Rejected(
            anyhow::Error::new(err).context("RunTask"),
        )),
    }
}

#[async_trait]
impl TaskLauncher for EcsLauncher {
    #[instrument(skip_all, fields(session_id = %session.id, call_id = %session.call_id), err(level = "debug"))]
    async fn launch(&self, session: &Session) -> Result<Launched, LaunchError> {
        // The retry budget, or what is left of the start's deadline if that is less.
        let budget = switchboard_core::deadline::at_most(self.settings.retry_budget);
        let deadline = tokio::time::Instant::now() + budget;
        let mut backoff = Duration::from_millis(100);
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let outcome = match tokio::time::timeout(remaining, self.attempt(session)).await {
                Ok(attempt) => attempt?,
                Err(_) => {
                    Attempt::Ambiguous(anyhow::anyhow!("RunTask did not answer within {budget:?}"))
                }
            };
            match outcome {
                Attempt::Started(arn) => {
                    info!(task_arn = %arn, "agent task accepted");
                    return Ok(Launched::cold(arn));
                }
                Attempt::Definite(err) => return Err(err),
                Attempt::Ambiguous(source) => {
                    let jitter = rand::random_range(0..=backoff.as_millis() as u64 / 2);
                    let pause = backoff + Duration::from_millis(jitter);
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(LaunchError::Ambiguous {
                            retry_after: AMBIGUOUS_RETRY_AFTER,
                            source,
                        });
                    }
                    warn!(error = %format!("{source:#}"), "RunTask outcome unknown; retrying with the same client token");
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_values_keep_allowed_characters_only() {
        assert_eq!(
            tag_value("call-1:a/b@c.d_e+f=g h"),
            "call-1:a/b@c.d_e+f=g h"
        );
        assert_eq!(tag_value("ünïcode"), "ünïcode");
        assert_eq!(tag_value("a!b#c\"d"), "a_b_c_d");
        assert_eq!(tag_value(&"x".repeat(300)).len(), 256);
    }

    #[test]
    fn capacity_provider_shares_parse_with_ecs_rules() {
        assert_eq!(
            parse_strategy("FARGATE:1:2, FARGATE_SPOT:3").unwrap(),
            [
                ProviderShare {
                    name: "FARGATE".into(),
                    weight: 1,
                    base: 2
                },
                ProviderShare {
                    name: "FARGATE_SPOT".into(),
                    weight: 3,
                    base: 0
                },
            ]
        );
        assert_eq!(
            parse_strategy("FARGATE_SPOT,FARGATE").unwrap(),
            [
                ProviderShare::named("FARGATE_SPOT"),
                ProviderShare::named("FARGATE")
            ]
        );
        for bad in [
            "FARGATE:x",
            "FARGATE:1001",
            "FARGATE:1:-1",
            ":1",
            "FARGATE:1:1:1",
            "FARGATE:1:1,FARGATE_SPOT:1:1",
            "FARGATE:0,FARGATE_SPOT:0",
        ] {
            assert!(parse_strategy(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wrapped_throttling_and_shortages_are_not_now() {
        for message in [
            "Error retrieving security group information for [sg-1]: Request limit exceeded. (ErrorCode: RequestLimitExceeded)",
            "Rate exceeded",
            "You've reached the limit on the number of tasks you can run concurrently",
            "Capacity is unavailable at this time. Please try again later or in a different availability zone",
        ] {
            assert!(transient_message(message), "{message}");
        }
        for message in [
            "subnet-1 does not exist",
            "Task definition does not exist",
            "The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster",
            "The specified capacity provider does not exist",
        ] {
            assert!(!transient_message(message), "{message}");
        }
    }
}
