//! The runs the proxy serves: registration (visible only once complete),
//! token lookup in constant time, live injection snapshots, unregistration,
//! and a change signal that long-lived tunnels (WebSockets) watch to close
//! when their run goes or a grant they carry is revoked.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::config::RunLimits;
use crate::credential_endpoint::CredentialEndpoint;
use crate::error::ProxyError;
use crate::events::{ProxyEvent, ProxyEventSink};
use crate::injection::{InjectionRule, InjectionSet};
use crate::limits::RunLimiter;
use crate::policy::{CompiledPolicy, NetworkPolicy, PolicyMode};
use crate::relay::{CompiledRoute, McpRoute};
use crate::token::ProxyToken;
use crate::trace::{TraceRecord, TraceSink};

/// The name containers use for services on the host (the daemon maps it to a
/// loopback address through [`crate::ProxyConfig::resolve_overrides`]).
pub const HOST_SERVICE_NAME: &str = "moat-host";

/// Everything the proxy needs to serve one run.
#[derive(Clone)]
pub struct RunRegistration {
    pub run_id: String,
    pub token: ProxyToken,
    pub policy: NetworkPolicy,
    pub injections: Vec<InjectionRule>,
    /// The run's `network.jsonl`, appended to.
    pub trace_path: PathBuf,
    /// Host ports (`network.host`) reachable on loopback / link-local addresses.
    pub host_ports: Vec<u16>,
    /// Values redacted wherever they appear in a traced URL, however
    /// encoded: the run's `secrets:`. Kept in memory only, never written.
    pub redact_values: Vec<String>,
    /// Where the run's denials and injections are reported, if anywhere.
    pub events: Option<ProxyEventSink>,
    /// Remote MCP servers the run reaches at `http://moat-proxy:PORT/mcp/<name>`.
    pub mcp_servers: Vec<McpRoute>,
    /// Credentials the run fetches at `http://moat-proxy:PORT/<name>/credentials`.
    pub credential_endpoints: Vec<CredentialEndpoint>,
}

impl std::fmt::Debug for RunRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunRegistration")
            .field("run_id", &self.run_id)
            .field("token", &self.token)
            .field("policy", &self.policy)
            .field("injections", &self.injections)
            .field("trace_path", &self.trace_path)
            .field("host_ports", &self.host_ports)
            .field(
                "redact_values",
                &format_args!("<{} redacted>", self.redact_values.len()),
            )
            .field("events", &self.events.is_some())
            .field("mcp_servers", &self.mcp_servers)
            .field("credential_endpoints", &self.credential_endpoints)
            .finish()
    }
}

/// What is known about a run when it is unregistered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunTraceSummary {
    /// Trace records dropped because the writer fell behind.
    pub dropped_records: u64,
}

/// A registered run as the data path sees it.
pub(crate) struct RunEntry {
    pub(crate) run_id: String,
    token: ProxyToken,
    /// The run's rules; replaced whole when hosts are added to a live run.
    policy: RwLock<Arc<CompiledPolicy>>,
    pub(crate) mode: PolicyMode,
    injections: RwLock<Arc<InjectionSet>>,
    /// Names of the grants in the current injection snapshot.
    grants: RwLock<Arc<[String]>>,
    pub(crate) host_ports: Vec<u16>,
    /// The run's `secrets:` values, redacted from its trace.
    redact_values: Vec<String>,
    /// The run's share of tunnels and handshakes.
    pub(crate) limiter: RunLimiter,
    trace: TraceSink,
    events: Option<ProxyEventSink>,
    active: AtomicBool,
    /// Bumped when the run is unregistered or its injections change.
    changes: watch::Sender<u64>,
    /// The run's MCP servers (the relay's routes).
    mcp_routes: Vec<CompiledRoute>,
    credential_endpoints: Vec<CredentialEndpoint>,
}

impl RunEntry {
    /// The current policy snapshot (looked up per request).
    pub(crate) fn policy(&self) -> Arc<CompiledPolicy> {
        self.policy.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The current injection snapshot (looked up per inner request).
    pub(crate) fn injections(&self) -> Arc<InjectionSet> {
        self.injections.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Everything to redact from this run's trace: the placeholders and
    /// values of `injections`, and the run's `secrets:` values.
    pub(crate) fn redactables<'a>(&'a self, injections: &'a InjectionSet) -> impl Iterator<Item = &'a str> {
        injections
            .redactable_strings()
            .chain(self.redact_values.iter().map(String::as_str))
    }

    /// Why the run may reach `host:port` without a `network.rules` entry: a
    /// grant's host, or a host service (`moat-host`, `localhost`, a loopback
    /// address) on a `network.host` port.
    pub(crate) fn implicit_allowance(&self, injections: &InjectionSet, host: &str, port: u16) -> Option<&'static str> {
        if injections.covers(host, port) {
            return Some("host of an injected grant");
        }
        let host_service = host == HOST_SERVICE_NAME
            || host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.to_canonical().is_loopback());
        (host_service && self.host_ports.contains(&port)).then_some("host service port listed in network.host")
    }

    /// The run's MCP servers.
    pub(crate) fn mcp_routes(&self) -> &[CompiledRoute] {
        &self.mcp_routes
    }

    /// The run's credential endpoints.
    pub(crate) fn credential_endpoints(&self) -> &[CredentialEndpoint] {
        &self.credential_endpoints
    }

    /// Whether `presented` is this run's token (constant time).
    pub(crate) fn token_matches(&self, presented: &[u8]) -> bool {
        self.token.matches(presented)
    }

