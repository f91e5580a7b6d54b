//! The warm network pool (daemon-and-reaper.md §5, "Warm network pool").
//! Creating a run's network is the slowest step on the path a user waits
//! for, so the daemon keeps a few ready-made networks of each kind
//! (ordinary, and `internal` for strict runs) and a run takes one instead.
//!
//! A pool network is named `moat-pool-<hex>` (no run id: Docker cannot
//! rename or relabel a network) and labelled `dev.moat.role=pool` and
//! `dev.moat.daemon=<instance>`, the daemon that created it. A run that
//! takes one records its name as `metadata.network` before using it; from
//! then on cleanup removes it like any run network, and the reaper judges
//! it by that run. An untaken pool network belongs to its daemon: kept
//! while that daemon lives, reclaimed as an orphan once it has died.
//!
//! The pool is filled at start-up and refilled in the background shortly
//! after each take (once the taker's container has started), never above
//! its size; the daemon removes what is left of it
//! when it shuts down (the reaper reclaims whatever that misses).

use std::collections::BTreeMap;
use std::time::Duration;

use moat_core::RunId;
use moat_runtime::{NetworkInfo, NetworkSpec, Runtime, labels};
use tokio::sync::Notify;

use crate::output::lock;
use crate::state::Daemon;

/// Every pool network's name starts with this.
pub const NAME_PREFIX: &str = "moat-pool-";

/// Wait before trying again after a pool network could not be created.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// How long a refill waits after a run took a network: creating a network
/// while the run's container starts would slow that start down (the engine
/// serialises network work), and the start is what the user waits for.
const REFILL_DELAY: Duration = Duration::from_millis(500);

/// Bound on removing the pool's networks at shutdown.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// How big the pool is and which runtime it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Ready networks of each kind; 0 disables the pool.
    pub size: usize,
    /// The runtime (`docker`, `apple`, `fake`) whose networks are pooled;
    /// runs on another runtime create their network as before.
    pub runtime: String,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            size: 0,
            runtime: "docker".into(),
        }
    }
}

/// The pool's ready networks, by kind.
pub struct NetworkPool {
    config: PoolConfig,
    state: std::sync::Mutex<PoolState>,
    wake: Notify,
    /// Held while a pool network is being created: the shutdown release
    /// waits for it, so that no creation outlives the daemon unrecorded.
    creating: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct PoolState {
    /// Index 0: ordinary networks; 1: internal ones.
    ready: [Vec<NetworkInfo>; 2],
    /// The kind of the pool network being created (`true`: internal).
    creating: Option<bool>,
}

fn slot(internal: bool) -> usize {
    usize::from(internal)
}

impl NetworkPool {
    pub fn new(config: PoolConfig) -> Self {
        NetworkPool {
            config,
            state: std::sync::Mutex::new(PoolState::default()),
            wake: Notify::new(),
            creating: tokio::sync::Mutex::new(()),
        }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Takes a ready network of the kind asked for, on `runtime`. `None`
    /// when the pool has none (the caller creates one). The taker calls
    /// [`refill_later`] once its container has started (or failed to).
    pub fn take(&self, runtime: &str, internal: bool) -> Option<NetworkInfo> {
        if runtime != self.config.runtime {
            return None;
        }
        lock(&self.state).ready[slot(internal)].pop()
    }

    /// [`Self::take`]; when the pool has none of the kind but is creating
    /// one, waits for it: the engine serialises network work, so a second
    /// network created beside it (as at a daemon's first run, while the pool
    /// fills) would take longer than the wait. `None` when there is still
    /// none (another run took it, or its creation failed).
    pub async fn take_or_await(&self, runtime: &str, internal: bool) -> Option<NetworkInfo> {
        if let Some(network) = self.take(runtime, internal) {
            return Some(network);
        }
        if runtime != self.config.runtime || lock(&self.state).creating != Some(internal) {
            return None;
        }
        drop(self.creating.lock().await);
        self.take(runtime, internal)
    }

    /// The names of the ready networks of one kind.
    pub fn ready(&self, internal: bool) -> Vec<String> {
        lock(&self.state).ready[slot(internal)]
            .iter()
            .map(|n| n.name.clone())
            .collect()
    }

    /// The kind the pool lacks first, if any.
    fn missing(&self) -> Option<bool> {
        let state = lock(&self.state);
        [false, true]
            .into_iter()
            .find(|internal| state.ready[slot(*internal)].len() < self.config.size)
    }

    fn add(&self, internal: bool, network: NetworkInfo) {
        lock(&self.state).ready[slot(internal)].push(network);
    }

    fn set_creating(&self, kind: Option<bool>) {
        lock(&self.state).creating = kind;
    }

    fn drain(&self) -> Vec<NetworkInfo> {
        let mut state = lock(&self.state);
        state.ready.iter_mut().flat_map(std::mem::take).collect()
    }
}

/// Wakes the refill after [`REFILL_DELAY`], off the path a user waits for.
pub fn refill_later(daemon: &Daemon) {
    if daemon.network_pool().config.size == 0 {
        return;
    }
    let daemon = daemon.clone();
    tokio::spawn(async move {
        tokio::time::sleep(REFILL_DELAY).await;
        daemon.network_pool().wake.notify_one();
    });
}

/// The spec of a new pool network of this daemon.
pub fn network_spec(daemon: &Daemon, internal: bool) -> NetworkSpec {
    let hex = RunId::generate().as_str().trim_start_matches("run_").to_string();
    NetworkSpec {
        name: format!("{NAME_PREFIX}{hex}"),
        labels: BTreeMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::HOME.to_string(), daemon.home().label()),
            (labels::ROLE.to_string(), labels::role::POOL.to_string()),
            (labels::DAEMON.to_string(), daemon.instance().to_string()),
        ]),
        internal,
    }
}

