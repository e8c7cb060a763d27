//! [`MemoryRegistry`]: the embedded registry for one process (`serve`, `run`, tests), with the
//! DynamoDB registry's semantics so either is a drop-in for the other.
//!
//! One `std::sync::Mutex` guards all state; every operation is a short, non-async critical
//! section, so admission is atomic and never awaits while holding the lock.
//!
//! Memory is bounded: ended sessions are kept for their retention but at most
//! [`MemoryRegistryConfig::max_ended_sessions`] (oldest evicted first), and Idempotency-Keys
//! for 24 h but at most [`MemoryRegistryConfig::max_idempotency_keys`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::events::{Change, ChangeObserver};
use crate::metrics::AgentMetrics;
use crate::registry::{
    Counts, EndGuard, EndOutcome, EndRequest, Heartbeat, IDEMPOTENCY_TTL, ListQuery, ListedSession,
    MetricsReport, SessionMetrics, SessionPage, SessionReceipt, StartOutcome, StartRequest,
    page_token,
};
use crate::{
    CallId, Clock, EndReason, Error, IdempotencyKey, LimitKind, Metadata, Result, Session,
    SessionId, SessionRegistry, SessionStatus, StartType, Timestamp,
};

/// Bounds of the in-memory registry.
#[derive(Debug, Clone, Copy)]
pub struct MemoryRegistryConfig {
    /// Ended sessions kept at most (oldest evicted first), whatever their retention.
    pub max_ended_sessions: usize,
    /// Idempotency-Keys kept at most (oldest evicted first).
    pub max_idempotency_keys: usize,
    /// How long an Idempotency-Key is remembered.
    pub idempotency_ttl: Duration,
}

impl Default for MemoryRegistryConfig {
    fn default() -> Self {
        Self {
            max_ended_sessions: 10_000,
            max_idempotency_keys: 100_000,
            idempotency_ttl: IDEMPOTENCY_TTL,
        }
    }
}

type Key = (CallId, SessionId);

#[derive(Debug)]
struct Record {
    session: Session,
    metadata: Option<Metadata>,
    metrics: Option<Box<MetricsReport>>,
}

#[derive(Debug)]
struct IdemRecord {
    fingerprint: String,
    receipt: SessionReceipt,
    expires_at: Timestamp,
}

#[derive(Debug, Default)]
struct State {
    sessions: BTreeMap<Key, Record>,
    live_global: u64,
    live_per_call: HashMap<CallId, u64>,
    ended: VecDeque<(Timestamp, Key)>,
    idempotency: HashMap<(CallId, IdempotencyKey), IdemRecord>,
    idempotency_order: VecDeque<(Timestamp, CallId, IdempotencyKey)>,
}

/// The in-memory [`SessionRegistry`].
#[derive(Debug)]
pub struct MemoryRegistry {
    clock: Arc<dyn Clock>,
    config: MemoryRegistryConfig,
    state: Mutex<State>,
    observer: Option<Arc<dyn ChangeObserver>>,
}

