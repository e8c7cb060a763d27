//! The table: keys, the sparse live index and TTL, exactly as `template.yaml` declares them.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus,
    TimeToLiveSpecification,
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

/// Creates the table (on-demand capacity, the keys-only live index, TTL on `expires_at`, a
/// stream of new and old images) and
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
        // Session events come from the stream (dynamodb::stream).
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()?,
        )
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

/// What [`backfill_ttl`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backfill {
    /// Items read.
    pub scanned: u64,
    /// Metadata and metrics items given their ended row's `expires_at`.
    pub expired_with_row: u64,
    /// Metadata and metrics items whose row is gone (already expired): set to expire now.
    pub orphans: u64,
    /// Items of live sessions: their row is marked (`has_meta`/`has_metrics`), so that their
    /// end sets the TTL.
    pub live_marked: u64,
}

/// One-off, for tables written before the end set TTLs on metadata and metrics items: every
/// `META#`/`METRICS#` item without `expires_at` gets its ended session row's, or now when the
/// row is gone; a live session's row is marked as having the item, so that its end sets the
/// TTL. Idempotent (each write is conditioned), resumable, and safe while the API serves: run
/// `switchboard-dynamodb backfill-ttl TABLE` with the operator's credentials.
pub async fn backfill_ttl(client: &Client, table: &str) -> anyhow::Result<Backfill> {
    use std::collections::HashMap;

    use anyhow::Context;
    use aws_sdk_dynamodb::types::AttributeValue;

    let text = |item: &HashMap<String, AttributeValue>, name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    let mut report = Backfill::default();
    // Rows: (PK, session id) → its expires_at (ended) or None (live).
    let mut rows: HashMap<(String, String), Option<String>> = HashMap::new();
    // (PK, SK, session id, the row's flag for that item)
    let mut leftovers: Vec<(String, String, String, &'static str)> = Vec::new();
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .projection_expression("PK, SK, expires_at, #st")
            .expression_attribute_names("#st", "status")
            .set_exclusive_start_key(start)
            .send()
            .await
            .context("Scan")?;
        for item in out.items.unwrap_or_default() {
            report.scanned += 1;
            let (pk, sk) = (text(&item, "PK"), text(&item, "SK"));
            let expires = item.get("expires_at").and_then(|v| v.as_n().ok()).cloned();
            if let Some(id) = sk.strip_prefix("SESSION#") {
                let ended = text(&item, "status") == "ended";
                rows.insert((pk, id.to_owned()), expires.filter(|_| ended));
            } else if expires.is_none() {
                let found = sk
                    .strip_prefix("META#")
                    .map(|id| (id, super::item::HAS_META))
                    .or_else(|| {
                        sk.strip_prefix("METRICS#")
                            .map(|id| (id, super::item::HAS_METRICS))
                    });
                if let Some((id, flag)) = found {
                    leftovers.push((pk.clone(), sk.clone(), id.to_owned(), flag));
                }
            }
        }
        start = out.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .to_string();
    for (pk, sk, id, flag) in leftovers {
        let exp = match rows.get(&(pk.clone(), id.clone())) {
            Some(Some(exp)) => {
                report.expired_with_row += 1;
                exp.clone()
            }
            Some(None) => {
                // Live: mark its row, unless it ended meanwhile (then its end could not know
                // of the item; the next run gives it the row's TTL).
                let marked = client
                    .update_item()
                    .table_name(table)
                    .key("PK", AttributeValue::S(pk))
                    .key("SK", AttributeValue::S(format!("SESSION#{id}")))
                    .update_expression(format!("SET {flag} = :t"))
                    .condition_expression("attribute_exists(PK) AND #st <> :ended")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_values(":t", AttributeValue::Bool(true))
                    .expression_attribute_values(":ended", AttributeValue::S("ended".into()))
                    .send()
                    .await;
                match marked {
                    Ok(_) => report.live_marked += 1,
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
                    Err(e) => {
                        return Err(
                            anyhow::Error::new(e).context(format!("UpdateItem SESSION#{id}"))
                        );
                    }
                }
                continue;
            }
            None => {
                report.orphans += 1;
                now.clone()
            }
        };
        let written = client
            .update_item()
            .table_name(table)
            .key("PK", AttributeValue::S(pk))
            .key("SK", AttributeValue::S(sk.clone()))
            .update_expression("SET expires_at = :exp")
            .condition_expression("attribute_exists(PK) AND attribute_not_exists(expires_at)")
            .expression_attribute_values(":exp", AttributeValue::N(exp))
            .send()
            .await;
        if let Err(e) = written {
            let raced = e
                .as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception());
            if !raced {
                return Err(anyhow::Error::new(e).context(format!("UpdateItem {sk}")));
            }
        }
    }
    Ok(report)
}
