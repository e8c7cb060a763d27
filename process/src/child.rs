//! One child process: spawned in its own process group with the protocol's socket on fd 3,
//! its stdout and stderr forwarded to our logs line by line, its messages applied to the
//! session it is bound to, and its exit observed (and its group killed after it, so nothing it
//! started outlives it).

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use switchboard_agent::Presence;
use switchboard_core::metrics::{Counter, Latency};
use switchboard_core::{MetricsRecorder, SessionId};
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Mutex, watch};
use tracing::{debug, info, warn};

use crate::lines::{Line, next_line};
use crate::protocol::{
    CHILD_FD, FD_VARIABLE, FromChild, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, ToChild,
    VERSION_VARIABLE,
};

/// The longest log line kept, in bytes; the rest of a longer line is dropped.
const MAX_LOG_LINE_BYTES: usize = 16 * 1024;

/// The most lines, and bytes, a second forwarded from one of a child's streams.
const LOG_LINES_PER_SECOND: u32 = 500;
const LOG_BYTES_PER_SECOND: usize = 256 * 1024;

/// The child gets SIGKILL when the runtime dies (even by SIGKILL): no agent outlives its
/// supervisor. Between fork and exec; the one place this crate needs `unsafe`.
///
/// The kernel sends it when the *thread* that forked the child ends: children are spawned
/// only from the runtime's tokio workers (never `spawn_blocking`, whose idle threads exit),
/// which live as long as the process serves. The signal is the direct child's: grandchildren
/// a killed runtime leaves are ended by the task's end on ECS, not here.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut tokio::process::Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes two system
    // calls (prctl, getppid), both async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The runtime died before the prctl: the signal will never come.
            if nix::unistd::getppid() != parent {
                // No allocation between fork and exec: a plain error kind.
                return Err(std::io::Error::from(std::io::ErrorKind::Other));
            }
            Ok(())
        });
    }
}

/// The agent's command: a program and its arguments.
#[derive(Debug, Clone)]
pub struct AgentCommand {
    /// The program (a path, or a name looked up on `PATH`).
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
}

/// The session a child is bound to: where its reports go.
struct Binding {
    session_id: SessionId,
    presence: Presence,
    metrics: MetricsRecorder,
}

/// What is known of a child.
#[derive(Debug, Clone, Default)]
pub(crate) struct State {
    /// It sent `ready` with our protocol version.
    pub(crate) ready: bool,
    /// It sent `finished`.
    pub(crate) finished: bool,
    /// It broke the protocol (it is killed): why.
    pub(crate) fatal: Option<String>,
    /// How it exited.
    pub(crate) exit: Option<ExitStatus>,
    /// Its channel reached its end (every message it sent was applied).
    pub(crate) eof: bool,
}

struct Shared {
    pid: i32,
    binding: OnceLock<Binding>,
    state: watch::Sender<State>,
}

impl Shared {
    fn session(&self) -> Option<SessionId> {
        self.binding.get().map(|b| b.session_id)
    }

    /// The session as a log field (none before the handover).
    fn session_field(&self) -> Option<String> {
        self.session().map(|s| s.to_string())
    }

    /// Signals the child's whole process group; a group already gone is not an error. Once
    /// its exit is recorded, nothing is sent: the exit watcher killed the group right after
    /// reaping it, and the pid may be another process's by now.
    fn signal(&self, signal: Signal) {
        if self.state.borrow().exit.is_some() {
            return;
        }
        match killpg(Pid::from_raw(self.pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                warn!(pid = self.pid, %signal, error = %e, "could not signal the agent process group")
            }
        }
    }

    fn fail(&self, why: String) {
        warn!(pid = self.pid, session_id = self.session_field(), reason = %why, "agent process broke the protocol; killing it");
        self.state.send_modify(|s| {
            s.fatal
                .get_or_insert(format!("the agent process broke the protocol: {why}"));
        });
        self.signal(Signal::SIGKILL);
    }
}

/// A spawned child. Dropping it kills its process group if it has not exited.
pub(crate) struct Child {
    shared: Arc<Shared>,
    writer: Mutex<Option<OwnedWriteHalf>>,
    close_sent: AtomicBool,
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.shared.pid)
            .field("session_id", &self.shared.session())
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.shared.state.borrow().exit.is_none() {
            self.shared.signal(Signal::SIGKILL);
        }
    }
}

/// How a child exited, in words: `exited with status 3`, `was killed by SIGKILL`.
pub(crate) fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(name) => format!("was killed by {name}"),
            Err(_) => format!("was killed by signal {signal}"),
        },
        _ => format!("ended ({status})"),
    }
}

