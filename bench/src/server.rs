//! The server under measurement: started on a free port (or `--url`), its CPU time and RSS from `/proc`, the agent processes it runs.

use crate::*;

pub(crate) struct Server {
    /// The process the bench started; `None` for `--url`.
    pub(crate) child: Option<Child>,
    pub(crate) base: String,
    pub(crate) pid: Option<u32>,
}

impl Server {
    pub(crate) async fn start(binary: &PathBuf, extra: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .args([
                "serve",
                "--port",
                "0",
                "--no-splash",
                "--log-format",
                "json",
            ])
            .args(extra)
            // Startup lines only: per-session logs would cost the server CPU under load.
            .env("RUST_LOG", "warn,switchboard_runner=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("could not start {}", binary.display()))?;
        let pid = child.id().context("server exited at once")?;
        let mut lines = BufReader::new(child.stderr.take().context("no stderr")?).lines();
        let address = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    return Ok::<_, anyhow::Error>(
                        v["address"].as_str().unwrap_or_default().to_owned(),
                    );
                }
            }
            bail!("the server exited before listening")
        })
        .await
        .context("the server did not start listening within 30 s")??;
        // Keep draining its logs so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let server = Self {
            child: Some(child),
            base: format!("http://{address}"),
            pid: Some(pid),
        };
        server.wait_ready("/ready").await?;
        Ok(server)
    }

    /// A server someone else started (`--url`); its process is not observed.
    pub(crate) async fn external(url: &str) -> anyhow::Result<Self> {
        let server = Self {
            child: None,
            base: url.trim_end_matches('/').to_owned(),
            pid: None,
        };
        server.wait_ready("/health").await?;
        Ok(server)
    }

    pub(crate) async fn wait_ready(&self, path: &str) -> anyhow::Result<()> {
        let server = self;
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(30);
        while call(&client, &server.base, Method::GET, path, None)
            .await
            .ok()
            .map(|r| r.0)
            != Some(StatusCode::OK)
        {
            if Instant::now() > deadline {
                bail!("{}{path} did not answer 200 within 30 s", server.base);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub(crate) fn pid(&self) -> anyhow::Result<u32> {
        self.pid
            .context("this needs a server the bench starts itself (not --url): it reads /proc")
    }

    pub(crate) fn rss_bytes(&self) -> anyhow::Result<u64> {
        rss_bytes_of(self.pid()?)
    }

    pub(crate) fn open_fds(&self) -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.pid()?))?.count())
    }

    /// The server's CPU seconds so far; NaN (reported as null) for `--url`.
    pub(crate) fn cpu_seconds(&self) -> anyhow::Result<f64> {
        match self.pid {
            Some(pid) => cpu_seconds_of(&format!("/proc/{pid}/stat")),
            None => Ok(f64::NAN),
        }
    }

    pub(crate) async fn stop(self) {
        let (Some(mut child), Some(pid)) = (self.child, self.pid) else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// A process's resident set size, from `/proc/<pid>/status`.
pub(crate) fn rss_bytes_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

pub(crate) fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

pub(crate) fn cpu_seconds_of(stat_path: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(stat_path)?;
    let after = stat.rsplit_once(')').context("bad stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    Ok((utime + stime) / clock_ticks())
}

/// The live processes whose environment names `SESSION_ID=<id>` (from /proc).
pub(crate) fn agent_processes(id: &str) -> Vec<u32> {
    let needle = format!("SESSION_ID={id}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// Whether a process runs (not gone, not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X') | None
        )
    })
}
