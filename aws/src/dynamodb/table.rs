//! The table: keys, the sparse live index and TTL, exactly as `template.yaml` declares them.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};

/// The live index's name.
pub const LIVE_INDEX: &str = "live";

fn attribute(name: &str) -> anyhow::Result<AttributeDefinition> {
    Ok(AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()?)
}

fn key(name: &str, kind: KeyType) -> anyhow::Result<KeySchemaElement> {
    Ok(KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()?)
}

/// Creates the table (on-demand capacity, the keys-only live index, TTL on `expires_at`) and
/// waits until it is active.
pub async fn create_table(client: &Client, table: &str) -> anyhow::Result<()> {
    let live = GlobalSecondaryIndex::builder()
        .index_name(LIVE_INDEX)
        .key_schema(key("live_pk", KeyType::Hash)?)
        .key_schema(key("live_sk", KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::KeysOnly)
                .build(),
        )
        .build()?;
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("PK")?)
        .attribute_definitions(attribute("SK")?)
        .attribute_definitions(attribute("live_pk")?)
        .attribute_definitions(attribute("live_sk")?)
        .key_schema(key("PK", KeyType::Hash)?)
        .key_schema(key("SK", KeyType::Range)?)
        .global_secondary_indexes(live)
        .send()
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("CreateTable {table}")))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| anyhow::Error::new(e).context("DescribeTable"))?;
        if out.table.and_then(|t| t.table_status) == Some(TableStatus::Active) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "table {table} not active after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()?,
        )
        .send()
        .await
        .map_err(|e| anyhow::Error::new(e).context("UpdateTimeToLive"))?;
    Ok(())
}
