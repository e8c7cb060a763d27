//! Clients for the emulator and fresh tables.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};

/// A client for the emulator the test script started.
pub async fn client() -> Client {
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
