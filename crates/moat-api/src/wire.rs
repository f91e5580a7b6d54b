//! The daemon's HTTP+JSON API types (daemon-and-reaper.md §2). Versioned and
//! additive: new fields are optional, old clients ignore what they don't know.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use moat_core::BindMount;
use moat_core::{RunId, RunState};
use serde::{Deserialize, Serialize};

/// Version of this API; a client refuses a daemon with another major.
pub const API_VERSION: u32 = 1;

/// Features this daemon offers, reported by `/v1/health`.
pub const CAPABILITIES: &[&str] = &[
    "runs",
    "attach",
    "stop",
    "idle-shutdown",
    "reap",
    "proxy",
    "exec",
    "create-progress",
    "terminal",
    "add-grants",
];

/// Media type of streamed answers (attach, and run creation when asked for).
pub const NDJSON: &str = "application/x-ndjson";

/// Everything the daemon needs to create a run. Secret values are in
/// [`RunSpec::secrets`] and nowhere else.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub workspace: PathBuf,
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub mounts: Vec<BindMount>,
    /// `docker`, `apple`, `kubernetes` (or `fake` in tests); empty: the
    /// daemon detects it.
    #[serde(default)]
    pub runtime: String,
    /// Where a `kubernetes` run goes (`kubernetes:` in moat.yaml).
    #[serde(default, skip_serializing_if = "moat_core::config::KubernetesConfig::is_empty")]
    pub kubernetes: moat_core::config::KubernetesConfig,
    #[serde(default)]
    pub keep: bool,
    /// Keep the container's stdin open for a client (`-i`).
    #[serde(default)]
    pub interactive: bool,
    /// Give the container a TTY of this size (`-t`); its size before the
    /// process starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<moat_core::TerminalSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Named endpoints: name → container port, served by the routing
    /// endpoint; the first (by name) is the run's default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
    /// Resource limits by name (`nofile`, `nproc`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, moat_core::config::Ulimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u32>,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub grants: Vec<String>,
    /// Names of the run's `secrets:` (recorded; they survive a restart).
    #[serde(default)]
    pub secret_names: Vec<String>,
    /// Values of the run's `secrets:`, resolved by the CLI.
    #[serde(default, skip_serializing_if = "SecretEnv::is_empty")]
    pub secrets: SecretEnv,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Network policy the proxy enforces for this run.
    #[serde(default)]
    pub policy: moat_core::config::NetworkPolicy,
    /// Host ports (`network.host`) the run may reach.
    #[serde(default)]
    pub host_ports: Vec<u16>,
    /// Refuse a strict run whose host cannot be closed off by the firewall
    /// (`--require-isolation`).
    #[serde(default)]
    pub require_isolation: bool,
    /// Credential profile the grants come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// `dependencies:` of the run: the daemon builds an image from them on
    /// `image` (the base) and runs that.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    /// The services of `dependencies:` (`postgres@15`): each a sidecar on
    /// the run's network, ready before the run's container starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<moat_core::deps::services::ServiceSpec>,
    /// The user the command runs as (`container.user`); `None`: the
    /// workspace's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Build the dependencies' image again without the cache (`--rebuild`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebuild: bool,
    /// `hooks.post_build_root`: runs as root while the run's image is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_build_root: Option<String>,
    /// `hooks.post_build`: runs as the run's user while its image is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_build: Option<String>,
    /// Files written into the run user's home before the command starts
    /// (an agent's settings and placeholder credentials; never a secret).
    /// Only images built from `dependencies:` (whose init writes them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub home_files: Vec<HomeFile>,
    /// Take a snapshot of the workspace before the container starts
    /// (`snapshots:`); `None`: no snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotSpec>,
    /// Remote MCP servers (`mcp:`) relayed by the proxy; their grants are
    /// among `grants`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp: Vec<moat_core::config::McpServer>,
}

/// A file of [`RunSpec::home_files`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeFile {
    /// Relative to the home directory, plain segments only.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    pub contents: String,
}

/// How the daemon snapshots a run's workspace before starting it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSpec {
    /// What is left out.
    pub rules: moat_core::snapshot::Rules,
    /// Snapshots of the workspace kept (`retention.max_count`, defaulted).
    pub max_count: u32,
    /// Whether the workspace's first snapshot may be pruned.
    #[serde(default)]
    pub delete_initial: bool,
}

impl RunSpec {
    /// Whether the daemon builds the run's image (on `image`): the run has
    /// `dependencies:` or build hooks.
    pub fn builds_image(&self) -> bool {
        !self.dependencies.is_empty() || self.post_build_root.is_some() || self.post_build.is_some()
    }

