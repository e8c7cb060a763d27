//! The launcher options (the anchor's), with the anchor's names, defaults and messages.

use std::time::Duration;

use crate::Error;

/// Default `agent_idle_timeout` (seconds).
pub const DEFAULT_AGENT_IDLE_TIMEOUT: f64 = 60.0;
/// Default `agent_join_timeout` (seconds).
pub const DEFAULT_AGENT_JOIN_TIMEOUT: f64 = 60.0;
/// Default `maintenance_interval` (seconds).
pub const DEFAULT_MAINTENANCE_INTERVAL: f64 = 5.0;
/// The lease floor (seconds) when the interval does not demand more.
pub const DEFAULT_SESSION_LEASE: f64 = 30.0;
/// Default `session_retention` (seconds): 7 days.
pub const DEFAULT_SESSION_RETENTION: f64 = 7.0 * 24.0 * 3600.0;

/// The options as a user writes them (numbers, possibly invalid), validated by
/// [`Limits::new`]. `Default` gives the anchor's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitOptions {
    /// Maximum live sessions across all calls and nodes; `None` = unlimited.
    pub max_concurrent_sessions: Option<i64>,
    /// Maximum live sessions per call; `None` = unlimited.
    pub max_sessions_per_call: Option<i64>,
    /// Maximum session duration in seconds (from join); `None` = unlimited.
    pub max_session_duration_seconds: Option<f64>,
    /// Seconds the agent may stay alone in the call; `0` disables.
    pub agent_idle_timeout: f64,
    /// Seconds from `create_agent` (in the agent's own process) until the agent must have
    /// joined its call, or the session ends `start_failed`; `0` disables.
    pub agent_join_timeout: f64,
    /// Seconds between heartbeats, metrics flushes and sweeps.
    pub maintenance_interval: f64,
    /// Lease length in seconds; `None` = `max(30, 3 × maintenance_interval)`.
    pub session_lease_seconds: Option<f64>,
    /// Seconds an ended session stays readable in lists.
    pub session_retention: f64,
}

impl Default for LimitOptions {
    fn default() -> Self {
        Self {
            max_concurrent_sessions: None,
            max_sessions_per_call: None,
            max_session_duration_seconds: None,
            agent_idle_timeout: DEFAULT_AGENT_IDLE_TIMEOUT,
            agent_join_timeout: DEFAULT_AGENT_JOIN_TIMEOUT,
            maintenance_interval: DEFAULT_MAINTENANCE_INTERVAL,
            session_lease_seconds: None,
            session_retention: DEFAULT_SESSION_RETENTION,
        }
    }
}

/// Validated launcher options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_concurrent_sessions: Option<u32>,
    max_sessions_per_call: Option<u32>,
    max_session_duration: Option<Duration>,
    agent_idle_timeout: Option<Duration>,
    agent_join_timeout: Option<Duration>,
    maintenance_interval: Duration,
    session_lease: Duration,
    session_retention: Duration,
}

fn seconds(name: &str, value: f64, message: &str) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|_| value.is_finite())
        .ok_or_else(|| Error::Invalid(format!("{name} {message}")))
}

fn count(name: &str, value: Option<i64>) -> Result<Option<u32>, Error> {
    value
        .map(|v| {
            u32::try_from(v)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| Error::Invalid(format!("{name} must be > 0 or None")))
        })
        .transpose()
}

