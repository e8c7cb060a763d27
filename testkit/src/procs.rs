//! The live processes of this machine, read from /proc (Linux): what really runs, whatever
//! any bookkeeping says. Zombies and processes whose environment cannot be read are left out.

use std::collections::HashMap;
use std::path::Path;

/// One live process.
#[derive(Debug, Clone)]
pub struct Process {
    pub pid: u32,
    /// Its environment.
    pub env: HashMap<String, String>,
}

impl Process {
    /// Its command line, arguments separated by spaces.
    pub fn cmdline(&self) -> String {
        std::fs::read(format!("/proc/{}/cmdline", self.pid))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default()
    }
}

/// The live processes, only those running `exe` when given (checked first: cheap).
pub fn live(exe: Option<&Path>) -> Vec<Process> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let base = entry.path();
        if let Some(exe) = exe
            && std::fs::read_link(base.join("exe")).ok().as_deref() != Some(exe)
        {
            continue;
        }
        if !alive(pid) {
            continue;
        }
        let Ok(environ) = std::fs::read(base.join("environ")) else {
            continue;
        };
        let env = environ
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        out.push(Process { pid, env });
    }
    out
}

/// The live processes whose environment has `key=value`.
pub fn with_env(key: &str, value: &str) -> Vec<Process> {
    live(None)
        .into_iter()
        .filter(|p| p.env.get(key).map(String::as_str) == Some(value))
        .collect()
}

/// Whether `pid` runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X') | None
        )
    })
}
