//! Admission: one transaction puts the row and takes both counters under their limits (plus the Idempotency-Key and the metadata); a replayed key answers with its receipt.

use super::*;

/// The names a start's and an end's transaction items are read back by.
pub(super) const ROW: &str = "session row";
pub(super) const GLOBAL_COUNTER: &str = "global counter";
pub(super) const CALL_COUNTER: &str = "call counter";
pub(super) const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

impl DynamoRegistry {
    pub(super) fn counter_update(
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

    pub(super) async fn replay(
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

    pub(super) async fn admit(&self, request: StartRequest) -> Result<StartOutcome> {
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
        let mut items = Transaction::default()
            .with(
                ROW,
                TransactWriteItem::builder()
                    .put(built(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(row))
                            .condition_expression("attribute_not_exists(PK)")
                            .build(),
                    )?)
                    .build(),
            )
            .with(
                GLOBAL_COUNTER,
                self.counter_update(GLOBAL_PK.to_owned(), 1, request.max_concurrent_sessions)?,
            )
            .with(
                CALL_COUNTER,
                self.counter_update(call_pk(&call_id), 1, request.max_sessions_per_call)?,
            );
        if let Some(idem) = &request.idempotency {
            let mut item = key(call_pk(&call_id), idem_sk(&idem.key));
            item.insert("fingerprint".into(), s(idem.fingerprint.clone()));
            item.insert("session_id".into(), s(session.id.to_string()));
            item.insert("created_at".into(), n(now.unix_micros()));
            item.insert("expires_at".into(), n(ttl_seconds(now + IDEMPOTENCY_TTL)));
            items.push(
                IDEMPOTENCY_KEY,
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
                "metadata",
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
            Tx::Cancelled(cancelled) => {
                if cancelled.failed(IDEMPOTENCY_KEY) {
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
                if cancelled.failed(ROW) {
                    // Ids are generated per request, so a row with ours is our own commit whose
                    // response was lost (the token makes DynamoDB answer such a retry with
                    // success; this also covers stores that do not honour it).
                    return match self.read_session(&call_id, session.id).await? {
                        Some(existing) => Ok(StartOutcome::Created(existing)),
                        None => Err(Error::Conflict("session id already used".into())),
                    };
                }
                if cancelled.failed(GLOBAL_COUNTER) {
                    Err(Error::LimitReached(LimitKind::Global))
                } else if cancelled.failed(CALL_COUNTER) {
                    Err(Error::LimitReached(LimitKind::PerCall))
                } else {
                    Err(Error::Unexpected(anyhow::anyhow!(
                        "start cancelled: {cancelled:?}"
                    )))
                }
            }
        }
    }
}
