//! The time budget of a run's creation. The CLI waits
//! [`client::CREATE_TIMEOUT`](crate::client::CREATE_TIMEOUT) for
//! `POST /v1/runs`; the daemon gives the whole creation (network, with a
//! sweep of orphans and one retry, proxy, container) [`CREATE_DEADLINE`],
//! then undoes the run and answers with an error naming the step that did
//! not finish. So the client always hears the outcome first and never
//! reports a timeout while the run goes on (daemon-and-reaper.md §5,
//! "Bounded network creation").
//!
//! With the default `network_create_timeout` (30 s) the network may take
//! two attempts and a sweep, 75 s, which leaves [`REST_OF_CREATION`] for
//! the other steps; a longer configured timeout is cut by the deadline.

use std::time::Duration;

use tokio::time::Instant;

/// Bound on creating a run, from its registration to its container running.
pub const CREATE_DEADLINE: Duration = Duration::from_secs(85);
/// How long a failed creation waits for its undoing before answering (the
/// undoing goes on in the background; the run is already recorded failed).
pub const UNDO_WAIT: Duration = Duration::from_secs(10);
/// Bound on the sweep of orphans between two attempts at a network.
pub const NETWORK_SWEEP_BUDGET: Duration = Duration::from_secs(15);
/// The least time worth a retry of the network after a sweep.
pub const RETRY_AT_LEAST: Duration = Duration::from_secs(5);
/// What the default budget leaves for the image check, the proxy and the
/// container (normally well under a second).
pub const REST_OF_CREATION: Duration = Duration::from_secs(10);

/// The creation ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("creating the run took longer than the {limit:?} the daemon allows ({step} had not finished); it was undone")]
pub struct DeadlineExceeded {
    /// What was going on, e.g. "creating network moat-run_…".
    pub step: String,
    pub limit: Duration,
}

/// The point in time a creation must be done by.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    at: Instant,
    limit: Duration,
}

impl Deadline {
    /// `limit` from now.
    pub fn after(limit: Duration) -> Self {
        Deadline {
            at: Instant::now() + limit,
            limit,
        }
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Runs one step of the creation; past the deadline it is dropped and
    /// the error names `step`.
    pub async fn bound<T>(
        &self,
        step: impl Into<String>,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, DeadlineExceeded> {
        tokio::time::timeout_at(self.at, fut)
            .await
            .map_err(|_| DeadlineExceeded {
                step: step.into(),
                limit: self.limit,
            })
    }

    /// How long a sweep before retrying the network may take with
    /// `self.remaining()` left: at most [`NETWORK_SWEEP_BUDGET`], leaving
    /// the retry at least [`RETRY_AT_LEAST`]. `None`: no time for either.
    pub fn sweep_budget(&self) -> Option<Duration> {
        sweep_budget(self.remaining())
    }
}

fn sweep_budget(remaining: Duration) -> Option<Duration> {
    let for_sweep = remaining.checked_sub(RETRY_AT_LEAST)?;
    (!for_sweep.is_zero()).then(|| for_sweep.min(NETWORK_SWEEP_BUDGET))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{client, server};
    use moat_core::config::GlobalConfig;

    #[test]
    fn the_daemon_answers_a_creation_before_the_client_gives_up() {
        // The client's clock runs from its connection attempt; the daemon's
        // deadline starts once it has read the request.
        let worst = client::CONNECT_TIMEOUT + server::BODY_TIMEOUT + CREATE_DEADLINE + UNDO_WAIT;
        assert!(
            worst < client::CREATE_TIMEOUT,
            "the daemon may answer after {worst:?}, the client gives up after {:?}",
            client::CREATE_TIMEOUT
        );
    }

    #[test]
    fn the_default_network_path_fits_the_deadline_with_room_for_the_rest() {
        let attempt = GlobalConfig::default().network_create_timeout;
        let network = attempt * 2 + NETWORK_SWEEP_BUDGET;
        assert!(
            network + REST_OF_CREATION <= CREATE_DEADLINE,
            "two network attempts and a sweep take up to {network:?} of {CREATE_DEADLINE:?}"
        );
        // After a timed-out first attempt the sweep gets its whole budget.
        let left = CREATE_DEADLINE.saturating_sub(attempt);
        assert_eq!(sweep_budget(left), Some(NETWORK_SWEEP_BUDGET));
        assert!(left.saturating_sub(NETWORK_SWEEP_BUDGET) >= attempt);
    }

    #[test]
    fn the_sweep_leaves_the_retry_its_share_or_does_not_happen() {
        assert_eq!(sweep_budget(Duration::from_secs(8)), Some(Duration::from_secs(3)));
        assert_eq!(sweep_budget(RETRY_AT_LEAST), None);
        assert_eq!(sweep_budget(Duration::ZERO), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_past_the_deadline_is_named() {
        let deadline = Deadline::after(Duration::from_secs(5));
        let quick = deadline.bound("quick", async { 1 }).await;
        assert_eq!(quick.unwrap(), 1);
        let slow = deadline
            .bound(
                "creating network moat-run_x",
                tokio::time::sleep(Duration::from_secs(60)),
            )
            .await
            .unwrap_err();
        assert_eq!(slow.step, "creating network moat-run_x");
        assert!(slow.to_string().contains("5s"), "{slow}");
        assert_eq!(deadline.remaining(), Duration::ZERO);
    }
}
