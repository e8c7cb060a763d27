//! Fault injection for tests of what runs on top of a registry (feature `conformance`).

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use crate::registry::{EndOutcome, EndRequest, ListQuery, StartOutcome, StartRequest};
use crate::{CallId, Error, Metadata, Session, SessionId, SessionRegistry, StartType};

/// A registry that fails every call with `Unavailable` while `outage` is set: a store that is
/// down, for tests of what runs on top of a registry (supervisors, sweeps, readiness). While
/// `hang_flushes` is set, `flush_metrics` never answers: a store that stops answering
/// between two calls (an SDK stuck in timeouts and retries).
#[derive(Debug)]
pub struct OutageRegistry<R = crate::MemoryRegistry> {
    pub inner: R,
    pub outage: std::sync::atomic::AtomicBool,
    pub hang_flushes: std::sync::atomic::AtomicBool,
}

impl OutageRegistry {
    /// Over a fresh `MemoryRegistry` on `clock`.
    pub fn memory(clock: Arc<dyn crate::Clock>) -> Self {
        Self {
            inner: crate::MemoryRegistry::new(clock),
            outage: std::sync::atomic::AtomicBool::new(false),
            hang_flushes: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl<R> OutageRegistry<R> {
    fn check(&self) -> crate::Result<()> {
        if self.outage.load(std::sync::atomic::Ordering::SeqCst) {
            Err(Error::unavailable(anyhow::anyhow!(
                "injected registry outage"
            )))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl<R: SessionRegistry> SessionRegistry for OutageRegistry<R> {
    async fn start(&self, request: StartRequest) -> crate::Result<StartOutcome> {
        self.check()?;
        self.inner.start(request).await
    }
    async fn mark_running(&self, call_id: &CallId, id: SessionId) -> crate::Result<Session> {
        self.check()?;
        self.inner.mark_running(call_id, id).await
    }
    async fn attach_task(
        &self,
        call_id: &CallId,
        id: SessionId,
        arn: &str,
        start_type: Option<StartType>,
    ) -> crate::Result<()> {
        self.check()?;
        self.inner.attach_task(call_id, id, arn, start_type).await
    }
    async fn heartbeat(
        &self,
        call_id: &CallId,
        id: SessionId,
        lease: Duration,
    ) -> crate::Result<crate::registry::Heartbeat> {
        self.check()?;
        self.inner.heartbeat(call_id, id, lease).await
    }
    async fn flush_metrics(
        &self,
        call_id: &CallId,
        id: SessionId,
        metrics: &crate::AgentMetrics,
    ) -> crate::Result<()> {
        self.check()?;
        if self.hang_flushes.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.flush_metrics(call_id, id, metrics).await
    }
    async fn request_close(&self, call_id: &CallId, id: SessionId) -> crate::Result<Session> {
        self.check()?;
        self.inner.request_close(call_id, id).await
    }
    async fn end(
        &self,
        call_id: &CallId,
        id: SessionId,
        request: EndRequest,
    ) -> crate::Result<EndOutcome> {
        self.check()?;
        self.inner.end(call_id, id, request).await
    }
    async fn get(&self, call_id: &CallId, id: SessionId) -> crate::Result<Option<Session>> {
        self.check()?;
        self.inner.get(call_id, id).await
    }
    async fn get_metadata(
        &self,
        call_id: &CallId,
        id: SessionId,
    ) -> crate::Result<Option<Metadata>> {
        self.check()?;
        self.inner.get_metadata(call_id, id).await
    }
    async fn get_metrics(
        &self,
        call_id: &CallId,
        id: SessionId,
    ) -> crate::Result<Option<crate::registry::SessionMetrics>> {
        self.check()?;
        self.inner.get_metrics(call_id, id).await
    }
    async fn list(&self, query: ListQuery) -> crate::Result<crate::registry::SessionPage> {
        self.check()?;
        self.inner.list(query).await
    }
    async fn expired_leases(&self, limit: usize) -> crate::Result<Vec<Session>> {
        self.check()?;
        self.inner.expired_leases(limit).await
    }
    async fn counts(&self, call_id: &CallId) -> crate::Result<crate::registry::Counts> {
        self.check()?;
        self.inner.counts(call_id).await
    }
}