impl MemoryRegistry {
    /// An empty registry reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_config(clock, MemoryRegistryConfig::default())
    }

    /// An empty registry with explicit bounds.
    pub fn with_config(clock: Arc<dyn Clock>, config: MemoryRegistryConfig) -> Self {
        Self {
            clock,
            config,
            state: Mutex::new(State::default()),
            observer: None,
        }
    }

    /// Reports every change of a session's status to `observer` (fleet metrics, events), in
    /// the order of the writes: it is called with the lock held.
    pub fn observed(mut self, observer: Arc<dyn ChangeObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    fn notify(&self, live: u64, before: Option<SessionStatus>, record: &Record) {
        if let Some(observer) = &self.observer {
            let change = Change {
                before,
                session: &record.session,
                metrics: record.metrics.as_deref().map(|m| &m.metrics),
            };
            observer.changed(&change, live);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written: every
        // operation validates before it mutates.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn purge(&mut self, now: Timestamp, config: &MemoryRegistryConfig) {
        while let Some((expires_at, _)) = self.ended.front() {
            if *expires_at > now && self.ended.len() <= config.max_ended_sessions {
                break;
            }
            if let Some((_, key)) = self.ended.pop_front() {
                self.sessions.remove(&key);
            }
        }
        while let Some((expires_at, _, _)) = self.idempotency_order.front() {
            if *expires_at > now && self.idempotency_order.len() <= config.max_idempotency_keys {
                break;
            }
            if let Some((expires_at, call, key)) = self.idempotency_order.pop_front() {
                let map_key = (call, key);
                // Only drop the entry this queue slot was for (a key may have been re-used).
                if self
                    .idempotency
                    .get(&map_key)
                    .is_some_and(|r| r.expires_at == expires_at)
                {
                    self.idempotency.remove(&map_key);
                }
            }
        }
    }

    /// The record under `(call_id, session_id)`, treating rows past retention as absent.
    fn record_mut(
        &mut self,
        call_id: &CallId,
        id: SessionId,
        now: Timestamp,
    ) -> Result<&mut Record> {
        match self.sessions.get_mut(&(call_id.clone(), id)) {
            Some(record) if !record.session.is_expired(now) => Ok(record),
            _ => Err(Error::NotFound),
        }
    }

    fn record(&self, call_id: &CallId, id: SessionId, now: Timestamp) -> Option<&Record> {
        self.sessions
            .get(&(call_id.clone(), id))
            .filter(|r| !r.session.is_expired(now))
    }
}

fn live_mut(record: &mut Record) -> Result<&mut Session> {
    if record.session.is_ended() {
        Err(Error::Conflict("session has ended".into()))
    } else {
        Ok(&mut record.session)
    }
}

fn encode_token(key: &Key) -> String {
    page_token::encode(&format!("{}/{}", key.0, key.1))
}

fn decode_token(token: &str) -> Result<Key> {
    let invalid = || Error::Invalid("next_token is invalid".into());
    let raw = page_token::decode(token)?;
    let (call, id) = raw.rsplit_once('/').ok_or_else(invalid)?;
    let call = CallId::parse(call).map_err(|_| invalid())?;
    let id = SessionId::parse(id).map_err(|_| invalid())?;
    Ok((call, id))
}

#[async_trait]
impl SessionRegistry for MemoryRegistry {
    async fn start(&self, request: StartRequest) -> Result<StartOutcome> {
        let now = self.clock.now();
        let mut state = self.lock();
        state.purge(now, &self.config);
        let call_id = request.call_id.clone();
        if let Some(idem) = &request.idempotency
            && let Some(existing) = state.idempotency.get(&(call_id.clone(), idem.key.clone()))
            && existing.expires_at > now
        {
            return if existing.fingerprint == idem.fingerprint {
                Ok(StartOutcome::Replayed(existing.receipt.clone()))
            } else {
                Err(Error::IdempotencyMismatch)
            };
        }
        let key = (call_id.clone(), request.session_id);
        // A start repeated with the same id is the same start (as DynamoDB answers a
        // transaction retried with its ClientRequestToken): the session, counted once.
        if let Some(existing) = state.sessions.get(&key) {
            return Ok(StartOutcome::Created(existing.session.clone()));
        }
        if let Some(max) = request.max_concurrent_sessions
            && state.live_global >= u64::from(max)
        {
            return Err(Error::LimitReached(LimitKind::Global));
        }
        let per_call = state.live_per_call.get(&call_id).copied().unwrap_or(0);
        if let Some(max) = request.max_sessions_per_call
            && per_call >= u64::from(max)
        {
            return Err(Error::LimitReached(LimitKind::PerCall));
        }
        let session = Session::admitted(&request, now);
        state.live_global += 1;
        *state.live_per_call.entry(call_id.clone()).or_insert(0) += 1;
        if let Some(idem) = request.idempotency {
            let expires_at = now + self.config.idempotency_ttl;
            state.idempotency.insert(
                (call_id.clone(), idem.key.clone()),
                IdemRecord {
                    fingerprint: idem.fingerprint,
                    receipt: session.receipt(),
                    expires_at,
                },
            );
            state
                .idempotency_order
                .push_back((expires_at, call_id, idem.key));
        }
        let record = Record {
            session: session.clone(),
            metadata: request.metadata,
            metrics: None,
        };
        self.notify(state.live_global, None, &record);
        state.sessions.insert(key, record);
        Ok(StartOutcome::Created(session))
    }

    async fn mark_running(&self, call_id: &CallId, session_id: SessionId) -> Result<Session> {
        let now = self.clock.now();
        let mut guard = self.lock();
        let state = &mut *guard;
        let live = state.live_global;
        let record = state.record_mut(call_id, session_id, now)?;
        let session = live_mut(record)?;
        match session.status {
            SessionStatus::Starting => {
                session.status = SessionStatus::Running;
                session.running_at = Some(now);
                let session = session.clone();
                self.notify(live, Some(SessionStatus::Starting), record);
                Ok(session)
            }
            SessionStatus::Running => Ok(session.clone()),
            other => Err(Error::Conflict(format!("session is {other}"))),
        }
    }

    async fn attach_task(
        &self,
        call_id: &CallId,
        session_id: SessionId,
        task_arn: &str,
        start_type: Option<StartType>,
    ) -> Result<()> {
        let now = self.clock.now();
        let mut state = self.lock();
        let session = live_mut(state.record_mut(call_id, session_id, now)?)?;
        if session
            .task_arn
            .as_deref()
            .is_some_and(|arn| arn != task_arn)
        {
            return Err(Error::Conflict("the session is on another task".into()));
        }
        session.task_arn = Some(task_arn.to_owned());
        if start_type.is_some() {
            session.start_type = start_type;
        }
        Ok(())
    }

    async fn heartbeat(
        &self,
        call_id: &CallId,
        session_id: SessionId,
        lease: Duration,
    ) -> Result<Heartbeat> {
        let now = self.clock.now();
        let mut state = self.lock();
        let session = live_mut(state.record_mut(call_id, session_id, now)?)?;
        session.heartbeat_at = Some(now);
        session.lease_expires_at = now + lease;
        Ok(Heartbeat {
            close_requested: session.close_requested_at.is_some(),
            lease_expires_at: session.lease_expires_at,
            status: session.status,
        })
    }

    async fn flush_metrics(
        &self,
        call_id: &CallId,
        session_id: SessionId,
        metrics: &AgentMetrics,
    ) -> Result<()> {
        let now = self.clock.now();
        let mut state = self.lock();
        let record = state.record_mut(call_id, session_id, now)?;
        live_mut(record)?;
        record.metrics = Some(Box::new(MetricsReport {
            metrics: metrics.clone(),
            generated_at: now,
        }));
        Ok(())
    }

    async fn request_close(&self, call_id: &CallId, session_id: SessionId) -> Result<Session> {
        let now = self.clock.now();
        let mut guard = self.lock();
        let state = &mut *guard;
        let live = state.live_global;
        let record = state.record_mut(call_id, session_id, now)?;
        let session = live_mut(record)?;
        session.close_requested_at.get_or_insert(now);
        let before = std::mem::replace(&mut session.status, SessionStatus::Closing);
        let session = session.clone();
        if before != SessionStatus::Closing {
            self.notify(live, Some(before), record);
        }
        Ok(session)
    }

    async fn end(
        &self,
        call_id: &CallId,
        session_id: SessionId,
        request: EndRequest,
    ) -> Result<EndOutcome> {
        let now = self.clock.now();
        let mut guard = self.lock();
        let state = &mut *guard;
        state.purge(now, &self.config);
        let record = state.record_mut(call_id, session_id, now)?;
        let session = &mut record.session;
        if session.is_ended() {
            return Ok(EndOutcome::AlreadyEnded(session.clone()));
        }
        match request.guard {
            EndGuard::Always => {}
            EndGuard::LeaseExpired if session.lease_expires_at <= now => {}
            EndGuard::LeaseExpired => return Err(Error::Conflict("lease has not expired".into())),
            EndGuard::Starting if session.status == SessionStatus::Starting => {}
            EndGuard::Starting => {
                return Err(Error::Conflict(format!("session is {}", session.status)));
            }
        }
        let before = std::mem::replace(&mut session.status, SessionStatus::Ended);
        session.ended_at = Some(now);
        session.end_reason = Some(request.reason);
        session.end_detail = request.detail;
        let expires_at = now + request.retention;
        session.expires_at = Some(expires_at);
        if let Some(metrics) = request.final_metrics {
            record.metrics = Some(Box::new(MetricsReport {
                metrics,
                generated_at: now,
            }));
        }
        let session = record.session.clone();
        if session.counted.global {
            state.live_global = state.live_global.saturating_sub(1);
        }
        if session.counted.per_call
            && let Some(n) = state.live_per_call.get_mut(call_id)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.live_per_call.remove(call_id);
            }
        }
        // A start that never happened does not consume its Idempotency-Key: a retry starts anew.
        if request.reason == EndReason::StartFailed
            && let Some(key) = &session.idempotency_key
        {
            let map_key = (call_id.clone(), key.clone());
            if state
                .idempotency
                .get(&map_key)
                .is_some_and(|r| r.receipt.session_id == session_id)
            {
                state.idempotency.remove(&map_key);
            }
        }
        if let Some(record) = state.sessions.get(&(call_id.clone(), session_id)) {
            self.notify(state.live_global, Some(before), record);
        }
        state
            .ended
            .push_back((expires_at, (call_id.clone(), session_id)));
        state.purge(now, &self.config);
        Ok(EndOutcome::Ended(session))
    }

    async fn get(&self, call_id: &CallId, session_id: SessionId) -> Result<Option<Session>> {
        let now = self.clock.now();
        let state = self.lock();
        Ok(state
            .record(call_id, session_id, now)
            .map(|r| r.session.clone()))
    }

    async fn get_metadata(
        &self,
        call_id: &CallId,
        session_id: SessionId,
    ) -> Result<Option<Metadata>> {
        let now = self.clock.now();
        let state = self.lock();
        match state.record(call_id, session_id, now) {
            Some(record) => Ok(record.metadata.clone()),
            None => Err(Error::NotFound),
        }
    }

    async fn get_metrics(
        &self,
        call_id: &CallId,
        session_id: SessionId,
    ) -> Result<Option<SessionMetrics>> {
        let now = self.clock.now();
        let state = self.lock();
        Ok(state
            .record(call_id, session_id, now)
            .map(|r| SessionMetrics {
                session: r.session.clone(),
                report: r.metrics.as_deref().cloned(),
            }))
    }

    async fn list(&self, query: ListQuery) -> Result<SessionPage> {
        let now = self.clock.now();
        let limit = query.page_size();
        let start = query.next_token.as_deref().map(decode_token).transpose()?;
        if let (Some((token_call, _)), Some(call)) = (&start, &query.call_id)
            && token_call != call
        {
            return Err(Error::Invalid("next_token is invalid".into()));
        }
        let state = self.lock();
        let lower = match (start, &query.call_id) {
            (Some(key), _) => Bound::Excluded(key),
            (None, Some(call)) => {
                Bound::Included((call.clone(), SessionId::from(uuid::Uuid::nil())))
            }
            (None, None) => Bound::Unbounded,
        };
        let mut sessions = Vec::new();
        let mut last_key = None;
        let mut more = false;
        for (key, record) in state.sessions.range((lower, Bound::Unbounded)) {
            if query.call_id.as_ref().is_some_and(|c| *c != key.0) {
                break;
            }
            let session = &record.session;
            if session.is_expired(now) || (session.is_ended() && !query.include_ended) {
                continue;
            }
            if sessions.len() == limit {
                more = true;
                break;
            }
            sessions.push(ListedSession {
                session: session.clone(),
                final_metrics: session
                    .is_ended()
                    .then(|| record.metrics.as_deref().cloned())
                    .flatten(),
                live_metrics: (query.with_metrics && !session.is_ended())
                    .then(|| record.metrics.as_deref().cloned())
                    .flatten(),
            });
            last_key = Some(key);
        }
        Ok(SessionPage {
            sessions,
            next_token: if more {
                last_key.map(encode_token)
            } else {
                None
            },
        })
    }

    async fn expired_leases(&self, limit: usize) -> Result<Vec<Session>> {
        let now = self.clock.now();
        let state = self.lock();
        Ok(state
            .sessions
            .values()
            .map(|r| &r.session)
            .filter(|s| !s.is_ended() && s.lease_expires_at <= now)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn counts(&self, call_id: &CallId) -> Result<Counts> {
        let state = self.lock();
        Ok(Counts {
            global: state.live_global,
            per_call: state.live_per_call.get(call_id).copied().unwrap_or(0),
        })
    }
}
