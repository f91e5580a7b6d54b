//! The moat daemon: one per `MOAT_HOME`, it owns the lifecycle of every
//! resource moat creates (ARCHITECTURE.md). It serves the API on a Unix
//! socket, creates and supervises runs, persists and reconciles its
//! registry, and exits when idle. Its API's wire types, client and spawn
//! logic are in `moat-api`.

pub mod audit;
pub mod aws;
mod capture;
pub mod cluster_proxy;
pub mod deadline;
pub mod egress;
pub mod fault;
pub mod firewall;
pub mod grants;
pub mod idle;
pub mod image_build;
pub mod image_prune;
mod lines;
pub mod mcp;
pub mod network;
pub mod oauth_refresh;
pub mod output;
pub mod pool;
pub mod probe;
pub mod progress;
pub mod reaper;
pub mod reconcile;
pub mod records;
pub mod registry;
pub mod resources;
pub mod runtimes;
pub mod server;
mod snapshots;
pub mod ssh_agent;
pub mod standalone;
pub mod state;
pub mod suggest;
pub mod supervisor;
pub mod terminal;
mod terminal_session;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use moat_core::atomic::create_private_dir;
use moat_core::lock::{FileLock, LockError};
use tokio::net::UnixListener;

pub use moat_api as api;
pub use moat_api::{ClientError, DaemonClient, SpawnError, client, ensure_running, info, spawn};
pub use state::{Daemon, DaemonConfig, Runtimes};

