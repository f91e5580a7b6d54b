//! What changed between a snapshot and the workspace as it is now: paths
//! added, removed and modified (content, kind, mode or symlink target),
//! under the snapshot's own exclusion rules. Reading the workspace uses the
//! stat cache, so unchanged files are not read.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde::Serialize;

use super::cache::StatCache;
use super::confined::open_file_at;
use super::walk::{Found, Visit, Walk, is_within};
use super::{Entry, EntryKind, Rules, SnapshotError, SnapshotStore};

/// The workspace as it is now.
#[derive(Debug, Default)]
pub struct Workspace {
    pub entries: BTreeMap<String, Entry>,
    /// Paths that could not be read.
    pub skipped: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// In the workspace, not in the snapshot.
    Added,
    /// In the snapshot, not in the workspace.
    Removed,
    Modified,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
    /// Whether the path is (or was, when removed) a directory.
    pub dir: bool,
}

/// Reads the workspace under `rules` (hashing only files whose stamp the
/// stat cache does not know).
pub fn scan_workspace(store: &SnapshotStore, workspace: &Path, rules: &Rules) -> Result<Workspace, SnapshotError> {
    let cache = StatCache::load(&store.cache_path(workspace));
    let never = AtomicBool::new(false);
    let mut walk = Walk::new(workspace, rules, &never)?;
    let mut found = Workspace::default();
    walk.run(&mut |visit: Visit<'_>| {
        let (kind, size, hash, target) = match visit.found {
            Found::Dir => (EntryKind::Dir, 0, None, None),
            Found::Symlink(target) => (EntryKind::Symlink, 0, None, Some(target)),
            Found::File { dir, name, stamp } => {
                let hash = match cache.hash(visit.path, &stamp) {
                    Some(hash) => hash.to_string(),
                    None => match hash_file(dir, name) {
                        Ok(hash) => hash,
                        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                            found.skipped.push(visit.path.to_string());
                            return Ok(());
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                        Err(e) => return Err(SnapshotError::io("read", workspace.join(visit.path))(e)),
                    },
                };
                (EntryKind::File, stamp.size, Some(hash), None)
            }
        };
        let entry = Entry {
            path: visit.path.to_string(),
            kind,
            mode: visit.mode,
            size,
            hash,
            target,
        };
        found.entries.insert(entry.path.clone(), entry);
        Ok(())
    })?;
    found.skipped.extend(walk.skipped);
    Ok(found)
}

fn hash_file(dir: std::os::fd::BorrowedFd<'_>, name: &std::ffi::CStr) -> io::Result<String> {
    let mut file = open_file_at(dir, name)?;
    let mut hasher = blake3::Hasher::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// The changes from `snapshot` to `now`, by path; paths either side could
/// not read are left out.
pub fn diff(snapshot: &[Entry], snapshot_skipped: &[String], now: &Workspace) -> Vec<Change> {
    let unknown = |path: &str| {
        snapshot_skipped
            .iter()
            .chain(&now.skipped)
            .any(|skipped| is_within(path, skipped))
    };
    let before: BTreeMap<&str, &Entry> = snapshot.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut changes = Vec::new();
    for (path, old) in &before {
        if unknown(path) {
            continue;
        }
        match now.entries.get(*path) {
            None => changes.push(change(path, ChangeKind::Removed, old)),
            Some(new) if differs(old, new) => changes.push(change(path, ChangeKind::Modified, new)),
            Some(_) => {}
        }
    }
    for (path, new) in &now.entries {
        if !before.contains_key(path.as_str()) && !unknown(path) {
            changes.push(change(path, ChangeKind::Added, new));
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes
}

fn change(path: &str, kind: ChangeKind, entry: &Entry) -> Change {
    Change {
        path: path.to_string(),
        kind,
        dir: entry.kind == EntryKind::Dir,
    }
}

fn differs(old: &Entry, new: &Entry) -> bool {
    old.kind != new.kind || old.hash != new.hash || old.target != new.target || old.mode != new.mode
}
