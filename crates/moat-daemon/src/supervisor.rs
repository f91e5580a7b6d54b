//! Creates, supervises and tears down runs (daemon-and-reaper.md §3). A run
//! is registered (`creating`, persisted) before its first runtime object
//! exists; its output is captured to `logs.jsonl` as it arrives; its exit
//! code and times are recorded; its objects are removed exactly once.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use moat_core::lock::FileLock;
use moat_core::paths::run_files;
use moat_core::{RunId, RunMetadata, RunState};
use moat_proxy::{PolicyMode, ProxyToken};
use moat_runtime::{ContainerSpec, Mount, NetworkInfo, NetworkSpec, Runtime, RuntimeError, labels};
use std::net::IpAddr;

use crate::api::{AttachEvent, RunSpec, StepTiming};
use crate::capture::Capture;
use crate::deadline::{CREATE_DEADLINE, Deadline, DeadlineExceeded, UNDO_WAIT};
use crate::egress::{Egress, EgressError, PROXY_HOST, PROXY_VARIABLES};
use crate::fault;
use crate::firewall::{self, FirewallError};
use crate::grants::{self, GrantError};
use crate::network::{self, NetworkError};
use crate::progress::Progress;
use crate::registry::{Registration, RunHandle};
use crate::state::Daemon;
use moat_creds::RunGrants;