use crate::info::DaemonInfo;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot prepare {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Spawn(#[from] SpawnError),
    #[error("{0}")]
    Egress(#[from] egress::EgressError),
    #[error("another moat daemon (pid {0}) holds this MOAT_HOME's daemon lock; only one may run")]
    AlreadyRunning(u32),
}

/// How long shutdown waits for run cleanups in progress.
const CLEANUP_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// How long shutdown waits for the audit writer's last fsync and signatures.
const AUDIT_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Target for the open-files limit (agents open many connections).
const NOFILE_TARGET: u64 = 65536;

/// Runs the daemon until it shuts down (API, signal or idle expiry).
pub async fn run(config: DaemonConfig, runtimes: Arc<dyn Runtimes>) -> Result<(), DaemonError> {
    let home = config.home.clone();
    let daemon_dir = home.daemon_dir();
    create_private_dir(&daemon_dir).map_err(|source| DaemonError::Io {
        path: daemon_dir.clone(),
        source,
    })?;
    let socket = home.daemon_socket();
    spawn::check_socket_path(&socket)?;
    // Held until this function returns (or the process dies, when the
    // kernel releases it): one daemon per MOAT_HOME, whatever the platform.
    let _lifetime = take_lifetime_lock(&home)?;
    raise_open_files_limit();

    let egress = match &config.egress {
        Some(egress_config) => Some(start_egress(&home, egress_config.clone()).await?),
        None => None,
    };
    let daemon = Daemon::new(config, runtimes, egress);
    let info = DaemonInfo {
        pid: std::process::id(),
        socket: socket.clone(),
        proxy_port: daemon.proxy_port(),
        routing_port: daemon.routing_port(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        api_version: api::API_VERSION,
        started_at: Utc::now(),
    };
    info.write(&home.daemon_json()).map_err(|source| DaemonError::Io {
        path: home.daemon_json(),
        source,
    })?;
    let listener = bind_private_socket(&socket)?;
    tracing::info!(pid = info.pid, "daemon listening on {}", socket.display());

    let restored = reconcile::restore(&daemon);
    if restored > 0 {
        tracing::info!("restored {restored} run(s) from the previous daemon");
    }
    tokio::spawn(daemon.registry().clone().persist_loop());
    tokio::spawn(reaper::periodic(daemon.clone()));
    tokio::spawn(pool::keep_filled(daemon.clone()));
    tokio::spawn(oauth_refresh::keep_fresh(daemon.clone()));
    let idle_daemon = daemon.clone();
    tokio::spawn(idle::watch(daemon.clone(), move || {
        let daemon = idle_daemon.clone();
        async move {
            daemon
                .reaper()
                .sweep(&daemon, &reaper::SweepRequest::default(), "idle")
                .await;
        }
    }));
    tokio::spawn(shutdown_on_signal(daemon.clone()));
    server::serve(daemon.clone(), listener).await;
    if !daemon.drain_cleanups(CLEANUP_GRACE).await {
        tracing::warn!("shutting down with run cleanups unfinished; the next daemon finishes them");
    }
    pool::release(&daemon).await;

    finish(&daemon, &info);
    Ok(())
}

/// Holds the routing endpoint's port across daemons (its URLs are
/// bookmarked and recorded in runs' metadata), unlike `daemon.json`, which a
/// daemon removes when it exits.
const ROUTING_PORT_FILE: &str = "routing-port";

/// Holds the proxy's port across daemons, a graceful restart included:
/// running containers have it baked into their proxy settings.
const PROXY_PORT_FILE: &str = "proxy-port";

/// Starts the proxy and the routing endpoint on the previous daemon's
/// ports (a killed daemon's `daemon.json` names the proxy's too).
async fn start_egress(
    home: &moat_core::MoatHome,
    mut config: egress::EgressConfig,
) -> Result<Arc<egress::Egress>, DaemonError> {
    let proxy_port_file = home.daemon_dir().join(PROXY_PORT_FILE);
    if let Some(previous) = remembered_port(&proxy_port_file)
        .or_else(|| DaemonInfo::read(&home.daemon_json()).and_then(|info| info.proxy_port))
    {
        config.preferred_port = previous;
    }
    let routing_port_file = home.daemon_dir().join(ROUTING_PORT_FILE);
    if config.routing_port == 0
        && let Some(previous) = remembered_port(&routing_port_file)
    {
        config.routing_port = previous;
    }
    let egress = egress::Egress::start(home, config).await?;
    remember_port(&proxy_port_file, egress.port());
    remember_port(&routing_port_file, egress.routing_port());
    Ok(egress)
}

/// The port recorded in `file`, if it holds one.
fn remembered_port(file: &std::path::Path) -> Option<u16> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Records `port` in `file` for the next daemon (a warning if it cannot).
fn remember_port(file: &std::path::Path, port: u16) {
    if let Err(e) = moat_core::atomic::write_atomic(file, format!("{port}\n").as_bytes(), 0o600) {
        tracing::warn!("recording port {port} in {}: {e}", file.display());
    }
}

/// Bound on taking the lifetime lock: long enough to ride out another
/// process's momentary probe of it, short enough to refuse at once.
const LIFETIME_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Takes `daemon.lock` for the daemon's whole life and records this pid in
/// it; a second daemon of the same `MOAT_HOME` is refused here.
fn take_lifetime_lock(home: &moat_core::MoatHome) -> Result<FileLock, DaemonError> {
    let path = home.daemon_lock();
    let mut lock = match FileLock::acquire(&path, LIFETIME_LOCK_WAIT) {
        Ok(lock) => lock,
        Err(LockError::Timeout { .. }) => {
            return Err(DaemonError::AlreadyRunning(FileLock::holder(&path).unwrap_or(0)));
        }
        Err(LockError::Io { path, source }) => return Err(DaemonError::Io { path, source }),
    };
    lock.record_pid().map_err(|source| DaemonError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(lock)
}

fn bind_private_socket(socket: &std::path::Path) -> Result<UnixListener, DaemonError> {
    let io = |source| DaemonError::Io {
        path: socket.to_path_buf(),
        source,
    };
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(socket).map_err(io)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// Persists the registry and removes the socket and `daemon.json` (when
/// they are still ours).
fn finish(daemon: &Daemon, info: &DaemonInfo) {
    if !daemon.audit().flush(AUDIT_FLUSH_WAIT) {
        tracing::error!("the audit logs were not all fsynced within {AUDIT_FLUSH_WAIT:?} at shutdown");
    }
    if let Err(e) = daemon.registry().persist_now() {
        tracing::error!("persisting the run registry at shutdown failed: {e}");
    }
    let home = daemon.home();
    if DaemonInfo::read(&home.daemon_json()).is_some_and(|current| current.pid == info.pid) {
        let _ = std::fs::remove_file(home.daemon_json());
        let _ = std::fs::remove_file(home.daemon_socket());
    }
    tracing::info!("daemon stopped");
}

async fn shutdown_on_signal(daemon: Daemon) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::warn!("cannot install signal handlers; stop the daemon with `moat daemon stop`");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = daemon.shutdown_token().cancelled() => return,
    }
    tracing::info!("signal received: shutting down");
    daemon.begin_shutdown();
}

fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let target = NOFILE_TARGET.min(hard);
        if soft < target && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_err() {
            tracing::warn!("cannot raise the open-files limit from {soft} to {target}");
        }
    }
}
