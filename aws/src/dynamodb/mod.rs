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
//!
//! # Layout
//! By access pattern, as `docs/dynamodb.md` lists them; this file keeps the registry, its
//! helpers, and the `SessionRegistry` impl, which delegates:
//! - `admission`: `start` and the Idempotency-Key replay;
//! - `lifecycle`: running, the task ARN, heartbeats, metrics, the close flag, the end;
//! - `queries`: a session, its metadata and metrics, expired leases, counters;
//! - [`list`]: the lists and their page tokens; [`pool`]: the warm pool's registrations;
//! - `transact`: the retried transaction and its named cancellation reasons;
//! - `item`, `error`, `table`: the items' encoding, the SDK's errors, the table.

mod admission;
mod error;
mod item;
mod lifecycle;
pub mod list;
pub mod pool;
mod queries;
pub mod stream;
mod table;
mod transact;

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

use transact::{Transaction, Tx};

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
}

#[async_trait]
impl SessionRegistry for DynamoRegistry {
    #[instrument(skip_all, fields(call_id = %request.call_id, session_id = %request.session_id), err(level = "debug"))]
    async fn start(&self, request: StartRequest) -> Result<StartOutcome> {
        self.admit(request).await
    }

    #[instrument(skip_all, fields(call_id = %call_id, session_id = %session_id), err(level = "debug"))]
    async fn mark_running(&self, call_id: &CallId, session_id: SessionId) -> Result<Session> {
        self.set_running(call_id, session_id).await
    }

    #[instrument(skip_all, fields(call_id = %call_id, session_id = %session_id), err(level = "debug"))]
    async fn attach_task(
        &self,
        call_id: &CallId,
        session_id: SessionId,
        task_arn: &str,
        start_type: Option<StartType>,
    ) -> Result<()> {
        self.record_task(call_id, session_id, task_arn, start_type)
            .await
    }

    #[instrument(skip_all, fields(call_id = %call_id, session_id = %session_id), err(level = "debug"))]
    async fn heartbeat(
        &self,
        call_id: &CallId,
        session_id: SessionId,
        lease: Duration,
    ) -> Result<Heartbeat> {
        self.renew(call_id, session_id, lease).await
    }

    #[instrument(skip_all, fields(call_id = %call_id, session_id = %session_id), err(level = "debug"))]
    async fn flush_metrics(
        &self,
        call_id: &CallId,
        session_id: SessionId,
        metrics: &AgentMetrics,
    ) -> Result<()> {
        self.write_metrics(call_id, session_id, metrics).await
    }

    #[instrument(skip_all, fields(call_id = %call_id, session_id = %session_id), err(level = "debug"))]
    async fn request_close(&self, call_id: &CallId, session_id: SessionId) -> Result<Session> {
        self.flag_close(call_id, session_id).await
    }

    #[instrument(skip_all, fields(call_id = %call_id, session_id = %session_id, reason = %request.reason), err(level = "debug"))]
    async fn end(
        &self,
        call_id: &CallId,
        session_id: SessionId,
        request: EndRequest,
    ) -> Result<EndOutcome> {
        self.finish(call_id, session_id, request).await
    }

    async fn get(&self, call_id: &CallId, session_id: SessionId) -> Result<Option<Session>> {
        self.read_session(call_id, session_id).await
    }

    async fn get_metadata(
        &self,
        call_id: &CallId,
        session_id: SessionId,
    ) -> Result<Option<Metadata>> {
        self.metadata_of(call_id, session_id).await
    }

    async fn get_metrics(
        &self,
        call_id: &CallId,
        session_id: SessionId,
    ) -> Result<Option<SessionMetrics>> {
        self.metrics_of(call_id, session_id).await
    }

    async fn list(&self, query: ListQuery) -> Result<SessionPage> {
        self.list_page(query).await
    }

    async fn expired_leases(&self, limit: usize) -> Result<Vec<Session>> {
        self.expired_rows(limit).await
    }

    async fn counts(&self, call_id: &CallId) -> Result<Counts> {
        self.counts_of(call_id).await
    }
}
