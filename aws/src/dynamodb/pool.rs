//! [`StandbyRegistry`]: the warm pool's registrations, on the session table.
//!
//! One item per standby task, all in one partition (`PK=POOL`, `SK=TASK#<task ARN>`), so that
//! one Query reads the whole pool (every task definition: the sweep stops the standbys of the
//! others) and an event's task ARN finds its item with one GetItem. A pool is tens of items,
//! far below a partition's limits (1,000 WCU, 3,000 RCU): the partition is as hot as the
//! standbys' wake-up polls (5 eventually consistent reads per second per standby, 2.5 RCU)
//! plus the claim rate.
//!
//! An item is `provisioning` (the api or the sweep started its task), `idle` (the standby
//! warmed up and registered; leased) or `claimed` (for one session, whose ids it carries).
//! The claim is one transaction with the session row: the standby `idle`, of the expected
//! task definition and leased at the claimer's clock, and the session still `starting`. One
//! claimer wins; a standby is claimed at most once (nothing sets a claimed item back).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, TransactWriteItem, Update};
use switchboard_core::{
    CallId, Error, Result, Session, SessionId, Standby, StandbyState, StartType, Timestamp,
};

use super::error::{Failure, classify, plain};
use super::item::{Item, call_pk, get_n, get_s, key, n, s, session_sk, ttl_seconds};
use super::{DynamoRegistry, built, names, values, within_deadline};

/// The pool's partition.
pub(crate) const POOL_PK: &str = "POOL";

fn standby_sk(task_arn: &str) -> String {
    format!("TASK#{task_arn}")
}

/// How long a lapsed or finished registration stays in the table before its TTL removes it
/// (reads ignore lapsed leases; the sweep deletes them sooner).
const LINGER: Duration = Duration::from_secs(3600);

/// A claimed standby's item outlives its session by this much at most (the standby deletes
/// it when its session ends, the reaper when its task stops).
const CLAIMED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a standby's lease renewal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed: still idle, leased until then.
    Renewed(Timestamp),
    /// Claimed for this session: host it.
    Claimed(CallId, SessionId),
    /// The registration is gone (the reaper deregistered it: its lease lapsed, or its task
    /// definition is no longer the current one): exit.
    Gone,
}

/// The warm pool's registrations (see the module docs).
#[derive(Debug, Clone)]
pub struct StandbyRegistry {
    sessions: DynamoRegistry,
}

fn state_of(item: &Item) -> Result<StandbyState> {
    match get_s(item, "state") {
        Some("provisioning") => Ok(StandbyState::Provisioning),
        Some("idle") => Ok(StandbyState::Idle),
        Some("claimed") => Ok(StandbyState::Claimed),
        other => Err(Error::Unexpected(anyhow::anyhow!(
            "malformed standby item: state {other:?}"
        ))),
    }
}

/// Parses a standby item.
fn standby_from_item(item: &Item) -> Result<Standby> {
    let malformed =
        |what: &str| Error::Unexpected(anyhow::anyhow!("malformed standby item: {what}"));
    let session = match (get_s(item, "call_id"), get_s(item, "session_id")) {
        (Some(call), Some(id)) => Some((
            CallId::parse(call)?,
            SessionId::parse(id).map_err(|_| malformed("session_id"))?,
        )),
        _ => None,
    };
    Ok(Standby {
        task_arn: get_s(item, "task_arn")
            .ok_or_else(|| malformed("task_arn"))?
            .to_owned(),
        task_definition: get_s(item, "task_definition")
            .ok_or_else(|| malformed("task_definition"))?
            .to_owned(),
        state: state_of(item)?,
        lease_expires_at: Timestamp::from_unix_micros(
            get_n(item, "lease_expires_at").ok_or_else(|| malformed("lease_expires_at"))?,
        ),
        since: Timestamp::from_unix_micros(get_n(item, "since").unwrap_or(0)),
        session,
    })
}

impl StandbyRegistry {
    /// The pool on the session registry's table (same client, table and clock).
    pub fn new(sessions: DynamoRegistry) -> Self {
        Self { sessions }
    }

