//! A sweep in a process of its own (`moatd sweep`), for when no daemon can
//! be started: it runs only under the daemon's lifetime lock (so no daemon
//! starts meanwhile, and none that still holds it is raced) and with the
//! daemon's registry restored from `runs.json`; it refuses when either is
//! impossible.

use std::sync::Arc;
use std::time::Duration;

use moat_api::sweep::{SweepReport, SweepRequest};
use moat_core::MoatHome;
use moat_core::config;
use moat_core::lock::{FileLock, LockError};

use crate::reconcile;
use crate::runtimes::SystemRuntimes;
use crate::state::{Daemon, DaemonConfig};

/// Bound on taking the daemon's lifetime lock.
const DAEMON_LOCK_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error("a moat daemon ({}) holds this MOAT_HOME but does not answer; not sweeping beside it", pid.map_or("pid unknown".to_string(), |pid| format!("pid {pid}")))]
    DaemonHoldsLock { pid: Option<u32> },
    #[error("{0}")]
    Lock(LockError),
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("configuring runtimes: {0}")]
    Runtimes(#[from] moat_runtime::RuntimeError),
    #[error("not sweeping: the run registry cannot be read ({0})")]
    Registry(String),
}

impl StandaloneError {
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            StandaloneError::DaemonHoldsLock { .. } => {
                Some("`moat daemon restart` replaces it; `moat daemon status` shows it")
            }
            StandaloneError::Registry(_) => {
                Some("start the daemon (`moat daemon restart`): it recovers runs from their directories")
            }
            _ => None,
        }
    }
}

/// Sweeps as the daemon would, in this process.
pub async fn sweep(home: &MoatHome, request: &SweepRequest) -> Result<SweepReport, StandaloneError> {
    let lock_path = home.daemon_lock();
    let _lifetime = FileLock::acquire(&lock_path, DAEMON_LOCK_WAIT).map_err(|e| match e {
        LockError::Timeout { .. } => StandaloneError::DaemonHoldsLock {
            pid: FileLock::holder(&lock_path),
        },
        other => StandaloneError::Lock(other),
    })?;
    let global = config::load_global(home)?.config;
    let runtimes = Arc::new(SystemRuntimes::new(&global)?);
    let mut daemon_config = DaemonConfig::new(home.clone());
    daemon_config.egress = None;
    let daemon = Daemon::new(daemon_config, runtimes, None);
    reconcile::load_registry(&daemon).map_err(|e| StandaloneError::Registry(e.to_string()))?;
    Ok(daemon.reaper().sweep(&daemon, request, "in-process (no daemon)").await)
}
