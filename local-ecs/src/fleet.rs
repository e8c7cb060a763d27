//! The engine behind [`LocalEcs`](crate::LocalEcs): the tasks it knows, how each advances
//! (provisioning → running → stopping → stopped) against the emulator's records, and the
//! events each change makes.

use super::*;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    Provisioning(Instant),
    Running,
    Stopping(Instant),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Signal {
    Term,
    Kill,
}

#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) info: Arc<TaskInfo>,
    pub(crate) phase: Phase,
    pub(crate) control: Option<mpsc::UnboundedSender<Signal>>,
    pub(crate) pid: Option<u32>,
    pub(crate) proxy: Option<Proxy>,
    /// Why ECS stopped it (StopTask's reason), if it did before the process exited.
    pub(crate) stopped_by_ecs: Option<String>,
    pub(crate) started_at: Option<String>,
    pub(crate) version: u64,
    /// Why its process could not start (`TaskFailedToStart`).
    pub(crate) failed_to_start: Option<String>,
}

/// A finished task whose STOPPED event waits for its StopTask in the emulator.
#[derive(Debug)]
pub(crate) struct Stopping {
    pub(crate) task: Task,
    pub(crate) code: Option<i32>,
}

#[derive(Debug, Default)]
pub(crate) struct Fleet {
    pub(crate) tasks: HashMap<String, Task>,
    pub(crate) done: HashSet<String>,
    pub(crate) to_stop: HashMap<String, Stopping>,
    pub(crate) exits: Vec<Exit>,
    pub(crate) started: usize,
    pub(crate) definitions: HashMap<String, Definition>,
}

#[derive(Debug, Clone)]
pub(crate) struct Definition {
    pub(crate) family: String,
    pub(crate) revision: String,
    pub(crate) container: String,
    pub(crate) command: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) stop_timeout: Duration,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) ecs: Client,
    pub(crate) cluster_arn: String,
    pub(crate) pattern: serde_json::Value,
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) bus: Bus,
    pub(crate) metadata: MetadataServer,
    pub(crate) fleet: Mutex<Fleet>,
    /// Exits as the waiters saw them, by task ARN, at the instant of the exit.
    pub(crate) exited: Mutex<HashMap<String, (Option<i32>, SystemTime)>>,
    pub(crate) all_cut: AtomicBool,
    pub(crate) stopping: AtomicBool,
}

impl Inner {
    pub(crate) async fn running_arns(&self) -> Option<HashSet<String>> {
        running_task_arns(&self.ecs, &self.config.cluster)
            .await
            .inspect_err(
                |e| warn!(error = %aws_sdk_ecs::error::DisplayErrorContext(e), "ListTasks failed"),
            )
            .ok()
    }

    pub(crate) async fn definition(&self, arn: &str) -> Option<Definition> {
        if let Some(d) = lock(&self.fleet).definitions.get(arn) {
            return Some(d.clone());
        }
        let described = self
            .ecs
            .describe_task_definition()
            .task_definition(arn)
            .send()
            .await
            .inspect_err(|e| warn!(error = %aws_sdk_ecs::error::DisplayErrorContext(e), definition = arn, "DescribeTaskDefinition failed"))
            .ok()?;
        let def = described.task_definition()?;
        let containers = def.container_definitions();
        let container = containers
            .iter()
            .find(|c| c.essential() != Some(false))
            .or(containers.first())?;
        let d = Definition {
            family: def.family().unwrap_or_default().to_owned(),
            revision: def.revision().to_string(),
            container: container.name().unwrap_or("agent").to_owned(),
            command: container.command().to_vec(),
            env: container
                .environment()
                .iter()
                .filter_map(|kv| Some((kv.name()?.to_owned(), kv.value()?.to_owned())))
                .collect(),
            stop_timeout: container
                .stop_timeout()
                .and_then(|s| u64::try_from(s).ok())
                .map_or(DEFAULT_STOP_TIMEOUT, Duration::from_secs),
        };
        lock(&self.fleet)
            .definitions
            .insert(arn.to_owned(), d.clone());
        Some(d)
    }

