//! Stopping a live run on request.

use std::time::Duration;

use moat_core::{RunId, RunState};

use super::RunError;
use crate::state::Daemon;

/// Asks a live run to stop (or kills it); supervision records the exit.
pub async fn stop_run(daemon: &Daemon, id: &RunId, kill: bool) -> Result<(), RunError> {
    let handle = daemon
        .registry()
        .get(id)
        .ok_or_else(|| RunError::NotLive(id.to_string()))?;
    let runtime = daemon.runtimes().for_spec(&handle.spec).await?;
    handle.update(daemon.store(), |m| {
        if !m.state.is_terminal() {
            m.state = RunState::Stopping;
        }
    })?;
    let meta = handle.metadata();
    let container = meta.container_id.unwrap_or_else(|| id.to_string());
    let grace = if kill {
        Duration::ZERO
    } else {
        daemon.config().stop_grace
    };
    runtime.stop_container(&container, grace).await?;
    Ok(())
}
