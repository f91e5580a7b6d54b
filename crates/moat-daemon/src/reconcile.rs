//! Start-up reconciliation (daemon-and-reaper.md §3): restore the previous
//! daemon's registry and settle every run against the runtime. Running
//! containers are re-adopted, exited ones recorded and cleaned up, runs
//! stuck in `creating` undone.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use moat_core::lock::FileLock;
use moat_core::logs::tail;
use moat_core::paths::run_files;
use moat_core::store::{RunStore, StoreError};
use moat_core::{RunId, RunMetadata, RunState};
use moat_runtime::{ContainerStatus, Runtime};

use crate::api::RunSpec;
use crate::audit::Event;
use crate::registry::{PersistedRun, Registration, RunHandle};
use crate::state::Daemon;
use crate::supervisor::{cleanup, reattach_proxy, supervise};
use moat_proxy::ProxyToken;

/// How long to wait before retrying a runtime that is down.
const RUNTIME_RETRY: Duration = Duration::from_secs(30);

/// Restores every persisted run into the registry and settles each one in
/// its own task. Runs the registry lost or never held (an unreadable
/// `runs.json`, a daemon killed before registering) are recovered from
/// their own directories. Returns how many runs were restored.
pub fn restore(daemon: &Daemon) -> usize {
    let mut runs = match daemon.registry().load_persisted() {
        Ok(runs) => runs,
        Err(e) => {
            let kept = set_aside(&daemon.home().runs_json());
            daemon.set_registry_error(format!(
                "{e} (kept as {kept}); runs are recovered from their directories and sweeps are \
                 paused until the daemon restarts (`moat daemon restart`)"
            ));
            tracing::error!("{e}; kept as {kept}; recovering runs from their directories");
            Vec::new()
        }
    };
    match unregistered_runs(daemon.store(), &runs) {
        Ok(recovered) => {
            for run in &recovered {
                tracing::warn!(run = %run.meta.id, "recovered from its run directory ({:?})", run.meta.state);
            }
            runs.extend(recovered);
        }
        Err(e) => {
            tracing::error!("recovering runs from their directories failed: {e}");
            daemon.set_registry_error(format!("recovering runs from their directories failed: {e}"));
        }
    }
    let count = runs.len();
    for run in runs {
        let handle = restored_handle(daemon, run);
        daemon.registry().lock().insert(handle.id(), handle.clone());
        tokio::spawn(settle(daemon.clone(), handle));
    }
    daemon.registry().persist_soon();
    count
}

/// Loads `runs.json` into the registry without settling anything: what a
/// sweep outside the daemon needs to see the daemon's runs as live. An
/// unreadable file is an error (that sweep must not act).
pub fn load_registry(daemon: &Daemon) -> Result<usize, crate::registry::RegistryError> {
    let runs = daemon.registry().load_persisted()?;
    let count = runs.len();
    for run in runs {
        let handle = restored_handle(daemon, run);
        daemon.registry().lock().insert(handle.id(), handle);
    }
    Ok(count)
}

/// Renames an unreadable `runs.json` aside (never deleted: it is evidence)
/// and returns where it went.
fn set_aside(path: &Path) -> String {
    let aside = path.with_extension(format!("json.unreadable-{}", Utc::now().format("%Y%m%dT%H%M%S")));
    match std::fs::rename(path, &aside) {
        Ok(()) => aside.display().to_string(),
        Err(e) => format!("{} (could not be renamed: {e})", path.display()),
    }
}

/// Runs whose directory says they are unfinished (not terminal, or
/// terminal with cleanup pending) but which the registry does not hold.
/// An error reading any run directory fails the whole recovery.
pub fn unregistered_runs(store: &RunStore, registered: &[PersistedRun]) -> Result<Vec<PersistedRun>, RecoveryError> {
    let known: HashSet<&RunId> = registered.iter().map(|r| &r.meta.id).collect();
    let mut recovered = Vec::new();
    for id in store.ids()? {
        if known.contains(&id) || FileLock::is_held(&store.run_dir(&id).join(run_files::LOCK)) {
            continue;
        }
        let meta = match store.load(&id) {
            Ok(meta) => meta,
            // No record: nothing says what exists; the reaper judges its
            // objects (with the grace period for young directories).
            Err(StoreError::NotFound(_) | StoreError::Corrupt { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let unfinished = !meta.state.is_terminal() || (meta.cleaned_at.is_none() && !meta.keep);
        if !unfinished {
            continue;
        }
        let registration = Registration::read(store, &id)?;
        recovered.push(match registration {
            Some(registration) => PersistedRun {
                spec: registration.spec,
                proxy_token: registration.proxy_token,
                meta,
            },
            // Cut short before registering: no proxy token exists, so the
            // run is settled without one (its proxy is never widened).
            None => PersistedRun {
                spec: spec_from_metadata(&meta),
                proxy_token: None,
                meta,
            },
        });
    }
    Ok(recovered)
}

/// The parts of a spec a run's metadata records.
fn spec_from_metadata(meta: &RunMetadata) -> RunSpec {
    RunSpec {
        name: meta.name.clone(),
        workspace: meta.workspace.clone(),
        image: meta.image.clone(),
        command: meta.command.clone(),
        runtime: meta.runtime.clone(),
        keep: meta.keep,
        grants: meta.grants.clone(),
        secret_names: meta.secrets.clone(),
        labels: meta.labels.clone(),
        ..RunSpec::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Registration(#[from] crate::registry::RegistryError),
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
        match daemon.runtimes().for_spec(&handle.spec).await {
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
            daemon.audit().record(
                &meta.id,
                Event::Readopted {
                    daemon_pid: std::process::id(),
                },
            );
            if let Err(e) = reattach_proxy(&daemon, runtime.as_ref(), &handle).await {
                tracing::warn!(run = %meta.id, "the run's proxy could not be restored: {e}");
            }
            if let (Some(egress), Some(address)) = (daemon.egress(), info.address) {
                egress.route(&meta.id, &handle.spec, address);
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
