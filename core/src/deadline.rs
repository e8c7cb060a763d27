//! The deadline of the work in progress (a start in the Lambda `api` function), carried to the
//! adapters on the task that does it, so that their own timeouts and retry budgets come from
//! what is left of it instead of fixed figures: an SDK call never outlives the request that
//! made it, and its timeout is a clean, classified error rather than a cancellation.
//!
//! [`within`] sets it for a future (nested scopes narrow it); [`remaining`] reads it. Outside
//! a scope (serve, the agent task, the reaper) there is none, and adapters use their defaults.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `future` with `deadline` as the work's deadline (unchanged when `None`).
pub async fn within<F: Future>(deadline: Option<Instant>, future: F) -> F::Output {
    match deadline {
        Some(deadline) => DEADLINE.scope(deadline, future).await,
        None => future.await,
    }
}

/// What is left of the current deadline (zero once it passed), or `None` outside a scope.
pub fn remaining() -> Option<Duration> {
    DEADLINE
        .try_with(|deadline| deadline.saturating_duration_since(Instant::now()))
        .ok()
}

/// `default`, or less when less is left of the deadline.
pub fn at_most(default: Duration) -> Duration {
    remaining().map_or(default, |left| left.min(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_innermost_deadline_counts_and_none_outside() {
        assert_eq!(remaining(), None);
        assert_eq!(at_most(Duration::from_secs(5)), Duration::from_secs(5));
        let outer = Instant::now() + Duration::from_secs(8);
        within(Some(outer), async {
            assert_eq!(remaining(), Some(Duration::from_secs(8)));
            assert_eq!(at_most(Duration::from_secs(5)), Duration::from_secs(5));
            within(Some(outer - Duration::from_secs(7)), async {
                assert_eq!(at_most(Duration::from_secs(5)), Duration::from_secs(1));
            })
            .await;
            tokio::time::advance(Duration::from_secs(9)).await;
            assert_eq!(remaining(), Some(Duration::ZERO));
        })
        .await;
        within(None, async { assert_eq!(remaining(), None) }).await;
    }
}
