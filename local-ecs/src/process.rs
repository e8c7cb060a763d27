//! A task's agent process: its command and environment, its metadata endpoint, its log
//! file, and its exit.

use super::*;

impl Inner {
    /// Starts a task's process; a waiter records its exit the moment it happens and
    /// forwards signals to its process group.
    pub(crate) async fn spawn(
        self: &Arc<Self>,
        info: &Arc<TaskInfo>,
    ) -> anyhow::Result<(mpsc::UnboundedSender<Signal>, u32, Proxy)> {
        let target = self
            .config
            .endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let proxy = Proxy::start(&target).await.context("the task's proxy")?;
        if self.all_cut.load(Ordering::SeqCst) {
            proxy.cut();
        }
        let metadata_uri = self.metadata.register(info);
        let log_path = self.config.logs.join(format!("{}.log", info.id));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        {
            use std::io::Write;
            let session = info.env("SESSION_ID").unwrap_or("(none yet)");
            writeln!(
                log,
                "local-ecs: task {} of session {session}, started {}",
                info.arn,
                now_rfc3339()
            )
            .context("writing the task's log")?;
        }
        let stderr = log.try_clone().context("the task's log")?;
        let mut command = Command::new(&self.config.agent);
        command
            .args(&info.command)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.config.env.iter().cloned())
            .envs(info.definition_env.iter().cloned())
            .envs(info.override_env.iter().cloned())
            .env("AWS_ENDPOINT_URL", &proxy.url)
            .env("AWS_REGION", &info.region)
            .env("AWS_DEFAULT_REGION", &info.region)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("ECS_CONTAINER_METADATA_URI_V4", &metadata_uri)
            .env("AWS_EXECUTION_ENV", "AWS_ECS_FARGATE")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            // Its own process group: a Ctrl-C in the terminal reaches the local ECS, which
            // stops the tasks as ECS does, not the tasks directly.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.config.agent.display()))?;
        let pid = child.id().context("the process's id")?;
        let (control, mut signals) = mpsc::unbounded_channel();
        let (arn, inner) = (info.arn.clone(), Arc::downgrade(self));
        tokio::spawn(async move {
            let group = format!("-{pid}");
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    Some(signal) = signals.recv() => {
                        let name = match signal {
                            Signal::Term => "TERM",
                            Signal::Kill => "KILL",
                        };
                        let sent = Command::new("kill")
                            .args(["-s", name, "--", &group])
                            .stderr(Stdio::null())
                            .status()
                            .await;
                        if let Err(error) = &sent {
                            warn!(%error, "`kill` did not run; SIGKILL to the agent alone");
                        }
                        if sent.is_err() || matches!(signal, Signal::Kill) {
                            let _ = child.start_kill();
                        }
                    }
                }
            };
            let at = SystemTime::now();
            let code = status
                .ok()
                .and_then(|s| s.code().or_else(|| s.signal().map(|n| 128 + n)));
            // Whatever the agent left in its group goes with it, as with its container.
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &group])
                .stderr(Stdio::null())
                .status()
                .await;
            if let Some(inner) = inner.upgrade() {
                lock(&inner.exited).insert(arn, (code, at));
            }
            drop(signals);
        });
        Ok((control, pid, proxy))
    }
}
