//! Watching a started run to its end: output captured, exit recorded and
//! announced to attached clients, then cleanup.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use moat_core::RunState;
use moat_runtime::Runtime;

use super::cleanup::cleanup;
use super::fail;
use crate::api::AttachEvent;
use crate::audit::Event;
use crate::capture::Capture;
use crate::registry::RunHandle;
use crate::state::Daemon;

/// Follows a started run to its end: output to `logs.jsonl` and attached
/// clients, then the exit code, then cleanup. `since` resumes capture after
/// a daemon restart.
pub async fn supervise(
    daemon: Daemon,
    runtime: Arc<dyn Runtime>,
    handle: Arc<RunHandle>,
    since: Option<DateTime<Utc>>,
) {
    let meta = handle.metadata();
    let container = meta.container_id.clone().unwrap_or_else(|| meta.id.to_string());
    let mut capture = Capture::open(&daemon, &handle, since);
    capture.follow(runtime.as_ref(), &container).await;
    let exit = runtime.wait_container(&container).await;
    capture.catch_up(runtime.as_ref(), &container).await;
    capture.finish();
    let recorded = handle.update(daemon.store(), |m| match &exit {
        Ok(code) => {
            m.state = RunState::Exited;
            m.exit_code = *code;
            m.exited_at = Some(Utc::now());
        }
        Err(e) => fail(m, &format!("waiting for the container failed: {e}")),
    });
    if let Err(e) = recorded {
        tracing::error!(run = %meta.id, "recording the exit failed: {e}");
    }
    daemon.audit().record(&meta.id, Event::exited(&handle.metadata()));
    // Attached clients learn the exit now; nobody waits for the cleanup.
    announce_exit(&handle);
    cleanup(&daemon, runtime.as_ref(), &handle).await;
}

/// Tells attached clients how the run ended (once).
pub(super) fn announce_exit(handle: &RunHandle) {
    let meta = handle.metadata();
    handle.output.finish(AttachEvent::Exit {
        state: meta.state,
        exit_code: meta.exit_code,
        failure: meta.failure,
    });
}
