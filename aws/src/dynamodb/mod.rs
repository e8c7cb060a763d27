//! [`DynamoRegistry`]: the `SessionRegistry` on one DynamoDB table, for every node of a
//! cluster (the `serve` nodes sharing a table, the `api` Lambda and the ECS tasks).
//!
//! Items (see `docs/dynamodb.md` for every access pattern with its request and cost):
//! - session `PK=CALL#<call>`, `SK=SESSION#<id>` (< 1 KB; heartbeats touch no indexed
//!   attribute), its metadata `SK=META#<id>` and metrics `SK=METRICS#<id>`;
//! - counters `PK=COUNTER#GLOBAL` and `PK=CALL#<call>`, `SK=COUNTER`;
//! - Idempotency-Keys `SK=IDEM#<key>` (TTL 24 h);
//! - the sparse, keys-only live index `live` on `live_pk = LIVE#<shard>` / `live_sk = <id>`,
//!   removed by the end transaction.
//!
//! Every write that must be atomic is one conditional request or one transaction; reads are
//! strongly consistent on the table and ignore rows past their TTL (deletion is lazy).

mod error;
mod item;
pub mod list;
pub mod pool;
mod table;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Get, KeysAndAttributes, Put, ReturnValue, TransactGetItem,
    TransactWriteItem, Update,
};
use switchboard_core::metrics::AgentMetrics;
use switchboard_core::registry::{
    Counts, EndGuard, EndOutcome, EndRequest, Heartbeat, IDEMPOTENCY_TTL, ListQuery, MetricsReport,
    SessionMetrics, SessionPage, SessionReceipt, StartOutcome, StartRequest,
};
use switchboard_core::{
    CallId, Clock, EndReason, Error, LimitKind, Metadata, Result, Session, SessionId,
    SessionRegistry, SessionStatus, StartType, Timestamp,
};
use tracing::instrument;

pub use pool::{Renewal, StandbyRegistry};
pub use table::{Backfill, LIVE_INDEX, backfill_ttl, create_table};

use error::{Failure, classify, plain};
use item::{
    COUNTER_SK, GLOBAL_PK, HAS_META, HAS_METRICS, Item, call_pk, expired, get_bool, get_n, get_s,
    idem_sk, key, meta_sk, metrics_sk, n, s, session_from_item, session_item, session_sk,
    ttl_seconds,
};

/// A DynamoDB client from [`crate::sdk_config_from_env`] (operator tools, `serve`).
pub async fn client_from_env() -> Client {
    Client::new(&crate::sdk_config_from_env().await)
}

/// The DynamoDB client of a deployed role: its calls are recorded for the IAM test when
/// [`crate::calls::RECORD_AWS_CALLS`] is set.
pub fn client_for(config: &aws_config::SdkConfig, role: crate::calls::Role) -> Client {
    let mut builder = aws_sdk_dynamodb::config::Builder::from(config);
    if let Some(recorder) = crate::calls::CallRecorder::from_env(role) {
        builder = builder.interceptor(recorder);
    }
    Client::from_conf(builder.build())
}

/// The condition of every write to a live row: it exists and has not ended (`:ended` bound
/// to `"ended"`, `#st` to `status`). Never an upsert, never a resurrection.
const LIVE_ROW: &str = "attribute_exists(PK) AND #st <> :ended";

/// How long a transaction may be retried (conflicts, throttling) before it is `Unavailable`.
pub const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_secs(2);

/// The DynamoDB session registry.
#[derive(Debug, Clone)]
pub struct DynamoRegistry {
    client: Client,
    table: String,
    clock: Arc<dyn Clock>,
    retry_deadline: Duration,
}

enum Tx {
    Committed,
    /// Cancelled with a failed condition: the cancellation code of every item, in order.
    Cancelled(Vec<String>),
}

fn is_ccf(codes: &[String], index: usize) -> bool {
    codes
        .get(index)
        .is_some_and(|c| c == "ConditionalCheckFailed")
}

