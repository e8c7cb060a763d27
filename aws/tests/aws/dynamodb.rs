//! `DynamoRegistry` passes the registry conformance suite unchanged, against moto.

use std::sync::Arc;

use switchboard_aws::DynamoRegistry;
use switchboard_core::{ManualClock, SessionRegistry};

use crate::support::{client, table};

async fn make(clock: Arc<ManualClock>) -> Arc<dyn SessionRegistry> {
    let client = client().await;
    let table = table(&client).await;
    Arc::new(DynamoRegistry::new(client, table, clock))
}

switchboard_core::registry_conformance!(make);

mod items {
    //! The table layout the cost model depends on (docs/dynamodb.md).

    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use aws_sdk_dynamodb::types::AttributeValue;
    use switchboard_aws::DynamoRegistry;
    use switchboard_aws::dynamodb::LIVE_INDEX;
    use switchboard_core::conformance::{T0, call, request};
    use switchboard_core::registry::{EndRequest, StartOutcome};
    use switchboard_core::{EndReason, ManualClock, Metadata, SessionRegistry};

    use crate::support::{client, table};

    type Item = HashMap<String, AttributeValue>;

    /// DynamoDB's item size: attribute names plus values (numbers counted as their digits).
    fn size(item: &Item) -> usize {
        item.iter()
            .map(|(name, value)| {
                name.len()
                    + match value {
                        AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
                        AttributeValue::Bool(_) => 1,
                        _ => 64,
                    }
            })
            .sum()
    }