    /// False once the run was unregistered; open tunnels stop serving it.
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Whether the current injection snapshot still holds grant `name`.
    pub(crate) fn has_grant(&self, name: &str) -> bool {
        self.grants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|g| g == name)
    }

    /// Notified when the run is unregistered or its injections change.
    pub(crate) fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    pub(crate) fn trace(&self, record: TraceRecord) {
        self.trace.record(record);
    }

    /// Reports a denial or an injection to the run's owner.
    pub(crate) fn report(&self, event: ProxyEvent) {
        if let Some(events) = &self.events {
            events(event);
        }
    }
}

/// All registered runs.
#[derive(Default)]
pub(crate) struct Registry {
    runs: RwLock<Vec<Arc<RunEntry>>>,
    /// Given to each run as it registers.
    limits: RunLimits,
}

impl Registry {
    pub(crate) fn new(limits: RunLimits) -> Self {
        Self {
            runs: RwLock::default(),
            limits,
        }
    }

    /// Validates and registers a run; it becomes visible atomically, fully built.
    pub(crate) fn register(&self, registration: RunRegistration) -> Result<(), ProxyError> {
        let policy = CompiledPolicy::compile(&registration.policy)?;
        let injections = InjectionSet::compile(&registration.injections)?;
        let mcp_routes = crate::relay::compile(&registration.mcp_servers)?;
        crate::credential_endpoint::check_names(&registration.credential_endpoints)?;
        if self.find_by_id(&registration.run_id).is_some() {
            return Err(ProxyError::DuplicateRun(registration.run_id));
        }
        let trace = TraceSink::open(&registration.run_id, &registration.trace_path)?;
        let entry = Arc::new(RunEntry {
            run_id: registration.run_id,
            token: registration.token,
            policy: RwLock::new(Arc::new(policy)),
            mode: registration.policy.mode,
            injections: RwLock::new(Arc::new(injections)),
            grants: RwLock::new(grant_names(&registration.injections)),
            host_ports: registration.host_ports,
            redact_values: registration
                .redact_values
                .into_iter()
                .filter(|value| !value.is_empty())
                .collect(),
            limiter: RunLimiter::new(self.limits),
            trace,
            events: registration.events,
            active: AtomicBool::new(true),
            changes: watch::channel(0).0,
            mcp_routes,
            credential_endpoints: registration.credential_endpoints,
        });
        let mut runs = self.runs.write().unwrap_or_else(|p| p.into_inner());
        if runs.iter().any(|r| r.run_id == entry.run_id) {
            return Err(ProxyError::DuplicateRun(entry.run_id.clone()));
        }
        runs.push(entry);
        Ok(())
    }

    /// Removes a run; its open tunnels refuse further requests and its trace
    /// writer drains and closes.
    pub(crate) fn unregister(&self, run_id: &str) -> Result<RunTraceSummary, ProxyError> {
        let mut runs = self.runs.write().unwrap_or_else(|p| p.into_inner());
        let index = runs
            .iter()
            .position(|r| r.run_id == run_id)
            .ok_or_else(|| ProxyError::UnknownRun(run_id.to_string()))?;
        let entry = runs.swap_remove(index);
        entry.active.store(false, Ordering::Release);
        entry.changed();
        Ok(RunTraceSummary {
            dropped_records: entry.trace.dropped(),
        })
    }

    /// Replaces a run's injection rules; open tunnels see them on their next request.
    pub(crate) fn update_injections(&self, run_id: &str, rules: &[InjectionRule]) -> Result<(), ProxyError> {
        let compiled = InjectionSet::compile(rules)?;
        let entry = self
            .find_by_id(run_id)
            .ok_or_else(|| ProxyError::UnknownRun(run_id.to_string()))?;
        *entry.injections.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(compiled);
        *entry.grants.write().unwrap_or_else(|p| p.into_inner()) = grant_names(rules);
        entry.changed();
        Ok(())
    }

    /// Replaces a run's rules (same mode); requests judged from now on see them.
    pub(crate) fn update_policy(&self, run_id: &str, policy: &NetworkPolicy) -> Result<(), ProxyError> {
        let entry = self
            .find_by_id(run_id)
            .ok_or_else(|| ProxyError::UnknownRun(run_id.to_string()))?;
        if policy.mode != entry.mode {
            return Err(ProxyError::PolicyModeChange {
                run_id: run_id.to_string(),
                from: entry.mode,
                to: policy.mode,
            });
        }
        let compiled = CompiledPolicy::compile(policy)?;
        *entry.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(compiled);
        Ok(())
    }

    /// The run whose token equals `secret`. Every run's token is compared in
    /// constant time, so timing reveals neither which run matched nor how much.
    pub(crate) fn authenticate(&self, secret: &[u8]) -> Option<Arc<RunEntry>> {
        let runs = self.runs.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for run in runs.iter() {
            if run.token.matches(secret) {
                found = Some(run.clone());
            }
        }
        found
    }

    fn find_by_id(&self, run_id: &str) -> Option<Arc<RunEntry>> {
        let runs = self.runs.read().unwrap_or_else(|p| p.into_inner());
        runs.iter().find(|r| r.run_id == run_id).cloned()
    }
}

fn grant_names(rules: &[InjectionRule]) -> Arc<[String]> {
    let mut names: Vec<String> = rules.iter().map(|r| r.grant.clone()).collect();
    names.sort();
    names.dedup();
    names.into()
}
