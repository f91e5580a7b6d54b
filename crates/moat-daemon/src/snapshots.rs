//! The pre-run snapshot of a run's workspace (docs/snapshots.md): taken on
//! a blocking thread while the network, proxy and container are created,
//! and awaited before the container starts, so the agent never runs before
//! its workspace is recorded. A snapshot that fails (or does not finish
//! within the creation's deadline) fails the run, which is then undone.
//! Retention is applied after the start, off the run's path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use moat_core::RunId;
use moat_core::snapshot::{self, Retention, SnapshotError, SnapshotMeta, SnapshotStore, TakeRequest, Trigger};
use tokio::task::JoinHandle;

use crate::api::SnapshotSpec;
use crate::deadline::Deadline;
use crate::registry::RunHandle;
use crate::state::Daemon;
use crate::supervisor::RunError;

/// Bound on removing a destroyed run's snapshots before `destroy` answers
/// (the removal goes on in the background after it).
const DELETE_WAIT: Duration = Duration::from_secs(30);

/// A snapshot being taken for a run that is being created; abandoned
/// when dropped unfinished (the creation failed first).
pub(crate) struct PendingSnapshot {
    task: JoinHandle<Result<SnapshotMeta, SnapshotError>>,
    _cancel: CancelOnDrop,
    spec: SnapshotSpec,
}

/// Starts the run's pre-run snapshot, when its spec asks for one.
pub(crate) fn start(daemon: &Daemon, handle: &RunHandle) -> Option<PendingSnapshot> {
    let spec = handle.spec.snapshot.clone()?;
    let cancel = Arc::new(AtomicBool::new(false));
    let store = SnapshotStore::new(daemon.home());
    let workspace = handle.spec.workspace.clone();
    let run_id = handle.id();
    let rules = spec.rules.clone();
    let flag = cancel.clone();
    let task = tokio::task::spawn_blocking(move || {
        let request = TakeRequest {
            workspace: &workspace,
            run_id: &run_id,
            trigger: Trigger::PreRun,
            rules,
            cancel: &flag,
        };
        snapshot::take(&store, &request)
    });
    Some(PendingSnapshot {
        task,
        _cancel: CancelOnDrop(cancel),
        spec,
    })
}

impl PendingSnapshot {
    /// Waits for the snapshot within `deadline`; records its id in the
    /// run's metadata; schedules retention.
    pub(crate) async fn finish(self, daemon: &Daemon, handle: &RunHandle, deadline: &Deadline) -> Result<(), RunError> {
        let workspace = handle.spec.workspace.clone();
        let step = format!("taking the pre-run snapshot of {}", workspace.display());
        let joined = deadline
            .bound(step, self.task)
            .await
            .map_err(|e| RunError::SnapshotTooSlow(workspace.display().to_string(), e.limit))?;
        let meta = joined
            .map_err(|e| {
                RunError::Snapshot(SnapshotError::Io {
                    action: "snapshot",
                    path: workspace.clone(),
                    source: std::io::Error::other(e),
                })
            })?
            .map_err(RunError::Snapshot)?;
        for path in &meta.skipped {
            tracing::warn!(run = %handle.id(), "pre-run snapshot: {path} could not be read and was left out");
        }
        tracing::info!(
            run = %handle.id(),
            "pre-run snapshot {} of {} files in {} ms ({} bytes new)",
            meta.id, meta.files, meta.duration_ms, meta.stored_bytes
        );
        handle.update(daemon.store(), |m| m.snapshot = Some(meta.id.to_string()))?;
        prune_later(daemon, &self.spec, meta);
        Ok(())
    }
}

/// Tells the snapshot's thread to stop when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn prune_later(daemon: &Daemon, spec: &SnapshotSpec, meta: SnapshotMeta) {
    let store = SnapshotStore::new(daemon.home());
    let retention = Retention {
        max_count: spec.max_count,
        delete_initial: spec.delete_initial,
    };
    tokio::task::spawn_blocking(move || match store.prune(&meta.workspace, retention) {
        Ok(report) if report.snapshots > 0 => tracing::info!(
            "pruned {} snapshots of {} ({} contents, {} bytes freed)",
            report.snapshots,
            meta.workspace.display(),
            report.objects,
            report.bytes
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("pruning the snapshots of {}: {e}", meta.workspace.display()),
    });
}

/// Removes a destroyed run's snapshots and the contents only they held.
pub(crate) async fn delete_run(daemon: &Daemon, id: &RunId) {
    let store = SnapshotStore::new(daemon.home());
    let run = id.clone();
    let deleting = tokio::task::spawn_blocking(move || store.delete_run(&run));
    match tokio::time::timeout(DELETE_WAIT, deleting).await {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(run = %id, "removing the run's snapshots: {e}"),
        Ok(Err(e)) => tracing::warn!(run = %id, "removing the run's snapshots: {e}"),
        Err(_) => {
            tracing::warn!(run = %id, "removing the run's snapshots takes longer than {DELETE_WAIT:?}; it goes on in the background")
        }
    }
}
