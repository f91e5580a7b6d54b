//! The layout of `MOAT_HOME/snapshots/` and what is done to it as a whole:
//! listing, loading manifests, retention, deleting a run's snapshots and
//! collecting the objects no manifest names. Every change to the store
//! happens under its lock (`snapshots/.lock`), so a collection never removes
//! an object a snapshot being taken has just stored.
//!
//! ```text
//! snapshots/
//!   .lock
//!   objects/<2 hex>/<62 hex>      file contents by BLAKE3 hash (0600)
//!   objects/tmp/                  objects being written
//!   cache/<workspace hash>.json   stat cache of one workspace
//!   runs/<run id>/<snap id>/      manifest.json (entries), meta.json (written last)
//! ```

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::objects::Objects;
use super::{Entry, Retention, SnapshotError, SnapshotId, SnapshotMeta, Trigger, is_safe_relative};
use crate::id::RunId;
use crate::lock::FileLock;
use crate::paths::MoatHome;

/// How long a change to the store waits for another to finish.
const LOCK_TIMEOUT: Duration = Duration::from_secs(300);
pub(crate) const META: &str = "meta.json";
pub(crate) const MANIFEST: &str = "manifest.json";

/// A manifest file.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub version: u32,
    pub entries: Vec<Entry>,
}

/// What a collection removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GarbageReport {
    pub snapshots: u64,
    pub objects: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug)]
pub struct SnapshotStore {
    root: PathBuf,
}