impl Limits {
    /// Validates `options`, refusing invalid values with the anchor's messages.
    pub fn new(options: LimitOptions) -> Result<Self, Error> {
        let max_concurrent_sessions =
            count("max_concurrent_sessions", options.max_concurrent_sessions)?;
        let max_sessions_per_call = count("max_sessions_per_call", options.max_sessions_per_call)?;
        let max_session_duration = options
            .max_session_duration_seconds
            .map(|v| {
                if v > 0.0 {
                    seconds("max_session_duration_seconds", v, "must be > 0 or None")
                } else {
                    Err(Error::Invalid(
                        "max_session_duration_seconds must be > 0 or None".into(),
                    ))
                }
            })
            .transpose()?;
        if options.agent_idle_timeout.is_nan() || options.agent_idle_timeout < 0.0 {
            return Err(Error::Invalid("agent_idle_timeout must be >= 0".into()));
        }
        let idle = seconds(
            "agent_idle_timeout",
            options.agent_idle_timeout,
            "must be >= 0",
        )?;
        if options.agent_join_timeout.is_nan() || options.agent_join_timeout < 0.0 {
            return Err(Error::Invalid("agent_join_timeout must be >= 0".into()));
        }
        let join = seconds(
            "agent_join_timeout",
            options.agent_join_timeout,
            "must be >= 0",
        )?;
        if options.maintenance_interval.is_nan() || options.maintenance_interval <= 0.0 {
            return Err(Error::Invalid("maintenance_interval must be > 0".into()));
        }
        let interval = seconds(
            "maintenance_interval",
            options.maintenance_interval,
            "must be > 0",
        )?;
        let floor = interval * 3;
        let session_lease = match options.session_lease_seconds {
            None => floor.max(Duration::from_secs_f64(DEFAULT_SESSION_LEASE)),
            Some(v) => {
                let lease = if v > 0.0 {
                    seconds("session_lease_seconds", v, "must be > 0")?
                } else {
                    return Err(Error::Invalid("session_lease_seconds must be > 0".into()));
                };
                if lease < floor {
                    return Err(Error::Invalid(
                        "session_lease_seconds must be >= 3 * maintenance_interval".into(),
                    ));
                }
                lease
            }
        };
        if options.session_retention.is_nan() || options.session_retention <= 0.0 {
            return Err(Error::Invalid("session_retention must be > 0".into()));
        }
        let session_retention = seconds(
            "session_retention",
            options.session_retention,
            "must be > 0",
        )?;
        Ok(Self {
            max_concurrent_sessions,
            max_sessions_per_call,
            max_session_duration,
            agent_idle_timeout: (!idle.is_zero()).then_some(idle),
            agent_join_timeout: (!join.is_zero()).then_some(join),
            maintenance_interval: interval,
            session_lease,
            session_retention,
        })
    }

    /// Maximum live sessions across all calls.
    pub fn max_concurrent_sessions(&self) -> Option<u32> {
        self.max_concurrent_sessions
    }
    /// Maximum live sessions per call.
    pub fn max_sessions_per_call(&self) -> Option<u32> {
        self.max_sessions_per_call
    }
    /// Maximum duration from join.
    pub fn max_session_duration(&self) -> Option<Duration> {
        self.max_session_duration
    }
    /// Idle timeout; `None` when disabled (configured as 0).
    pub fn agent_idle_timeout(&self) -> Option<Duration> {
        self.agent_idle_timeout
    }
    /// Join deadline from `create_agent`; `None` when disabled (configured as 0).
    pub fn agent_join_timeout(&self) -> Option<Duration> {
        self.agent_join_timeout
    }
    /// Heartbeat, flush and sweep interval.
    pub fn maintenance_interval(&self) -> Duration {
        self.maintenance_interval
    }
    /// Lease length (≥ 3 intervals).
    pub fn session_lease(&self) -> Duration {
        self.session_lease
    }
    /// How long ended sessions stay readable.
    pub fn session_retention(&self) -> Duration {
        self.session_retention
    }
}

/// The environment variables that carry the launcher options (the Runner's flags fall back
/// to them; `EcsLauncher` passes the supervisor settings to each task through them).
pub mod env {
    /// [`super::LimitOptions::max_concurrent_sessions`].
    pub const MAX_CONCURRENT_SESSIONS: &str = "SWITCHBOARD_MAX_CONCURRENT_SESSIONS";
    /// [`super::LimitOptions::max_sessions_per_call`].
    pub const MAX_SESSIONS_PER_CALL: &str = "SWITCHBOARD_MAX_SESSIONS_PER_CALL";
    /// [`super::LimitOptions::max_session_duration_seconds`].
    pub const MAX_SESSION_DURATION_SECONDS: &str = "SWITCHBOARD_MAX_SESSION_DURATION_SECONDS";
    /// [`super::LimitOptions::agent_idle_timeout`].
    pub const AGENT_IDLE_TIMEOUT: &str = "SWITCHBOARD_AGENT_IDLE_TIMEOUT";
    /// [`super::LimitOptions::agent_join_timeout`].
    pub const AGENT_JOIN_TIMEOUT: &str = "SWITCHBOARD_AGENT_JOIN_TIMEOUT";
    /// [`super::LimitOptions::maintenance_interval`].
    pub const MAINTENANCE_INTERVAL: &str = "SWITCHBOARD_MAINTENANCE_INTERVAL";
    /// [`super::LimitOptions::session_lease_seconds`].
    pub const SESSION_LEASE_SECONDS: &str = "SWITCHBOARD_SESSION_LEASE_SECONDS";
    /// [`super::LimitOptions::session_retention`].
    pub const SESSION_RETENTION_SECONDS: &str = "SWITCHBOARD_SESSION_RETENTION_SECONDS";
}

