//! Every option and environment fallback, parsed and applied: flag > env > code > default.
//! Each case runs this test binary again as a child (`child_runner`) with a real environment,
//! so nothing calls `set_var`.

use std::process::Command;

use serde_json::{Value, json};
use switchboard_runner::Runner;

use crate::support::gated_launcher;

const ENV_VARS: [&str; 15] = [
    "SWITCHBOARD_MAX_CONCURRENT_SESSIONS",
    "SWITCHBOARD_MAX_SESSIONS_PER_CALL",
    "SWITCHBOARD_MAX_SESSION_DURATION_SECONDS",
    "SWITCHBOARD_AGENT_IDLE_TIMEOUT",
    "SWITCHBOARD_AGENT_JOIN_TIMEOUT",
    "SWITCHBOARD_SESSION_RETENTION_SECONDS",
    "SWITCHBOARD_MAINTENANCE_INTERVAL",
    "SWITCHBOARD_SESSION_LEASE_SECONDS",
    "SWITCHBOARD_LOG_FORMAT",
    "AUTH_MODE",
    "AUTH_JWT_ALGORITHM",
    "AUTH_JWT_KEY",
    "AUTH_JWT_KEY_FILE",
    "AUTH_JWT_ISSUER",
    "AUTH_JWT_AUDIENCE",
];

/// The child: a launcher configured in code (max_concurrent_sessions 5, agent_idle_timeout
/// 10), run with the arguments in `RUNNER_CHILD_ARGS`. Not a test of its own: run without
/// them (`cargo test -- --ignored`) it fails, rather than pass having run nothing.
#[test]
#[ignore = "the child process of the tests below, which set RUNNER_CHILD_ARGS"]
fn child_runner() {
    let args = std::env::var("RUNNER_CHILD_ARGS").expect(
        "cli::child_runner is the child process of the cli tests, which set RUNNER_CHILD_ARGS; alone it has nothing to run",
    );
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let builder = gated_launcher(Default::default())
        .max_concurrent_sessions(5)
        .agent_idle_timeout(10.0);
    let code = Runner::new(builder).cli_code_from(std::iter::once("agent".to_owned()).chain(args));
    std::process::exit(i32::from(code));
}

struct Child {
    code: i32,
    config: Option<Value>,
    stderr: String,
}

