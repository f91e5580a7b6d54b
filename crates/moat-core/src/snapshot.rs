//! Workspace snapshots (docs/snapshots.md): before a run, the files of its
//! workspace are recorded in a content-addressed store under
//! `MOAT_HOME/snapshots/` (each content once, by its BLAKE3 hash) with one
//! manifest per snapshot (path, kind, mode, size, hash, symlink target).
//! Snapshots belong to the run that took them and are listed, diffed and
//! restored per workspace. The workspace is the agent's, so it is read and
//! written without ever following a symlink ([`confined`]).

mod cache;
mod compare;
mod confined;
mod objects;
mod restore;
mod store;
mod take;
mod walk;

use std::io;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::id::RunId;

pub use compare::{Change, ChangeKind, Workspace, diff, scan_workspace};
pub use restore::{RestoreReport, restore};
pub use store::{GarbageReport, SnapshotStore};
pub use take::{TakeRequest, take};

/// `retention.max_count` when the file leaves it unset (0).
pub const DEFAULT_MAX_COUNT: u32 = 10;

/// Why a snapshot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Before a run's container started.
    PreRun,
    /// Before `moat snapshot restore --force` overwrote the workspace.
    PreRestore,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::PreRun => "pre_run",
            Trigger::PreRestore => "pre_restore",
        }
    }
}

/// Which paths a snapshot leaves out (besides `.git`, always left out).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Honour `.gitignore` files and `.git/info/exclude`.
    pub gitignore: bool,
    /// More patterns to leave out, in `.gitignore` syntax.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional: Vec<String>,
}

impl Rules {
    /// Refuses a pattern of `additional` that is not valid `.gitignore` syntax.
    pub fn check(&self) -> Result<(), SnapshotError> {
        walk::check_patterns(&self.additional)
    }
}

/// How many snapshots of a workspace are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// At most this many (the newest).
    pub max_count: u32,
    /// Whether the workspace's first snapshot may be pruned too; when
    /// `false` it is kept as the baseline (and counts towards `max_count`).
    pub delete_initial: bool,
}

/// The identity of one snapshot: `snap_` and 12 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId(String);

impl SnapshotId {
    const PREFIX: &'static str = "snap_";

    pub fn generate() -> Self {
        let bytes: [u8; 6] = rand::rng().random();
        SnapshotId(format!("{}{}", Self::PREFIX, hex::encode(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_valid(s: &str) -> bool {
        s.len() == Self::PREFIX.len() + 12
            && s.starts_with(Self::PREFIX)
            && s[Self::PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl TryFrom<String> for SnapshotId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if Self::is_valid(&s) {
            Ok(SnapshotId(s))
        } else {
            Err(format!(
                "invalid snapshot id {s:?}: expected `snap_` followed by 12 lowercase hex digits"
            ))
        }
    }
}

impl From<SnapshotId> for String {
    fn from(id: SnapshotId) -> String {
        id.0
    }
}

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a snapshot is, without its entries (`meta.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub id: SnapshotId,
    pub run_id: RunId,
    pub workspace: PathBuf,
    pub created_at: DateTime<Utc>,
    pub trigger: Trigger,
    pub rules: Rules,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Total size of the files.
    pub bytes: u64,
    /// Bytes this snapshot added to the store (contents it did not hold).
    pub stored_bytes: u64,
    /// Files read and hashed (the others' hashes came from the stat cache).
    #[serde(default)]
    pub read_files: u64,
    /// Paths that could not be read (left out, with a warning).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    pub duration_ms: u64,
}

/// One recorded path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the workspace, `/`-separated, never `..` or absolute.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (`0o7777` of the mode).
    pub mode: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// BLAKE3 of a file's content (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// A symlink's target, as written (never followed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Lock(#[from] crate::lock::LockError),
    #[error("snapshot store damaged: {} {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("no snapshot {0}")]
    NotFound(String),
    #[error("snapshots.exclude.additional: {0}")]
    Rules(String),
    #[error("the snapshot of {} was abandoned (it took too long)", .0.display())]
    Cancelled(PathBuf),
}

impl SnapshotError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| SnapshotError::Io { action, path, source }
    }
}

/// Whether `path` is a safe relative path (what a manifest may name).
pub(crate) fn is_safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}
