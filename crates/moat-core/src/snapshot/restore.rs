//! Restoring a snapshot into a directory: paths added since are removed,
//! removed and modified ones written back from the object store (each
//! content checked against its hash before it is put in place), directory
//! modes set last. Every write goes through [`Confined`]: nothing is ever
//! written through a symlink, so nothing outside the target is touched.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::Path;

use super::confined::Confined;
use super::walk::is_within;
use super::{Change, ChangeKind, Entry, EntryKind, SnapshotError, SnapshotStore};

/// What a restore did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub written: u64,
    pub removed: u64,
}

/// Makes `target` hold what `entries` recorded, given `changes` (the diff
/// from the snapshot to `target` as it is).
pub fn restore(
    store: &SnapshotStore,
    entries: &[Entry],
    changes: &[Change],
    target: &Path,
) -> Result<RestoreReport, SnapshotError> {
    let confined = Confined::open(target).map_err(SnapshotError::io("open", target))?;
    let mut report = RestoreReport::default();
    let mut removed: Vec<&str> = Vec::new();
    for change in changes.iter().filter(|c| c.kind == ChangeKind::Added) {
        if removed.iter().any(|dir| is_within(&change.path, dir)) {
            continue;
        }
        confined
            .remove(&change.path)
            .map_err(SnapshotError::io("remove", target.join(&change.path)))?;
        removed.push(&change.path);
        report.removed += 1;
    }
    let wanted: HashSet<&str> = changes
        .iter()
        .filter(|c| c.kind != ChangeKind::Added)
        .map(|c| c.path.as_str())
        .collect();
    let objects = store.objects();
    let mut dirs = Vec::new();
    for entry in entries.iter().filter(|e| wanted.contains(e.path.as_str())) {
        let path = target.join(&entry.path);
        match entry.kind {
            EntryKind::Dir => {
                confined
                    .make_dir(&entry.path, 0o700)
                    .map_err(SnapshotError::io("create", &path))?;
                dirs.push(entry);
            }
            EntryKind::Symlink => {
                let link = entry.target.as_deref().unwrap_or_default();
                confined
                    .write_symlink(&entry.path, link)
                    .map_err(SnapshotError::io("create the symlink", &path))?;
            }
            EntryKind::File => {
                let hash = entry.hash.as_deref().unwrap_or_default();
                let object = objects
                    .open(hash)
                    .map_err(SnapshotError::io("read the stored content of", &path))?;
                let mut checked = Checked::new(object, hash);
                confined
                    .write_file(&entry.path, &mut checked, entry.mode)
                    .map_err(SnapshotError::io("write", &path))?;
            }
        }
        report.written += 1;
    }
    for dir in dirs.iter().rev() {
        confined
            .chmod_dir(&dir.path, dir.mode)
            .map_err(SnapshotError::io("set the mode of", target.join(&dir.path)))?;
    }
    Ok(report)
}

/// A stored content that fails at its end unless it has the expected hash
/// (a damaged object is never put in place).
struct Checked {
    inner: std::fs::File,
    hasher: blake3::Hasher,
    expected: String,
}

impl Checked {
    fn new(inner: std::fs::File, expected: &str) -> Self {
        Checked {
            inner,
            hasher: blake3::Hasher::new(),
            expected: expected.to_string(),
        }
    }
}

impl Read for Checked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.hasher.finalize().to_hex().as_str() != self.expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("stored content {} is damaged (its hash differs)", self.expected),
            ));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
