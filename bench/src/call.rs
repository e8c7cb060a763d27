//! `call`: message round trips through the local call. One person asks the demo agent a
//! question over the WebSocket and waits for the answer; `--listeners` more people in the
//! same call read everything (the fan-out). Reports the time until the person's own message
//! comes back (the hub's fan-out) and until the agent's answer arrives (fan-out, the agent's
//! turn through its model, and back), and the server's CPU per round trip.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_core::metrics::LatencySketch;
use tokio_tungstenite::tungstenite::Message;

use crate::{Server, Stats, or_na};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

async fn next_frame(socket: &mut Socket) -> anyhow::Result<Value> {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .context("no frame within 10 s")?
            .context("the socket closed")??;
        if let Message::Text(text) = message {
            return Ok(serde_json::from_str(&text)?);
        }
    }
}

async fn joined(ws_base: &str, call: &str, name: &str) -> anyhow::Result<Socket> {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{ws_base}/calls/{call}/ws"))
        .await
        .context("WebSocket connect")?;
    socket
        .send(Message::text(
            json!({"v": 1, "type": "join", "name": name}).to_string(),
        ))
        .await?;
    let welcome = next_frame(&mut socket).await?;
    anyhow::ensure!(welcome["type"] == "welcome", "not welcomed: {welcome}");
    Ok(socket)
}

/// What `call` measured.
#[derive(Debug, serde::Serialize)]
pub(crate) struct CallReport {
    pub(crate) samples: usize,
    pub(crate) listeners: usize,
    pub(crate) round_trips_per_second: f64,
    /// The person's own message back.
    pub(crate) echo: Stats,
    /// The agent's answer.
    pub(crate) answer: Stats,
    pub(crate) server_cpu_us_per_round_trip: Option<f64>,
}

impl CallReport {
    pub(crate) fn print(&self, out: &mut String) {
        let ms = |v: Option<f64>| or_na(v, 2);
        *out += &format!(
            "call: {} round trips, {} listeners, {:.0}/s; own message back p50 {} ms, p95 {} ms; agent's answer p50 {} ms, p95 {} ms, p99 {} ms, max {} ms; server CPU {} µs per round trip\n",
            self.samples,
            self.listeners,
            self.round_trips_per_second,
            ms(self.echo.p50_ms),
            ms(self.echo.p95_ms),
            ms(self.answer.p50_ms),
            ms(self.answer.p95_ms),
            ms(self.answer.p99_ms),
            ms(self.answer.max_ms),
            or_na(self.server_cpu_us_per_round_trip, 0),
        );
    }
}

pub(crate) async fn round_trips(
    server: &Server,
    samples: usize,
    listeners: usize,
) -> anyhow::Result<CallReport> {
    let ws_base = server.base.replacen("http://", "ws://", 1);
    let call = "bench-call";
    let mut asker = joined(&ws_base, call, "asker").await?;
    // The listeners read everything, as browsers would.
    let mut readers = Vec::new();
    for i in 0..listeners {
        let mut socket = joined(&ws_base, call, &format!("listener-{i}")).await?;
        readers.push(tokio::spawn(async move {
            while let Some(Ok(_)) = socket.next().await {}
        }));
    }
    let (status, body) = crate::call(
        &crate::client(),
        &server.base,
        hyper::Method::POST,
        &format!("/calls/{call}/sessions"),
        Some(&json!({})),
    )
    .await?;
    anyhow::ensure!(
        status == hyper::StatusCode::CREATED,
        "could not start the agent: {status} {}",
        String::from_utf8_lossy(&body)
    );
    // The agent joins and greets: the call is ready.
    loop {
        let frame = next_frame(&mut asker).await?;
        if frame["type"] == "message" && frame["from"]["agent"] == true {
            break;
        }
    }
    let (echo, answer) = (LatencySketch::new(), LatencySketch::new());
    let cpu0 = server.cpu_seconds().ok();
    let started = Instant::now();
    for i in 0..samples {
        let sent = Instant::now();
        asker
            .send(Message::text(
                json!({"v": 1, "type": "say", "text": format!("question {i}")}).to_string(),
            ))
            .await?;
        loop {
            let frame = next_frame(&mut asker).await?;
            if frame["type"] != "message" {
                continue;
            }
            let ms = sent.elapsed().as_secs_f64() * 1000.0;
            if frame["from"]["agent"] == true {
                answer.record(ms);
                break;
            }
            echo.record(ms);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = match (cpu0, server.cpu_seconds().ok()) {
        (Some(a), Some(b)) => Some((b - a) / samples.max(1) as f64 * 1e6),
        _ => None,
    };
    for reader in readers {
        reader.abort();
    }
    let _ = asker.close(None).await;
    Ok(CallReport {
        samples,
        listeners,
        round_trips_per_second: samples as f64 / seconds,
        echo: Stats::of(&echo),
        answer: Stats::of(&answer),
        server_cpu_us_per_round_trip: cpu,
    })
}