/// Whether a network's labels make it a pool network; its owner's
/// instance (empty when unlabelled) if so.
pub fn owner(object_labels: &BTreeMap<String, String>) -> Option<String> {
    (object_labels.get(labels::ROLE).map(String::as_str) == Some(labels::role::POOL))
        .then(|| object_labels.get(labels::DAEMON).cloned().unwrap_or_default())
}

/// Fills the pool, then refills it after each take, until shutdown. Every
/// creation is bounded by the runtime's network-creation timeout; a
/// failure is logged and retried later (runs create their own meanwhile).
pub async fn keep_filled(daemon: Daemon) {
    let pool = daemon.network_pool();
    if pool.config.size == 0 {
        return;
    }
    loop {
        let failed = match daemon.runtimes().get(&pool.config.runtime).await {
            Ok(runtime) => !fill(&daemon, runtime.as_ref()).await,
            Err(e) => {
                tracing::warn!("network pool: {} is not available ({e})", pool.config.runtime);
                true
            }
        };
        let retry = async {
            if failed {
                tokio::time::sleep(RETRY_AFTER).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = pool.wake.notified() => {}
            _ = retry => {}
            _ = daemon.shutdown_token().cancelled() => return,
        }
    }
}

/// Creates networks until the pool is full; false when one failed.
async fn fill(daemon: &Daemon, runtime: &dyn Runtime) -> bool {
    let pool = daemon.network_pool();
    while let Some(internal) = pool.missing() {
        let _creating = pool.creating.lock().await;
        if daemon.is_shutting_down() {
            return true;
        }
        let spec = network_spec(daemon, internal);
        pool.set_creating(Some(internal));
        let created = runtime.create_network(&spec).await;
        match created {
            Ok(network) if daemon.is_shutting_down() => {
                pool.set_creating(None);
                remove(runtime, &network.name).await;
            }
            Ok(network) => {
                tracing::debug!("network pool: {} is ready", network.name);
                pool.add(internal, network);
                pool.set_creating(None);
            }
            Err(e) => {
                pool.set_creating(None);
                tracing::warn!(
                    "network pool: creating {} failed ({e}); runs create their own network meanwhile",
                    spec.name
                );
                return false;
            }
        }
    }
    true
}

/// Removes the untaken pool networks (at shutdown), waiting at most
/// [`RELEASE_WAIT`]; what is left is reclaimed by the next daemon's reaper.
pub async fn release(daemon: &Daemon) {
    let pool = daemon.network_pool();
    // A creation in flight finishes first (and, seeing the shutdown,
    // removes what it made); it is bounded by the runtime's timeout.
    let _no_creation = tokio::time::timeout(RELEASE_WAIT, pool.creating.lock()).await;
    let networks = pool.drain();
    if networks.is_empty() {
        return;
    }
    let Ok(runtime) = daemon.runtimes().get(&pool.config.runtime).await else {
        return;
    };
    let removing = futures_util::future::join_all(networks.iter().map(|n| remove(runtime.as_ref(), &n.name)));
    if tokio::time::timeout(RELEASE_WAIT, removing).await.is_err() {
        tracing::warn!("network pool: removing the pool's networks took over {RELEASE_WAIT:?}; the reaper finishes");
    }
}

async fn remove(runtime: &dyn Runtime, name: &str) {
    if let Err(e) = runtime.remove_network(name).await {
        tracing::warn!("network pool: removing {name} failed ({e}); the reaper reclaims it");
    }
}
