//! Wall-clock time for the domain: [`Timestamp`] and the [`Clock`] port.
//!
//! Leases, idle and duration limits, retention and idempotency windows all read "now" from a
//! [`Clock`], so tests drive them with tokio's paused time ([`TokioClock`]) or by hand
//! ([`ManualClock`]) instead of sleeping.

use std::fmt;
use std::ops::{Add, Sub};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant in UTC with microsecond precision, serialized as RFC 3339 with a `Z`
/// (`2025-01-15T10:30:00.123456Z`, as the anchor's pydantic models produce).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// From microseconds since the Unix epoch.
    pub const fn from_unix_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn unix_micros(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (DynamoDB's TTL attribute unit).
    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// The current system time.
    pub fn now_system() -> Self {
        Self::from_system(SystemTime::now())
    }

    /// A system time.
    pub fn from_system(at: SystemTime) -> Self {
        let micros = match at.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
        };
        Self(micros)
    }

    /// Parses RFC 3339 (any offset; normalized to UTC).
    pub fn parse_rfc3339(value: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(value)
            .ok()
            .map(|dt| Self(dt.with_timezone(&Utc).timestamp_micros()))
    }

    /// RFC 3339 in UTC with microseconds and a `Z` suffix.
    pub fn to_rfc3339(self) -> String {
        match DateTime::<Utc>::from_timestamp_micros(self.0) {
            Some(dt) => dt.to_rfc3339_opts(SecondsFormat::Micros, true),
            None => "invalid-timestamp".to_owned(),
        }
    }

    /// The duration from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        u64::try_from(self.0.saturating_sub(earlier.0))
            .map(Duration::from_micros)
            .unwrap_or(Duration::ZERO)
    }
}

fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_micros(rhs)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(duration_micros(rhs)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid RFC 3339 timestamp: {s}")))
    }
}

/// The source of "now" for every time-based rule.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now_system()
    }
}

/// A wall clock that advances with tokio's clock: under `tokio::time::pause()` it moves only
/// when virtual time does, so timers and "now" stay consistent in tests. In production it
/// tracks the system clock from the moment it was created (monotonically).
#[derive(Debug)]
pub struct TokioClock {
    origin_wall: Timestamp,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// Anchors the clock at the current system time and tokio instant.
    pub fn new() -> Self {
        Self::starting_at(Timestamp::now_system())
    }

    /// Anchors the clock at `wall` for the current tokio instant.
    pub fn starting_at(wall: Timestamp) -> Self {
        Self {
            origin_wall: wall,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.origin_wall + self.origin.elapsed()
    }
}

/// A clock moved only by hand, for rules tested without any runtime.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
    // Serializes `advance` so concurrent advances compose.
    lock: Mutex<()>,
}

impl ManualClock {
    /// A clock frozen at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: AtomicI64::new(start.unix_micros()),
            lock: Mutex::new(()),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let next = Timestamp(self.now.load(Ordering::SeqCst)) + by;
        self.now.store(next.unix_micros(), Ordering::SeqCst);
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: Timestamp) {
        self.now.store(to.unix_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_uses_z_and_microseconds_and_round_trips() {
        let t = Timestamp::from_unix_micros(1_736_937_000_123_456);
        assert_eq!(t.to_rfc3339(), "2025-01-15T10:30:00.123456Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        assert_eq!(
            Timestamp::parse_rfc3339("2025-01-15T11:30:00.123456+01:00"),
            Some(t)
        );
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2025-01-15T10:30:00.123456Z\""
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_unix_micros(1_000_000));
        assert_eq!(clock.now().unix_micros(), 1_000_000);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now().unix_micros(), 2_500_000);
        assert_eq!(
            clock.now().saturating_since(Timestamp::EPOCH),
            Duration::from_micros(2_500_000)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::starting_at(Timestamp::from_unix_micros(0));
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(clock.now().unix_micros(), 7_000_000);
    }
}
