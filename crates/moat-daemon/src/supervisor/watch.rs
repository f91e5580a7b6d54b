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
    if handle.spec.interactive {
        follow_terminal(runtime.as_ref(), &handle, &container, &mut capture).await;
    } else {
        capture.follow(runtime.as_ref(), &container).await;
    }
    let exit = runtime.wait_container(&container).await;
    // An attachment ends only after the last output (and the engine's log
    // may differ from it: its json-file driver mangles invalid UTF-8).
    if !handle.spec.interactive {
        capture.catch_up(runtime.as_ref(), &container).await;
    }
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

/// Follows an interactive run's output through its attachment (made before
/// the start, or now when a restarted daemon re-adopts the run).
async fn follow_terminal(runtime: &dyn Runtime, handle: &RunHandle, container: &str, capture: &mut Capture<'_>) {
    if handle.terminal.is_detached() {
        match runtime.attach_container(container).await {
            Ok(attached) => handle.terminal.connect(attached),
            Err(e) => {
                tracing::warn!(run = %handle.id(), "cannot attach to the run's terminal: {e}; following its logs");
                return capture.follow(runtime, container).await;
            }
        }
    }
    if let Some(output) = handle.terminal.take_output() {
        capture.follow_stream(output).await;
    }
}

/// Tells attached clients how the run ended (once).
pub(super) fn announce_exit(handle: &RunHandle) {
    let meta = handle.metadata();
    handle.terminal.finish(moat_api::terminal::Exit {
        state: meta.state,
        exit_code: meta.exit_code,
        failure: meta.failure.clone(),
    });
    handle.output.finish(AttachEvent::Exit {
        state: meta.state,
        exit_code: meta.exit_code,
        failure: meta.failure,
    });
}
