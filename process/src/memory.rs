//! The memory limit's sampler: one task for the whole process reads `/proc` once per period
//! and sums the resident set of every process by its process group. Each child leads its own
//! group, so a group's total is the RSS of the child's whole process tree (a descendant that
//! leaves the group with `setsid`/`setpgid` leaves the count too).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// RSS in bytes by process group id, as of the last sample.
pub type Sample = Arc<HashMap<i32, u64>>;

/// A running sampler; dropping every clone of it stops the task at its next period.
#[derive(Debug, Clone)]
pub struct MemorySampler {
    rx: watch::Receiver<Sample>,
}

impl MemorySampler {
    /// Starts sampling every `period` (on the current tokio runtime).
    pub fn start(period: Duration) -> Self {
        let (tx, rx) = watch::channel(Sample::default());
        tokio::spawn(async move {
            let page = page_size();
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let sample = tokio::task::spawn_blocking(move || by_group(page))
                    .await
                    .unwrap_or_default();
                if tx.send(Arc::new(sample)).is_err() {
                    return;
                }
            }
        });
        Self { rx }
    }

    /// A receiver notified at every sample.
    pub fn subscribe(&self) -> watch::Receiver<Sample> {
        self.rx.clone()
    }
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(4096)
}

/// RSS in bytes by process group, from `/proc/<pid>/stat` of every process.
fn by_group(page: u64) -> HashMap<i32, u64> {
    let mut groups = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return groups;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // A process may exit between the listing and the read: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((group, pages)) = parse_stat(&stat) {
            *groups.entry(group).or_default() += pages * page;
        }
    }
    groups
}

/// (process group, RSS in pages) from one `/proc/<pid>/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so the fields are counted from its last `)`.
fn parse_stat(stat: &str) -> Option<(i32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), pgrp (5), ..., rss (24), 1-based in proc(5).
    let group = fields.get(2)?.parse().ok()?;
    let pages = fields.get(21)?.parse().ok()?;
    Some((group, pages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_past_odd_command_names() {
        let line = "4242 (my (odd) agent) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 3 0 \
                    1234 56789012 777 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(line), Some((4242, 777)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_counted_in_its_group() {
        let groups = by_group(page_size());
        let own = nix::unistd::getpgrp().as_raw();
        assert!(groups.get(&own).copied().unwrap_or(0) > 0, "{groups:?}");
    }
}
