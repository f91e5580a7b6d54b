//! `daemon.log` rotation: one previous generation is kept.

use std::path::Path;

/// Size past which the log is rotated when a daemon starts.
const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;

/// Renames `daemon.log` to `daemon.log.1` when it has grown too large.
pub fn rotate_if_large(path: &Path) {
    let too_large = std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_LOG_BYTES);
    if too_large {
        let mut rotated = path.as_os_str().to_owned();
        rotated.push(".1");
        let _ = std::fs::rename(path, rotated);
    }
}
