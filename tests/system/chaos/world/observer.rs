//! The observer: only what is really there (live agent processes, moto's tasks, the
//! rows), sampled, and the invariants checked at quiescence.

use super::*;

/// What the observer saw.
#[derive(Debug, Default)]
pub struct Observations {
    pub samples: u32,
    /// The longest an agent process was seen alive after recording its own end.
    pub alive_after_own_end: Duration,
    pub max_agents: usize,
    pub max_running_tasks: usize,
    pub violations: Vec<String>,
}

/// A live agent process, read from /proc.
#[derive(Debug, Clone)]
pub struct Alive {
    pub pid: u32,
    pub session_id: String,
    pub call_id: String,
}

impl World {
    /// The agent processes of this world that are alive now (not zombies), from /proc: a
    /// task started for a session (its environment names it), or a standby claimed for one
    /// (its registration names it). An idle standby is in no call and not listed.
    pub async fn alive_agents(&self) -> Vec<Alive> {
        // The registrations first: a standby claimed after this read is missed (never
        // counted twice).
        let claimed: HashMap<String, (String, String)> = self
            .standbys()
            .await
            .into_iter()
            .filter_map(|s| {
                let (call, id) = s.session?;
                Some((s.task_arn, (call.to_string(), id.to_string())))
            })
            .collect();
        let task_of: HashMap<u32, String> = self
            .local
            .running()
            .into_iter()
            .map(|r| (r.pid, r.task_arn))
            .collect();
        switchboard_testkit::procs::live(Some(&self.binary))
            .into_iter()
            .filter(|p| p.env.get("TABLE_NAME") == Some(&self.table))
            .filter_map(|p| {
                if p.env.get("STANDBY").map(String::as_str) == Some("1") {
                    let (call_id, session_id) = claimed.get(task_of.get(&p.pid)?)?.clone();
                    return Some(Alive {
                        pid: p.pid,
                        session_id,
                        call_id,
                    });
                }
                Some(Alive {
                    pid: p.pid,
                    session_id: p.env.get("SESSION_ID").cloned().unwrap_or_default(),
                    call_id: p.env.get("CALL_ID").cloned().unwrap_or_default(),
                })
            })
            .collect()
    }

    /// The agents with their rows, for a violation's message.
    pub(super) async fn describe(
        &self,
        agents: impl Iterator<Item = &Alive>,
        at: Timestamp,
    ) -> String {
        let mut out = Vec::new();
        for a in agents {
            let row = match (CallId::parse(&a.call_id), SessionId::parse(&a.session_id)) {
                (Ok(call), Ok(id)) => self.registry.get(&call, id).await.ok().flatten(),
                _ => None,
            };
            out.push(match row {
                Some(r) => format!(
                    "pid {} session {} {:?} joined={} end {:?} {:?} ended {:?} before the sample",
                    a.pid,
                    a.session_id,
                    r.status,
                    r.joined(),
                    r.end_reason,
                    r.end_detail,
                    r.ended_at.map(|e| at.saturating_since(e)),
                ),
                None => format!("pid {} session {} (no row)", a.pid, a.session_id),
            });
        }
        out.join("; ")
    }

    pub(super) async fn observe(&self) {
        let before = Timestamp::now_system();
        let alive = self.alive_agents().await;
        let running_tasks = self.running_arns().await.map_or(0, |a| a.len());
        let mut violations = Vec::new();
        let limits = self.settings.limits;
        if let Some(max) = limits.max_concurrent_sessions()
            && alive.len() > max as usize
        {
            violations.push(format!(
                "{} live agents, over the limit {max}: {}",
                alive.len(),
                self.describe(alive.iter(), before).await
            ));
        }
        let mut per_call: HashMap<&str, usize> = HashMap::new();
        let mut per_session: HashMap<&str, usize> = HashMap::new();
        for a in &alive {
            *per_call.entry(&a.call_id).or_default() += 1;
            *per_session.entry(&a.session_id).or_default() += 1;
        }
        if let Some(max) = limits.max_sessions_per_call() {
            for (call, n) in &per_call {
                if *n > max as usize {
                    violations.push(format!(
                        "{n} live agents in {call}, over the limit {max}: {}",
                        self.describe(alive.iter().filter(|a| a.call_id == *call), before)
                            .await
                    ));
                }
            }
        }
        for (session, n) in &per_session {
            if *n > 1 {
                violations.push(format!("{n} live agents for session {session}"));
            }
        }
        // No session is ended by the reaper while its agent is still alive.
        let mut after_own_end = Duration::ZERO;
        for a in &alive {
            let (Ok(call), Ok(id)) = (CallId::parse(&a.call_id), SessionId::parse(&a.session_id))
            else {
                continue;
            };
            let Ok(Some(row)) = self.registry.get(&call, id).await else {
                continue;
            };
            let Some(ended_at) = row.ended_at.filter(|at| *at < before) else {
                continue;
            };
            if ended_by_reaper(&row) {
                violations.push(format!(
                    "agent pid {} of {} alive after the reaper ended it {:?} ({:?})",
                    a.pid, a.session_id, row.end_reason, row.end_detail
                ));
            } else {
                after_own_end = after_own_end.max(before.saturating_since(ended_at));
            }
        }
        let mut obs = lock(&self.observations);
        obs.samples += 1;
        obs.alive_after_own_end = obs.alive_after_own_end.max(after_own_end);
        obs.max_agents = obs.max_agents.max(alive.len());
        obs.max_running_tasks = obs.max_running_tasks.max(running_tasks);
        obs.violations.extend(violations);
    }

