//! Finding or starting the daemon (daemon-and-reaper.md §1): under a spawn
//! lock with a timeout, reuse a healthy daemon, replace a wedged one (the
//! holder of the daemon's lifetime lock), or spawn a new one detached and
//! wait for it to answer.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use moat_core::MoatHome;
use moat_core::atomic::create_private_dir;
use moat_core::env_vars;
use moat_core::lock::FileLock;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::client::{ClientError, DaemonClient};
use crate::wire::{API_VERSION, Health};

/// Bound on taking `spawn.lock`.
const SPAWN_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a new daemon answering its first health check.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Grace between SIGTERM and SIGKILL for a wedged daemon.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// Longest Unix socket path the platforms accept (macOS: 104 bytes).
const MAX_SOCKET_PATH: usize = 103;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{0}")]
    Lock(#[from] moat_core::lock::LockError),
    #[error("cannot prepare {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("the daemon socket path {path} is {len} bytes, longer than the {MAX_SOCKET_PATH} the system allows")]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("cannot find moat's own executable: {0}")]
    Executable(std::io::Error),
    #[error("cannot find the moat daemon executable: no moatd in {beside} or on PATH")]
    NoDaemonExecutable { beside: PathBuf },
    #[error("refusing to spawn the daemon from a test harness binary {0}")]
    TestHarness(PathBuf),
    #[error("cannot start the daemon ({exe}): {source}")]
    Start { exe: PathBuf, source: std::io::Error },
    #[error("the daemon did not become ready within {READY_TIMEOUT:?}: {last}")]
    NotReady { last: String, log: PathBuf },
    #[error("the daemon (pid {pid}) speaks API version {found}, this moat needs {API_VERSION}")]
    Incompatible { pid: u32, found: u32 },
    #[error("{0}")]
    Unusable(ClientError),
}

impl SpawnError {
    pub fn hint(&self) -> Option<String> {
        match self {
            SpawnError::SocketPathTooLong { .. } => Some("set MOAT_HOME to a shorter path".into()),
            SpawnError::TestHarness(_) => Some(format!("set {} to the moatd binary", env_vars::MOAT_DAEMON_EXECUTABLE)),
            SpawnError::NoDaemonExecutable { .. } => Some(format!(
                "install moatd beside moat (`cargo install --path crates/moat-daemon`), or set {}",
                env_vars::MOAT_DAEMON_EXECUTABLE
            )),
            SpawnError::NotReady { log, .. } => Some(format!("see {}", log.display())),
            SpawnError::Lock(_) => {
                Some("another moat is starting the daemon; retry, or check `moat daemon status`".into())
            }
            SpawnError::Dir { .. } => Some("check that MOAT_HOME is writable".into()),
            SpawnError::Unusable(_) => {
                Some("check the daemon socket's owner and mode (`ls -l` on it); `moat daemon status` says more".into())
            }
            _ => None,
        }
    }
}

/// Returns a client for a healthy daemon of this `MOAT_HOME`, starting one
/// if needed. Concurrent callers start exactly one daemon.
pub async fn ensure_running(home: &MoatHome) -> Result<DaemonClient, SpawnError> {
    let daemon_dir = home.daemon_dir();
    create_private_dir(&daemon_dir).map_err(|source| SpawnError::Dir {
        path: daemon_dir.clone(),
        source,
    })?;
    check_socket_path(&home.daemon_socket())?;
    let client = DaemonClient::new(home.daemon_socket());
    if usable(&client, home).await? {
        return Ok(client);
    }
    let lock_path = home.spawn_lock();
    let _lock = tokio::task::spawn_blocking(move || FileLock::acquire(&lock_path, SPAWN_LOCK_TIMEOUT))
        .await
        .map_err(|e| SpawnError::Dir {
            path: home.spawn_lock(),
            source: std::io::Error::other(e),
        })??;
    // Another process may have spawned (or upgraded) it while we waited.
    match probe(&client, home).await {
        Probe::Ready => return Ok(client),
        Probe::Outdated(health) if health.live_runs > 0 => return keep_outdated(client, &health),
        Probe::Outdated(health) => retire(&client, home, health.pid).await,
        Probe::Down | Probe::Wedged => replace_wedged(home).await,
        Probe::Unusable(e) => return Err(SpawnError::Unusable(e)),
    }
    spawn(home)?;
    wait_ready(&client, home).await?;
    Ok(client)
}

pub fn check_socket_path(path: &Path) -> Result<(), SpawnError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(SpawnError::SocketPathTooLong {
            path: path.to_path_buf(),
            len,
        });
    }
    Ok(())
}