impl Child {
    /// Spawns `command` with the protocol's socket on fd 3.
    pub(crate) fn spawn(command: &AgentCommand) -> anyhow::Result<Self> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .context("could not create the agent's protocol socket")?;
        ours.set_nonblocking(true)
            .context("could not set up the agent's protocol socket")?;
        let ours = tokio::net::UnixStream::from_std(ours)
            .context("could not set up the agent's protocol socket")?;
        let mut cmd = tokio::process::Command::new(&command.program);
        cmd.args(&command.args)
            // The session comes over the protocol; a task's own variables are not the
            // child's (a prewarmed child is started before its session exists).
            .env_remove("SESSION_ID")
            .env_remove("CALL_ID")
            .env_remove("CALL_TYPE")
            .env_remove("TABLE_NAME")
            .env_remove("STANDBY")
            // The runtime's secrets are not the agent's: it could sign events or mint API
            // tokens with them.
            .env_remove("SWITCHBOARD_WEBHOOK_SECRET")
            .env_remove("AUTH_JWT_KEY")
            .env_remove("AUTH_JWT_KEY_FILE")
            .env(FD_VARIABLE, CHILD_FD.to_string())
            .env(VERSION_VARIABLE, PROTOCOL_VERSION.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: signals reach its whole tree, and a terminal's Ctrl-C reaches
            // only the runtime, which closes every child in order.
            .process_group(0);
        die_with_parent(&mut cmd);
        cmd.fd_mappings(vec![FdMapping {
            parent_fd: theirs.into(),
            child_fd: CHILD_FD,
        }])
        .context("could not hand the protocol socket to the agent")?;
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "could not start the agent command {:?}",
                command.program.to_string_lossy()
            )
        })?;
        // The child's end of the socket is the child's alone from here.
        drop(cmd);
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .context("the agent process has no pid")?;
        let shared = Arc::new(Shared {
            pid,
            binding: OnceLock::new(),
            state: watch::Sender::new(State::default()),
        });
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_logs(shared.clone(), out, "stdout"));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_logs(shared.clone(), err, "stderr"));
        }
        let (read, write) = ours.into_split();
        tokio::spawn(read_messages(shared.clone(), read));
        let watcher = shared.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            // Whatever it left behind in its group goes with it.
            if let Err(e) = killpg(Pid::from_raw(watcher.pid), Signal::SIGKILL)
                && e != nix::errno::Errno::ESRCH
            {
                debug!(pid = watcher.pid, error = %e, "could not kill the agent's process group");
            }
            match status {
                Ok(status) => {
                    info!(pid = watcher.pid, session_id = watcher.session_field(), status = %describe(status), "agent process ended");
                    watcher.state.send_modify(|s| s.exit = Some(status));
                }
                Err(e) => {
                    warn!(pid = watcher.pid, error = %e, "could not wait for the agent process");
                    watcher.state.send_modify(|s| {
                        s.fatal
                            .get_or_insert(format!("could not wait for the agent process: {e}"));
                        s.exit = Some(ExitStatus::from_raw(0x7f00));
                    });
                }
            }
        });
        debug!(pid, "agent process started");
        Ok(Self {
            shared,
            writer: Mutex::new(Some(write)),
            close_sent: AtomicBool::new(false),
        })
    }

    /// The child's pid (its process group's id).
    pub(crate) fn pid(&self) -> i32 {
        self.shared.pid
    }

    /// A receiver of the child's state.
    pub(crate) fn state(&self) -> watch::Receiver<State> {
        self.shared.state.subscribe()
    }

    /// Waits until the child sent `ready`; an error when it exits or breaks the protocol
    /// first.
    pub(crate) async fn ready(&self) -> anyhow::Result<()> {
        let mut rx = self.state();
        let state = rx
            .wait_for(|s| s.ready || s.fatal.is_some() || s.exit.is_some())
            .await
            .map(|s| s.clone())
            .unwrap_or_default();
        if state.ready {
            return Ok(());
        }
        if let Some(why) = state.fatal {
            anyhow::bail!("{why} (before it was ready)");
        }
        let how = state.exit.map_or("ended".to_owned(), describe);
        anyhow::bail!(
            "the agent process {how} before it was ready (it sends {{\"type\":\"ready\",\"protocol\":{PROTOCOL_VERSION}}} on fd {CHILD_FD} once its imports are done)"
        )
    }

    /// Whether it is still alive and ready for a session.
    pub(crate) fn is_idle_ready(&self) -> bool {
        let state = self.shared.state.borrow();
        state.ready && state.exit.is_none() && state.fatal.is_none()
    }

    /// Binds the child to a session and hands the session over.
    pub(crate) async fn assign(
        &self,
        session_id: SessionId,
        message: ToChild,
        presence: Presence,
        metrics: MetricsRecorder,
    ) -> anyhow::Result<()> {
        if self
            .shared
            .binding
            .set(Binding {
                session_id,
                presence,
                metrics,
            })
            .is_err()
        {
            anyhow::bail!("the agent process already has a session");
        }
        self.send(&message)
            .await
            .context("could not hand the session to the agent process")
    }

    async fn send(&self, message: &ToChild) -> anyhow::Result<()> {
        let mut writer = self.writer.lock().await;
        let Some(w) = writer.as_mut() else {
            anyhow::bail!("the agent process's channel is closed");
        };
        let sent = w.write_all(message.line().as_bytes()).await;
        if sent.is_err() {
            *writer = None;
        }
        sent.context("the agent process's channel is closed")
    }

    /// Kills the child's process group now.
    pub(crate) fn kill(&self) {
        self.shared.signal(Signal::SIGKILL);
    }

    /// Waits (briefly) until every message the child sent before it exited is applied: its
    /// exit and its channel's end race, and its last `metrics` belong to the session.
    pub(crate) async fn settled(&self) {
        let mut rx = self.state();
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|s| s.eof)).await;
    }

    async fn exited_within(&self, wait: Duration) -> bool {
        let mut rx = self.state();
        tokio::time::timeout(wait, rx.wait_for(|s| s.exit.is_some()))
            .await
            .is_ok()
    }

    /// Ends the child: `close` with `reason` (once), `grace` to exit, then SIGTERM and
    /// `term_grace`, then SIGKILL.
    pub(crate) async fn close(&self, reason: &str, grace: Duration, term_grace: Duration) {
        let session_id = self.shared.session_field();
        if self.shared.state.borrow().exit.is_some() {
            self.settled().await;
            return;
        }
        if !self.close_sent.swap(true, Ordering::SeqCst) {
            let message = ToChild::Close {
                reason: reason.to_owned(),
                grace_seconds: grace.as_secs_f64(),
            };
            if let Err(e) = self.send(&message).await {
                debug!(pid = self.pid(), session_id, error = %format!("{e:#}"), "close not delivered; the grace still applies");
            }
        }
        if self.exited_within(grace).await {
            self.settled().await;
            return;
        }
        info!(
            pid = self.pid(),
            session_id,
            ?grace,
            "agent process still running after its close grace; SIGTERM"
        );
        self.shared.signal(Signal::SIGTERM);
        if self.exited_within(term_grace).await {
            self.settled().await;
            return;
        }
        warn!(
            pid = self.pid(),
            session_id,
            ?term_grace,
            "agent process ignored SIGTERM; SIGKILL"
        );
        self.kill();
        if !self.exited_within(Duration::from_secs(2)).await {
            warn!(
                pid = self.pid(),
                session_id, "agent process did not end after SIGKILL"
            );
        }
    }
}

