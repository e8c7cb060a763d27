//! Reads: a session, its metadata or metrics, the expired leases (through the live index), the counters.

use super::*;

pub(super) fn report_from_item(item: &Item) -> Result<MetricsReport> {
    let json = get_s(item, "metrics").unwrap_or("{}");
    let map: std::collections::BTreeMap<String, serde_json::Value> = serde_json::from_str(json)
        .map_err(|e| Error::Unexpected(anyhow::Error::new(e).context("parsing stored metrics")))?;
    Ok(MetricsReport {
        metrics: AgentMetrics::from_map(&map),
        generated_at: Timestamp::from_unix_micros(get_n(item, "generated_at").unwrap_or(0)),
    })
}

impl DynamoRegistry {
    pub(super) async fn get_item(&self, key: Item, what: &'static str) -> Result<Option<Item>> {
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
    pub(super) async fn read_session(
        &self,
        call_id: &CallId,
        id: SessionId,
    ) -> Result<Option<Session>> {
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
    pub(super) async fn not_live(&self, call_id: &CallId, id: SessionId) -> Error {
        match self.read_session(call_id, id).await {
            Ok(None) => Error::NotFound,
            Ok(Some(s)) => Error::Conflict(format!("session is {}", s.status)),
            Err(e) => e,
        }
    }

    /// Reads the session and another item of it in one consistent request.
    pub(super) async fn session_with(
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

    /// Reads `keys` (in chunks of 100, retrying unprocessed keys within the retry deadline),
    /// strongly consistent or not.
    pub(super) async fn batch_get(&self, keys: Vec<Item>, consistent: bool) -> Result<Vec<Item>> {
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

    pub(super) async fn metadata_of(
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

    pub(super) async fn metrics_of(
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

    pub(super) async fn expired_rows(&self, limit: usize) -> Result<Vec<Session>> {
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

    pub(super) async fn counts_of(&self, call_id: &CallId) -> Result<Counts> {
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
