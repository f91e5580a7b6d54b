//! Helpers shared by the integration tests: a throwaway `MOAT_HOME`.

#![allow(dead_code)]

use std::path::PathBuf;

use moat_core::{MoatHome, RunId};

/// A fresh `MOAT_HOME` under the system temp dir, removed on drop.
pub struct TempHome {
    pub home: MoatHome,
    root: PathBuf,
}

impl TempHome {
    pub fn new() -> Self {
        let root = std::env::temp_dir().join(format!("moat-creds-it-{}", RunId::generate()));
        moat_core::atomic::create_private_dir(&root).unwrap();
        TempHome {
            home: MoatHome::new(&root),
            root,
        }
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
