//! The stat cache of a workspace: path → (size, mtime, ctime, inode,
//! device) → content hash, so that a file whose stamp has not changed since
//! the last snapshot is not read again. An entry is only recorded when the
//! file's last change (its ctime, which no program can set) is older than
//! the snapshot by [`SETTLE_NS`]: a file changed around the time it was
//! read is read again next time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::walk::Stamp;
use crate::atomic::{create_private_dir, write_atomic};

/// How long before a snapshot a file must have last changed to be cached.
const SETTLE_NS: i64 = 2_000_000_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Cached {
    #[serde(flatten)]
    stamp: Stamp,
    hash: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct StatCache {
    entries: HashMap<String, Cached>,
    #[serde(skip)]
    path: PathBuf,
}

impl StatCache {
    /// The cache at `path`; empty when missing or unreadable (it is only a cache).
    pub(crate) fn load(path: &Path) -> Self {
        let mut cache = std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<StatCache>(&bytes).ok())
            .unwrap_or_default();
        cache.path = path.to_path_buf();
        cache
    }

    /// The hash of `path` when its stamp is the cached one.
    pub(crate) fn hash(&self, path: &str, stamp: &Stamp) -> Option<&str> {
        self.entries
            .get(path)
            .filter(|cached| cached.stamp == *stamp)
            .map(|cached| cached.hash.as_str())
    }

    /// A fresh cache to fill during a walk (stale paths drop out).
    pub(crate) fn successor(&self) -> StatCache {
        StatCache {
            entries: HashMap::with_capacity(self.entries.len()),
            path: self.path.clone(),
        }
    }

    /// Records `hash` for `path` if the file has settled since `started_ns`.
    pub(crate) fn record(&mut self, path: &str, stamp: Stamp, hash: &str, started_ns: i64) {
        if stamp.ctime_ns < started_ns - SETTLE_NS {
            self.entries.insert(
                path.to_string(),
                Cached {
                    stamp,
                    hash: hash.to_string(),
                },
            );
        }
    }

    pub(crate) fn save(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        if let Some(dir) = self.path.parent() {
            create_private_dir(dir)?;
        }
        write_atomic(&self.path, &bytes, 0o600)
    }
}
