//! Progress of a run's creation for the client waiting on `POST /v1/runs`:
//! a line such as "still creating the network (sweeping orphans first)…"
//! while a slow step goes on, then the outcome. Reporting never holds up
//! the creation, and nobody listening is fine (a client that went away does
//! not cancel the run).

use std::time::Duration;

use tokio::sync::mpsc;

use crate::api::CreateEvent;

/// Room for progress lines; a creation reports only a few.
const CAPACITY: usize = 16;
/// Bound on handing the outcome to a client that does not read its answer.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a creation reports; [`Progress::none`] discards everything.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    tx: Option<mpsc::Sender<CreateEvent>>,
}

impl Progress {
    pub fn none() -> Self {
        Progress::default()
    }

    /// A reporter and the receiving end of its events.
    pub fn channel() -> (Progress, mpsc::Receiver<CreateEvent>) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        (Progress { tx: Some(tx) }, rx)
    }

    /// Tells the client what the creation is doing now (dropped when
    /// nobody listens or the client lags).
    pub fn say(&self, message: impl Into<String>) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(CreateEvent::Progress {
                message: message.into(),
            });
        }
    }

    /// Hands over the outcome, the last event.
    pub async fn finish(self, event: CreateEvent) {
        if let Some(tx) = self.tx {
            let _ = tokio::time::timeout(FINISH_TIMEOUT, tx.send(event)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn progress_then_the_outcome_reach_the_listener_in_order() {
        let (progress, mut rx) = Progress::channel();
        progress.say("sweeping");
        progress
            .finish(CreateEvent::Failed {
                status: 503,
                error: "full".into(),
                hint: None,
            })
            .await;
        assert_eq!(
            rx.recv().await,
            Some(CreateEvent::Progress {
                message: "sweeping".into()
            })
        );
        assert!(matches!(rx.recv().await, Some(CreateEvent::Failed { status: 503, .. })));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn nobody_listening_is_fine() {
        let (progress, rx) = Progress::channel();
        drop(rx);
        progress.say("sweeping");
        progress.finish(CreateEvent::Progress { message: "x".into() }).await;
        Progress::none().say("unheard");
    }
}
