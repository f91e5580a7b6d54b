//! `moat system prune --images`: which images moat built from
//! `dependencies:` (`moat/run:*`) to remove, and what the daemon did.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Days an image must have gone unused before `--images` removes it when
/// `--older-than` is not given.
pub const DEFAULT_UNUSED_DAYS: u32 = 30;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePruneRequest {
    /// Remove images no run used for this many days (0: every unused one).
    pub older_than_days: u32,
    /// Report what would be removed; remove nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// One image the daemon judged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgedImage {
    /// `moat/run:<hash>`.
    pub tag: String,
    /// The latest of its build and the runs that used it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<DateTime<Utc>>,
    /// Why it was kept, or why removing it failed; empty when removed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePruneReport {
    pub dry_run: bool,
    pub removed: Vec<JudgedImage>,
    pub kept: Vec<JudgedImage>,
    pub failed: Vec<JudgedImage>,
}