    pub(crate) async fn describe(&self, arns: &[String]) -> Vec<aws_sdk_ecs::types::Task> {
        let mut out = Vec::new();
        for chunk in arns.chunks(100) {
            match self
                .ecs
                .describe_tasks()
                .cluster(&self.config.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
            {
                Ok(d) => out.extend(d.tasks().iter().cloned()),
                Err(e) => {
                    warn!(error = %aws_sdk_ecs::error::DisplayErrorContext(&e), "DescribeTasks failed")
                }
            }
        }
        out
    }

    pub(crate) async fn task_info(&self, task: &aws_sdk_ecs::types::Task) -> Option<TaskInfo> {
        let arn = task.task_arn()?.to_owned();
        let definition_arn = task.task_definition_arn()?.to_owned();
        let def = self.definition(&definition_arn).await?;
        let overrides = task
            .overrides()
            .map(|o| o.container_overrides())
            .unwrap_or_default();
        let ours = overrides
            .iter()
            .find(|o| o.name() == Some(def.container.as_str()));
        let override_env: Vec<(String, String)> = ours
            .map(|o| {
                o.environment()
                    .iter()
                    .filter_map(|kv| Some((kv.name()?.to_owned(), kv.value()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let command = ours
            .map(|o| o.command().to_vec())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| def.command.clone());
        // arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID
        let mut parts = arn.split(':');
        let region = parts.nth(3).unwrap_or(&self.config.region).to_owned();
        let account = parts.next().unwrap_or("123456789012").to_owned();
        Some(TaskInfo {
            id: task_id(&arn).to_owned(),
            cluster_arn: task.cluster_arn().unwrap_or(&self.cluster_arn).to_owned(),
            definition_arn,
            family: def.family,
            revision: def.revision,
            group: task.group().unwrap_or_default().to_owned(),
            started_by: task.started_by().unwrap_or_default().to_owned(),
            created_at: task
                .created_at()
                .and_then(|t| {
                    t.fmt(aws_sdk_ecs::primitives::DateTimeFormat::DateTime)
                        .ok()
                })
                .unwrap_or_else(now_rfc3339),
            region,
            account,
            container: def.container,
            container_id: uuid::Uuid::now_v7().simple().to_string(),
            command,
            definition_env: def.env,
            override_env,
            stop_timeout: def.stop_timeout,
            arn,
        })
    }

    /// Hands a state change to the bus if it matches the reaper's pattern.
    pub(crate) fn emit(
        &self,
        task: &Task,
        last_status: &'static str,
        code: Option<i32>,
        stop: Option<(&str, &str)>,
    ) {
        let session = task.info.env("SESSION_ID").unwrap_or("");
        info!(
            task = %task.info.id,
            session,
            pid = task.pid,
            status = last_status,
            exit_code = code,
            stop_code = stop.map(|s| s.0),
            "task state"
        );
        if !self.config.events {
            return;
        }
        let event = event::task_state_change(&event::TaskState {
            task: &task.info,
            last_status,
            exit_code: code,
            stop,
            started_at: task.started_at.as_deref(),
            version: task.version,
        });
        if event::matches(&self.pattern, &event) {
            self.bus.publish(event);
        }
    }

    pub(crate) async fn tick(self: &Arc<Self>) {
        // A failed listing (the emulator down or slow) skips only what needs it: exits,
        // timers and StopTask retries go on with what is known.
        if let Some(running) = self.running_arns().await {
            self.adopt_and_notice_stops(&running).await;
        }
        self.advance().await;
    }

    /// New RUNNING tasks start PROVISIONING; known ones no longer RUNNING were stopped by ECS.
    pub(crate) async fn adopt_and_notice_stops(self: &Arc<Self>, running: &HashSet<String>) {
        let new: Vec<String> = {
            let fleet = lock(&self.fleet);
            running
                .iter()
                .filter(|a| {
                    !fleet.tasks.contains_key(*a)
                        && !fleet.done.contains(*a)
                        && !fleet.to_stop.contains_key(*a)
                })
                .cloned()
                .collect()
        };
        for described in self.describe(&new).await {
            let Some(info) = self.task_info(&described).await else {
                continue;
            };
            let task = Task {
                info: Arc::new(info),
                phase: Phase::Provisioning(Instant::now()),
                control: None,
                pid: None,
                proxy: None,
                stopped_by_ecs: None,
                started_at: None,
                version: 1,
                failed_to_start: None,
            };
            self.emit(&task, "PROVISIONING", None, None);
            lock(&self.fleet).tasks.insert(task.info.arn.clone(), task);
        }

        // Tasks ECS stopped: their reason, from the emulator.
        let gone: Vec<String> = {
            let fleet = lock(&self.fleet);
            fleet
                .tasks
                .iter()
                .filter(|(arn, t)| !running.contains(*arn) && t.stopped_by_ecs.is_none())
                .map(|(arn, _)| arn.clone())
                .collect()
        };
        if !gone.is_empty() {
            let reasons: HashMap<String, String> = self
                .describe(&gone)
                .await
                .iter()
                .filter_map(|t| {
                    Some((
                        t.task_arn()?.to_owned(),
                        t.stopped_reason()
                            .unwrap_or("Task stopped by user")
                            .to_owned(),
                    ))
                })
                .collect();
            let mut fleet = lock(&self.fleet);
            for arn in gone {
                if let Some(t) = fleet.tasks.get_mut(&arn) {
                    t.stopped_by_ecs = Some(
                        reasons
                            .get(&arn)
                            .cloned()
                            .unwrap_or_else(|| "Task stopped by user".to_owned()),
                    );
                }
            }
        }
    }

    /// Timers, exits, spawns and the StopTask of exited tasks.
    pub(crate) async fn advance(self: &Arc<Self>) {
        let now = Instant::now();
        let exited = lock(&self.exited).clone();
        let mut to_spawn = Vec::new();
        let mut finished = Vec::new();
        {
            let mut fleet = lock(&self.fleet);
            for (arn, task) in &mut fleet.tasks {
                if let Some((code, _)) = exited.get(arn) {
                    finished.push((arn.clone(), *code));
                    continue;
                }
                let stopped = task.stopped_by_ecs.is_some();
                match task.phase {
                    Phase::Provisioning(_) if stopped => finished.push((arn.clone(), None)),
                    // Nothing new starts once the local ECS is stopping.
                    Phase::Provisioning(since)
                        if now.duration_since(since) >= self.config.provisioning
                            && !self.stopping.load(Ordering::SeqCst) =>
                    {
                        to_spawn.push(arn.clone());
                    }
                    Phase::Running if stopped => {
                        if let Some(c) = &task.control {
                            let _ = c.send(Signal::Term);
                        }
                        task.phase = Phase::Stopping(now);
                    }
                    Phase::Stopping(since)
                        if now.duration_since(since) >= task.info.stop_timeout =>
                    {
                        if let Some(c) = &task.control {
                            let _ = c.send(Signal::Kill);
                        }
                    }
                    _ => {}
                }
            }
        }
        for arn in to_spawn {
            let info = lock(&self.fleet).tasks.get(&arn).map(|t| t.info.clone());
            let Some(info) = info else { continue };
            match self.spawn(&info).await {
                Ok((control, pid, proxy)) => {
                    let mut fleet = lock(&self.fleet);
                    fleet.started += 1;
                    if let Some(task) = fleet.tasks.get_mut(&arn) {
                        task.control = Some(control);
                        task.pid = Some(pid);
                        task.proxy = Some(proxy);
                        task.phase = Phase::Running;
                        task.started_at = Some(now_rfc3339());
                        task.version += 1;
                        self.emit(task, "RUNNING", None, None);
                    }
                }
                Err(error) => {
                    warn!(task = %info.id, error = %format!("{error:#}"), "the task's process did not start");
                    // As ECS stops a task whose container cannot start.
                    if let Some(task) = lock(&self.fleet).tasks.get_mut(&arn) {
                        task.failed_to_start =
                            Some(format!("CannotStartContainerError: {error:#}"));
                    }
                    lock(&self.exited).insert(arn.clone(), (None, SystemTime::now()));
                }
            }
        }
        {
            let mut fleet = lock(&self.fleet);
            for (arn, code) in finished {
                let Some(mut task) = fleet.tasks.remove(&arn) else {
                    continue;
                };
                self.metadata.unregister(&task.info.id);
                lock(&self.exited).remove(&arn);
                task.proxy = None;
                let at = exited.get(&arn).map_or_else(SystemTime::now, |e| e.1);
                fleet.exits.push(Exit {
                    task_arn: arn.clone(),
                    session_id: task.info.env("SESSION_ID").map(str::to_owned),
                    code,
                    at,
                });
                task.version += 1;
                if let Some(reason) = task.stopped_by_ecs.clone() {
                    self.emit(&task, "STOPPED", code, Some(("UserInitiated", &reason)));
                    fleet.done.insert(arn);
                } else {
                    fleet.to_stop.insert(arn, Stopping { task, code });
                }
            }
        }
        // Exited processes: their tasks stopped in the emulator, then the event.
        let to_stop: Vec<(String, Option<String>)> = lock(&self.fleet)
            .to_stop
            .iter()
            .map(|(arn, s)| (arn.clone(), s.task.failed_to_start.clone()))
            .collect();
        for (arn, failed) in to_stop {
            let (code, reason) = match &failed {
                Some(why) => ("TaskFailedToStart", why.as_str()),
                None => (
                    "EssentialContainerExited",
                    "Essential container in task exited",
                ),
            };
            let stopped = self
                .ecs
                .stop_task()
                .cluster(&self.config.cluster)
                .task(&arn)
                .reason(reason)
                .send()
                .await;
            let gone = match &stopped {
                Ok(_) => true,
                // The emulator no longer knows the task (restarted, its cluster deleted):
                // nothing is left to stop.
                Err(e) => e.as_service_error().is_some_and(|e| {
                    e.is_client_exception()
                        || e.is_invalid_parameter_exception()
                        || e.is_cluster_not_found_exception()
                }),
            };
            if let Err(e) = &stopped {
                warn!(task = task_id(&arn), error = %aws_sdk_ecs::error::DisplayErrorContext(e), gone, "StopTask failed");
            }
            if gone {
                let mut fleet = lock(&self.fleet);
                if let Some(s) = fleet.to_stop.remove(&arn) {
                    self.emit(&s.task, "STOPPED", s.code, Some((code, reason)));
                    fleet.done.insert(arn);
                }
            }
        }
    }
}