/// What the daemon on the socket is, as far as this CLI is concerned.
enum Probe {
    /// Same version: use it.
    Ready,
    /// Older than this CLI (version skew).
    Outdated(Health),
    /// No daemon: no socket, nobody listening, or one that is exiting.
    Down,
    /// A daemon holds the socket but does not answer in time: replaced.
    Wedged,
    /// Something else is wrong (permissions, a garbled answer): neither
    /// spawn a second daemon nor kill the first; tell the user.
    Unusable(ClientError),
}

async fn probe(client: &DaemonClient, home: &MoatHome) -> Probe {
    match client.health().await {
        Ok(health) if is_older(&health.version, env!("CARGO_PKG_VERSION")) => Probe::Outdated(health),
        Ok(_) => Probe::Ready,
        Err(ClientError::NotRunning(_)) => Probe::Down,
        Err(e) if e.is_shutting_down() => Probe::Down,
        Err(ClientError::Timeout { .. }) => Probe::Wedged,
        Err(e @ ClientError::Protocol { .. }) if dying(home).await => {
            tracing::debug!("the moat daemon is exiting ({e}); starting a new one");
            Probe::Down
        }
        Err(e) => Probe::Unusable(e),
    }
}

/// How long a connection cut before any answer may take to be explained by
/// the daemon's exit (its lifetime lock is released as the process ends).
const DYING_GRACE: Duration = Duration::from_millis(500);

/// Whether the daemon is gone or going: a killed daemon's socket can still
/// accept into its backlog while the process dies, and the connection is
/// then cut. Its lifetime lock, released within [`DYING_GRACE`], says so.
async fn dying(home: &MoatHome) -> bool {
    wait_for_lock_release(&home.daemon_lock(), DYING_GRACE).await
}

/// Fast path without the spawn lock: a daemon this CLI can use now.
async fn usable(client: &DaemonClient, home: &MoatHome) -> Result<bool, SpawnError> {
    match probe(client, home).await {
        Probe::Ready => Ok(true),
        Probe::Outdated(health) if health.live_runs > 0 => keep_outdated(client.clone(), &health).map(|_| true),
        Probe::Unusable(e) => Err(SpawnError::Unusable(e)),
        Probe::Outdated(_) | Probe::Down | Probe::Wedged => Ok(false),
    }
}

/// An older daemon with live runs stays (restarting it would disturb
/// nothing, but its runs' proxy would blink); warn and use what it offers.
fn keep_outdated(client: DaemonClient, health: &Health) -> Result<DaemonClient, SpawnError> {
    if health.api_version != API_VERSION {
        return Err(SpawnError::Incompatible {
            pid: health.pid,
            found: health.api_version,
        });
    }
    tracing::warn!(
        "the moat daemon (pid {}) is version {}, older than this moat ({}); it is replaced once no run is live",
        health.pid,
        health.version,
        env!("CARGO_PKG_VERSION")
    );
    Ok(client)
}

/// Asks an outdated, idle daemon to exit and waits for it.
async fn retire(client: &DaemonClient, home: &MoatHome, pid: u32) {
    tracing::info!("replacing the older moat daemon (pid {pid})");
    let _ = client.shutdown().await;
    wait_for_lock_release(&home.daemon_lock(), TERM_GRACE).await;
    replace_wedged(home).await;
}

/// Whether version `a` precedes `b` by semver rules (a pre-release comes
/// before its release). A version that does not parse is not called older:
/// the API version check still guards compatibility.
fn is_older(a: &str, b: &str) -> bool {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(a), Ok(b)) => a < b,
        _ => false,
    }
}

/// Stops the daemon that holds this home's lifetime lock but does not
/// answer (wedged, or stopped with SIGSTOP), and waits until the lock is
/// free. The lock, not `/proc`, says which process is the daemon: its
/// holder recorded its pid, and a held lock means that process lives.
async fn replace_wedged(home: &MoatHome) {
    let lock = home.daemon_lock();
    let Some(pid) = FileLock::holder(&lock) else {
        return;
    };
    tracing::warn!("the moat daemon (pid {pid}) does not answer; replacing it");
    let target = Pid::from_raw(pid as i32);
    let _ = kill(target, Signal::SIGTERM);
    if !wait_for_lock_release(&lock, TERM_GRACE).await {
        let _ = kill(target, Signal::SIGKILL);
        wait_for_lock_release(&lock, TERM_GRACE).await;
    }
}

/// Waits (at most `bound`) until nobody holds `lock`; returns whether it
/// is free.
async fn wait_for_lock_release(lock: &Path, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    while FileLock::is_held(lock) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    true
}

