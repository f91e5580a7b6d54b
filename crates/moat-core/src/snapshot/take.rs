//! Taking a snapshot: walk the workspace, reuse the hash of every file
//! whose stamp the stat cache knows, read and store the others, make the
//! new objects durable, then write the manifest and, last, the meta (a
//! snapshot without a meta is incomplete and collected). A file that
//! cannot be read is left out and named in the meta's `skipped`.

use std::io;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use chrono::Utc;

use super::cache::StatCache;
use super::confined::open_file_at;
use super::objects::Objects;
use super::store::{MANIFEST, META, Manifest};
use super::walk::{Found, Stamp, Visit, Walk};
use super::{Entry, EntryKind, Rules, SnapshotError, SnapshotId, SnapshotMeta, SnapshotStore, Trigger};
use crate::atomic::{create_private_dir, write_atomic};
use crate::id::RunId;

/// What to snapshot, for whom.
pub struct TakeRequest<'a> {
    pub workspace: &'a Path,
    pub run_id: &'a RunId,
    pub trigger: Trigger,
    pub rules: Rules,
    /// Set to abandon the snapshot (checked between paths).
    pub cancel: &'a AtomicBool,
}

/// Takes a snapshot of `req.workspace`; nothing of it is left behind on
/// failure but objects, which the next collection removes.
pub fn take(store: &SnapshotStore, req: &TakeRequest<'_>) -> Result<SnapshotMeta, SnapshotError> {
    let started = Instant::now();
    let created_at = Utc::now();
    let lock = store.lock()?;
    let id = SnapshotId::generate();
    let dir = store.snapshot_dir(req.run_id, &id);
    let taken = record(store, req).and_then(|(entries, stats, skipped)| {
        let meta = SnapshotMeta {
            id: id.clone(),
            run_id: req.run_id.clone(),
            workspace: req.workspace.to_path_buf(),
            created_at,
            trigger: req.trigger,
            rules: req.rules.clone(),
            files: stats.files,
            dirs: stats.dirs,
            symlinks: stats.symlinks,
            bytes: stats.bytes,
            stored_bytes: stats.stored,
            read_files: stats.read,
            skipped,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        write_snapshot(&dir, entries, &meta)?;
        Ok(meta)
    });
    if taken.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = store.collect_garbage(&lock);
    }
    taken
}

#[derive(Default)]
struct Stats {
    files: u64,
    dirs: u64,
    symlinks: u64,
    bytes: u64,
    stored: u64,
    read: u64,
}

type Recorded = (Vec<Entry>, Stats, Vec<String>);

fn record(store: &SnapshotStore, req: &TakeRequest<'_>) -> Result<Recorded, SnapshotError> {
    let cache_path = store.cache_path(req.workspace);
    let old_cache = StatCache::load(&cache_path);
    let mut cache = old_cache.successor();
    let objects = store.objects();
    let started_ns = Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let mut entries = Vec::new();
    let mut stats = Stats::default();
    let mut skipped = Vec::new();
    let mut walk = Walk::new(req.workspace, &req.rules, req.cancel)?;
    walk.run(&mut |visit: Visit<'_>| {
        let entry = match visit.found {
            Found::Dir => {
                stats.dirs += 1;
                entry(visit.path, EntryKind::Dir, visit.mode)
            }
            Found::Symlink(target) => {
                stats.symlinks += 1;
                Entry {
                    target: Some(target),
                    ..entry(visit.path, EntryKind::Symlink, visit.mode)
                }
            }
            Found::File { dir, name, stamp } => {
                let known = old_cache
                    .hash(visit.path, &stamp)
                    .filter(|hash| objects.contains(hash))
                    .map(|hash| (hash.to_string(), stamp));
                let stored = match known {
                    Some(known) => Some(known),
                    None => store_file(&objects, dir, name, visit.path, req.workspace, &mut stats)?,
                };
                let Some((hash, stamp)) = stored else {
                    skipped.push(visit.path.to_string());
                    return Ok(());
                };
                cache.record(visit.path, stamp, &hash, started_ns);
                stats.files += 1;
                stats.bytes += stamp.size;
                Entry {
                    size: stamp.size,
                    hash: Some(hash),
                    ..entry(visit.path, EntryKind::File, visit.mode)
                }
            }
        };
        entries.push(entry);
        Ok(())
    })?;
    skipped.extend(walk.skipped);
    skipped.sort();
    if stats.stored > 0 {
        sync_store(store.root())?;
    }
    if let Err(e) = cache.save() {
        tracing::warn!("cannot save the snapshot stat cache {}: {e}", cache_path.display());
    }
    Ok((entries, stats, skipped))
}

/// Reads a file (never through a symlink) into the store; `None` when it
/// cannot be read (permission) or went away.
fn store_file(
    objects: &Objects,
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::CStr,
    path: &str,
    workspace: &Path,
    stats: &mut Stats,
) -> Result<Option<(String, Stamp)>, SnapshotError> {
    let full = || workspace.join(path);
    let mut file = match open_file_at(dir, name) {
        Ok(file) => file,
        Err(e) if matches!(e.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound) => return Ok(None),
        // A symlink put there since the walk listed it.
        Err(e) if rustix::io::Errno::from_io_error(&e) == Some(rustix::io::Errno::LOOP) => return Ok(None),
        Err(e) => return Err(SnapshotError::io("open", full())(e)),
    };
    let opened = rustix::fs::fstat(&file).map_err(|e| SnapshotError::io("inspect", full())(e.into()))?;
    if rustix::fs::FileType::from_raw_mode(opened.st_mode) != rustix::fs::FileType::RegularFile {
        return Ok(None);
    }
    // As of the open: the file may have changed since the walk saw it.
    let stamp = Stamp::of(&opened);
    let put = objects
        .put(&mut file, stamp.size)
        .map_err(SnapshotError::io("store the content of", full()))?;
    stats.stored += put.stored;
    stats.read += 1;
    Ok(Some((
        put.hash,
        Stamp {
            size: put.size,
            ..stamp
        },
    )))
}

fn entry(path: &str, kind: EntryKind, mode: u32) -> Entry {
    Entry {
        path: path.to_string(),
        kind,
        mode,
        size: 0,
        hash: None,
        target: None,
    }
}

/// Makes the objects written so far durable before a manifest names them.
fn sync_store(root: &Path) -> Result<(), SnapshotError> {
    let fd = std::fs::File::open(root).map_err(SnapshotError::io("open", root))?;
    rustix::fs::syncfs(&fd).map_err(|e| SnapshotError::io("flush", root)(e.into()))
}

fn write_snapshot(dir: &Path, entries: Vec<Entry>, meta: &SnapshotMeta) -> Result<(), SnapshotError> {
    create_private_dir(dir).map_err(SnapshotError::io("create", dir))?;
    let manifest = Manifest { version: 1, entries };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| SnapshotError::io("encode", dir)(io::Error::other(e)))?;
    write_atomic(&dir.join(MANIFEST), &bytes, 0o600).map_err(SnapshotError::io("write", dir.join(MANIFEST)))?;
    let bytes = serde_json::to_vec_pretty(meta).map_err(|e| SnapshotError::io("encode", dir)(io::Error::other(e)))?;
    write_atomic(&dir.join(META), &bytes, 0o600).map_err(SnapshotError::io("write", dir.join(META)))
}