    /// The host label a run's endpoints live under
    /// (`<endpoint>.<label>.localhost`): its name, else its id with `-`
    /// for `_`, lowercase.
    pub fn route_host(&self, run_id: &RunId) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| run_id.as_str().replace('_', "-"))
            .to_ascii_lowercase()
    }

    /// The URL of each of the run's endpoints on the routing endpoint's port.
    pub fn endpoint_urls(&self, run_id: &RunId, routing_port: u16) -> BTreeMap<String, String> {
        let host = self.route_host(run_id);
        self.ports
            .keys()
            .map(|name| (name.clone(), format!("https://{name}.{host}.localhost:{routing_port}/")))
            .collect()
    }
}

/// The values of a run's `secrets:` (name, value), resolved on the user's
/// host: the one part of a [`RunSpec`] that holds secret values. They travel
/// over the daemon's private socket into the container's environment (where
/// the user asked for them) and the proxy's redaction list; they are never
/// persisted (the registry drops them) and never logged (`Debug` shows the
/// names only).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretEnv(pub Vec<(String, String)>);

impl SecretEnv {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| format!("{name}=<redacted>")))
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateRunResponse {
    pub run_id: RunId,
    pub state: RunState,
    /// What the daemon did on the way that the user should hear about, e.g.
    /// "reclaimed 2 orphaned network(s) to make room".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// How long each step of the creation took, in order (`--timings`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timings: Vec<StepTiming>,
}

/// One step of a run's creation and how long it took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepTiming {
    pub step: String,
    /// Milliseconds (fractional).
    pub ms: f64,
}

/// One line of a streamed `POST /v1/runs` answer, which a client asks for
/// with `accept: application/x-ndjson`: progress lines while a slow step
/// goes on, then exactly one `created` or `failed`. (Without that header
/// the answer is a single [`CreateRunResponse`] or [`ApiError`].)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreateEvent {
    /// The creation is still going on; say why it takes a while.
    Progress {
        message: String,
    },
    Created(CreateRunResponse),
    /// The run could not be created (and was undone). `status` is the HTTP
    /// status an unstreamed answer would have had.
    Failed {
        status: u16,
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
    },
}

/// One run as the daemon sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    pub run_id: RunId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub state: RunState,
    pub runtime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    pub created_at: DateTime<Utc>,
    /// URLs of the run's `ports:` endpoints, by endpoint name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub pid: u32,
    pub version: String,
    pub api_version: u32,
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_port: Option<u16>,
    pub live_runs: usize,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sweep: Option<serde_json::Value>,
    /// The daemon's resident memory in bytes (`VmRSS`), where the system
    /// tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// The daemon's open file descriptors and its soft limit on them, where
    /// the system tells them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files_limit: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StopRequest {
    /// Kill at once instead of a graceful stop.
    #[serde(default)]
    pub kill: bool,
}

/// One event of an attach stream (newline-delimited JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachEvent {
    /// Output bytes (lossy UTF-8) from one stream.
    Output {
        stream: moat_core::logs::Stream,
        data: String,
    },
    /// Some replayed output was dropped from the ring buffer.
    Truncated { dropped_bytes: u64 },
    /// The run ended; `exit_code` is `None` when it failed or the runtime
    /// cannot tell.
    Exit {
        state: RunState,
        exit_code: Option<i64>,
        failure: Option<String>,
    },
}

/// An error body (`{"error": "..."}`) with an optional hint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// `POST /v1/runs/{id}/exec`: a command to run in a live run's container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub command: Vec<String>,
}

/// `POST /v1/runs/{id}/grants` (`moat join`): grants (stored credentials'
/// names) and hosts (patterns for `network.rules`) to add to a live run.
/// With `dry_run`, nothing changes and the answer says what would be added.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddGrantsRequest {
    #[serde(default)]
    pub grants: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// What a run gained (or, for a dry run, would gain): only what it did not
/// have already.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedGrants {
    pub grants: Vec<String>,
    pub hosts: Vec<String>,
}

/// What an exec produced. Output is collected whole and sent as lossy UTF-8
/// (invalid bytes become U+FFFD), like attach output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    /// `None` when the runtime cannot tell how the command ended.
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
}

/// What probing the container runtime found (`GET /v1/runtime`, or
/// `moatd probe` when no daemon runs): which endpoint and how it was found,
/// and whether it answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuntimeCheck {
    pub kind: String,
    pub endpoint: Option<String>,
    pub found_via: Option<String>,
    pub available: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl RuntimeCheck {
    /// One line for people, e.g. `docker at unix:///var/run/docker.sock (found via ...)`.
    pub fn describe(&self) -> String {
        let problem = self.problem.as_deref().unwrap_or("?");
        match (&self.endpoint, self.available) {
            (Some(endpoint), true) => format!(
                "{} at {endpoint} (found via {})",
                self.kind,
                self.found_via.as_deref().unwrap_or("?")
            ),
            (Some(endpoint), false) => format!("{} at {endpoint} is not usable: {problem}", self.kind),
            (None, _) => format!("none found: {problem}"),
        }
    }
}