pub fn process_alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Name of the daemon's executable.
const DAEMON_EXECUTABLE: &str = "moatd";

/// The daemon executable: `MOAT_DAEMON_EXECUTABLE`, else `moatd` beside
/// this executable (symlinks resolved), else `moatd` on `PATH`.
pub fn daemon_executable() -> Result<PathBuf, SpawnError> {
    if let Some(exe) = env_vars::read_os_non_empty(env_vars::MOAT_DAEMON_EXECUTABLE) {
        return Ok(PathBuf::from(exe));
    }
    let exe = std::env::current_exe().map_err(SpawnError::Executable)?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        return Err(SpawnError::TestHarness(exe));
    }
    let beside = dir.join(DAEMON_EXECUTABLE);
    if beside.is_file() {
        return Ok(beside);
    }
    env_vars::read_os_non_empty(env_vars::PATH)
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(DAEMON_EXECUTABLE))
        .find(|candidate| candidate.is_file())
        .ok_or(SpawnError::NoDaemonExecutable { beside: dir })
}

fn spawn(home: &MoatHome) -> Result<(), SpawnError> {
    let exe = daemon_executable()?;
    let log_path = home.daemon_log();
    crate::logfile::rotate_if_large(&log_path);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|source| SpawnError::Dir {
            path: log_path.clone(),
            source,
        })?;
    let log_err = log.try_clone().map_err(|source| SpawnError::Dir {
        path: log_path.clone(),
        source,
    })?;
    let mut command = Command::new(&exe);
    command
        .arg("run")
        .env(env_vars::MOAT_HOME, home.root())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // The one unsafe call in moat: `pre_exec` runs between fork and exec,
    // and Rust cannot check what it does there.
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from the
    // CLI's session and terminal so that killing the CLI spares it.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
    }
    let child = command.spawn().map_err(|source| SpawnError::Start {
        exe: exe.clone(),
        source,
    })?;
    tracing::debug!("spawned the daemon as pid {}", child.id());
    // The child is reaped by init once we exit; not waiting on it is intended.
    drop(child);
    Ok(())
}

async fn wait_ready(client: &DaemonClient, home: &MoatHome) -> Result<(), SpawnError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match client.health().await {
            Ok(health) if health.api_version == API_VERSION => return Ok(()),
            Ok(health) => {
                return Err(SpawnError::Incompatible {
                    pid: health.pid,
                    found: health.api_version,
                });
            }
            Err(ClientError::NotRunning(_)) => last = "socket not accepting connections".into(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(SpawnError::NotReady {
        last,
        log: home.daemon_log(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that accepts and cuts every connection before answering,
    /// as a killed daemon's socket does while the process dies.
    fn cutting_socket(home: &MoatHome) -> tokio::task::JoinHandle<()> {
        std::fs::create_dir_all(home.daemon_dir()).unwrap();
        let listener = tokio::net::UnixListener::bind(home.daemon_socket()).unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        })
    }

    #[tokio::test]
    async fn a_cut_connection_without_a_daemon_lock_holder_is_a_daemon_that_is_down() {
        let dir = tempfile::tempdir().unwrap();
        let home = MoatHome::new(dir.path());
        let _socket = cutting_socket(&home);
        let client = DaemonClient::new(home.daemon_socket());
        assert!(matches!(probe(&client, &home).await, Probe::Down));
    }

    #[tokio::test]
    async fn a_cut_connection_while_a_daemon_holds_its_lock_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let home = MoatHome::new(dir.path());
        let _socket = cutting_socket(&home);
        let _held = FileLock::try_acquire(&home.daemon_lock()).unwrap().unwrap();
        let client = DaemonClient::new(home.daemon_socket());
        let started = Instant::now();
        match probe(&client, &home).await {
            Probe::Unusable(e) => assert!(e.to_string().contains("unexpected answer"), "{e}"),
            _ => panic!("a daemon that holds its lock but cuts connections must be reported"),
        }
        assert!(started.elapsed() >= DYING_GRACE, "the lock is given its grace");
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(is_older("0.1.0", "0.2.0"));
        assert!(is_older("0.9.0", "0.10.0"));
        assert!(!is_older("0.2.0", "0.2.0"));
        assert!(!is_older("1.0.0", "0.9.9"));
    }

    #[test]
    fn a_pre_release_is_older_than_its_release() {
        assert!(is_older("0.2.0-rc.1", "0.2.0"));
        assert!(!is_older("0.2.0", "0.2.0-rc.1"));
        assert!(is_older("0.2.0-rc.1", "0.2.0-rc.2"));
        assert!(!is_older("not a version", "0.2.0"));
    }
}