/// Where the workspace appears in the container.
pub const WORKSPACE_TARGET: &str = "/workspace";
/// Bound on waiting for the run's `.lock` (held only by a creating process).
const RUN_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("workspace {0} does not exist or is not a directory")]
    MissingWorkspace(String),
    #[error("image {image} is not available to {runtime}")]
    UnknownImage { image: String, runtime: String },
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error("run {0} is not live")]
    NotLive(String),
    #[error("cannot destroy run {id}: {reason}")]
    StillOwned { id: String, reason: String },
    #[error("strict run refused: its host cannot be closed off ({0})")]
    IsolationUnavailable(firewall::FirewallError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Deadline(#[from] DeadlineExceeded),
    #[error("{0}")]
    Store(#[from] moat_core::store::StoreError),
    #[error("{0}")]
    Registry(#[from] crate::registry::RegistryError),
    #[error("{0}")]
    Lock(#[from] moat_core::lock::LockError),
    #[error("{0}")]
    Egress(#[from] EgressError),
    #[error("{0}")]
    Grant(#[from] GrantError),
}

impl RunError {
    /// A next step for the user, when there is an obvious one.
    pub fn hint(&self) -> Option<String> {
        match self {
            RunError::UnknownImage { .. } => Some(
                "build the local base image with `scripts/base-image.sh` (or `--image moat-base:bookworm`), or `docker build` your own".into(),
            ),
            RunError::MissingWorkspace(_) => Some("pass an existing directory: `moat run PATH`".into()),
            RunError::Grant(e) => e.hint(),
            RunError::ShuttingDown => Some("retry: the next command starts a new daemon".into()),
            RunError::IsolationUnavailable(_) => Some(
                "the daemon needs iptables and root to add the firewall rules; run it as root, or drop \
                 --require-isolation to accept a run whose host services stay reachable"
                    .into(),
            ),
            RunError::StillOwned { id, .. } => Some(format!(
                "stop it with `moat stop {id}` and retry once it has exited and been cleaned up"
            )),
            RunError::Runtime(RuntimeError::Unavailable { .. }) => {
                Some("start the container runtime (e.g. `systemctl start docker`) and check `moat doctor`".into())
            }
            RunError::Network(e) => Some(e.hint()),
            RunError::Deadline(_) => Some(format!(
                "the container runtime may be wedged: `moat doctor` checks it, `{}` lists moat's networks",
                network::list_moat_networks(moat_runtime::RuntimeKind::Docker)
            )),
            _ => None,
        }
    }
}

/// A run that is up, and what the user should hear about its creation.
#[derive(Debug)]
pub struct CreatedRun {
    pub run_id: RunId,
    pub notices: Vec<String>,
    /// How long each step took.
    pub timings: Vec<StepTiming>,
}

/// Records how long each step of a creation takes.
#[derive(Debug, Default)]
pub struct Timings {
    steps: Vec<StepTiming>,
    last: Option<Instant>,
}

impl Timings {
    fn start() -> Self {
        Timings {
            steps: Vec::new(),
            last: Some(Instant::now()),
        }
    }

    /// Ends a step (begun at the previous one's end).
    fn lap(&mut self, step: &str) {
        let now = Instant::now();
        let began = self.last.unwrap_or(now);
        self.steps.push(StepTiming {
            step: step.to_string(),
            ms: now.duration_since(began).as_secs_f64() * 1000.0,
        });
        self.last = Some(now);
    }
}

/// Registers a run, creates its network and container, starts it, and
/// leaves a task supervising it. Returns once the container is running.
pub async fn create_run(daemon: &Daemon, spec: RunSpec) -> Result<RunId, RunError> {
    create_run_reporting(daemon, spec, &Progress::none())
        .await
        .map(|created| created.run_id)
}

/// [`create_run`], telling `progress` about slow steps. The whole creation
/// is bounded by [`CREATE_DEADLINE`]; a creation that fails (or runs out of
/// time) is recorded failed and undone before the answer.
pub async fn create_run_reporting(daemon: &Daemon, spec: RunSpec, progress: &Progress) -> Result<CreatedRun, RunError> {
    let deadline = Deadline::after(CREATE_DEADLINE);
    let mut timings = Timings::start();
    if !spec.workspace.is_dir() {
        return Err(RunError::MissingWorkspace(spec.workspace.display().to_string()));
    }
    let step = format!("connecting to {}", spec.runtime);
    let runtime = deadline.bound(step, daemon.runtimes().get(&spec.runtime)).await??;
    timings.lap("runtime connect");
    let meta = initial_metadata(&spec);
    let id = meta.id.clone();
    let run_dir = daemon.store().create(&meta)?;
    let creation_lock = FileLock::acquire(&run_dir.join(run_files::LOCK), RUN_LOCK_TIMEOUT)?;
    let handle = RunHandle::new(spec, meta);
    if let Err(e) = register(daemon, &handle) {
        let _ = handle.update(daemon.store(), |m| fail(m, &e.to_string()));
        return Err(e);
    }
    timings.lap("run registration");
    fault::point("after-registry-write", &handle.spec).await;
    let provisioned = provision(daemon, runtime.as_ref(), &handle, &deadline, progress, &mut timings).await;
    crate::pool::refill_later(daemon);
    match provisioned {
        Ok(notices) => {
            drop(creation_lock);
            tokio::spawn(supervise(daemon.clone(), runtime, handle, None));
            Ok(CreatedRun {
                run_id: id,
                notices,
                timings: timings.steps,
            })
        }
        Err(e) => {
            let reason = e.to_string();
            let _ = handle.update(daemon.store(), |m| fail(m, &reason));
            undo(daemon, runtime, handle).await;
            Err(e)
        }
    }
}

/// Removes what a failed creation made. Waits at most [`UNDO_WAIT`], so
/// the answer reaches the client in time; the run is recorded failed
/// already and a slower cleanup finishes in the background.
async fn undo(daemon: &Daemon, runtime: Arc<dyn Runtime>, handle: Arc<RunHandle>) {
    let id = handle.id();
    let undoing = tokio::spawn({
        let daemon = daemon.clone();
        async move { cleanup(&daemon, runtime.as_ref(), &handle).await }
    });
    if tokio::time::timeout(UNDO_WAIT, undoing).await.is_err() {
        tracing::warn!(run = %id, "undoing the failed creation takes longer than {UNDO_WAIT:?}; it goes on in the background");
    }
}

fn initial_metadata(spec: &RunSpec) -> RunMetadata {
    let mut meta = RunMetadata::new(
        RunId::generate(),
        spec.workspace.clone(),
        spec.image.clone(),
        spec.runtime.clone(),
    );
    meta.name = spec.name.clone();
    meta.command = spec.command.clone();
    meta.keep = spec.keep;
    meta.grants = spec.grants.clone();
    meta.secrets = spec.secret_names.clone();
    meta.labels = spec.labels.clone();
    meta
}

/// Inserts the run unless the daemon has decided to exit; the check and the
/// insert happen under the registry lock that idle shutdown re-checks under.
fn register(daemon: &Daemon, handle: &Arc<RunHandle>) -> Result<(), RunError> {
    {
        let mut runs = daemon.registry().lock();
        if daemon.is_shutting_down() {
            return Err(RunError::ShuttingDown);
        }
        runs.insert(handle.id(), handle.clone());
    }
    Registration::write(daemon.store(), handle)?;
    daemon.registry().persist_now()?;
    Ok(())
}

/// Creates the run's objects and starts its container, every step within
/// `deadline`; returns the notices for the user.
async fn provision(
    daemon: &Daemon,
    runtime: &dyn Runtime,
    handle: &RunHandle,
    deadline: &Deadline,
    progress: &Progress,
    timings: &mut Timings,
) -> Result<Vec<String>, RunError> {
    let spec = &handle.spec;
    let id = handle.id();
    let mut notices = Vec::new();
    let step = format!("looking up image {}", spec.image);
    if !deadline.bound(step, runtime.image_exists(&spec.image)).await?? {
        return Err(RunError::UnknownImage {
            image: spec.image.clone(),
            runtime: runtime.kind().to_string(),
        });
    }
    let grants = grants::resolve(daemon.home(), spec)?;
    timings.lap("image lookup and grants");
    let network = match take_pooled(daemon, runtime, handle, deadline).await? {
        Some(network) => {
            timings.lap("network take (warm pool)");
            network
        }
        None => {
            let network_name = id.network_name();
            handle.update(daemon.store(), |m| m.network = Some(network_name.clone()))?;
            let network_spec = NetworkSpec {
                name: network_name,
                labels: labels::for_run(&daemon.home().label(), id.as_str(), labels::role::NETWORK),
                internal: spec.policy.mode == PolicyMode::Strict,
            };
            let created = network::create(daemon, runtime, &network_spec, deadline, progress).await?;
            notices.extend(created.notice);
            timings.lap("network create");
            created.info
        }
    };
    fault::point("after-network-create", spec).await;
    let proxy = match daemon.egress() {
        Some(egress) => {
            let attaching = attach_proxy(daemon, egress, handle, &network, grants);
            let proxy = deadline.bound("attaching the run to the proxy", attaching).await??;
            notices.extend(proxy.isolation_notice.clone());
            timings.lap("proxy registration");
            Some(proxy)
        }
        None => None,
    };
    let container_spec = container_spec(daemon, handle, &network.name, proxy);
    let step = format!("creating container {id}");
    let container_id = deadline
        .bound(step, runtime.create_container(&container_spec))
        .await??;
    timings.lap("container create");
    handle.update(daemon.store(), |m| {
        m.container_id = Some(container_id.clone());
        m.state = RunState::Created;
    })?;
    fault::point("after-container-create", spec).await;
    if spec.interactive {
        // Attached before the start: the program's first output is not lost.
        let step = format!("attaching to container {id}");
        let attached = deadline.bound(step, runtime.attach_container(&container_id)).await??;
        handle.terminal.connect(attached);
    }
    handle.update(daemon.store(), |m| m.state = RunState::Starting)?;
    let step = format!("starting container {id}");
    deadline.bound(step, runtime.start_container(&container_id)).await??;
    handle.update(daemon.store(), |m| {
        m.state = RunState::Running;
        m.started_at = Some(Utc::now());
    })?;
    timings.lap("container start");
    daemon.registry().persist_soon();
    fault::point("after-start", spec).await;
    Ok(notices)
}

/// A ready network of the warm pool, made the run's: its name is recorded
/// as the run's network (persisted) before anything uses it, so cleanup
/// removes it and the reaper judges it by this run. A pooled network that
/// has vanished (e.g. `docker network prune`) is dropped for the next;
/// `None` when the pool has none left (the caller creates one).
async fn take_pooled(
    daemon: &Daemon,
    runtime: &dyn Runtime,
    handle: &RunHandle,
    deadline: &Deadline,
) -> Result<Option<NetworkInfo>, RunError> {
    let internal = handle.spec.policy.mode == PolicyMode::Strict;
    while let Some(pooled) = daemon.network_pool().take(&handle.spec.runtime, internal) {
        handle.update(daemon.store(), |m| m.network = Some(pooled.name.clone()))?;
        let step = format!("checking pooled network {}", pooled.name);
        match deadline.bound(step, runtime.inspect_network(&pooled.name)).await? {
            Ok(network) if network.internal == internal && network.containers.is_empty() => {
                tracing::debug!(run = %handle.id(), "took pooled network {}", network.name);
                return Ok(Some(network));
            }
            Ok(network) => {
                tracing::warn!(run = %handle.id(), "pooled network {} is not as created; not used", network.name);
            }
            Err(e) => tracing::warn!(run = %handle.id(), "pooled network {} is gone ({e})", pooled.name),
        }
    }
    Ok(None)
}

/// What a container needs to reach the proxy.
struct ProxyAttachment {
    env: Vec<(String, String)>,
    gateway: IpAddr,
    ca_mount: Mount,
    /// A strict run whose host stays reachable: what to tell the user.
    isolation_notice: Option<String>,
}

/// Registers the run with the proxy (complete before its container starts)
/// and listens on its network's gateway.
async fn attach_proxy(
    daemon: &Daemon,
    egress: &Egress,
    handle: &RunHandle,
    network: &NetworkInfo,
    grants: RunGrants,
) -> Result<ProxyAttachment, RunError> {
    let id = handle.id();
    let token = handle.proxy_token().unwrap_or_else(ProxyToken::generate);
    handle.set_proxy_token(token.clone());
    // On disk before the container exists: a container's token is never
    // one that only this daemon's memory knows.
    Registration::write(daemon.store(), handle)?;
    daemon.registry().persist_soon();
    let trace_path = daemon.store().run_dir(&id).join(run_files::NETWORK);
    egress.register(&id, &token, &handle.spec, grants::injection_rules(&grants), &trace_path)?;
    let gateway = egress
        .listen_on_gateway(&id, &network.name, network.gateway.as_deref())
        .await?;
    let mut isolation_notice = None;
    if handle.spec.policy.mode == PolicyMode::Strict
        && let Err(e) = close_host_services(&id, network, egress.port()).await
    {
        if handle.spec.require_isolation {
            return Err(RunError::IsolationUnavailable(e));
        }
        tracing::warn!(run = %id, "strict run: host services listening on {gateway} stay reachable from the container ({e})");
        isolation_notice = Some(format!(
            "warning: strict run without host isolation: services listening on the host ({gateway} or all \
             interfaces) stay reachable from the container ({e}); --require-isolation refuses such runs"
        ));
    }
    let mut env = egress.container_env(&token);
    env.extend(grants.env);
    Ok(ProxyAttachment {
        env,
        gateway,
        ca_mount: egress.ca_mount(),
        isolation_notice,
    })
}

/// Strict runs may reach the host only at the proxy port (IPv4 and IPv6).
async fn close_host_services(id: &RunId, network: &NetworkInfo, proxy_port: u16) -> Result<(), FirewallError> {
    let interface = firewall::bridge_interface(&network.id);
    firewall::release(id).await?;
    firewall::restrict_host(id, &interface, proxy_port).await
}

/// Re-registers a re-adopted run with this daemon's proxy under the token
/// its container already has; grants revoked meanwhile are dropped.
pub async fn reattach_proxy(daemon: &Daemon, runtime: &dyn Runtime, handle: &RunHandle) -> Result<(), RunError> {
    let (Some(egress), Some(network)) = (daemon.egress(), handle.metadata().network) else {
        return Ok(());
    };
    if handle.proxy_token().is_none() {
        return Ok(());
    }
    let grants = grants::resolve_remaining(daemon.home(), &handle.spec)?;
    let network = runtime.inspect_network(&network).await?;
    attach_proxy(daemon, egress, handle, &network, grants).await.map(|_| ())
}

fn container_spec(daemon: &Daemon, handle: &RunHandle, network: &str, proxy: Option<ProxyAttachment>) -> ContainerSpec {
    let spec = &handle.spec;
    let id = handle.id();
    let mut labels = spec.labels.clone();
    labels.extend(labels::for_run(&daemon.home().label(), id.as_str(), labels::role::MAIN));
    let mut mounts = vec![Mount {
        source: spec.workspace.display().to_string(),
        target: WORKSPACE_TARGET.to_string(),
        read_only: false,
    }];
    mounts.extend(spec.mounts.iter().cloned());
    // moat owns the proxy variables; user attempts were warned about by the CLI.
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .filter(|(k, _)| !PROXY_VARIABLES.contains(&k.as_str()))
        .cloned()
        .collect();
    let mut extra_hosts = Vec::new();
    if let Some(proxy) = proxy {
        env.extend(proxy.env);
        mounts.push(proxy.ca_mount);
        extra_hosts.push((PROXY_HOST.to_string(), proxy.gateway.to_string()));
    }
    ContainerSpec {
        name: id.to_string(),
        image: spec.image.clone(),
        command: spec.command.clone(),
        env,
        mounts,
        working_dir: Some(WORKSPACE_TARGET.to_string()),
        user: workspace_owner(&spec.workspace),
        network: Some(network.to_string()),
        labels,
        extra_hosts,
        memory_bytes: spec.memory_bytes,
        cpus: spec.cpus,
        dns: container_dns(spec),
        tty: spec.terminal.is_some(),
        open_stdin: spec.interactive,
        console_size: spec.terminal,
        ..Default::default()
    }
}

/// A strict run resolves nothing itself: the proxy resolves for it, and
/// `moat-proxy` is in its hosts file. Its DNS points at a loopback address
/// where nothing answers, so no engine's embedded DNS (which forwards from
/// internal networks on engines before 25.0.5) carries queries out: DNS is
/// not a way out of a strict run.
const STRICT_DNS: &str = "127.0.0.1";

fn container_dns(spec: &RunSpec) -> Vec<String> {
    if spec.policy.mode == PolicyMode::Strict {
        vec![STRICT_DNS.to_string()]
    } else {
        spec.dns.clone()
    }
}

/// `uid:gid` of the workspace's owner, so files the agent writes belong to
/// the user (Linux).
fn workspace_owner(workspace: &std::path::Path) -> Option<String> {
    let meta = std::fs::metadata(workspace).ok()?;
    Some(format!("{}:{}", meta.uid(), meta.gid()))
}

fn fail(meta: &mut RunMetadata, reason: &str) {
    meta.state = RunState::Failed;
    meta.failure = Some(reason.to_string());
    meta.exited_at.get_or_insert_with(Utc::now);
}

/// Follows a started run to its end: output to `logs.jsonl` and attached
/// clients, then the exit code, then cleanup. `since` resumes capture after
/// a daemon restart.
pub async fn supervise(
    daemon: Daemon,
    runtime: Arc<dyn Runtime>,
    handle: Arc<RunHandle>,
    since: Option<DateTime<Utc>>,
) {
    let meta = handle.metadata();
    let container = meta.container_id.clone().unwrap_or_else(|| meta.id.to_string());
    let mut capture = Capture::open(&daemon, &handle, since);
    if handle.spec.interactive {
        follow_terminal(runtime.as_ref(), &handle, &container, &mut capture).await;
    } else {
        capture.follow(runtime.as_ref(), &container).await;
    }
    let exit = runtime.wait_container(&container).await;
    capture.catch_up(runtime.as_ref(), &container).await;
    capture.finish();
    let recorded = handle.update(daemon.store(), |m| match &exit {
        Ok(code) => {
            m.state = RunState::Exited;
            m.exit_code = *code;
            m.exited_at = Some(Utc::now());
        }
        Err(e) => fail(m, &format!("waiting for the container failed: {e}")),
    });
    if let Err(e) = recorded {
        tracing::error!(run = %meta.id, "recording the exit failed: {e}");
    }
    // Attached clients learn the exit now; nobody waits for the cleanup.
    announce_exit(&handle);
    cleanup(&daemon, runtime.as_ref(), &handle).await;
}

/// Follows an interactive run's output through its attachment (made before
/// the start, or now when a restarted daemon re-adopts the run).
async fn follow_terminal(runtime: &dyn Runtime, handle: &RunHandle, container: &str, capture: &mut Capture<'_>) {
    let output = match handle.terminal.take_output() {
        Some(output) => output,
        None => match runtime.attach_container(container).await {
            Ok(attached) => {
                handle.terminal.connect(attached);
                let Some(output) = handle.terminal.take_output() else {
                    return;
                };
                output
            }
            Err(e) => {
                tracing::warn!(run = %handle.id(), "cannot attach to the run's terminal: {e}; following its logs");
                capture.follow(runtime, container).await;
                return;
            }
        },
    };
    capture.follow_stream(output).await;
}

/// Tells attached clients how the run ended (once).
fn announce_exit(handle: &RunHandle) {
    let meta = handle.metadata();
    handle.terminal.finish(crate::terminal_api::Exit {
        state: meta.state,
        exit_code: meta.exit_code,
        failure: meta.failure.clone(),
    });
    handle.output.finish(AttachEvent::Exit {
        state: meta.state,
        exit_code: meta.exit_code,
        failure: meta.failure,
    });
}

/// Removes the run's container (unless kept), network and firewall rules,
/// exactly once, records `cleaned_at` when all are gone, tells attached
/// clients, and leaves the registry.
pub async fn cleanup(daemon: &Daemon, runtime: &dyn Runtime, handle: &RunHandle) {
    if !handle.claim_cleanup() {
        return;
    }
    let _in_flight = daemon.cleanup_started();
    fault::point(fault::BEFORE_CLEANUP, &handle.spec).await;
    let meta = handle.metadata();
    let mut failures = Vec::new();
    if !meta.keep {
        let container = meta.container_id.clone().unwrap_or_else(|| meta.id.to_string());
        if let Err(e) = runtime.remove_container(&container).await {
            failures.push(e.to_string());
        }
        if let Some(network) = &meta.network
            && let Err(e) = runtime.remove_network(network).await
        {
            failures.push(e.to_string());
        }
    }
    if handle.spec.policy.mode == PolicyMode::Strict
        && let Err(e) = firewall::release(&meta.id).await
    {
        failures.push(format!("removing the run's firewall rules: {e}"));
    }
    let result = handle.update(daemon.store(), |m| {
        if failures.is_empty() && !m.keep {
            m.cleaned_at = Some(Utc::now());
        }
    });
    if let Err(e) = result {
        tracing::error!(run = %meta.id, "recording cleanup failed: {e}");
    }
    for failure in &failures {
        tracing::warn!(run = %meta.id, "cleanup left something for the reaper: {failure}");
    }
    announce_exit(handle);
    if let Some(egress) = daemon.egress() {
        egress.release(&meta.id);
    }
    daemon.registry().remove(&meta.id);
}

/// Asks a live run to stop (or kills it); supervision records the exit.
pub async fn stop_run(daemon: &Daemon, id: &RunId, kill: bool) -> Result<(), RunError> {
    let handle = daemon
        .registry()
        .get(id)
        .ok_or_else(|| RunError::NotLive(id.to_string()))?;
    let runtime = daemon.runtimes().get(&handle.spec.runtime).await?;
    handle.update(daemon.store(), |m| {
        if !m.state.is_terminal() {
            m.state = RunState::Stopping;
        }
    })?;
    let meta = handle.metadata();
    let container = meta.container_id.unwrap_or_else(|| id.to_string());
    let grace = if kill {
        Duration::ZERO
    } else {
        daemon.config().stop_grace
    };
    runtime.stop_container(&container, grace).await?;
    Ok(())
}
