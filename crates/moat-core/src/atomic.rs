//! Atomic file writes: temp file in the same directory, fsync, rename, fsync
//! of the directory. A crash leaves either the old or the new content, plus
//! possibly a stray temp file that readers ignore and [`clean_temp_files`]
//! removes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Suffix of temp files; readers skip files ending in it.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Writes `contents` to `path` atomically with the given mode.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = file_name.to_os_string();
    // Unique per write: concurrent writers of one file (threads or
    // processes) must never share a temp file.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let sequence = NEXT.fetch_add(1, Ordering::Relaxed);
    tmp_name.push(format!(".{}.{sequence}{TEMP_SUFFIX}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` (and parents) with mode 0700, tightening it if it exists.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = fs::metadata(dir)?;
    if meta.permissions().mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Removes temp files left in `dir` by writers that crashed mid-write.
pub fn clean_temp_files(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn writes_with_mode_and_replaces() {
        let scratch = temp_dir();
        let dir = scratch.path();
        let path = dir.join("state.json");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_writers_of_one_file_do_not_collide() {
        let scratch = temp_dir();
        let dir = scratch.path();
        let path = dir.join("state.json");
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        write_atomic(&path, format!("writer {i}").as_bytes(), 0o600).unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        assert!(fs::read_to_string(&path).unwrap().starts_with("writer "));
        assert_eq!(fs::read_dir(dir).unwrap().count(), 1, "no temp file is left behind");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_crash_mid_write_leaves_old_content_and_a_cleanable_temp_file() {
        let scratch = temp_dir();
        let dir = scratch.path();
        let path = dir.join("state.json");
        write_atomic(&path, b"old", 0o600).unwrap();
        // A writer that died before its rename leaves a partial temp file.
        fs::write(dir.join(format!("state.json.999{TEMP_SUFFIX}")), b"partial").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(clean_temp_files(dir).unwrap(), 1);
        assert_eq!(fs::read_dir(dir).unwrap().count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }
}