impl SnapshotStore {
    pub fn new(home: &MoatHome) -> Self {
        SnapshotStore {
            root: home.root().join("snapshots"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn objects(&self) -> Objects {
        Objects::new(self.root.join("objects"))
    }

    pub(crate) fn lock(&self) -> Result<FileLock, SnapshotError> {
        crate::atomic::create_private_dir(&self.root).map_err(SnapshotError::io("create", &self.root))?;
        Ok(FileLock::acquire(&self.root.join(".lock"), LOCK_TIMEOUT)?)
    }

    pub(crate) fn cache_path(&self, workspace: &Path) -> PathBuf {
        let key = blake3::hash(workspace.as_os_str().as_encoded_bytes()).to_hex();
        self.root.join("cache").join(format!("{}.json", &key[..16]))
    }

    pub(crate) fn snapshot_dir(&self, run: &RunId, id: &SnapshotId) -> PathBuf {
        self.root.join("runs").join(run.as_str()).join(id.as_str())
    }

    /// Every complete snapshot, oldest first.
    pub fn list_all(&self) -> Result<Vec<SnapshotMeta>, SnapshotError> {
        let runs_dir = self.root.join("runs");
        let mut all = Vec::new();
        let runs = match fs::read_dir(&runs_dir) {
            Ok(runs) => runs,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(all),
            Err(e) => return Err(SnapshotError::io("list", &runs_dir)(e)),
        };
        for run in runs {
            let run = run.map_err(SnapshotError::io("list", &runs_dir))?;
            let Ok(snapshots) = fs::read_dir(run.path()) else {
                continue;
            };
            for snapshot in snapshots.flatten() {
                if let Some(meta) = read_meta(&snapshot.path().join(META))? {
                    all.push(meta);
                }
            }
        }
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok(all)
    }

    /// The snapshots of `workspace`, oldest first.
    pub fn list_workspace(&self, workspace: &Path) -> Result<Vec<SnapshotMeta>, SnapshotError> {
        let mut all = self.list_all()?;
        all.retain(|meta| meta.workspace == workspace);
        Ok(all)
    }

    /// The snapshot `id`.
    pub fn find(&self, id: &str) -> Result<SnapshotMeta, SnapshotError> {
        self.list_all()?
            .into_iter()
            .find(|meta| meta.id.as_str() == id)
            .ok_or_else(|| SnapshotError::NotFound(id.to_string()))
    }

    /// The entries of a snapshot; refused when one names a path outside
    /// the workspace (a damaged or tampered manifest).
    pub fn entries(&self, meta: &SnapshotMeta) -> Result<Vec<Entry>, SnapshotError> {
        let path = self.snapshot_dir(&meta.run_id, &meta.id).join(MANIFEST);
        let bytes = fs::read(&path).map_err(SnapshotError::io("read", &path))?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| SnapshotError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if let Some(bad) = manifest.entries.iter().find(|e| !is_safe_relative(&e.path)) {
            return Err(SnapshotError::Corrupt {
                path,
                reason: format!("names {:?}, which is not a path inside the workspace", bad.path),
            });
        }
        Ok(manifest.entries)
    }

    /// Applies `retention` to the pre-run snapshots of `workspace` (oldest
    /// go first; the first one stays unless `delete_initial`), then
    /// collects garbage if any went.
    pub fn prune(&self, workspace: &Path, retention: Retention) -> Result<GarbageReport, SnapshotError> {
        let lock = self.lock()?;
        let snapshots: Vec<SnapshotMeta> = self
            .list_workspace(workspace)?
            .into_iter()
            .filter(|meta| meta.trigger == Trigger::PreRun)
            .collect();
        let max = retention.max_count.max(1) as usize;
        if snapshots.len() <= max {
            return Ok(GarbageReport::default());
        }
        let mut doomed: Vec<&SnapshotMeta> = snapshots.iter().collect();
        if !retention.delete_initial {
            doomed.remove(0);
        }
        let excess = snapshots.len() - max;
        for meta in doomed.into_iter().take(excess) {
            self.remove_snapshot(meta)?;
        }
        let mut report = self.collect_garbage(&lock)?;
        report.snapshots = excess as u64;
        Ok(report)
    }

    /// Removes every snapshot `run` took, and the contents only they held.
    pub fn delete_run(&self, run: &RunId) -> Result<GarbageReport, SnapshotError> {
        let dir = self.root.join("runs").join(run.as_str());
        if !dir.exists() {
            return Ok(GarbageReport::default());
        }
        let lock = self.lock()?;
        let count = fs::read_dir(&dir).map_or(0, Iterator::count) as u64;
        fs::remove_dir_all(&dir).map_err(SnapshotError::io("remove", &dir))?;
        let mut report = self.collect_garbage(&lock)?;
        report.snapshots = count;
        Ok(report)
    }

    fn remove_snapshot(&self, meta: &SnapshotMeta) -> Result<(), SnapshotError> {
        let dir = self.snapshot_dir(&meta.run_id, &meta.id);
        // The meta first: a half-removed snapshot is an incomplete one.
        let _ = fs::remove_file(dir.join(META));
        fs::remove_dir_all(&dir).map_err(SnapshotError::io("remove", &dir))?;
        if let Some(run_dir) = dir.parent() {
            let _ = fs::remove_dir(run_dir);
        }
        Ok(())
    }

    /// Removes incomplete snapshots and every object no manifest names.
    /// Runs under the store lock (`_lock`).
    pub(crate) fn collect_garbage(&self, _lock: &FileLock) -> Result<GarbageReport, SnapshotError> {
        let mut keep = HashSet::new();
        let runs_dir = self.root.join("runs");
        if let Ok(runs) = fs::read_dir(&runs_dir) {
            for run in runs.flatten() {
                let Ok(snapshots) = fs::read_dir(run.path()) else {
                    continue;
                };
                for snapshot in snapshots.flatten() {
                    let dir = snapshot.path();
                    let Some(meta) = read_meta(&dir.join(META))? else {
                        fs::remove_dir_all(&dir).map_err(SnapshotError::io("remove", &dir))?;
                        continue;
                    };
                    for entry in self.entries(&meta)? {
                        keep.extend(entry.hash);
                    }
                }
                let _ = fs::remove_dir(run.path());
            }
        }
        let objects = self.root.join("objects");
        let (count, bytes) = self
            .objects()
            .sweep(&keep)
            .map_err(SnapshotError::io("collect garbage in", &objects))?;
        Ok(GarbageReport {
            snapshots: 0,
            objects: count,
            bytes,
        })
    }
}

/// The meta at `path`; `None` when the snapshot is incomplete (no meta yet).
fn read_meta(path: &Path) -> Result<Option<SnapshotMeta>, SnapshotError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SnapshotError::io("read", path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| SnapshotError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}