/// The child's stdout or stderr, line by line, to our logs (with its session once it has one).
async fn forward_logs(shared: Arc<Shared>, stream: impl AsyncRead + Unpin, name: &'static str) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    // At most LOG_LINES_PER_SECOND a second per stream: one chatty child must not hold the
    // log writer (shared by every session's heartbeats) for long. The rest is counted.
    let mut window = tokio::time::Instant::now();
    let (mut lines, mut bytes, mut dropped) = (0u32, 0usize, 0u64);
    let report = |dropped: u64| {
        if dropped > 0 {
            warn!(
                pid = shared.pid,
                session_id = shared.session_field(),
                stream = name,
                dropped,
                "agent process wrote more than {LOG_LINES_PER_SECOND} lines or {LOG_BYTES_PER_SECOND} bytes a second; the rest were dropped"
            );
        }
    };
    while let Ok(Some(line)) = next_line(&mut reader, &mut buf, MAX_LOG_LINE_BYTES).await {
        let now = tokio::time::Instant::now();
        if now.duration_since(window) >= Duration::from_secs(1) {
            report(std::mem::take(&mut dropped));
            window = now;
            (lines, bytes) = (0, 0);
        }
        lines += 1;
        bytes += buf.len();
        if lines > LOG_LINES_PER_SECOND || bytes > LOG_BYTES_PER_SECOND {
            dropped += 1;
            continue;
        }
        let text = String::from_utf8_lossy(&buf);
        let truncated = line == Line::Truncated;
        match shared.session() {
            Some(session_id) => {
                info!(target: "agent", session_id = %session_id, pid = shared.pid, stream = name, truncated, "{text}")
            }
            None => info!(target: "agent", pid = shared.pid, stream = name, truncated, "{text}"),
        }
    }
    report(dropped);
}

