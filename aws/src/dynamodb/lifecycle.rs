//! A row's life after admission: running, the task ARN, heartbeats, metrics, the close flag, and the end that releases exactly what the start took.

use super::admission::{CALL_COUNTER, GLOBAL_COUNTER, IDEMPOTENCY_KEY, ROW};
use super::*;

pub(super) fn metrics_item(
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

impl DynamoRegistry {
    /// A conditional `UpdateItem` of a session (never an upsert: every condition requires the
    /// row) returning the new row, or `None` when the condition did not hold.
    pub(super) async fn update_session(
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
    pub(super) async fn update_live(
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

    /// A transaction item that sets `expires_at` on one of a call's items (known to exist).
    pub(super) fn expire_item(
        &self,
        call_id: &CallId,
        sk: String,
        exp: i64,
    ) -> Result<TransactWriteItem> {
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

    pub(super) async fn set_running(
        &self,
        call_id: &CallId,
        session_id: SessionId,
    ) -> Result<Session> {
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

    pub(super) async fn record_task(
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

    pub(super) async fn renew(
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

    pub(super) async fn write_metrics(
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
        let items = Transaction::default()
            .with(ROW, TransactWriteItem::builder().update(mark).build())
            .with("metrics", TransactWriteItem::builder().put(put).build());
        match self
            .transact(items, None, "TransactWriteItems flush_metrics")
            .await?
        {
            Tx::Committed => Ok(()),
            Tx::Cancelled(_) => Err(self.not_live(call_id, session_id).await),
        }
    }

    pub(super) async fn flag_close(
        &self,
        call_id: &CallId,
        session_id: SessionId,
    ) -> Result<Session> {
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

    pub(super) async fn finish(
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
            let mut items = Transaction::default()
                .with(ROW, TransactWriteItem::builder().update(update).build());
            // Release exactly the counters the start took.
            if session.counted.global {
                items.push(
                    GLOBAL_COUNTER,
                    self.counter_update(GLOBAL_PK.to_owned(), -1, None)?,
                );
            }
            if session.counted.per_call {
                items.push(
                    CALL_COUNTER,
                    self.counter_update(call_pk(call_id), -1, None)?,
                );
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
                items.push("metrics", TransactWriteItem::builder().put(put).build());
            } else if get_bool(&row, HAS_METRICS) {
                items.push(
                    "metrics",
                    self.expire_item(call_id, metrics_sk(session_id), exp)?,
                );
            }
            if get_bool(&row, HAS_META) {
                items.push(
                    "metadata",
                    self.expire_item(call_id, meta_sk(session_id), exp)?,
                );
            }
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
                items.push(
                    IDEMPOTENCY_KEY,
                    TransactWriteItem::builder().delete(delete).build(),
                );
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
                Tx::Cancelled(cancelled)
                    if cancelled.failed(ROW) || cancelled.without_reasons() =>
                {
                    return match self.read_session(call_id, session_id).await? {
                        None => Err(Error::NotFound),
                        Some(s) if s.is_ended() => Ok(EndOutcome::AlreadyEnded(s)),
                        Some(s) => Err(Error::Conflict(format!(
                            "end guard {:?} does not hold (session is {})",
                            request.guard, s.status
                        ))),
                    };
                }
                Tx::Cancelled(cancelled)
                    if idem_key.is_some() && cancelled.failed(IDEMPOTENCY_KEY) =>
                {
                    // The key was re-used by another session meanwhile: end without touching it.
                    release_key = false;
                }
                Tx::Cancelled(cancelled) => {
                    return Err(Error::Unexpected(anyhow::anyhow!(
                        "end cancelled: {cancelled:?}"
                    )));
                }
            }
        }
    }
}
