//! The printed table and the JSON file, from the same report.

use crate::*;

pub(crate) fn print_report(report: &Value) {
    let mut out = String::new();
    if let Some(w) = report.get("warm") {
        out += &format!(
            "warm pool: {}\n",
            serde_json::to_string_pretty(w).unwrap_or_default()
        );
    }
    if let Some(c) = report.get("call") {
        let ms = |v: &Value| {
            v.as_f64()
                .map_or_else(|| "n/a".to_owned(), |x| format!("{x:.2}"))
        };
        out += &format!(
            "call: {} round trips, {} listeners, {:.0}/s; own message back p50 {} ms, p95 {} ms; agent's answer p50 {} ms, p95 {} ms, p99 {} ms, max {} ms; server CPU {} µs per round trip\n",
            c["samples"],
            c["listeners"],
            c["round_trips_per_second"].as_f64().unwrap_or(0.0),
            ms(&c["echo"]["p50_ms"]),
            ms(&c["echo"]["p95_ms"]),
            ms(&c["answer"]["p50_ms"]),
            ms(&c["answer"]["p95_ms"]),
            ms(&c["answer"]["p99_ms"]),
            ms(&c["answer"]["max_ms"]),
            c["server_cpu_us_per_round_trip"]
                .as_f64()
                .map_or_else(|| "n/a".to_owned(), |x| format!("{x:.0}")),
        );
    }
    if let Some(l) = report.get("lifecycles") {
        out += &format!(
            "lifecycles: {} clients, {:.1} s: {} lifecycles, {:.0}/s; server CPU {} cores, client CPU {:.2} cores\n",
            l["clients"],
            l["seconds"].as_f64().unwrap_or(0.0),
            l["lifecycles"],
            l["lifecycles_per_second"].as_f64().unwrap_or(0.0),
            l["server_cpu_cores"]
                .as_f64()
                .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.2}")),
            l["client_cpu_cores"].as_f64().unwrap_or(0.0)
        );
        out += &format!(
            "  {:<26} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}\n",
            "endpoint", "count", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms"
        );
        for e in l["endpoints"].as_array().into_iter().flatten() {
            let f = |k: &str| e[k].as_f64().map_or("-".to_owned(), |v| format!("{v:.3}"));
            out += &format!(
                "  {:<26} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}\n",
                e["endpoint"].as_str().unwrap_or(""),
                e["count"],
                e["errors"],
                f("p50_ms"),
                f("p95_ms"),
                f("p99_ms"),
                f("max_ms")
            );
        }
    }
    if let Some(h) = report.get("held") {
        let mib = |k: &str| h[k].as_f64().unwrap_or(0.0) / 1048576.0;
        out += &format!(
            "held: {} sessions created in {:.2} s; RSS {:.1} MiB → {:.1} MiB held → {:.1} MiB after closing; {:.0} bytes/session\n",
            h["sessions"],
            h["create_seconds"].as_f64().unwrap_or(0.0),
            mib("rss_before_bytes"),
            mib("rss_held_bytes"),
            mib("rss_after_close_bytes"),
            h["bytes_per_session"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(k) = report.get("soak") {
        let a = &k["after_warmup"];
        let mib = |v: &Value| v.as_f64().unwrap_or(0.0) / 1048576.0;
        out += &format!(
            "soak: {}/s for {} min: {} lifecycles, {} failed; after {} min of warm-up RSS {:.1}–{:.1} MiB (slope {:.2} MiB/h), open fds {}–{} (slope {:.1}/h)\n",
            k["rate_per_second"],
            k["minutes"],
            k["lifecycles"],
            k["failed"],
            k["warmup_minutes"],
            mib(&a["rss_min_bytes"]),
            mib(&a["rss_max_bytes"]),
            mib(&a["rss_slope_bytes_per_hour"]),
            a["fds_min"],
            a["fds_max"],
            a["fds_slope_per_hour"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(c) = report.get("close") {
        out += &format!(
            "close (DELETE → 404): {} samples, p50 {:.3} ms, p95 {:.3} ms, max {:.3} ms\n",
            c["samples"],
            c["p50_ms"].as_f64().unwrap_or(0.0),
            c["p95_ms"].as_f64().unwrap_or(0.0),
            c["max_ms"].as_f64().unwrap_or(0.0)
        );
        let up = &c["start_to_running"];
        out += &format!(
            "start (POST → running): p50 {:.3} ms, p95 {:.3} ms, max {:.3} ms\n",
            up["p50_ms"].as_f64().unwrap_or(0.0),
            up["p95_ms"].as_f64().unwrap_or(0.0),
            up["max_ms"].as_f64().unwrap_or(0.0)
        );
        if let Some(ex) = c.get("close_to_exit") {
            out += &format!(
                "close (DELETE → agent process exit): {} samples, p50 {:.3} ms, p95 {:.3} ms, max {:.3} ms\n",
                ex["samples"],
                ex["p50_ms"].as_f64().unwrap_or(0.0),
                ex["p95_ms"].as_f64().unwrap_or(0.0),
                ex["max_ms"].as_f64().unwrap_or(0.0)
            );
        }
    }
    for run in report["task"]["runs"].as_array().into_iter().flatten() {
        let ms = |part: &str, k: &str| run[part][k].as_f64().unwrap_or(0.0);
        out += &format!(
            "task, interval {} s, {} processes: admission → running p50 {:.0} ms, p95 {:.0} ms; spawn → running p50 {:.0} ms; idle RSS {:.1} MiB; close → exit p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms\n",
            run["interval_seconds"],
            run["tasks"],
            ms("admit_to_running", "p50_ms"),
            ms("admit_to_running", "p95_ms"),
            ms("spawn_to_running", "p50_ms"),
            run["idle_rss_bytes_median"].as_f64().unwrap_or(0.0) / 1048576.0,
            ms("close_to_exit", "p50_ms"),
            ms("close_to_exit", "p95_ms"),
            ms("close_to_exit", "max_ms"),
        );
    }
    use std::io::Write;
    let _ = std::io::stdout().write_all(out.as_bytes());
}

pub(crate) fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines().find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
    });
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "os": std::env::consts::OS,
    })
}

/// Prints the report and writes it as JSON to `json`, if given.
pub(crate) fn finish(report: &Value, json: Option<&std::path::Path>) -> anyhow::Result<()> {
    print_report(report);
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(report)?)
            .with_context(|| format!("could not write {}", path.display()))?;
    }
    Ok(())
}