/// The child's messages, applied as they come.
async fn read_messages(shared: Arc<Shared>, read: tokio::net::unix::OwnedReadHalf) {
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    let mut unknown_names = HashSet::new();
    let mut invalid = 0u32;
    loop {
        match next_line(&mut reader, &mut buf, MAX_MESSAGE_BYTES).await {
            Ok(None) | Err(_) => break,
            Ok(Some(Line::Truncated)) => {
                shared.fail(format!("a message longer than {MAX_MESSAGE_BYTES} bytes"));
                break;
            }
            Ok(Some(Line::Whole)) => {}
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let message = match serde_json::from_slice::<FromChild>(&buf) {
            Ok(m) => m,
            Err(e) => {
                let shown: String = String::from_utf8_lossy(&buf).chars().take(200).collect();
                if !shared.state.borrow().ready {
                    shared.fail(format!(
                        "its first message must be ready, not {shown:?} ({e})"
                    ));
                    break;
                }
                // Logged, up to a bound: a child must not flood the logs through here.
                invalid += 1;
                if invalid <= 20 {
                    warn!(pid = shared.pid, session_id = shared.session_field(), error = %e, message = %shown, invalid, "agent process sent an invalid message; ignored (the first 20 are logged)");
                }
                continue;
            }
        };
        if let Err(why) = apply(&shared, message, &mut unknown_names) {
            shared.fail(why);
            break;
        }
    }
    shared.state.send_modify(|s| s.eof = true);
}

/// Bounds on what one metrics message may add: a child cannot wrap a session's totals.
const MAX_COUNTER_INCREMENT: f64 = (1u64 << 40) as f64;
const MAX_LATENCY_MS: f64 = 86_400_000.0;

/// Applies one message; an error breaks the protocol.
fn apply(
    shared: &Shared,
    message: FromChild,
    unknown_names: &mut HashSet<String>,
) -> Result<(), String> {
    if let FromChild::Ready { protocol } = message {
        if protocol != PROTOCOL_VERSION {
            return Err(format!(
                "it speaks protocol version {protocol}; this runtime speaks {PROTOCOL_VERSION}"
            ));
        }
        shared
            .state
            .send_if_modified(|s| !std::mem::replace(&mut s.ready, true));
        return Ok(());
    }
    if !shared.state.borrow().ready {
        return Err("its first message must be ready".to_owned());
    }
    if matches!(message, FromChild::Unknown) {
        debug!(
            pid = shared.pid,
            "agent process sent a message type this runtime does not know; ignored"
        );
        return Ok(());
    }
    let Some(binding) = shared.binding.get() else {
        warn!(
            pid = shared.pid,
            ?message,
            "agent process reported before it had a session; ignored"
        );
        return Ok(());
    };
    match message {
        FromChild::Joined => binding.presence.agent_joined(),
        FromChild::ParticipantJoined { participant_id } => {
            binding.presence.participant_joined(&participant_id)
        }
        FromChild::ParticipantLeft { participant_id } => {
            binding.presence.participant_left(&participant_id)
        }
        FromChild::Metrics {
            counters,
            latencies,
        } => {
            for (name, value) in counters {
                match Counter::ALL.iter().find(|c| c.name() == name) {
                    Some(&c)
                        if value.is_finite() && (0.0..=MAX_COUNTER_INCREMENT).contains(&value) =>
                    {
                        binding.metrics.add(c, value.round() as u64);
                    }
                    Some(_) => {
                        warn!(session_id = %binding.session_id, counter = %name, value, "agent process sent a counter increment that is not a number from 0 to 2^40; ignored")
                    }
                    None => note_unknown(binding, unknown_names, name),
                }
            }
            for (name, samples) in latencies {
                match Latency::ALL.iter().find(|l| l.name() == name) {
                    Some(&l) => {
                        for ms in samples {
                            if ms.is_finite() && (0.0..=MAX_LATENCY_MS).contains(&ms) {
                                binding.metrics.record(l, ms);
                            } else {
                                warn!(session_id = %binding.session_id, latency = %name, ms, "agent process sent a latency that is not a number of milliseconds from 0 to a day; ignored");
                            }
                        }
                    }
                    None => note_unknown(binding, unknown_names, name),
                }
            }
        }
        FromChild::Finished => {
            shared
                .state
                .send_if_modified(|s| !std::mem::replace(&mut s.finished, true));
        }
        FromChild::Ready { .. } | FromChild::Unknown => {}
    }
    Ok(())
}

fn note_unknown(binding: &Binding, seen: &mut HashSet<String>, name: String) {
    if seen.len() < 64 && seen.insert(name.clone()) {
        warn!(session_id = %binding.session_id, metric = %name, "agent process sent a metric this runtime does not know (the API's base names: docs/process-agents.md); ignored");
    }
}
