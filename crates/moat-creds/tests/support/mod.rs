//! Helpers shared by the integration tests: a throwaway `MOAT_HOME`.

#![allow(dead_code)]

use moat_core::MoatHome;

/// A fresh private `MOAT_HOME` under the system temp dir, removed on drop.
pub struct TempHome {
    pub home: MoatHome,
    _root: tempfile::TempDir,
}

impl TempHome {
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        TempHome {
            home: MoatHome::new(root.path()),
            _root: root,
        }
    }
}
