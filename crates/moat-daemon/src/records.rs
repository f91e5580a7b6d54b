//! Destroying a finished run's record (`moat destroy`, `moat clean`): the
//! daemon owns every run it may still hold, so only it deletes run
//! directories (and the run's workspace snapshots), and only once nothing
//! of the run can still be alive.

use chrono::Utc;
use moat_core::RunId;
use moat_core::lock::FileLock;
use moat_core::paths::run_files;
use moat_core::store::StoreError;

use crate::state::Daemon;
use crate::supervisor::RunError;

/// Deletes the record of a finished run. Refused while the run is in the
/// registry, unfinished, or its cleanup has not finished. A `--keep` run's
/// kept container and network are removed first (only if stopped).
pub async fn destroy(daemon: &Daemon, id: &RunId) -> Result<(), RunError> {
    if let Some(handle) = daemon.registry().get(id) {
        let state = handle.metadata().state;
        return Err(still_owned(id, format!("it is {state} and supervised by the daemon")));
    }
    let dir = daemon.store().run_dir(id);
    let Some(_creation) = FileLock::try_acquire(&dir.join(run_files::LOCK))? else {
        return Err(still_owned(id, "it is being created".into()));
    };
    match daemon.store().load(id) {
        Ok(meta) if !meta.state.is_terminal() => {
            return Err(still_owned(id, format!("its record says {}", meta.state)));
        }
        Ok(meta) if meta.keep && meta.cleaned_at.is_none() => remove_kept_objects(daemon, &meta).await?,
        Ok(meta) if meta.cleaned_at.is_none() => {
            return Err(still_owned(
                id,
                "the cleanup of its container and network has not finished".into(),
            ));
        }
        Ok(_) | Err(StoreError::NotFound(_) | StoreError::Corrupt { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    release_audit_log(daemon, id).await;
    daemon.store().destroy(id)?;
    crate::snapshots::delete_run(daemon, id).await;
    Ok(())
}

/// Bound on the audit writer finishing with a run's log before its record
/// is removed (it signs within a second of the last write).
const AUDIT_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Lets the audit writer seal and close the run's log, so that it writes
/// nothing into the directory while it is removed.
async fn release_audit_log(daemon: &Daemon, id: &RunId) {
    let audit = daemon.audit().clone();
    audit.close(id);
    let released = tokio::task::spawn_blocking(move || audit.flush(AUDIT_RELEASE_WAIT)).await;
    if !matches!(released, Ok(true)) {
        tracing::warn!(run = %id, "the audit writer did not finish with the log within {AUDIT_RELEASE_WAIT:?}");
    }
}

/// A kept run's container (refused if running) and, when nothing else is
/// attached to it, its network; a network still in use is left to the
/// reaper, which reclaims it once it is free.
async fn remove_kept_objects(daemon: &Daemon, meta: &moat_core::RunMetadata) -> Result<(), RunError> {
    let runtime = daemon.runtimes().get(&meta.runtime).await?;
    let container = meta.container_id.clone().unwrap_or_else(|| meta.id.to_string());
    runtime.remove_stopped_container(&container).await?;
    if let Some(network) = &meta.network
        && let Err(e) = runtime.remove_network(network).await
    {
        tracing::warn!(run = %meta.id, "kept network left to the reaper: {e}");
    }
    daemon.store().save(&moat_core::RunMetadata {
        cleaned_at: Some(Utc::now()),
        ..meta.clone()
    })?;
    Ok(())
}

fn still_owned(id: &RunId, reason: String) -> RunError {
    RunError::StillOwned {
        id: id.to_string(),
        reason,
    }
}
