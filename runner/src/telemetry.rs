//! Structured logs. Text for humans by default; JSON (one object per line, for log shippers
//! and CloudWatch) with `--log-format json` or `SWITCHBOARD_LOG_FORMAT=json`. `RUST_LOG`, when
//! set, overrides the levels chosen on the command line.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// The anchor's level names (case-insensitive on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum LogLevel {
    /// Everything useful for debugging.
    Debug,
    /// Lifecycle events (the default).
    Info,
    /// Problems that were handled.
    Warning,
    /// Failures.
    Error,
    /// Failures only (same as ERROR).
    Critical,
}

impl LogLevel {
    /// The `tracing` directive.
    pub fn directive(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warning => "warn",
            Self::Error | Self::Critical => "error",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The filter: agents (everything) at `agents`, the HTTP stack at `http`.
pub fn filter(agents: LogLevel, http: LogLevel) -> String {
    let (a, h) = (agents.directive(), http.directive());
    format!("{a},switchboard_api={h},tower_http={h},axum={h},hyper=warn,hyper_util=warn")
}

/// Installs the global subscriber (once; later calls are no-ops, e.g. in tests).
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
