//! Start-up reconciliation (daemon-and-reaper.md §3): restore the previous
//! daemon's registry and settle every run against the runtime. Running
//! containers are re-adopted, exited ones recorded and cleaned up, runs
//! stuck in `creating` undone.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use moat_core::RunState;
use moat_core::logs::tail;
use moat_core::paths::run_files;
use moat_runtime::{ContainerStatus, Runtime};

use crate::registry::{PersistedRun, RunHandle};
use crate::state::Daemon;
use crate::supervisor::{cleanup, reattach_proxy, supervise};
use moat_proxy::ProxyToken;

/// How long to wait before retrying a runtime that is down.
const RUNTIME_RETRY: Duration = Duration::from_secs(30);

/// Restores every persisted run into the registry and settles each one in
/// its own task. Returns how many runs were restored.
pub fn restore(daemon: &Daemon) -> usize {
    let persisted = match daemon.registry().load_persisted() {
        Ok(runs) => runs,
        Err(e) => {
            tracing::error!("{e}; starting with an empty registry (the reaper will find leftovers)");
            return 0;
        }
    };
    let count = persisted.len();
    for run in persisted {
        let handle = restored_handle(daemon, run);
        daemon.registry().lock().insert(handle.id(), handle.clone());
        tokio::spawn(settle(daemon.clone(), handle));
    }
    daemon.registry().persist_soon();
    count
}

/// `metadata.json` is written before `runs.json`, so it is the fresher of
/// the two when both are readable.
fn restored_handle(daemon: &Daemon, run: PersistedRun) -> Arc<RunHandle> {
    let meta = daemon.store().load(&run.meta.id).unwrap_or(run.meta);
    let handle = RunHandle::new(run.spec, meta);
    if let Some(token) = run.proxy_token.as_deref().and_then(ProxyToken::parse) {
        handle.set_proxy_token(token);
    }
    handle
}

async fn settle(daemon: Daemon, handle: Arc<RunHandle>) {
    let runtime = loop {
        match daemon.runtimes().get(&handle.spec.runtime).await {
            Ok(runtime) => break runtime,
            Err(e) => {
                tracing::warn!(run = %handle.id(), "cannot reconcile yet: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(RUNTIME_RETRY) => {}
                    _ = daemon.shutdown_token().cancelled() => return,
                }
            }
        }
    };
    let meta = handle.metadata();
    match meta.state {
        RunState::Creating | RunState::Created | RunState::Starting => {
            undo(
                &daemon,
                runtime.as_ref(),
                &handle,
                "creation was interrupted by a daemon restart",
            )
            .await
        }
        RunState::Exited | RunState::Failed => cleanup(&daemon, runtime.as_ref(), &handle).await,
        RunState::Running | RunState::Stopping => readopt(daemon, runtime, handle).await,
    }
}

async fn undo(daemon: &Daemon, runtime: &dyn Runtime, handle: &RunHandle, reason: &str) {
    let _ = handle.update(daemon.store(), |m| {
        m.state = RunState::Failed;
        m.failure = Some(reason.to_string());
        m.exited_at.get_or_insert_with(Utc::now);
    });
    cleanup(daemon, runtime, handle).await;
}

async fn readopt(daemon: Daemon, runtime: Arc<dyn Runtime>, handle: Arc<RunHandle>) {
    let meta = handle.metadata();
    let container = meta.container_id.clone().unwrap_or_else(|| meta.id.to_string());
    match runtime.inspect_container(&container).await {
        Ok(info) if info.status != ContainerStatus::Created => {
            tracing::info!(run = %meta.id, "re-adopting container {container} ({:?})", info.status);
            if let Err(e) = reattach_proxy(&daemon, runtime.as_ref(), &handle).await {
                tracing::warn!(run = %meta.id, "the run's proxy could not be restored: {e}");
            }
            let since = last_output_time(&daemon, &handle);
            supervise(daemon, runtime, handle, since).await;
        }
        Ok(_) => undo(&daemon, runtime.as_ref(), &handle, "the container was never started").await,
        Err(e) if e.is_not_found() => {
            undo(
                &daemon,
                runtime.as_ref(),
                &handle,
                "the container disappeared while the daemon was down",
            )
            .await
        }
        Err(e) => {
            tracing::warn!(run = %meta.id, "cannot inspect {container}: {e}; following it anyway");
            let since = last_output_time(&daemon, &handle);
            supervise(daemon, runtime, handle, since).await;
        }
    }
}

/// Time of the last recorded output line, so capture resumes after it.
fn last_output_time(daemon: &Daemon, handle: &RunHandle) -> Option<DateTime<Utc>> {
    let path = daemon.store().run_dir(&handle.id()).join(run_files::LOGS);
    tail(&path, 1).ok()?.records.last().map(|record| record.ts)
}
