//! What a sweep of the reaper is asked to do and what it reports: the
//! objects it judges (`ObjectKey`) and the report of one sweep.

use std::fmt;

use chrono::{DateTime, Utc};
use moat_core::RuntimeKind;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Container,
    Network,
    Volume,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Container => "container",
            ObjectKind::Network => "network",
            ObjectKind::Volume => "volume",
        })
    }
}

/// Identifies one runtime object across sweeps.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub runtime: RuntimeKind,
    pub kind: ObjectKind,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.runtime, self.kind, self.name)
    }
}

/// What a caller asks of a sweep.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepRequest {
    /// Kinds to sweep; empty = all.
    #[serde(default)]
    pub kinds: Vec<ObjectKind>,
    #[serde(default)]
    pub dry_run: bool,
    /// Skip the two-sweep wait (never the liveness check).
    #[serde(default)]
    pub force: bool,
    /// Also remove the objects left by moat's Go implementation (never
    /// removed otherwise): `moat system prune --legacy`.
    #[serde(default)]
    pub legacy: bool,
}

/// What one sweep found and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub trigger: String,
    pub dry_run: bool,
    pub force: bool,
    /// Go-era objects were to be removed too.
    #[serde(default)]
    pub legacy: bool,
    pub runtimes: Vec<RuntimeSweep>,
    /// Set when the sweep hit its overall bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One runtime's part of a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuntimeSweep {
    pub runtime: RuntimeKind,
    pub candidates: usize,
    /// Candidates kept because their run is live.
    pub live: usize,
    /// Removed (or, in a dry run, reclaimable) objects.
    pub removed: Vec<ObjectKey>,
    /// Orphans waiting for their second sighting.
    pub awaiting_second_sighting: usize,
    /// Kept for another reason (foreign home or attachment).
    pub protected: usize,
    pub failed: Vec<FailedRemoval>,
    /// Listing errors (the kind was not swept).
    pub errors: Vec<String>,
    /// Objects left by moat's Go implementation: never swept, removed only
    /// when the request says `legacy` (then also in `removed`/`failed`).
    #[serde(default)]
    pub legacy: Vec<ObjectKey>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedRemoval {
    pub object: ObjectKey,
    pub error: String,
    /// Consecutive failures of this object.
    pub failures: u32,
}