    fn table(&self) -> &str {
        &self.sessions.table
    }

    fn now(&self) -> Timestamp {
        self.sessions.clock.now()
    }

    fn item(
        &self,
        task_arn: &str,
        task_definition: &str,
        state: StandbyState,
        lease: Duration,
    ) -> Item {
        let now = self.now();
        let mut item = key(POOL_PK, standby_sk(task_arn));
        item.insert("task_arn".into(), s(task_arn));
        item.insert("task_definition".into(), s(task_definition));
        item.insert("state".into(), s(state.as_str()));
        item.insert("lease_expires_at".into(), n((now + lease).unix_micros()));
        item.insert("since".into(), n(now.unix_micros()));
        item.insert("expires_at".into(), n(ttl_seconds(now + lease + LINGER)));
        item
    }

    /// Records a standby task just started (`provisioning`), unless it registered already
    /// (a fast start): its lease is how long it may take to register.
    pub async fn provision(
        &self,
        task_arn: &str,
        task_definition: &str,
        lease: Duration,
    ) -> Result<()> {
        let result = self
            .sessions
            .client
            .put_item()
            .table_name(self.table())
            .set_item(Some(self.item(
                task_arn,
                task_definition,
                StandbyState::Provisioning,
                lease,
            )))
            .condition_expression("attribute_not_exists(PK)")
            .customize()
            .config_override(within_deadline())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => match classify(err, "PutItem standby provisioning") {
                Failure::ConditionFailed => Ok(()),
                Failure::Transient(e) | Failure::Fatal(e) => Err(e),
            },
        }
    }

    /// Registers a warmed-up standby: `idle`, leased for `lease`, claimable. Replaces its
    /// `provisioning` item; `Conflict` if it was registered or claimed already.
    pub async fn register(
        &self,
        task_arn: &str,
        task_definition: &str,
        lease: Duration,
    ) -> Result<Timestamp> {
        let item = self.item(task_arn, task_definition, StandbyState::Idle, lease);
        let lease_expires_at =
            Timestamp::from_unix_micros(get_n(&item, "lease_expires_at").unwrap_or(0));
        let result = self
            .sessions
            .client
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK) OR #state = :provisioning")
            .set_expression_attribute_names(Some(names(&[("#state", "state")])))
            .set_expression_attribute_values(Some(values(&[(":provisioning", s("provisioning"))])))
            .customize()
            .config_override(within_deadline())
            .send()
            .await;
        match result {
            Ok(_) => Ok(lease_expires_at),
            Err(err) => match classify(err, "PutItem standby registration") {
                Failure::ConditionFailed => {
                    Err(Error::Conflict("the standby is registered already".into()))
                }
                Failure::Transient(e) | Failure::Fatal(e) => Err(e),
            },
        }
    }

    /// Renews an idle standby's lease to `now + lease`, or says why it cannot be.
    pub async fn renew(&self, task_arn: &str, lease: Duration) -> Result<Renewal> {
        let now = self.now();
        let until = now + lease;
        let result = self
            .sessions
            .client
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(POOL_PK, standby_sk(task_arn))))
            .update_expression("SET lease_expires_at = :lease, expires_at = :ttl")
            .condition_expression("#state = :idle")
            .set_expression_attribute_names(Some(names(&[("#state", "state")])))
            .set_expression_attribute_values(Some(values(&[
                (":lease", n(until.unix_micros())),
                (":ttl", n(ttl_seconds(until + LINGER))),
                (":idle", s("idle")),
            ])))
            .return_values(ReturnValue::None)
            .customize()
            .config_override(within_deadline())
            .send()
            .await;
        match result {
            Ok(_) => Ok(Renewal::Renewed(until)),
            Err(err) => match classify(err, "UpdateItem standby lease") {
                Failure::ConditionFailed => Ok(match self.get(task_arn, true).await? {
                    Some(Standby {
                        state: StandbyState::Claimed,
                        session: Some((call, id)),
                        ..
                    }) => Renewal::Claimed(call, id),
                    _ => Renewal::Gone,
                }),
                Failure::Transient(e) | Failure::Fatal(e) => Err(e),
            },
        }
    }

    /// A standby's registration. The wake-up poll reads eventually consistent (half the
    /// cost; a stale read only delays the wake-up by one poll).
    pub async fn get(&self, task_arn: &str, consistent: bool) -> Result<Option<Standby>> {
        let out = self
            .sessions
            .client
            .get_item()
            .table_name(self.table())
            .set_key(Some(key(POOL_PK, standby_sk(task_arn))))
            .consistent_read(consistent)
            .customize()
            .config_override(within_deadline())
            .send()
            .await
            .map_err(|e| plain(e, "GetItem standby"))?;
        out.item.as_ref().map(standby_from_item).transpose()
    }

    /// Every registration (all task definitions), strongly consistent.
    pub async fn list(&self) -> Result<Vec<Standby>> {
        let mut standbys = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .sessions
                .client
                .query()
                .table_name(self.table())
                .key_condition_expression("PK = :pk")
                .set_expression_attribute_values(Some(values(&[(":pk", s(POOL_PK))])))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .customize()
                .config_override(within_deadline())
                .send()
                .await
                .map_err(|e| plain(e, "Query standbys"))?;
            for item in out.items() {
                // One bad item must not take the pool (and every start's claim) down.
                match standby_from_item(item) {
                    Ok(standby) => standbys.push(standby),
                    Err(e) => tracing::warn!(error = %e, "skipping a malformed standby item"),
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(standbys);
            }
        }
    }

    /// Claims `standby` for `session` in one transaction: the standby `idle`, of
    /// `task_definition` and leased now; the session still `starting` and still on the task
    /// the caller saw (`session.task_arn`: none for a new start, the gone standby's for a
    /// re-dispatch), so that two re-dispatchers (an event and a sweep) never both move it.
    /// The row gets the task ARN and `start_type = warm`. `Ok(false)`: another claimer won,
    /// or the standby's lease lapsed or it is of another definition. `Conflict`: the session
    /// is no longer starting, or is on another task already.
    pub async fn claim(
        &self,
        task_arn: &str,
        task_definition: &str,
        session: &Session,
    ) -> Result<bool> {
        let now = self.now();
        let standby = Update::builder()
            .table_name(self.table())
            .set_key(Some(key(POOL_PK, standby_sk(task_arn))))
            .update_expression(
                "SET #state = :claimed, call_id = :call, session_id = :sid, since = :now, expires_at = :ttl",
            )
            .condition_expression(
                "#state = :idle AND task_definition = :def AND lease_expires_at > :now",
            )
            .set_expression_attribute_names(Some(names(&[("#state", "state")])))
            .set_expression_attribute_values(Some(values(&[
                (":claimed", s("claimed")),
                (":idle", s("idle")),
                (":call", s(session.call_id.as_str())),
                (":sid", s(session.id.to_string())),
                (":now", n(now.unix_micros())),
                (":def", s(task_definition)),
                (":ttl", n(ttl_seconds(now + CLAIMED_TTL))),
            ])))
            .build();
        let mut row_values = vec![
            (":arn", s(task_arn)),
            (":warm", s(StartType::Warm.as_str())),
            (":starting", s("starting")),
        ];
        let on_task = match &session.task_arn {
            None => "attribute_not_exists(task_arn)",
            Some(previous) => {
                row_values.push((":previous", s(previous.as_str())));
                "task_arn = :previous"
            }
        };
        let row = Update::builder()
            .table_name(self.table())
            .set_key(Some(key(call_pk(&session.call_id), session_sk(session.id))))
            .update_expression("SET task_arn = :arn, start_type = :warm")
            .condition_expression(format!("#st = :starting AND {on_task}"))
            .set_expression_attribute_names(Some(names(&[("#st", "status")])))
            .set_expression_attribute_values(Some(values(&row_values)))
            .build();
        let items = vec![
            TransactWriteItem::builder().update(built(standby)?).build(),
            TransactWriteItem::builder().update(built(row)?).build(),
        ];
        // One attempt: a conflict with another claimer means the standby is taken (the next
        // candidate is tried), and a failure of the store sends the start down the cold path.
        let result = self
            .sessions
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .customize()
            .config_override(within_deadline())
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(true),
            Err(err) => err,
        };
        if let SdkError::ServiceError(service) = &err
            && let TransactWriteItemsError::TransactionCanceledException(cancelled) = service.err()
        {
            let codes: Vec<&str> = cancelled
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None"))
                .collect();
            if codes.get(1) == Some(&"ConditionalCheckFailed") {
                return Err(Error::Conflict(
                    "the session is no longer starting, or is on another task".into(),
                ));
            }
            // The standby's condition, or a conflict with a concurrent claim of it.
            if codes
                .iter()
                .any(|c| matches!(*c, "ConditionalCheckFailed" | "TransactionConflict"))
            {
                return Ok(false);
            }
        }
        match classify(err, "TransactWriteItems claim standby") {
            Failure::ConditionFailed => Ok(false),
            Failure::Transient(e) | Failure::Fatal(e) => Err(e),
        }
    }

    /// The task the session's row names (strongly consistent), e.g. after a claim whose
    /// outcome is unknown.
    pub async fn session_task(&self, session: &Session) -> Result<Option<String>> {
        use switchboard_core::SessionRegistry;
        Ok(self
            .sessions
            .get(&session.call_id, session.id)
            .await?
            .and_then(|row| row.task_arn))
    }

    /// Moves a `starting` session from the task `from` to `to` (a re-dispatch to a task of its
    /// own), only if it is still on `from`: `Ok(false)` if someone moved it first (or it is no
    /// longer starting).
    pub async fn move_session(
        &self,
        session: &Session,
        from: &str,
        to: &str,
        start_type: StartType,
    ) -> Result<bool> {
        let result = self
            .sessions
            .client
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(call_pk(&session.call_id), session_sk(session.id))))
            .update_expression("SET task_arn = :to, start_type = :start")
            .condition_expression("#st = :starting AND task_arn = :from")
            .set_expression_attribute_names(Some(names(&[("#st", "status")])))
            .set_expression_attribute_values(Some(values(&[
                (":to", s(to)),
                (":from", s(from)),
                (":start", s(start_type.as_str())),
                (":starting", s("starting")),
            ])))
            .customize()
            .config_override(within_deadline())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) => match classify(err, "UpdateItem move session") {
                Failure::ConditionFailed => Ok(false),
                Failure::Transient(e) | Failure::Fatal(e) => Err(e),
            },
        }
    }

    /// Deletes a registration if it is in one of `states` (`None`: whatever its state).
    /// `Ok(false)`: it was in another state (e.g. claimed meanwhile) or absent.
    pub async fn delete(&self, task_arn: &str, states: Option<&[StandbyState]>) -> Result<bool> {
        let mut request = self
            .sessions
            .client
            .delete_item()
            .table_name(self.table())
            .set_key(Some(key(POOL_PK, standby_sk(task_arn))))
            .condition_expression("attribute_exists(PK)");
        if let Some(states) = states {
            let placeholders: Vec<String> = (0..states.len()).map(|i| format!(":s{i}")).collect();
            let vals: Vec<(String, AttributeValue)> = states
                .iter()
                .enumerate()
                .map(|(i, state)| (format!(":s{i}"), s(state.as_str())))
                .collect();
            request = request
                .condition_expression(format!(
                    "attribute_exists(PK) AND #state IN ({})",
                    placeholders.join(", ")
                ))
                .set_expression_attribute_names(Some(names(&[("#state", "state")])))
                .set_expression_attribute_values(Some(vals.into_iter().collect()));
        }
        match request
            .customize()
            .config_override(within_deadline())
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err) => match classify(err, "DeleteItem standby") {
                Failure::ConditionFailed => Ok(false),
                Failure::Transient(e) | Failure::Fatal(e) => Err(e),
            },
        }
    }
}