impl Limits {
    /// The settings a remote agent's supervisor needs (not the admission limits, which the
    /// API enforces), as environment variables that parse back to the same values.
    pub fn supervisor_env(&self) -> Vec<(&'static str, String)> {
        let secs = |d: Duration| d.as_secs_f64().to_string();
        let mut vars = vec![
            (
                env::AGENT_IDLE_TIMEOUT,
                secs(self.agent_idle_timeout.unwrap_or(Duration::ZERO)),
            ),
            (
                env::AGENT_JOIN_TIMEOUT,
                secs(self.agent_join_timeout.unwrap_or(Duration::ZERO)),
            ),
            (env::MAINTENANCE_INTERVAL, secs(self.maintenance_interval)),
            (env::SESSION_LEASE_SECONDS, secs(self.session_lease)),
            (env::SESSION_RETENTION_SECONDS, secs(self.session_retention)),
        ];
        if let Some(max) = self.max_session_duration {
            vars.push((env::MAX_SESSION_DURATION_SECONDS, secs(max)));
        }
        vars
    }
}

impl Default for Limits {
    /// The anchor's defaults (those of [`LimitOptions::default`], which are valid).
    fn default() -> Self {
        Self::new(LimitOptions::default()).expect("the default options are valid")
    }
}

/// A `SWITCHBOARD_*` variable whose value does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?} is invalid: {reason}")]
pub struct EnvError {
    /// The variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// Why it does not parse.
    pub reason: String,
}

