//! Test support, never deployed (so its SDK calls are not the functions' IAM actions):
//! clients for the emulator `./scripts/test` starts (moto, at
//! `SWITCHBOARD_TEST_DYNAMODB_ENDPOINT`), uniquely named tables and clusters (tests run in
//! parallel and never reset the emulator), and the default-VPC subnet awsvpc tasks need.
#![allow(clippy::missing_panics_doc)]

pub mod bins;
pub mod browser;
pub mod http;
pub mod openai;
pub mod procs;
pub mod proxy {
    //! The cuttable TCP proxy (the local ECS's, one per task there).
    pub use switchboard_local_ecs::proxy::Proxy;
}

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};

/// The value of `series` (a metric name with its labels, as written) in a Prometheus text
/// exposition; panics with the text when it is missing.
pub fn prometheus_sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

/// `TEST_LOG`: with it set (`TEST_LOG=1`, or a filter such as `TEST_LOG=debug` or
/// `TEST_LOG=switchboard_agent=trace`), the tests' logs are written through libtest's
/// capture, so a failing test shows what led to it and a passing one stays quiet. Without it
/// nothing is logged. Called by the test binaries' helpers; safe to call any number of times.
pub fn test_log() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let Some(value) = std::env::var_os("TEST_LOG") else {
            return;
        };
        let value = value.to_string_lossy();
        let filter = match value.as_ref() {
            "" | "1" | "true" => "info",
            other => other,
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

/// A DynamoDB client for the emulator the test script started.
pub async fn client() -> Client {
    test_log();
    let endpoint = std::env::var("SWITCHBOARD_TEST_DYNAMODB_ENDPOINT").expect(
        "SWITCHBOARD_TEST_DYNAMODB_ENDPOINT is not set: run ./scripts/test, which starts moto and sets it",
    );
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "static"))
        .build();
    Client::from_conf(config)
}

/// A new table with a unique name.
pub async fn table(client: &Client) -> String {
    let name = format!("switchboard-test-{}", uuid::Uuid::now_v7().simple());
    switchboard_aws::dynamodb::create_table(client, &name)
        .await
        .expect("create table");
    name
}

/// `SWITCHBOARD_RECORD_AWS_CALLS` for a child process that runs a deployed binary, when the
/// test command records AWS calls for the IAM check (children with a cleared environment
/// must pass it on).
pub fn recording_env() -> Vec<(String, String)> {
    std::env::var("SWITCHBOARD_RECORD_AWS_CALLS")
        .map(|dir| vec![("SWITCHBOARD_RECORD_AWS_CALLS".to_owned(), dir)])
        .unwrap_or_default()
}

/// The emulator's endpoint.
pub fn endpoint() -> String {
    std::env::var("SWITCHBOARD_TEST_DYNAMODB_ENDPOINT").expect(
        "SWITCHBOARD_TEST_DYNAMODB_ENDPOINT is not set: run ./scripts/test, which starts moto and sets it",
    )
}

/// An ECS client for the emulator.
pub fn ecs_client() -> aws_sdk_ecs::Client {
    let config = aws_sdk_ecs::Config::builder()
        .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
        .region(aws_sdk_ecs::config::Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            "testing", "testing", None, None, "static",
        ))
        .build();
    aws_sdk_ecs::Client::from_conf(config)
}

/// A fresh cluster and agent task definition; returns (cluster, task definition ARN).
/// moto needs container-level memory (task-level alone makes RunTask fail with a 500).
pub async fn ecs_cluster(client: &aws_sdk_ecs::Client) -> (String, String) {
    use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, NetworkMode};
    let name = format!("switchboard-test-{}", uuid::Uuid::now_v7().simple());
    client
        .create_cluster()
        .cluster_name(&name)
        .send()
        .await
        .expect("create cluster");
    let definition = client
        .register_task_definition()
        .family(&name)
        .requires_compatibilities(Compatibility::Fargate)
        .network_mode(NetworkMode::Awsvpc)
        .cpu("256")
        .memory("512")
        .container_definitions(
            ContainerDefinition::builder()
                .name("agent")
                .image("switchboard/demo-agent:latest")
                .memory(512)
                .essential(true)
                .command("task")
                // The local ECS sends SIGKILL this long after SIGTERM (Fargate default: 30 s).
                .stop_timeout(2)
                .build(),
        )
        .send()
        .await
        .expect("register task definition");
    let arn = definition
        .task_definition()
        .and_then(|d| d.task_definition_arn())
        .expect("task definition ARN")
        .to_owned();
    (name, arn)
}

/// The default-VPC subnet the test script found (moto's awsvpc needs an existing one).
pub fn subnet() -> String {
    std::env::var("SWITCHBOARD_TEST_SUBNET")
        .expect("SWITCHBOARD_TEST_SUBNET is not set: run ./scripts/test")
}

/// An SDK configuration for the emulator (dummy credentials, us-east-1).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "static",
        ))
        .load()
        .await
}

/// The ARNs of the tasks `startedBy` a session (moto lists stopped tasks too unless asked).
pub async fn tasks_started_by(
    client: &aws_sdk_ecs::Client,
    cluster: &str,
    id: &str,
) -> Vec<String> {
    client
        .list_tasks()
        .cluster(cluster)
        .started_by(id)
        .send()
        .await
        .expect("list tasks")
        .task_arns()
        .to_vec()
}

/// How many tasks of the cluster are running.
pub async fn running_tasks(client: &aws_sdk_ecs::Client, cluster: &str) -> usize {
    client
        .list_tasks()
        .cluster(cluster)
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
        .send()
        .await
        .expect("list tasks")
        .task_arns()
        .len()
}

/// The environment of a task's (first) container override, as RunTask recorded it.
pub async fn task_environment(
    client: &aws_sdk_ecs::Client,
    cluster: &str,
    arn: &str,
) -> std::collections::HashMap<String, String> {
    let described = client
        .describe_tasks()
        .cluster(cluster)
        .tasks(arn)
        .send()
        .await
        .expect("describe tasks");
    described.tasks()[0]
        .overrides()
        .expect("overrides")
        .container_overrides()[0]
        .environment()
        .iter()
        .map(|kv| {
            (
                kv.name().unwrap_or_default().to_owned(),
                kv.value().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// `EcsSettings` for a test cluster (Fargate, the emulator's subnet, any security group,
/// 3 s of RunTask retries).
pub fn ecs_settings(
    cluster: &str,
    task_definition: &str,
    table: &str,
    limits: switchboard_core::Limits,
) -> switchboard_aws::EcsSettings {
    switchboard_aws::EcsSettings {
        cluster: cluster.to_owned(),
        task_definition: task_definition.to_owned(),
        container: "agent".into(),
        subnets: vec![subnet()],
        security_groups: vec!["sg-0123456789abcdef0".into()],
        assign_public_ip: false,
        capacity: switchboard_aws::ecs::Capacity::Fargate,
        table: table.to_owned(),
        limits,
        retry_budget: std::time::Duration::from_secs(3),
    }
}
