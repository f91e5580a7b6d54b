//! Run metadata (`metadata.json`) and the run state machine
//! (ARCHITECTURE.md, "Run states").

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::RunId;

/// Current `metadata.json` format version.
pub const METADATA_VERSION: u32 = 1;

/// Where a run is in its life. A state is written before the side effect it
/// announces, so after a crash the daemon knows what may exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Registered; runtime objects may be being created.
    Creating,
    /// Network and container exist; not started yet.
    Created,
    /// Start requested.
    Starting,
    /// The container is running.
    Running,
    /// A stop was requested.
    Stopping,
    /// The container exited; `exit_code` says how.
    Exited,
    /// Creation or supervision failed; `failure` says why.
    Failed,
}

impl RunState {
    /// Exited or failed: nothing of the run runs any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Exited | RunState::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Creating => "creating",
            RunState::Created => "created",
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Stopping => "stopping",
            RunState::Exited => "exited",
            RunState::Failed => "failed",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything moat records about one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMetadata {
    pub version: u32,
    pub id: RunId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub workspace: PathBuf,
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    pub runtime: String,
    pub state: RunState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Why the run failed, when `state` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited_at: Option<DateTime<Utc>>,
    /// When every runtime object of the run was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleaned_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Keep the container after exit (`--keep`).
    #[serde(default)]
    pub keep: bool,
    /// Granted providers (names only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<String>,
    /// Hosts added to the run's network rules while it ran (`moat join`);
    /// the grants it added are in `grants`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added_hosts: Vec<String>,
    /// Secret names injected as env vars (never their values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// URLs of the run's `ports:` endpoints on the routing endpoint, by
    /// endpoint name (set once they are routed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<String, String>,
    /// The id of the workspace snapshot taken before the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

impl RunMetadata {
    /// A run that has just been registered.
    pub fn new(id: RunId, workspace: PathBuf, image: String, runtime: String) -> Self {
        RunMetadata {
            version: METADATA_VERSION,
            id,
            name: None,
            workspace,
            image,
            command: Vec::new(),
            runtime,
            state: RunState::Creating,
            exit_code: None,
            failure: None,
            created_at: Utc::now(),
            started_at: None,
            exited_at: None,
            cleaned_at: None,
            container_id: None,
            network: None,
            keep: false,
            grants: Vec::new(),
            added_hosts: Vec::new(),
            secrets: Vec::new(),
            labels: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            snapshot: None,
        }
    }

    /// Display name: the given name, or the id.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let mut meta = RunMetadata::new(RunId::generate(), "/w".into(), "img".into(), "docker".into());
        meta.name = Some("demo".into());
        meta.state = RunState::Exited;
        meta.exit_code = Some(7);
        let json = serde_json::to_string(&meta).unwrap();
        assert!(json.contains(r#""state":"exited""#), "{json}");
        let back: RunMetadata = serde_json::from_str(&json).unwrap();
        assert_eq!(back, meta);
    }

    #[test]
    fn terminal_states() {
        assert!(RunState::Exited.is_terminal());
        assert!(RunState::Failed.is_terminal());
        assert!(!RunState::Running.is_terminal());
        assert!(!RunState::Creating.is_terminal());
    }
}