fn parsed<T: std::str::FromStr>(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<T>, EnvError>
where
    T::Err: std::fmt::Display,
{
    let Some(value) = lookup(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|e: T::Err| EnvError {
        name,
        value,
        reason: e.to_string(),
    })
}

impl LimitOptions {
    /// Overrides these options with the `SWITCHBOARD_*` variables `lookup` finds (a blank
    /// value counts as unset): the decoder of [`Limits::supervisor_env`], and the one place
    /// the options are read from an environment (the runner's flags apply on top; the Lambda
    /// functions read only this). Not validated: [`Limits::new`] does that.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), EnvError> {
        let lookup: &dyn Fn(&str) -> Option<String> = &lookup;
        if let Some(v) = parsed(lookup, env::MAX_CONCURRENT_SESSIONS)? {
            self.max_concurrent_sessions = Some(v);
        }
        if let Some(v) = parsed(lookup, env::MAX_SESSIONS_PER_CALL)? {
            self.max_sessions_per_call = Some(v);
        }
        if let Some(v) = parsed(lookup, env::MAX_SESSION_DURATION_SECONDS)? {
            self.max_session_duration_seconds = Some(v);
        }
        if let Some(v) = parsed(lookup, env::AGENT_IDLE_TIMEOUT)? {
            self.agent_idle_timeout = v;
        }
        if let Some(v) = parsed(lookup, env::AGENT_JOIN_TIMEOUT)? {
            self.agent_join_timeout = v;
        }
        if let Some(v) = parsed(lookup, env::MAINTENANCE_INTERVAL)? {
            self.maintenance_interval = v;
        }
        if let Some(v) = parsed(lookup, env::SESSION_LEASE_SECONDS)? {
            self.session_lease_seconds = Some(v);
        }
        if let Some(v) = parsed(lookup, env::SESSION_RETENTION_SECONDS)? {
            self.session_retention = v;
        }
        Ok(())
    }

    /// The defaults overridden by the variables `lookup` finds (see [`apply_env`](Self::apply_env)).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let mut options = Self::default();
        options.apply_env(lookup)?;
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_env_parses_back_to_the_same_settings() {
        let limits = Limits::new(LimitOptions {
            max_concurrent_sessions: Some(4),
            max_session_duration_seconds: Some(90.5),
            agent_idle_timeout: 0.0,
            agent_join_timeout: 12.5,
            maintenance_interval: 0.25,
            session_lease_seconds: Some(3.0),
            session_retention: 60.0,
            ..LimitOptions::default()
        })
        .unwrap();
        let vars: std::collections::HashMap<_, _> = limits.supervisor_env().into_iter().collect();
        let back =
            Limits::new(LimitOptions::from_lookup(|k| vars.get(k).cloned()).unwrap()).unwrap();
        assert_eq!(back.max_session_duration(), limits.max_session_duration());
        assert_eq!(back.agent_idle_timeout(), None);
        assert_eq!(
            back.agent_join_timeout(),
            Some(Duration::from_millis(12_500))
        );
        assert_eq!(back.maintenance_interval(), Duration::from_millis(250));
        assert_eq!(back.session_lease(), limits.session_lease());
        assert_eq!(back.session_retention(), limits.session_retention());
        assert!(
            !vars.contains_key(env::MAX_CONCURRENT_SESSIONS),
            "admission is the API's job"
        );
    }

    fn err(options: LimitOptions) -> String {
        Limits::new(options).unwrap_err().to_string()
    }

    #[test]
    fn defaults_match_the_anchor() {
        let limits = Limits::new(LimitOptions::default()).unwrap();
        assert_eq!(limits, Limits::default());
        assert_eq!(limits.agent_idle_timeout(), Some(Duration::from_secs(60)));
        assert_eq!(limits.maintenance_interval(), Duration::from_secs(5));
        assert_eq!(limits.session_lease(), Duration::from_secs(30));
        assert_eq!(limits.max_concurrent_sessions(), None);
    }

    #[test]
    fn invalid_counts_are_refused_with_the_anchors_messages() {
        for bad in [0, -1] {
            let o = LimitOptions {
                max_concurrent_sessions: Some(bad),
                ..Default::default()
            };
            assert_eq!(err(o), "max_concurrent_sessions must be > 0 or None");
            let o = LimitOptions {
                max_sessions_per_call: Some(bad),
                ..Default::default()
            };
            assert_eq!(err(o), "max_sessions_per_call must be > 0 or None");
        }
    }

    #[test]
    fn invalid_durations_are_refused_with_the_anchors_messages() {
        for bad in [0.0, -1.0, f64::NAN] {
            let o = LimitOptions {
                max_session_duration_seconds: Some(bad),
                ..Default::default()
            };
            assert_eq!(err(o), "max_session_duration_seconds must be > 0 or None");
            let o = LimitOptions {
                maintenance_interval: bad,
                ..Default::default()
            };
            assert_eq!(err(o), "maintenance_interval must be > 0");
        }
        for bad in [-0.5, f64::NAN, f64::INFINITY] {
            let o = LimitOptions {
                agent_idle_timeout: bad,
                ..Default::default()
            };
            assert_eq!(err(o), "agent_idle_timeout must be >= 0");
        }
    }

    #[test]
    fn idle_timeout_zero_disables() {
        let o = LimitOptions {
            agent_idle_timeout: 0.0,
            ..Default::default()
        };
        assert_eq!(Limits::new(o).unwrap().agent_idle_timeout(), None);
    }

    #[test]
    fn lease_defaults_to_three_intervals_when_larger_and_never_less() {
        let o = LimitOptions {
            maintenance_interval: 20.0,
            ..Default::default()
        };
        assert_eq!(
            Limits::new(o).unwrap().session_lease(),
            Duration::from_secs(60)
        );
        let o = LimitOptions {
            maintenance_interval: 5.0,
            session_lease_seconds: Some(14.0),
            ..Default::default()
        };
        assert_eq!(
            err(o),
            "session_lease_seconds must be >= 3 * maintenance_interval"
        );
        let o = LimitOptions {
            maintenance_interval: 0.5,
            session_lease_seconds: Some(1.5),
            ..Default::default()
        };
        assert_eq!(
            Limits::new(o).unwrap().session_lease(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn the_join_timeout_defaults_to_60_s_and_zero_disables_it() {
        assert_eq!(
            Limits::default().agent_join_timeout(),
            Some(Duration::from_secs(60))
        );
        let off = LimitOptions {
            agent_join_timeout: 0.0,
            ..LimitOptions::default()
        };
        assert_eq!(Limits::new(off).unwrap().agent_join_timeout(), None);
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let o = LimitOptions {
                agent_join_timeout: bad,
                ..LimitOptions::default()
            };
            assert_eq!(err(o), "agent_join_timeout must be >= 0");
        }
    }

    #[test]
    fn the_environment_overrides_options_and_names_a_bad_variable() {
        let vars = std::collections::HashMap::from([
            (env::MAX_CONCURRENT_SESSIONS, "7"),
            (env::AGENT_JOIN_TIMEOUT, " 5 "),
            (env::AGENT_IDLE_TIMEOUT, ""),
        ]);
        let options = LimitOptions::from_lookup(|k| vars.get(k).map(|v| (*v).to_owned())).unwrap();
        assert_eq!(options.max_concurrent_sessions, Some(7));
        assert_eq!(options.agent_join_timeout, 5.0);
        assert_eq!(
            options.agent_idle_timeout, DEFAULT_AGENT_IDLE_TIMEOUT,
            "blank is unset"
        );
        let err = LimitOptions::from_lookup(|k| {
            (k == env::MAINTENANCE_INTERVAL).then(|| "soon".to_owned())
        })
        .unwrap_err();
        assert_eq!(err.name, env::MAINTENANCE_INTERVAL);
        assert!(
            err.to_string()
                .starts_with("SWITCHBOARD_MAINTENANCE_INTERVAL=\"soon\" is invalid"),
            "{err}"
        );
    }
}
