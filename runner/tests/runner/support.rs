//! A controllable test agent and a minimal HTTP/1.1 client over a real socket.

use std::net::SocketAddr;
use std::sync::Arc;

use switchboard_agent::{
    Agent, AgentLauncher, AgentLauncherBuilder, CreateContext, JoinContext, Presence, WarmupCache,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// Gates that tests open to let warmup and close proceed.
#[derive(Debug)]
pub struct Gates {
    /// Warmup of the process waits for a permit when `hold_warmup`.
    pub warmup: Semaphore,
    pub hold_warmup: bool,
    /// Agent close waits for a permit when `hold_close`.
    pub close: Semaphore,
    pub hold_close: bool,
}

impl Default for Gates {
    fn default() -> Self {
        Self {
            warmup: Semaphore::new(0),
            hold_warmup: false,
            close: Semaphore::new(0),
            hold_close: false,
        }
    }
}

#[derive(Debug)]
pub struct GatedAgent {
    presence: Presence,
    gates: Arc<Gates>,
    warmup_only: bool,
}

impl GatedAgent {
    /// The session's presence (the runtime's, from `CreateContext`).
    pub fn presence(&self) -> &Presence {
        &self.presence
    }
}

impl Agent for GatedAgent {
    async fn warmup(&self, _cache: &WarmupCache) -> anyhow::Result<()> {
        if self.warmup_only && self.gates.hold_warmup {
            let _ = self.gates.warmup.acquire().await?;
        }
        Ok(())
    }
    async fn close(&self) {
        if !self.warmup_only && self.gates.hold_close {
            let _ = self.gates.close.acquire().await;
        }
    }
}

pub fn gated_launcher(gates: Arc<Gates>) -> AgentLauncherBuilder<GatedAgent> {
    switchboard_testkit::test_log();
    AgentLauncher::builder(
        move |ctx: CreateContext| {
            let gates = gates.clone();
            async move {
                Ok(GatedAgent {
                    presence: ctx.presence.clone(),
                    gates,
                    warmup_only: ctx.is_warmup(),
                })
            }
        },
        |agent: Arc<GatedAgent>, _ctx: JoinContext| async move {
            agent.presence().agent_joined();
            agent.presence().participant_joined("human");
            std::future::pending().await
        },
    )
}

/// One request with `Connection: close`; returns the status and the body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `path` until it answers `status` (at most 10 s of real time).
pub async fn until_status(addr: SocketAddr, path: &str, status: u16) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while http(addr, "GET", path, None).await.0 != status {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never answered {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
