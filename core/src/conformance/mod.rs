//! The conformance suite every [`SessionRegistry`] implementation passes unchanged.
//!
//! Use it from a test binary with [`registry_conformance!`](crate::registry_conformance), passing an
//! async fn that builds a fresh registry (a new table, for DynamoDB) on the given clock:
//!
//! ```ignore
//! async fn make(clock: Arc<ManualClock>) -> Arc<dyn SessionRegistry> {
//!     Arc::new(MemoryRegistry::new(clock))
//! }
//! switchboard_core::registry_conformance!(make);
//! ```
//!
//! Time is a [`ManualClock`] the suite moves by hand, so lease, retention and idempotency
//! windows are tested without sleeping.
//!
//! # Layout
//! One module per capability: [`admission`] (limits, counters), [`lifecycle`] (heartbeat,
//! close, running, task ARN, guarded ends, expiry), [`listing`] (lists, retention, metrics,
//! metadata), [`idempotency`]. A case is a `pub async fn name(h: Harness)` in one of them,
//! registered once, in the macro's list below; the macro also generates a test that fails
//! when a case defined in these files is missing from the list (it would otherwise compile
//! and never run).
#![allow(missing_docs, clippy::missing_panics_doc)]

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{Counter, Latency, MetricsRecorder};
use crate::registry::{
    EndGuard, EndOutcome, EndRequest, Idempotency, ListQuery, StartOutcome, StartRequest,
};
use crate::{
    CallId, CallType, EndReason, Error, IdempotencyKey, LimitKind, ManualClock, Metadata, Session,
    SessionId, SessionRegistry, SessionStatus, StartType, Timestamp,
};

/// The suite's starting time: 2026-01-01T00:00:00Z.
pub const T0: Timestamp = Timestamp::from_unix_micros(1_767_225_600_000_000);
/// The lease the suite uses.
pub const LEASE: Duration = Duration::from_secs(30);

pub mod admission;
pub mod idempotency;
pub mod lifecycle;
pub mod listing;

pub use self::admission::*;
pub use self::idempotency::*;
pub use self::lifecycle::*;
pub use self::listing::*;

/// A registry under test and the clock it reads.
#[derive(Debug, Clone)]
pub struct Harness {
    pub registry: Arc<dyn SessionRegistry>,
    pub clock: Arc<ManualClock>,
}

/// Generates one `#[tokio::test]` per conformance case for the registry built by `$make`.
#[macro_export]
macro_rules! registry_conformance {
    ($make:path) => {
        $crate::registry_conformance!(@cases $make;
            start_then_get_returns_a_starting_session,
            lookups_are_scoped_by_call,
            global_limit_admits_exactly_k_of_200_concurrent_starts,
            per_call_limit_admits_exactly_k_and_spares_other_calls,
            a_limit_configured_later_counts_every_live_session,
            changing_or_removing_limits_never_over_admits_or_goes_negative,
            end_releases_slots_exactly_once_under_concurrent_enders,
            counts_return_to_zero_after_everything_ends,
            late_heartbeat_on_an_ended_session_changes_nothing,
            heartbeat_renews_the_lease_and_returns_the_close_flag,
            request_close_sets_the_flag_once_and_refuses_ended_sessions,
            mark_running_only_from_starting,
            attach_task_records_the_arn_until_the_session_ends,
            end_guards_hold_atomically,
            expired_leases_lists_only_live_sessions_past_their_lease,
            list_paginates_in_creation_order_and_filters_ended,
            list_across_calls,
            ended_sessions_keep_final_metrics_until_retention_expires,
            lists_carry_live_metrics_only_when_asked,
            metrics_round_trip_and_never_resurrect,
            metadata_is_stored_with_the_session,
            idempotent_replay_returns_the_same_receipt_without_a_new_session,
            idempotency_key_with_a_different_body_is_a_mismatch,
            idempotency_is_scoped_per_call_and_expires_after_24h,
            a_failed_start_releases_its_idempotency_key,
            a_start_repeated_with_the_same_id_is_the_same_start,
            invalid_next_token_is_invalid_input
        );
    };
    (@cases $make:path; $($case:ident),+ $(,)?) => {
        #[test]
        fn every_conformance_case_is_registered() {
            $crate::conformance::assert_all_registered(&[$(stringify!($case)),+]);
        }
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let clock = ::std::sync::Arc::new($crate::ManualClock::new($crate::conformance::T0));
                let registry = $make(clock.clone()).await;
                $crate::conformance::$case($crate::conformance::Harness { registry, clock }).await;
            }
        )+
    };
}

pub fn call(name: &str) -> CallId {
    CallId::parse(name).expect("valid call id")
}

pub fn request(call_id: &CallId) -> StartRequest {
    StartRequest {
        session_id: SessionId::generate(),
        call_id: call_id.clone(),
        call_type: CallType::default(),
        metadata: None,
        idempotency: None,
        max_concurrent_sessions: None,
        max_sessions_per_call: None,
        lease: LEASE,
    }
}

impl Harness {
    pub async fn start(&self, call_id: &CallId) -> Session {
        match self.registry.start(request(call_id)).await.expect("start") {
            StartOutcome::Created(session) => session,
            StartOutcome::Replayed(r) => panic!("unexpected replay {r:?}"),
        }
    }

    pub async fn end(&self, session: &Session, reason: EndReason) -> EndOutcome {
        self.registry
            .end(&session.call_id, session.id, EndRequest::new(reason))
            .await
            .expect("end")
    }

    pub async fn get(&self, session: &Session) -> Option<Session> {
        self.registry
            .get(&session.call_id, session.id)
            .await
            .expect("get")
    }
}

/// Where the cases are defined (read by [`assert_all_registered`]).
const CASES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/conformance");

/// The cases defined in this module's files: every `pub async fn NAME(h: Harness)`.
pub fn defined_cases() -> Vec<String> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(CASES_DIR)
        .unwrap_or_else(|e| panic!("reading the conformance cases in {CASES_DIR}: {e}"));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("pub async fn ")
                && let Some((name, args)) = rest.split_once('(')
                && args.starts_with("h: Harness)")
            {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    names
}

/// Fails unless `registered` names exactly the cases these files define.
pub fn assert_all_registered(registered: &[&str]) {
    let defined = defined_cases();
    let mut listed: Vec<String> = registered.iter().map(|s| (*s).to_owned()).collect();
    listed.sort();
    let missing: Vec<&String> = defined.iter().filter(|d| !listed.contains(d)).collect();
    let unknown: Vec<&String> = listed.iter().filter(|l| !defined.contains(l)).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "the conformance list in registry_conformance! is out of date: defined but not registered {missing:?}, registered but not defined {unknown:?}"
    );
    assert!(
        defined.len() >= 27,
        "found only {} cases in {CASES_DIR}",
        defined.len()
    );
}