fn child(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "cli::child_runner",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for var in ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.env_remove("RUST_LOG");
    cmd.env("RUNNER_CHILD_ARGS", serde_json::to_string(args).unwrap());
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // libtest prints `test cli::child_runner ... ` before the child's own output.
    let config = stdout
        .lines()
        .find_map(|l| l.find("{\"").map(|i| &l[i..]))
        .map(|l| serde_json::from_str(l).unwrap());
    Child {
        code: out.status.code().unwrap_or(-1),
        config,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn limits(args: &[&str], env: &[(&str, &str)]) -> Value {
    let c = child(args, env);
    assert_eq!(c.code, 0, "{}", c.stderr);
    c.config.expect("printed config")["limits"].clone()
}

#[test]
fn code_values_apply_over_the_defaults() {
    let l = limits(&["serve", "--print-config"], &[]);
    assert_eq!(l["max_concurrent_sessions"], 5);
    assert_eq!(l["agent_idle_timeout"], 10.0);
    assert_eq!(l["max_sessions_per_call"], Value::Null);
    assert_eq!(l["maintenance_interval"], 5.0);
    assert_eq!(l["session_lease_seconds"], 30.0);
}

#[test]
fn every_environment_variable_applies_over_code() {
    let env = [
        ("SWITCHBOARD_MAX_CONCURRENT_SESSIONS", "8"),
        ("SWITCHBOARD_MAX_SESSIONS_PER_CALL", "2"),
        ("SWITCHBOARD_MAX_SESSION_DURATION_SECONDS", "3600"),
        ("SWITCHBOARD_AGENT_IDLE_TIMEOUT", "0"),
        ("SWITCHBOARD_AGENT_JOIN_TIMEOUT", "90"),
        ("SWITCHBOARD_MAINTENANCE_INTERVAL", "2.5"),
        ("SWITCHBOARD_SESSION_LEASE_SECONDS", "45"),
        ("SWITCHBOARD_SESSION_RETENTION_SECONDS", "3600"),
    ];
    let l = limits(&["serve", "--print-config"], &env);
    assert_eq!(
        l,
        json!({
            "max_concurrent_sessions": 8,
            "max_sessions_per_call": 2,
            "max_session_duration_seconds": 3600.0,
            "agent_idle_timeout": 0.0,
            "agent_join_timeout": 90.0,
            "maintenance_interval": 2.5,
            "session_lease_seconds": 45.0,
            "session_retention": 3600.0,
        })
    );
    // The same through `run`.
    let l = limits(&["run", "--print-config"], &env);
    assert_eq!(l["max_sessions_per_call"], 2);
}

#[test]
fn every_flag_applies_over_the_environment() {
    let env = [
        ("SWITCHBOARD_MAX_CONCURRENT_SESSIONS", "8"),
        ("SWITCHBOARD_AGENT_IDLE_TIMEOUT", "30"),
        ("SWITCHBOARD_AGENT_JOIN_TIMEOUT", "30"),
    ];
    let l = limits(
        &[
            "serve",
            "--print-config",
            "--agent-join-timeout",
            "0",
            "--max-concurrent-sessions",
            "9",
            "--max-sessions-per-call",
            "1",
            "--max-session-duration-seconds",
            "60",
            "--agent-idle-timeout",
            "7.5",
            "--maintenance-interval",
            "1",
            "--session-lease-seconds",
            "3",
        ],
        &env,
    );
    assert_eq!(l["max_concurrent_sessions"], 9);
    assert_eq!(l["max_sessions_per_call"], 1);
    assert_eq!(l["max_session_duration_seconds"], 60.0);
    assert_eq!(l["agent_idle_timeout"], 7.5);
    assert_eq!(
        l["agent_join_timeout"], 0.0,
        "0 turns the join deadline off"
    );
    assert_eq!(l["maintenance_interval"], 1.0);
    assert_eq!(l["session_lease_seconds"], 3.0);
}

#[test]
fn serve_options_are_parsed() {
    let c = child(
        &[
            "serve",
            "--print-config",
            "--host",
            "0.0.0.0",
            "--port",
            "9001",
            "--agents-log-level",
            "debug",
            "--http-log-level",
            "WARNING",
            "--no-splash",
        ],
        &[("SWITCHBOARD_LOG_FORMAT", "json")],
    );
    assert_eq!(c.code, 0, "{}", c.stderr);
    let config = c.config.unwrap();
    assert_eq!(config["host"], "0.0.0.0");
    assert_eq!(config["port"], 9001);
    assert_eq!(config["agents_log_level"], "debug");
    assert_eq!(config["http_log_level"], "warn");
    assert_eq!(config["log_format"], "json");
    let defaults = child(&["serve", "--print-config"], &[]).config.unwrap();
    assert_eq!(
        (defaults["host"].clone(), defaults["port"].clone()),
        (json!("127.0.0.1"), json!(8000))
    );
    assert_eq!(defaults["log_format"], "text");
    let debug = child(&["serve", "--print-config", "--debug"], &[])
        .config
        .unwrap();
    assert_eq!(debug["http_log_level"], "debug");
}

#[test]
fn run_options_are_parsed_and_the_call_id_is_generated_when_absent() {
    let file = std::env::temp_dir().join(format!("switchboard-video-{}.mp4", std::process::id()));
    std::fs::write(&file, b"not really a video").unwrap();
    let c = child(
        &[
            "run",
            "--print-config",
            "--call-type",
            "livestream",
            "--call-id",
            "my-call",
            "--no-demo",
            "--log-level",
            "error",
            "--video-track-override",
            file.to_str().unwrap(),
            "--no-splash",
        ],
        &[],
    );
    assert_eq!(c.code, 0, "{}", c.stderr);
    let config = c.config.unwrap();
    assert_eq!(config["call_type"], "livestream");
    assert_eq!(config["call_id"], "my-call");
    assert_eq!(config["no_demo"], true);
    assert_eq!(config["log_level"], "error");
    assert_eq!(
        config["video_track_override"],
        std::fs::canonicalize(&file).unwrap().to_str().unwrap()
    );
    let a = child(&["run", "--print-config"], &[]).config.unwrap();
    let b = child(&["run", "--print-config"], &[]).config.unwrap();
    assert!(!a["call_id"].as_str().unwrap().is_empty());
    assert_ne!(a["call_id"], b["call_id"], "a new call id each time");
    assert_eq!(a["call_type"], "default");
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_missing_video_track_override_is_a_clear_error() {
    let c = child(
        &["run", "--video-track-override", "/definitely/not/here.mp4"],
        &[],
    );
    assert_eq!(c.code, 2);
    assert!(
        c.stderr
            .contains("File '/definitely/not/here.mp4' does not exist."),
        "{}",
        c.stderr
    );
    let dir = std::env::temp_dir();
    let c = child(
        &["run", "--video-track-override", dir.to_str().unwrap()],
        &[],
    );
    assert_eq!(c.code, 2);
    assert!(c.stderr.contains("is a directory"), "{}", c.stderr);
}

#[test]
fn invalid_options_are_refused_with_the_anchors_messages() {
    let c = child(
        &["serve", "--print-config"],
        &[("SWITCHBOARD_MAX_CONCURRENT_SESSIONS", "0")],
    );
    assert_eq!(c.code, 2);
    assert!(
        c.stderr
            .contains("max_concurrent_sessions must be > 0 or None"),
        "{}",
        c.stderr
    );
    let c = child(
        &[
            "serve",
            "--print-config",
            "--maintenance-interval",
            "10",
            "--session-lease-seconds",
            "20",
        ],
        &[],
    );
    assert_eq!(c.code, 2);
    assert!(
        c.stderr
            .contains("session_lease_seconds must be >= 3 * maintenance_interval"),
        "{}",
        c.stderr
    );
    let c = child(
        &["serve", "--print-config"],
        &[("SWITCHBOARD_AGENT_IDLE_TIMEOUT", "soon")],
    );
    assert_eq!(c.code, 2);
    assert!(
        c.stderr
            .contains("SWITCHBOARD_AGENT_IDLE_TIMEOUT=\"soon\" is invalid"),
        "the message names the variable and its value: {}",
        c.stderr
    );
    let c = child(&["serve", "--agents-log-level", "LOUD"], &[]);
    assert_eq!(c.code, 2);
    let c = child(&["run", "--print-config", "--call-id", "a/b"], &[]);
    assert_eq!(c.code, 2);
    assert!(
        c.stderr.contains("call_id must not contain '/'"),
        "{}",
        c.stderr
    );
}

/// `serve` reads `AUTH_MODE` and the `AUTH_JWT_*` variables once at start-up: `none` (or
/// unset) allows all, `jwt` needs a usable key, and a bad setting stops it with exit code 2
/// and a message that never shows the key.
#[test]
fn serve_reads_the_auth_mode_and_refuses_an_unusable_key() {
    let mode = |env: &[(&str, &str)]| {
        let c = child(&["serve", "--print-config"], env);
        assert_eq!(c.code, 0, "{}", c.stderr);
        c.config.expect("printed config")["auth_mode"].clone()
    };
    assert_eq!(mode(&[]), json!("none"));
    assert_eq!(mode(&[("AUTH_MODE", "none")]), json!("none"));
    assert_eq!(
        mode(&[
            ("AUTH_MODE", "jwt"),
            ("AUTH_JWT_KEY", "a local hs256 secret of thirty-two bytes+"),
        ]),
        json!("jwt")
    );
    for (env, says) in [
        (vec![("AUTH_MODE", "jwt")], "AUTH_JWT_KEY"),
        (vec![("AUTH_MODE", "open")], "AUTH_MODE"),
        (
            vec![("AUTH_MODE", "jwt"), ("AUTH_JWT_KEY", "short-secret")],
            "at least 32 bytes",
        ),
    ] {
        let c = child(&["serve", "--print-config"], &env);
        assert_eq!(c.code, 2, "{env:?}: {}", c.stderr);
        assert!(c.stderr.contains(says), "{env:?}: {}", c.stderr);
        assert!(!c.stderr.contains("short-secret"), "the key is never shown");
    }
}