    async fn raw(client: &aws_sdk_dynamodb::Client, table: &str, pk: String, sk: String) -> Item {
        maybe_raw(client, table, pk, sk).await.expect("item exists")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_heartbeat_rewrites_only_unindexed_attributes_of_an_item_under_1_kb() {
        let client = client().await;
        let table = table(&client).await;
        let clock = Arc::new(ManualClock::new(T0));
        let registry = DynamoRegistry::new(client.clone(), table.clone(), clock.clone());
        let c = call(&"c".repeat(256));
        let mut req = request(&c);
        req.metadata = Some(Metadata::parse(serde_json::json!({"k": "v".repeat(3000)})).unwrap());
        let StartOutcome::Created(session) = registry.start(req).await.unwrap() else {
            panic!()
        };
        let (pk, sk) = (format!("CALL#{c}"), format!("SESSION#{}", session.id));
        let before = raw(&client, &table, pk.clone(), sk.clone()).await;
        assert!(
            size(&before) < 1024,
            "session item is {} bytes",
            size(&before)
        );

        clock.advance(Duration::from_secs(5));
        registry
            .heartbeat(&c, session.id, Duration::from_secs(30))
            .await
            .unwrap();
        let after = raw(&client, &table, pk.clone(), sk.clone()).await;
        let changed: Vec<&str> = after
            .keys()
            .filter(|k| before.get(*k) != after.get(*k))
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(changed, vec!["heartbeat_at", "lease_expires_at"]);
        assert!(size(&after) < 1024);
        assert_eq!(
            after.get("live_pk"),
            before.get("live_pk"),
            "the index keys never change while live"
        );

        // The live index finds it, keys only.
        let live_pk = before["live_pk"].clone();
        let out = client
            .query()
            .table_name(&table)
            .index_name(LIVE_INDEX)
            .key_condition_expression("live_pk = :p")
            .expression_attribute_values(":p", live_pk)
            .send()
            .await
            .unwrap();
        let found = out.items.unwrap_or_default();
        assert_eq!(found.len(), 1);
        assert!(!found[0].contains_key("status"), "keys-only projection");

        // The end leaves the index and sets the TTL.
        registry
            .end(
                &c,
                session.id,
                EndRequest::new(EndReason::Requested).retention(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
        let ended = raw(&client, &table, pk, sk).await;
        assert!(!ended.contains_key("live_pk") && !ended.contains_key("live_sk"));
        let expires: i64 = ended["expires_at"].as_n().unwrap().parse().unwrap();
        assert_eq!(expires, T0.unix_seconds() + 5 + 3600);
    }

    /// A flush is charged by its item's size: only the entries with values are stored (a
    /// typical agent records a few counters and latencies of the 70), and they read back
    /// exactly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_metrics_flush_stores_only_the_entries_with_values() {
        let client = client().await;
        let table = table(&client).await;
        let clock = Arc::new(ManualClock::new(T0));
        let registry = DynamoRegistry::new(client.clone(), table.clone(), clock.clone());
        let c = call(&"c".repeat(256));
        let StartOutcome::Created(session) = registry.start(request(&c)).await.unwrap() else {
            panic!()
        };
        let recorder = switchboard_core::MetricsRecorder::new();
        recorder.on_llm_response(
            std::time::Duration::from_millis(245),
            Some(std::time::Duration::from_millis(120)),
            switchboard_core::metrics::Usage::new(1500, 800),
        );
        recorder.on_tool_call(std::time::Duration::from_millis(12));
        recorder.on_turn_ended(
            std::time::Duration::from_millis(900),
            std::time::Duration::from_millis(400),
        );
        let metrics = recorder.snapshot();
        registry
            .flush_metrics(&c, session.id, &metrics)
            .await
            .unwrap();
        let item = raw(
            &client,
            &table,
            format!("CALL#{c}"),
            format!("METRICS#{}", session.id),
        )
        .await;
        // 2 WCU with the longest call id (the full 70-entry form made it 3 KB: 3 WCU).
        assert!(size(&item) < 2048, "metrics item is {} bytes", size(&item));
        let stored = item["metrics"].as_s().unwrap();
        let full = serde_json::to_string(&metrics.wire()).unwrap();
        assert!(!stored.contains("null"), "{stored}");
        assert!(
            stored.len() * 2 < full.len(),
            "{} vs {}",
            stored.len(),
            full.len()
        );
        let read = registry
            .get_metrics(&c, session.id)
            .await
            .unwrap()
            .expect("the session exists")
            .report
            .expect("flushed metrics");
        assert_eq!(read.metrics.to_map(), metrics.to_map());
    }

    async fn maybe_raw(
        client: &aws_sdk_dynamodb::Client,
        table: &str,
        pk: String,
        sk: String,
    ) -> Option<Item> {
        client
            .get_item()
            .table_name(table)
            .key("PK", AttributeValue::S(pk))
            .key("SK", AttributeValue::S(sk))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
    }

    /// F3: nothing a session leaves behind outlives its row (metadata can hold PII or call
    /// tokens): its metadata and metrics expire with it, set in the end's transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn everything_a_session_leaves_behind_expires_with_its_row() {
        let client = client().await;
        let table = table(&client).await;
        let clock = Arc::new(ManualClock::new(T0));
        let registry = DynamoRegistry::new(client.clone(), table.clone(), clock.clone());
        let retention = Duration::from_secs(7 * 24 * 3600);
        let c = call("call-ttl");
        let recorder = switchboard_core::MetricsRecorder::new();
        recorder.on_llm_response(
            std::time::Duration::from_millis(245),
            Some(std::time::Duration::from_millis(120)),
            switchboard_core::metrics::Usage::new(1500, 800),
        );

        // Metadata and a flush, ended without final metrics (as the reaper ends one).
        let mut req = request(&c);
        req.metadata = Some(Metadata::parse(serde_json::json!({"user": "u-1"})).unwrap());
        let StartOutcome::Created(first) = registry.start(req).await.unwrap() else {
            panic!()
        };
        registry
            .flush_metrics(&c, first.id, &recorder.snapshot())
            .await
            .unwrap();
        // Neither, ended with final metrics (as an agent ends one).
        let StartOutcome::Created(second) = registry.start(request(&c)).await.unwrap() else {
            panic!()
        };
        clock.advance(Duration::from_secs(10));
        registry
            .end(
                &c,
                first.id,
                EndRequest::new(EndReason::TaskStopped).retention(retention),
            )
            .await
            .unwrap();
        registry
            .end(
                &c,
                second.id,
                EndRequest::new(EndReason::AgentFinished)
                    .metrics(recorder.snapshot())
                    .retention(retention),
            )
            .await
            .unwrap();
        let pk = format!("CALL#{c}");
        let exp = |item: &Item| item.get("expires_at").map(|v| v.as_n().unwrap().to_owned());
        for session in [&first, &second] {
            let row = raw(
                &client,
                &table,
                pk.clone(),
                format!("SESSION#{}", session.id),
            )
            .await;
            let want = exp(&row).expect("the row's TTL");
            assert_eq!(
                want,
                (T0.unix_seconds() + 10 + retention.as_secs() as i64).to_string()
            );
            let metrics = raw(
                &client,
                &table,
                pk.clone(),
                format!("METRICS#{}", session.id),
            )
            .await;
            assert_eq!(
                exp(&metrics).as_ref(),
                Some(&want),
                "metrics of {}",
                session.id
            );
            let meta = maybe_raw(&client, &table, pk.clone(), format!("META#{}", session.id)).await;
            if session.id == first.id {
                let meta = meta.expect("the metadata item");
                assert_eq!(exp(&meta).as_ref(), Some(&want), "metadata");
                assert!(meta.contains_key("metadata"), "the item itself, not a stub");
            } else {
                assert!(meta.is_none(), "no metadata item is made up: {meta:?}");
            }
        }
        // The flushed metrics still read back until the row expires.
        let page = registry
            .list(switchboard_core::registry::ListQuery {
                call_id: Some(c.clone()),
                include_ended: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.sessions.iter().all(|l| l.final_metrics.is_some()));
    }

    /// Tables written before the end set those TTLs get them once, from the operator tool.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_backfill_gives_old_leftovers_their_rows_ttl_once() {
        let client = client().await;
        let table = table(&client).await;
        let clock = Arc::new(ManualClock::new(T0));
        let registry = DynamoRegistry::new(client.clone(), table.clone(), clock.clone());
        let c = call("call-old");
        let pk = format!("CALL#{c}");
        let with_meta = || {
            let mut req = request(&c);
            req.metadata = Some(Metadata::parse(serde_json::json!({"user": "u-1"})).unwrap());
            req
        };
        let StartOutcome::Created(ended) = registry.start(with_meta()).await.unwrap() else {
            panic!()
        };
        let StartOutcome::Created(live) = registry.start(with_meta()).await.unwrap() else {
            panic!()
        };
        let recorder = switchboard_core::MetricsRecorder::new();
        recorder.on_tool_call(std::time::Duration::from_millis(12));
        registry
            .flush_metrics(&c, ended.id, &recorder.snapshot())
            .await
            .unwrap();
        registry
            .end(
                &c,
                ended.id,
                EndRequest::new(EndReason::Requested).retention(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
        // As the old code left them: no TTL on the metadata and metrics items, and rows that
        // do not say they have them.
        for id in [ended.id, live.id] {
            client
                .update_item()
                .table_name(&table)
                .key("PK", AttributeValue::S(pk.clone()))
                .key("SK", AttributeValue::S(format!("SESSION#{id}")))
                .update_expression("REMOVE has_meta, has_metrics")
                .send()
                .await
                .unwrap();
        }
        for sk in [
            format!("META#{}", ended.id),
            format!("METRICS#{}", ended.id),
        ] {
            client
                .update_item()
                .table_name(&table)
                .key("PK", AttributeValue::S(pk.clone()))
                .key("SK", AttributeValue::S(sk))
                .update_expression("REMOVE expires_at")
                .send()
                .await
                .unwrap();
        }
        // And metrics whose row TTL already deleted.
        client
            .put_item()
            .table_name(&table)
            .item("PK", AttributeValue::S(pk.clone()))
            .item("SK", AttributeValue::S("METRICS#gone".into()))
            .item("metrics", AttributeValue::S("{}".into()))
            .send()
            .await
            .unwrap();

        let report = switchboard_aws::dynamodb::backfill_ttl(&client, &table)
            .await
            .unwrap();
        assert_eq!(
            (report.expired_with_row, report.orphans, report.live_marked),
            (2, 1, 1),
            "{report:?}"
        );
        let exp = |item: &Item| item.get("expires_at").map(|v| v.as_n().unwrap().to_owned());
        let row = raw(&client, &table, pk.clone(), format!("SESSION#{}", ended.id)).await;
        for sk in [
            format!("META#{}", ended.id),
            format!("METRICS#{}", ended.id),
        ] {
            let item = raw(&client, &table, pk.clone(), sk.clone()).await;
            assert_eq!(exp(&item), exp(&row), "{sk} expires with its row");
        }
        let orphan = raw(&client, &table, pk.clone(), "METRICS#gone".into()).await;
        assert!(exp(&orphan).is_some(), "an orphan expires");
        let live_meta = raw(&client, &table, pk.clone(), format!("META#{}", live.id)).await;
        assert_eq!(
            exp(&live_meta),
            None,
            "a live session's items wait for its end"
        );
        // Once: a second run finds nothing left to expire.
        let again = switchboard_aws::dynamodb::backfill_ttl(&client, &table)
            .await
            .unwrap();
        assert_eq!((again.expired_with_row, again.orphans), (0, 0));
        // The live session's end now knows of its metadata.
        registry
            .end(
                &c,
                live.id,
                EndRequest::new(EndReason::Requested).retention(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
        let live_row = raw(&client, &table, pk.clone(), format!("SESSION#{}", live.id)).await;
        let live_meta = raw(&client, &table, pk.clone(), format!("META#{}", live.id)).await;
        assert_eq!(exp(&live_meta), exp(&live_row), "expires with its row");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_sharing_a_table_share_the_limits() {
        let client = client().await;
        let table = table(&client).await;
        let clock = Arc::new(ManualClock::new(T0));
        let a = Arc::new(DynamoRegistry::new(
            client.clone(),
            table.clone(),
            clock.clone(),
        ));
        let b = Arc::new(DynamoRegistry::new(
            super::super::support::client().await,
            table,
            clock,
        ));
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let node: Arc<DynamoRegistry> = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move {
                    let mut req = request(&call(&format!("call-{i}")));
                    req.max_concurrent_sessions = Some(5);
                    node.start(req).await
                })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
        assert_eq!(a.counts(&call("call-0")).await.unwrap().global, 5);
        assert_eq!(b.counts(&call("call-0")).await.unwrap().global, 5);
    }
}

#[tokio::test]
async fn the_create_table_command_makes_the_table_the_registry_uses() {
    let endpoint = std::env::var("SWITCHBOARD_TEST_DYNAMODB_ENDPOINT").unwrap();
    let name = format!("switchboard-cli-{}", uuid::Uuid::now_v7().simple());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard-dynamodb"))
        .args(["create-table", &name])
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = client().await;
    let table = client
        .describe_table()
        .table_name(&name)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let index = &table.global_secondary_indexes()[0];
    assert_eq!(
        index.index_name(),
        Some(switchboard_aws::dynamodb::LIVE_INDEX)
    );
    assert_eq!(
        index.projection().and_then(|p| p.projection_type()),
        Some(&aws_sdk_dynamodb::types::ProjectionType::KeysOnly)
    );
    let ttl = client
        .describe_time_to_live()
        .table_name(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description()
            .and_then(|d| d.attribute_name()),
        Some("expires_at")
    );
    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard-dynamodb"))
        .arg("drop-everything")
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
