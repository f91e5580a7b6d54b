//! What the daemon and a remote proxy say on the control channel: the run
//! state pushed to the proxy, the paths of the control API, and the header
//! carrying a trace cursor. JSON over HTTP/1.1 inside mutual TLS.

use serde::{Deserialize, Serialize};

use crate::injection::InjectionRule;
use crate::policy::NetworkPolicy;
use crate::relay::McpRoute;

/// Prefix of every per-run path: `/v1/runs/<run id>[/injections|/trace]`.
pub(crate) const RUNS_PREFIX: &str = "/v1/runs/";
/// Answers `200 ok` to an authenticated client: the daemon's readiness check.
pub(crate) const HEALTH_PATH: &str = "/v1/health";
/// On a trace response: the cursor to ask from next time.
pub(crate) const TRACE_NEXT_HEADER: &str = "moat-trace-next";
/// Request bodies the control server reads (a run's state with its injections).
pub(crate) const MAX_REQUEST_BODY: usize = 1024 * 1024;
/// Trace bytes returned by one pull at most (whole lines unless one line is longer).
pub(crate) const MAX_TRACE_CHUNK: u64 = 1024 * 1024;

/// One run's state as the daemon pushes it (the in-process
/// [`crate::RunRegistration`] minus what only the daemon's process can
/// hold: the trace path, chosen by the proxy, and the event sink).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRun {
    /// The run's proxy token (64 hex characters).
    pub token: String,
    pub policy: NetworkPolicy,
    #[serde(default)]
    pub injections: Vec<InjectionRule>,
    /// Values redacted from the run's trace: its `secrets:`.
    #[serde(default)]
    pub redact_values: Vec<String>,
    #[serde(default)]
    pub mcp_servers: Vec<McpRoute>,
}

impl std::fmt::Debug for RemoteRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRun")
            .field("token", &"<redacted>")
            .field("policy", &self.policy)
            .field("injections", &self.injections)
            .field(
                "redact_values",
                &format_args!("<{} redacted>", self.redact_values.len()),
            )
            .field("mcp_servers", &self.mcp_servers)
            .finish()
    }
}

/// Trace records pulled from a remote proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceChunk {
    /// Whole JSON lines, ready to append to `network.jsonl`.
    pub records: Vec<u8>,
    /// Where the next pull starts.
    pub next_cursor: u64,
}

/// Whether `run_id` may name a run on the control API (and a trace file).
pub(crate) fn valid_run_id(run_id: &str) -> bool {
    !run_id.is_empty()
        && run_id.len() <= 128
        && run_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
