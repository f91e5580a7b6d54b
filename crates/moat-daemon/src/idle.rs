//! Idle shutdown (daemon-and-reaper.md §4): after the idle timeout with no
//! live run and no attached client, run a final sweep, then re-check under
//! the registry lock (a run registered during the sweep cancels the
//! shutdown), then shut down.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::state::Daemon;

/// Watches for idleness until the daemon shuts down. `final_sweep` runs
/// before the last check.
pub async fn watch<F, Fut>(daemon: Daemon, final_sweep: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let timeout = daemon.config().idle_timeout;
    let tick = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut idle_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = daemon.shutdown_token().cancelled() => return,
        }
        if !is_idle(&daemon) {
            idle_since = None;
            continue;
        }
        let since = *idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() < timeout {
            continue;
        }
        tracing::info!("idle for {timeout:?}: final sweep before shutting down");
        final_sweep().await;
        let runs = daemon.registry().lock();
        if runs.is_empty() && daemon.attached_clients() == 0 {
            daemon.mark_shutting_down();
            drop(runs);
            tracing::info!("still idle after the final sweep: shutting down");
            daemon.begin_shutdown();
            return;
        }
        drop(runs);
        tracing::info!("a run arrived during the final sweep: staying up");
        idle_since = None;
    }
}

fn is_idle(daemon: &Daemon) -> bool {
    daemon.registry().is_empty() && daemon.attached_clients() == 0
}
