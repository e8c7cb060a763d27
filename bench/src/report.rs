//! The report: one typed value per scenario, printed as a table and written as JSON from the
//! same fields (so the two cannot drift).

use crate::*;

/// The machine the figures come from.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Machine {
    pub(crate) cores: usize,
    pub(crate) cpu: Option<String>,
    pub(crate) os: &'static str,
}

/// Everything one run of the bench measured.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Report {
    pub(crate) machine: Machine,
    pub(crate) server: String,
    pub(crate) server_args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) warm: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) call: Option<call::CallReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) lifecycles: Option<LifecyclesReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) held: Option<HeldReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) soak: Option<SoakReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) close: Option<CloseReport>,
    #[cfg(feature = "aws")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) task: Option<task::TaskReport>,
}

impl Report {
    pub(crate) fn new(server: String, server_args: Vec<String>) -> Self {
        Self {
            machine: machine(),
            server,
            server_args,
            warm: None,
            call: None,
            lifecycles: None,
            held: None,
            soak: None,
            close: None,
            #[cfg(feature = "aws")]
            task: None,
        }
    }

    fn print(&self) {
        let mut out = String::new();
        if let Some(w) = &self.warm {
            // The warm pool's report is printed whole.
            out += &format!(
                "warm pool: {}\n",
                serde_json::to_string_pretty(w).unwrap_or_default()
            );
        }
        if let Some(c) = &self.call {
            c.print(&mut out);
        }
        if let Some(l) = &self.lifecycles {
            l.print(&mut out);
        }
        if let Some(h) = &self.held {
            h.print(&mut out);
        }
        if let Some(k) = &self.soak {
            k.print(&mut out);
        }
        if let Some(c) = &self.close {
            c.print(&mut out);
        }
        #[cfg(feature = "aws")]
        if let Some(t) = &self.task {
            t.print(&mut out);
        }
        use std::io::Write;
        let _ = std::io::stdout().write_all(out.as_bytes());
    }
}

pub(crate) fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines().find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
    });
    Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu,
        os: std::env::consts::OS,
    }
}

/// Prints the report and writes it as JSON to `json`, if given.
pub(crate) fn finish(report: &Report, json: Option<&std::path::Path>) -> anyhow::Result<()> {
    report.print();
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(report)?)
            .with_context(|| format!("could not write {}", path.display()))?;
    }
    Ok(())
}