    /// Every row of the table (ended ones too).
    pub async fn rows(&self) -> Vec<Session> {
        let mut rows = Vec::new();
        let mut next_token = None;
        loop {
            let page = self
                .registry
                .list(ListQuery {
                    call_id: None,
                    include_ended: true,
                    limit: 0,
                    next_token,
                    with_metrics: false,
                })
                .await
                .expect("list the rows");
            rows.extend(page.sessions.into_iter().map(|l| l.session));
            next_token = page.next_token;
            if next_token.is_none() {
                return rows;
            }
        }
    }

    /// The sessions of moto's RUNNING tasks (from `startedBy`; a standby's from its
    /// registration), and the RUNNING standby tasks hosting none.
    pub async fn running_task_sessions(&self) -> (Vec<String>, Vec<String>) {
        let claimed: HashMap<String, String> = self
            .standbys()
            .await
            .into_iter()
            .filter_map(|s| Some((s.task_arn, s.session?.1.to_string())))
            .collect();
        let mut idle_standbys = Vec::new();
        let arns: Vec<String> = self
            .running_arns()
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut out = Vec::new();
        for chunk in arns.chunks(100) {
            let described = self
                .ecs
                .describe_tasks()
                .cluster(&self.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .expect("describe tasks");
            for task in described.tasks() {
                let arn = task.task_arn().unwrap_or_default();
                if task.started_by() == Some(switchboard_aws::pool::STANDBY_STARTED_BY) {
                    match claimed.get(arn) {
                        Some(session) => out.push(session.clone()),
                        None => idle_standbys.push(arn.to_owned()),
                    }
                } else {
                    out.push(task.started_by().unwrap_or_default().to_owned());
                }
            }
        }
        out.sort();
        idle_standbys.sort();
        (out, idle_standbys)
    }

    /// What the state is, with everything that disagrees; `None` when consistent: every
    /// live row is `running` and has exactly one live agent and one RUNNING task, no agent or
    /// task lacks a live row, and every counter equals the live rows counted from the rows.
    pub async fn inconsistencies(&self, calls: &[&str]) -> Option<String> {
        let mut problems = Vec::new();
        if self.ops_in_flight.load(Ordering::SeqCst) > 0 {
            problems.push("operations in flight".to_owned());
        }
        if !self.local.settled() {
            problems.push("tasks provisioning or stopping".to_owned());
        }
        if self.events_pending() > 0 && !self.local.events_held() {
            problems.push(format!("{} events pending", self.events_pending()));
        }
        let rows = self.rows().await;
        let live: Vec<&Session> = rows.iter().filter(|r| !r.is_ended()).collect();
        let mut live_ids: Vec<String> = live.iter().map(|r| r.id.to_string()).collect();
        live_ids.sort();
        for r in &live {
            if r.status != SessionStatus::Running {
                problems.push(format!("{} is {:?}", r.id, r.status));
            }
        }
        let mut agents: Vec<String> = self
            .alive_agents()
            .await
            .into_iter()
            .map(|a| a.session_id)
            .collect();
        agents.sort();
        if agents != live_ids {
            problems.push(format!("live rows {live_ids:?} but agents {agents:?}"));
        }
        let (tasks, idle_tasks) = self.running_task_sessions().await;
        if tasks != live_ids {
            problems.push(format!(
                "live rows {live_ids:?} but RUNNING tasks {tasks:?}"
            ));
        }
        if self.settings.pool > 0 {
            // The pool is full, of the current definition only, and every idle standby's
            // task runs (no stale registration, no orphan task).
            let task_definition = lock(&self.definition).clone();
            let status = PoolStatus {
                target_size: self.settings.pool,
                task_definition,
                standbys: self.standbys().await,
                at: Timestamp::now_system(),
            };
            let mut idle: Vec<String> = status
                .standbys
                .iter()
                .filter(|s| s.state != StandbyState::Claimed)
                .map(|s| s.task_arn.clone())
                .collect();
            idle.sort();
            let current_idle = status
                .standbys
                .iter()
                .filter(|s| {
                    s.state == StandbyState::Idle
                        && s.task_definition == status.task_definition
                        && s.lease_expires_at > status.at
                })
                .count();
            if current_idle != self.settings.pool as usize || idle != idle_tasks {
                problems.push(format!(
                    "pool: {current_idle} idle of {} (of {}); registered unclaimed {idle:?}, RUNNING unclaimed standby tasks {idle_tasks:?}",
                    self.settings.pool, status.task_definition
                ));
            }
        }
        for call in calls {
            let call_id = CallId::parse(call).unwrap();
            let counts = self.registry.counts(&call_id).await.expect("counts");
            let per_call = live.iter().filter(|r| r.call_id == call_id).count() as u64;
            if counts.per_call != per_call {
                problems.push(format!(
                    "{call}: counter {} but {per_call} live rows",
                    counts.per_call
                ));
            }
            if counts.global != live.len() as u64 {
                problems.push(format!(
                    "global counter {} but {} live rows",
                    counts.global,
                    live.len()
                ));
            }
        }
        for r in &rows {
            if r.is_ended() && r.end_reason.is_none() {
                problems.push(format!("{} ended without a reason", r.id));
            }
        }
        problems.dedup();
        (!problems.is_empty()).then(|| problems.join("\n"))
    }

    /// Waits until [`World::inconsistencies`] finds none; panics with them after `within`.
    pub async fn await_consistent(&self, calls: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let Some(problems) = self.inconsistencies(calls).await else {
                return;
            };
            assert!(
                Instant::now() < deadline,
                "not consistent after {within:?}:\n{problems}\nagent logs: {}",
                self.logs().display()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