fn values(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn names(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A call's config override: its timeouts from what is left of the work's deadline, if any.
fn within_deadline() -> aws_sdk_dynamodb::config::Builder {
    let mut builder = aws_sdk_dynamodb::config::Builder::default();
    if let Some(timeouts) = crate::call_timeouts(crate::ATTEMPT_TIMEOUT, crate::OPERATION_TIMEOUT) {
        builder = builder.timeout_config(timeouts);
    }
    builder
}

fn built<T>(result: std::result::Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T> {
    result.map_err(|e| {
        Error::Unexpected(anyhow::Error::new(e).context("building a DynamoDB request"))
    })
}

fn metrics_item(
    call_id: &CallId,
    id: SessionId,
    metrics: &AgentMetrics,
    at: Timestamp,
    expires_at: Option<i64>,
) -> Result<Item> {
    // Compact: only the entries with values (a missing name reads back as empty), so the
    // item, and the write it is charged as, stays small.
    let json = serde_json::to_string(&metrics.compact())
        .map_err(|e| Error::Unexpected(anyhow::Error::new(e).context("serializing metrics")))?;
    let mut item = key(call_pk(call_id), metrics_sk(id));
    item.insert("metrics".into(), s(json));
    item.insert("generated_at".into(), n(at.unix_micros()));
    if let Some(expires_at) = expires_at {
        item.insert("expires_at".into(), n(expires_at));
    }
    Ok(item)
}

fn report_from_item(item: &Item) -> Result<MetricsReport> {
    let json = get_s(item, "metrics").unwrap_or("{}");
    let map: std::collections::BTreeMap<String, serde_json::Value> = serde_json::from_str(json)
        .map_err(|e| Error::Unexpected(anyhow::Error::new(e).context("parsing stored metrics")))?;
    Ok(MetricsReport {
        metrics: AgentMetrics::from_map(&map),
        generated_at: Timestamp::from_unix_micros(get_n(item, "generated_at").unwrap_or(0)),
    })
}

impl DynamoRegistry {
    /// A registry on `table` (created by [`create_table`] or the SAM template).
    pub fn new(client: Client, table: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            table: table.into(),
            clock,
            retry_deadline: DEFAULT_RETRY_DEADLINE,
        }
    }

    /// Sets how long conflicting or throttled transactions are retried (default 2 s).
    pub fn with_retry_deadline(mut self, deadline: Duration) -> Self {
        self.retry_deadline = deadline;
        self
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
        token: Option<String>,
        what: &'static str,
    ) -> Result<Tx> {
        // Retried within the registry's deadline, or less when less is left of the work's.
        let deadline =
            tokio::time::Instant::now() + switchboard_core::deadline::at_most(self.retry_deadline);
        let mut attempt: u32 = 0;
        // The idempotency token goes with the first attempt and with every retry after an
        // ambiguous failure (a timeout, a 5xx: the transaction may have committed, and the same
        // token makes DynamoDB answer for that commit instead of applying it twice). After a
        // definite cancellation the next attempt gets a fresh token of its own, kept for the
        // retries after it: DynamoDB may replay the cancelled outcome for a token it has seen
        // (for 10 minutes), and the items' conditions (the session's `attribute_not_exists(PK)`)
        // rule out a double commit across tokens anyway.
        let mut send_token = token.clone();
        loop {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .set_client_request_token(send_token.clone())
                .customize()
                .config_override(within_deadline())
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(Tx::Committed),
                Err(err) => err,
            };
            let retry = match &err {
                SdkError::ServiceError(service) => match service.err() {
                    TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                        let codes: Vec<String> = cancelled
                            .cancellation_reasons()
                            .iter()
                            .map(|r| r.code().unwrap_or("None").to_owned())
                            .collect();
                        if codes.iter().any(|c| c == "ConditionalCheckFailed") {
                            return Ok(Tx::Cancelled(codes));
                        }
                        let transient = codes.iter().any(|c| {
                            matches!(
                                c.as_str(),
                                "TransactionConflict"
                                    | "ThrottlingError"
                                    | "ProvisionedThroughputExceeded"
                                    | "RequestLimitExceeded"
                            )
                        });
                        if transient {
                            if token.is_some() {
                                send_token = Some(uuid::Uuid::now_v7().to_string());
                            }
                            Some(Error::Unavailable {
                                retry_after: Duration::from_secs(1),
                                source: anyhow::anyhow!(
                                    "{what}: transaction cancelled ({})",
                                    codes.join(", ")
                                ),
                            })
                        } else {
                            return Err(Error::Unexpected(anyhow::Error::new(err).context(what)));
                        }
                    }
                    _ => None,
                },
                _ => None,
            };
            let retry = match retry {
                Some(e) => e,
                None => match classify(err, what) {
                    // Ambiguous (may have committed): the same token again.
                    Failure::Transient(e) => e,
                    Failure::ConditionFailed => return Ok(Tx::Cancelled(Vec::new())),
                    Failure::Fatal(e) => return Err(e),
                },
            };
            attempt += 1;
            let cap = 10u64.saturating_mul(1 << attempt.min(5)).min(200);
            let backoff = Duration::from_millis(rand::random_range(5..=cap.max(6)));
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(retry);
            }
            tokio::time::sleep(backoff).await;
        }
    }

    async fn get_item(&self, key: Item, what: &'static str) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .customize()
            .config_override(within_deadline())
            .send()
            .await
            .map_err(|e| plain(e, what))?;
        Ok(out.item)
    }

    /// The session row, or `None` if absent or past retention.
    async fn read_session(&self, call_id: &CallId, id: SessionId) -> Result<Option<Session>> {
        let now = self.clock.now();
        match self
            .get_item(key(call_pk(call_id), session_sk(id)), "GetItem session")
            .await?
        {
            Some(item) if !expired(&item, now) => Ok(Some(session_from_item(&item)?)),
            _ => Ok(None),
        }
    }

    /// After a failed condition on a live-only write: `NotFound` or `Conflict`.
    async fn not_live(&self, call_id: &CallId, id: SessionId) -> Error {
        match self.read_session(call_id, id).await {
            Ok(None) => Error::NotFound,
            Ok(Some(s)) => Error::Conflict(format!("session is {}", s.status)),
            Err(e) => e,
        }
    }

    /// Reads the session and another item of it in one consistent request.
    async fn session_with(
        &self,
        call_id: &CallId,
        id: SessionId,
        other_sk: String,
    ) -> Result<Option<(Session, Option<Item>)>> {
        let get = |sk: String| -> Result<TransactGetItem> {
            Ok(TransactGetItem::builder()
                .get(built(
                    Get::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(call_pk(call_id), sk)))
                        .build(),
                )?)
                .build())
        };
        let out = self
            .client
            .transact_get_items()
            .transact_items(get(session_sk(id))?)
            .transact_items(get(other_sk)?)
            .send()
            .await
            .map_err(|e| plain(e, "TransactGetItems"))?;
        let mut responses = out
            .responses
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.item);
        let session_item = responses.next().flatten();
        let other = responses.next().flatten();
        let now = self.clock.now();
        match session_item {
            Some(item) if !expired(&item, now) => Ok(Some((session_from_item(&item)?, other))),
            _ => Ok(None),
        }
    }

    /// A conditional `UpdateItem` of a session (never an upsert: every condition requires the
    /// row) returning the new row, or `None` when the condition did not hold.
    async fn update_session(
        &self,
        call_id: &CallId,
        session_id: SessionId,
        update: &str,
        condition: &str,
        vals: &[(&str, AttributeValue)],
        what: &'static str,
    ) -> Result<Option<Session>> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(call_pk(call_id), session_sk(session_id))))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names(&[("#st", "status")])))
            .set_expression_attribute_values(Some(values(vals)))
            .return_values(ReturnValue::AllNew)
            .customize()
            .config_override(within_deadline())
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(session_from_item(
                &out.attributes.unwrap_or_default(),
            )?)),
            Err(err) => match classify(err, what) {
                Failure::ConditionFailed => Ok(None),
                Failure::Transient(e) | Failure::Fatal(e) => Err(e),
            },
        }
    }

    /// A conditional `UpdateItem` of a live row (it exists and has not ended), returning the
    /// new row; a row that is missing or ended is `NotFound` or `Conflict`.
    async fn update_live(
        &self,
        call_id: &CallId,
        session_id: SessionId,
        update: &str,
        vals: &[(&str, AttributeValue)],
        what: &'static str,
    ) -> Result<Session> {
        let mut vals = vals.to_vec();
        vals.push((":ended", s("ended")));
        match self
            .update_session(call_id, session_id, update, LIVE_ROW, &vals, what)
            .await?
        {
            Some(session) => Ok(session),
            None => Err(self.not_live(call_id, session_id).await),
        }
    }

    fn counter_update(
        &self,
        pk: String,
        delta: i64,
        limit: Option<u32>,
    ) -> Result<TransactWriteItem> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk, COUNTER_SK)))
            .update_expression("ADD #c :d")
            .set_expression_attribute_names(Some(names(&[("#c", "count")])));
        let mut vals = vec![(":d", n(delta))];
        if let Some(limit) = limit {
            update = update.condition_expression("attribute_not_exists(#c) OR #c < :lim");
            vals.push((":lim", n(i64::from(limit))));
        }
        let update = built(
            update
                .set_expression_attribute_values(Some(values(&vals)))
                .build(),
        )?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    async fn replay(
        &self,
        call_id: &CallId,
        request: &StartRequest,
    ) -> Result<Option<StartOutcome>> {
        let Some(idem) = &request.idempotency else {
            return Ok(None);
        };
        let now = self.clock.now();
        let Some(item) = self
            .get_item(
                key(call_pk(call_id), idem_sk(&idem.key)),
                "GetItem idempotency",
            )
            .await?
        else {
            return Ok(None);
        };
        if expired(&item, now) {
            return Ok(None);
        }
        if get_s(&item, "fingerprint") != Some(idem.fingerprint.as_str()) {
            return Err(Error::IdempotencyMismatch);
        }
        let session_id = get_s(&item, "session_id")
            .and_then(|v| SessionId::parse(v).ok())
            .ok_or_else(|| Error::Unexpected(anyhow::anyhow!("malformed idempotency item")))?;
        Ok(Some(StartOutcome::Replayed(SessionReceipt {
            session_id,
            call_id: call_id.clone(),
            created_at: Timestamp::from_unix_micros(get_n(&item, "created_at").unwrap_or(0)),
        })))
    }

    /// A transaction item that sets `expires_at` on one of a call's items (known to exist).
    fn expire_item(&self, call_id: &CallId, sk: String, exp: i64) -> Result<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .update(built(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(call_pk(call_id), sk)))
                    .update_expression("SET expires_at = :exp")
                    .set_expression_attribute_values(Some(values(&[(":exp", n(exp))])))
                    .build(),
            )?)
            .build())
    }

    /// Reads `keys` (in chunks of 100, retrying unprocessed keys within the retry deadline),
    /// strongly consistent or not.
    async fn batch_get(&self, keys: Vec<Item>, consistent: bool) -> Result<Vec<Item>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut pending = HashMap::from([(
                self.table.clone(),
                built(
                    KeysAndAttributes::builder()
                        .set_keys(Some(chunk.to_vec()))
                        .consistent_read(consistent)
                        .build(),
                )?,
            )]);
            let deadline = tokio::time::Instant::now() + self.retry_deadline;
            while !pending.is_empty() {
                let result = self
                    .client
                    .batch_get_item()
                    .set_request_items(Some(pending))
                    .send()
                    .await
                    .map_err(|e| plain(e, "BatchGetItem"))?;
                if let Some(mut responses) = result.responses {
                    out.extend(responses.remove(&self.table).unwrap_or_default());
                }
                pending = result.unprocessed_keys.unwrap_or_default();
                if !pending.is_empty() {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::unavailable(anyhow::anyhow!(
                            "BatchGetItem left keys unprocessed"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(rand::random_range(10..50))).await;
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl SessionRegistry for DynamoRegistry {
    #[instrument(skip_all, fields(call_id = %request.call_id, session_id = %request.session_id), err(level = "debug"))]
    async fn start(&self, request: StartRequest) -> Result<StartOutcome> {
        let call_id = request.call_id.clone();
        if let Some(replayed) = self.replay(&call_id, &request).await? {
            return Ok(replayed);
        }
        let now = self.clock.now();
        let session = Session::admitted(&request, now);
        let mut row = session_item(&session);
        if request.metadata.is_some() {
            // The end sets the metadata item's TTL: it must know the item exists.
            row.insert(HAS_META.into(), AttributeValue::Bool(true));
        }
        // Order matters: the cancellation reasons come back by index.
        let mut items = vec![
            TransactWriteItem::builder()
                .put(built(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(row))
                        .condition_expression("attribute_not_exists(PK)")
                        .build(),
                )?)
                .build(),
            self.counter_update(GLOBAL_PK.to_owned(), 1, request.max_concurrent_sessions)?,
            self.counter_update(call_pk(&call_id), 1, request.max_sessions_per_call)?,
        ];
        let idem_index = request.idempotency.as_ref().map(|_| items.len());
        if let Some(idem) = &request.idempotency {
            let mut item = key(call_pk(&call_id), idem_sk(&idem.key));
            item.insert("fingerprint".into(), s(idem.fingerprint.clone()));
            item.insert("session_id".into(), s(session.id.to_string()));
            item.insert("created_at".into(), n(now.unix_micros()));
            item.insert("expires_at".into(), n(ttl_seconds(now + IDEMPOTENCY_TTL)));
            items.push(
                TransactWriteItem::builder()
                    .put(built(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(item))
                            .condition_expression("attribute_not_exists(PK) OR expires_at <= :now")
                            .set_expression_attribute_values(Some(values(&[(
                                ":now",
                                n(now.unix_seconds()),
                            )])))
                            .build(),
                    )?)
                    .build(),
            );
        }
        if let Some(metadata) = &request.metadata {
            let mut item = key(call_pk(&call_id), meta_sk(session.id));
            item.insert("metadata".into(), s(metadata.to_json()));
            items.push(
                TransactWriteItem::builder()
                    .put(built(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(item))
                            .build(),
                    )?)
                    .build(),
            );
        }
        // The session id is the token: a retried transaction that already committed is a no-op.
        match self
            .transact(
                items,
                Some(session.id.to_string()),
                "TransactWriteItems start",
            )
            .await?
        {
            Tx::Committed => Ok(StartOutcome::Created(session)),
            Tx::Cancelled(codes) => {
                if idem_index.is_some_and(|i| is_ccf(&codes, i)) {
                    // A concurrent start with the same key won: replay it (or refuse the mismatch).
                    return match self.replay(&call_id, &request).await? {
                        // The key is ours: an attempt of this very start committed and its
                        // answer was lost (the retry ran under another token). It is created,
                        // not replayed: its agent is still to be launched.
                        Some(StartOutcome::Replayed(receipt))
                            if receipt.session_id == session.id =>
                        {
                            Ok(StartOutcome::Created(session))
                        }
                        Some(replayed) => Ok(replayed),
                        None => Err(Error::unavailable(anyhow::anyhow!(
                            "Idempotency-Key race; retry"
                        ))),
                    };
                }
                if is_ccf(&codes, 0) {
                    // Ids are generated per request, so a row with ours is our own commit whose
                    // response was lost (the token makes DynamoDB answer such a retry with
                    // success; this also covers stores that do not honour it).
                    return match self.read_session(&call_id, session.id).await? {
                        Some(existing) => Ok(StartOutcome::Created(existing)),
                        None => Err(Error::Conflict("session id already used".into())),
                    };
                }
                if is_ccf(&codes, 1) {
                    Err(Error::LimitReached(LimitKind::Global))
                } else if is_ccf(&codes, 2) {
                    Err(Error::LimitReached(LimitKind::PerCall))
                } else {
                    Err(Error::Unexpected(anyhow::anyhow!(
                        "start cancelled: {codes:?}"
                    )))
                }
            }
        }
    }

    #[instrument(skip_all, fields(call_id = %call_id, session_id = %session_id), err(level = "debug"))]
    async fn mark_running(&self, call_id: &CallId, session_id: SessionId) -> Result<Session> {
        let now = self.clock.now();
        let vals = [
            (":running", s("running")),
            (":starting", s("starting")),
            (":now", n(now.unix_micros())),
        ];
        let update = "SET #st = :running, running_at = :now";
        match self
            .update_session(
                call_id,
                session_id,
                update,
                "#st = :starting",
                &vals,
                "UpdateItem mark_running",
            )
            .await?
        {
            Some(session) => Ok(session),
            None => match self.read_session(call_id, session_id).await? {
                None => Err(Error::NotFound),
                Some(s) if s.status == SessionStatus::Running => Ok(s),
                Some(s) => Err(Error::Conflict(format!("session is {}", s.status))),
            },
        }
    }

    #[instrument(skip_all, fields(call_id = %call_id, session_id = %session_id), err(level = "debug"))]
    async fn attach_task(
        &self,
        call_id: &CallId,
        session_id: SessionId,
        task_arn: &str,
        start_type: Option<StartType>,
    ) -> Result<()> {
        let (update, mut vals) = match start_type {
            Some(start) => (
                "SET task_arn = :arn, start_type = :start",
                vec![(":arn", s(task_arn)), (":start", s(start.as_str()))],
            ),
            None => ("SET task_arn = :arn", vec![(":arn", s(task_arn))]),
        };
        vals.push((":ended", s("ended")));
        // Only while the row names no task or this one (see the trait).
        let condition =
            format!("{LIVE_ROW} AND (attribute_not_exists(task_arn) OR task_arn = :arn)");
        match self
            .update_session(
                call_id,
                session_id,
                update,
                &condition,
                &vals,
                "UpdateItem attach_task",
            )
            .await?
        {
            Some(_) => Ok(()),
            None => match self.read_session(call_id, session_id).await? {
                None => Err(Error::NotFound),
                Some(row) if row.is_ended() => Err(Error::Conflict("session is ended".into())),
                Some(_) => Err(Error::Conflict("the session is on another task".into())),
            },
        }
    }

    #[instrument(skip_all, fields(call_id = %call_id, session_id = %session_id), err(level = "debug"))]
    async fn heartbeat(
        &self,
        call_id: &CallId,
        session_id: SessionId,
        lease: Duration,
    ) -> Result<Heartbeat> {
        let now = self.clock.now();
        let vals = [
            (":now", n(now.unix_micros())),
            (":lease", n((now + lease).unix_micros())),
        ];
        let session = self
            .update_live(
                call_id,
                session_id,
                "SET heartbeat_at = :now, lease_expires_at = :lease",
                &vals,
                "UpdateItem heartbeat",
            )
            .await?;
        Ok(Heartbeat {
            close_requested: session.close_requested_at.is_some(),
            lease_expires_at: session.lease_expires_at,
            status: session.status,
        })
    }

    #[instrument(skip_all, fields(call_id = %call_id, session_id = %session_id), err(level = "debug"))]
    async fn flush_metrics(
        &self,
        call_id: &CallId,
        session_id: SessionId,
        metrics: &AgentMetrics,
    ) -> Result<()> {
        let now = self.clock.now();
        // The row's condition, and its mark that a metrics item exists (for the end's TTL):
        // an update costs what the condition check did, and touches no indexed attribute.
        let mark = built(
            Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(call_pk(call_id), session_sk(session_id))))
                .update_expression(format!("SET {HAS_METRICS} = :t"))
                .condition_expression(LIVE_ROW)
                .set_expression_attribute_names(Some(names(&[("#st", "status")])))
                .set_expression_attribute_values(Some(values(&[
                    (":ended", s("ended")),
                    (":t", AttributeValue::Bool(true)),
                ])))
                .build(),
        )?;
        let put = built(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(metrics_item(call_id, session_id, metrics, now, None)?))
                .build(),
        )?;
        let items = vec![
            TransactWriteItem::builder().update(mark).build(),
            TransactWriteItem::builder().put(put).build(),
        ];
        match self
            .transact(items, None, "TransactWriteItems flush_metrics")
            .await?
        {
            Tx::Committed => Ok(()),
            Tx::Cancelled(_) => Err(self.not_live(call_id, session_id).await),
        }
    }

    #[instrument(skip_all, fields(call_id = %call_id, session_id = %session_id), err(level = "debug"))]
    async fn request_close(&self, call_id: &CallId, session_id: SessionId) -> Result<Session> {
        let now = self.clock.now();
        let vals = [(":now", n(now.unix_micros())), (":closing", s("closing"))];
        self.update_live(
            call_id,
            session_id,
            "SET close_requested_at = if_not_exists(close_requested_at, :now), #st = :closing",
            &vals,
            "UpdateItem request_close",
        )
        .await
    }

    #[instrument(skip_all, fields(call_id = %call_id, session_id = %session_id, reason = %request.reason), err(level = "debug"))]
    async fn end(
        &self,
        call_id: &CallId,
        session_id: SessionId,
        request: EndRequest,
    ) -> Result<EndOutcome> {
        let mut release_key = request.reason == EndReason::StartFailed;
        loop {
            let now = self.clock.now();
            let Some(row) = self
                .get_item(
                    key(call_pk(call_id), session_sk(session_id)),
                    "GetItem session",
                )
                .await?
                .filter(|item| !expired(item, now))
            else {
                return Err(Error::NotFound);
            };
            let session = session_from_item(&row)?;
            if session.is_ended() {
                return Ok(EndOutcome::AlreadyEnded(session));
            }
            let expires_at = now + request.retention;
            let mut condition = "#st <> :ended".to_owned();
            let mut vals = vec![
                (":ended", s("ended")),
                (":now", n(now.unix_micros())),
                (":reason", s(request.reason.as_str())),
                (":exp", n(ttl_seconds(expires_at))),
            ];
            match request.guard {
                EndGuard::Always => {}
                EndGuard::LeaseExpired => condition.push_str(" AND lease_expires_at <= :now"),
                EndGuard::Starting => {
                    condition.push_str(" AND #st = :starting");
                    vals.push((":starting", s("starting")));
                }
            }
            let mut set =
                "SET #st = :ended, ended_at = :now, end_reason = :reason, expires_at = :exp"
                    .to_owned();
            if let Some(detail) = &request.detail {
                set.push_str(", end_detail = :detail");
                vals.push((":detail", s(detail.clone())));
            }
            let update = built(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(call_pk(call_id), session_sk(session_id))))
                    .update_expression(format!("{set} REMOVE live_pk, live_sk"))
                    .condition_expression(condition)
                    .set_expression_attribute_names(Some(names(&[("#st", "status")])))
                    .set_expression_attribute_values(Some(values(&vals)))
                    .build(),
            )?;
            let mut items = vec![TransactWriteItem::builder().update(update).build()];
            // Release exactly the counters the start took.
            if session.counted.global {
                items.push(self.counter_update(GLOBAL_PK.to_owned(), -1, None)?);
            }
            if session.counted.per_call {
                items.push(self.counter_update(call_pk(call_id), -1, None)?);
            }
            // Everything the session leaves behind expires with its row (the Idempotency-Key
            // has its own 24 h TTL from the start).
            let exp = ttl_seconds(expires_at);
            if let Some(metrics) = &request.final_metrics {
                let put = built(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(metrics_item(
                            call_id,
                            session_id,
                            metrics,
                            now,
                            Some(exp),
                        )?))
                        .build(),
                )?;
                items.push(TransactWriteItem::builder().put(put).build());
            } else if get_bool(&row, HAS_METRICS) {
                items.push(self.expire_item(call_id, metrics_sk(session_id), exp)?);
            }
            if get_bool(&row, HAS_META) {
                items.push(self.expire_item(call_id, meta_sk(session_id), exp)?);
            }
            let idem_index = items.len();
            let idem_key = session.idempotency_key.as_ref().filter(|_| release_key);
            if let Some(idem_key) = idem_key {
                // A start that never happened does not consume its key; only if it is still ours.
                let delete = built(
                    Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(call_pk(call_id), idem_sk(idem_key))))
                        .condition_expression("session_id = :id")
                        .set_expression_attribute_values(Some(values(&[(
                            ":id",
                            s(session_id.to_string()),
                        )])))
                        .build(),
                )?;
                items.push(TransactWriteItem::builder().delete(delete).build());
            }
            match self.transact(items, None, "TransactWriteItems end").await? {
                Tx::Committed => {
                    let mut ended = session;
                    ended.status = SessionStatus::Ended;
                    ended.ended_at = Some(now);
                    ended.end_reason = Some(request.reason);
                    ended.end_detail = request.detail.clone();
                    ended.expires_at = Some(Timestamp::from_unix_micros(
                        ttl_seconds(expires_at) * 1_000_000,
                    ));
                    return Ok(EndOutcome::Ended(ended));
                }
                Tx::Cancelled(codes) if is_ccf(&codes, 0) || codes.is_empty() => {
                    return match self.read_session(call_id, session_id).await? {
                        None => Err(Error::NotFound),
                        Some(s) if s.is_ended() => Ok(EndOutcome::AlreadyEnded(s)),
                        Some(s) => Err(Error::Conflict(format!(
                            "end guard {:?} does not hold (session is {})",
                            request.guard, s.status
                        ))),
                    };
                }
                Tx::Cancelled(codes) if idem_key.is_some() && is_ccf(&codes, idem_index) => {
                    // The key was re-used by another session meanwhile: end without touching it.
                    release_key = false;
                }
                Tx::Cancelled(codes) => {
                    return Err(Error::Unexpected(anyhow::anyhow!(
                        "end cancelled: {codes:?}"
                    )));
                }
            }
        }
    }

    async fn get(&self, call_id: &CallId, session_id: SessionId) -> Result<Option<Session>> {
        self.read_session(call_id, session_id).await
    }

    async fn get_metadata(
        &self,
        call_id: &CallId,
        session_id: SessionId,
    ) -> Result<Option<Metadata>> {
        match self
            .session_with(call_id, session_id, meta_sk(session_id))
            .await?
        {
            None => Err(Error::NotFound),
            Some((_, None)) => Ok(None),
            Some((_, Some(item))) => {
                let json = get_s(&item, "metadata").unwrap_or("{}");
                let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
                    Error::Unexpected(anyhow::Error::new(e).context("parsing stored metadata"))
                })?;
                Ok(Some(Metadata::parse(value)?))
            }
        }
    }

    async fn get_metrics(
        &self,
        call_id: &CallId,
        session_id: SessionId,
    ) -> Result<Option<SessionMetrics>> {
        match self
            .session_with(call_id, session_id, metrics_sk(session_id))
            .await?
        {
            None => Ok(None),
            Some((session, item)) => Ok(Some(SessionMetrics {
                session,
                report: item.as_ref().map(report_from_item).transpose()?,
            })),
        }
    }

    async fn list(&self, query: ListQuery) -> Result<SessionPage> {
        self.list_page(query).await
    }

    async fn expired_leases(&self, limit: usize) -> Result<Vec<Session>> {
        let now = self.clock.now();
        let keys = self
            .live_keys()
            .await?
            .into_iter()
            .map(|(pk, sk)| key(pk, sk))
            .collect();
        let mut expired_sessions = Vec::new();
        for item in self.batch_get(keys, true).await? {
            let session = session_from_item(&item)?;
            if !session.is_ended() && session.lease_expires_at <= now {
                expired_sessions.push(session);
            }
        }
        expired_sessions.sort_by_key(|s| s.id);
        expired_sessions.truncate(limit);
        Ok(expired_sessions)
    }

    async fn counts(&self, call_id: &CallId) -> Result<Counts> {
        // A negative counter would mean a slot released twice: report it, never hide it.
        let count = |item: Option<Item>| -> Result<u64> {
            let raw = item.and_then(|i| get_n(&i, "count")).unwrap_or(0);
            u64::try_from(raw).map_err(|_| {
                Error::Unexpected(anyhow::anyhow!("a session counter is below zero ({raw})"))
            })
        };
        let global = self
            .get_item(key(GLOBAL_PK, COUNTER_SK), "GetItem global counter")
            .await?;
        let per_call = self
            .get_item(key(call_pk(call_id), COUNTER_SK), "GetItem call counter")
            .await?;
        Ok(Counts {
            global: count(global)?,
            per_call: count(per_call)?,
        })
    }
}
