//! Advisory file locks (`flock`) with a bounded wait: the per-run `.lock`
//! held while a run is being created, the daemon's spawn lock, and the
//! daemon's lifetime lock (which also records its holder's pid).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An exclusive lock on a file, released when dropped (or when the holding
/// process dies, which is what makes it a crash detector).
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("timed out after {waited:?} waiting for the lock {path}")]
    Timeout { path: PathBuf, waited: Duration },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl FileLock {
    /// Takes the lock, waiting at most `timeout`.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<Self, LockError> {
        let file = open_lock_file(path)?;
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(FileLock {
                        file,
                        path: path.to_path_buf(),
                    });
                }
                Err(TryLockError::WouldBlock) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(LockError::Timeout {
                        path: path.to_path_buf(),
                        waited: timeout,
                    });
                }
                Err(TryLockError::Error(source)) => {
                    return Err(LockError::Io {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            }
        }
    }

    /// Takes the lock if it is free right now.
    pub fn try_acquire(path: &Path) -> Result<Option<Self>, LockError> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock {
                file,
                path: path.to_path_buf(),
            })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(source)) => Err(LockError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Whether some process holds the lock at `path` (a missing file is free).
    pub fn is_held(path: &Path) -> bool {
        if !path.exists() {
            return false;
        }
        matches!(Self::try_acquire(path), Ok(None))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes this process's pid into the held lock file, so others can
    /// tell who holds it without `/proc` (which macOS lacks).
    pub fn record_pid(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        write!(self.file, "{}", std::process::id())?;
        self.file.sync_all()
    }

    /// The pid of the process holding the lock at `path`, when it is held
    /// and its holder recorded one.
    pub fn holder(path: &Path) -> Option<u32> {
        if !Self::is_held(path) {
            return None;
        }
        let mut text = String::new();
        File::open(path).ok()?.take(32).read_to_string(&mut text).ok()?;
        text.trim().parse().ok()
    }
}

fn open_lock_file(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_times_out_and_release_frees() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("moat-lock");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".lock");
        let held = FileLock::acquire(&path, Duration::from_secs(1)).unwrap();
        assert!(FileLock::is_held(&path));
        let err = FileLock::acquire(&path, Duration::from_millis(100)).unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
        drop(held);
        assert!(!FileLock::is_held(&path));
        let mut held = FileLock::acquire(&path, Duration::from_secs(1)).unwrap();
        held.record_pid().unwrap();
        assert_eq!(FileLock::holder(&path), Some(std::process::id()));
        drop(held);
        assert_eq!(FileLock::holder(&path), None, "a free lock has no holder");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
