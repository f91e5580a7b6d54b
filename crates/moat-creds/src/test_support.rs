//! Helpers shared by this crate's unit tests: a self-deleting temp dir.

use std::path::{Path, PathBuf};

use moat_core::RunId;

/// A fresh private directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("moat-creds-{}", RunId::generate()));
        moat_core::atomic::create_private_dir(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
