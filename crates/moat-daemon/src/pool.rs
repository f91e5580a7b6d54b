//! The warm network pool (daemon-and-reaper.md §5, "Warm network pool").
//! Creating a run's network, and attaching a container to it, are the
//! slowest steps on the path a user waits for, so the daemon keeps a few
//! ready-made networks of each kind (ordinary, and `internal` for strict
//! runs) and a run takes one instead.
//!
//! A pool network is named `moat-pool-<hex>` (no run id: Docker cannot
//! rename or relabel a network) and labelled `dev.moat.role=pool` and
//! `dev.moat.daemon=<instance>`, the daemon that created it. Once created,
//! it is *armed*: a holder container of the same name (moat's base image,
//! asleep, same labels) is started on it, so that the network's
//! namespace, address, hosts file and DNS are ready; a run whose container
//! needs nothing else of its network joins the holder's namespace, which
//! starts in about half the time of a container attached to a network.
//! A run that takes an entry records the network's name as
//! `metadata.network` before using it; from then on cleanup removes the
//! holder and the network like any run object, and the reaper judges both
//! by that run. An untaken entry belongs to its daemon: kept while that
//! daemon lives, reclaimed as an orphan once it has died.
//!
//! The pool is filled at start-up (networks first, then their holders, so
//! a daemon's first run need not wait for a holder) and refilled in the
//! background shortly after each take (once the taker's container has
//! started), never above its size; the daemon removes what is left of it
//! when it shuts down (the reaper reclaims whatever that misses).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use moat_core::RunId;
use moat_runtime::base_image::DEFAULT_LOCAL_BASE_IMAGE;
use moat_runtime::{ContainerSpec, NetworkInfo, NetworkSpec, Runtime, labels};
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

/// The longest the pool holds back a creation while runs are starting
/// (so that a steady stream of runs cannot keep it from refilling).
const QUIET_WAIT: Duration = Duration::from_secs(3);

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

/// A ready entry of the pool: a network and, once armed, the holder
/// container (named like the network) whose namespace a run can join.
#[derive(Clone, Debug)]
pub struct Pooled {
    pub network: NetworkInfo,
    pub holder: Option<String>,
}

/// The pool's ready entries, by kind.
pub struct NetworkPool {
    config: PoolConfig,
    state: std::sync::Mutex<PoolState>,
    wake: Notify,
    /// Held while a pool network is being created: the shutdown release
    /// waits for it, so that no creation outlives the daemon unrecorded.
    creating: tokio::sync::Mutex<()>,
    /// Runs being created (see [`NetworkPool::starting`]); the pool makes
    /// nothing while there are any, for at most [`QUIET_WAIT`].
    starting: AtomicUsize,
    /// Woken when the last starting run has started.
    quiet: Notify,
}

/// A run being created, from its request until its container has started
/// (or failed to): network and container work of the pool would compete
/// with it for the engine, which serialises network changes, and a daemon's
/// first run would wait for the pool filling beside it.
pub struct StartingRun<'a>(&'a NetworkPool);

impl Drop for StartingRun<'_> {
    fn drop(&mut self) {
        if self.0.starting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.quiet.notify_waiters();
        }
    }
}

#[derive(Default)]
struct PoolState {
    /// Index 0: ordinary networks; 1: internal ones.
    ready: [Vec<Pooled>; 2],
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
            starting: AtomicUsize::new(0),
            quiet: Notify::new(),
        }
    }

    /// Marks a run as starting until the returned guard is dropped.
    pub fn starting(&self) -> StartingRun<'_> {
        self.starting.fetch_add(1, Ordering::AcqRel);
        StartingRun(self)
    }

    /// Waits until no run is starting, for at most [`QUIET_WAIT`]; after
    /// a run has started, [`REFILL_DELAY`] more, so that a short command
    /// can finish without the pool's work in its way.
    async fn until_quiet(&self) {
        let quiet = async {
            let mut waited = false;
            loop {
                let notified = self.quiet.notified();
                if self.starting.load(Ordering::Acquire) == 0 {
                    return waited;
                }
                waited = true;
                notified.await;
            }
        };
        if let Ok(true) = tokio::time::timeout(QUIET_WAIT, quiet).await {
            tokio::time::sleep(REFILL_DELAY).await;
        }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Takes a ready entry of the kind asked for, on `runtime`, an armed
    /// one first. `None` when the pool has none (the caller creates a
    /// network). The taker calls [`refill_later`] once its container has
    /// started (or failed to).
    pub fn take(&self, runtime: &str, internal: bool) -> Option<Pooled> {
        if runtime != self.config.runtime {
            return None;
        }
        let mut state = lock(&self.state);
        let ready = &mut state.ready[slot(internal)];
        let armed = ready.iter().rposition(|entry| entry.holder.is_some());
        match armed {
            Some(index) => Some(ready.remove(index)),
            None => ready.pop(),
        }
    }

    /// [`Self::take`]; when the pool has none of the kind but is creating
    /// one, waits for it: the engine serialises network work, so a second
    /// network created beside it (as at a daemon's first run, while the pool
    /// fills) would take longer than the wait. `None` when there is still
    /// none (another run took it, or its creation failed).
    pub async fn take_or_await(&self, runtime: &str, internal: bool) -> Option<Pooled> {
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
            .map(|entry| entry.network.name.clone())
            .collect()
    }

    /// The names of the ready networks of one kind that are armed.
    pub fn armed(&self, internal: bool) -> Vec<String> {
        lock(&self.state).ready[slot(internal)]
            .iter()
            .filter(|entry| entry.holder.is_some())
            .map(|entry| entry.network.name.clone())
            .collect()
    }

    /// The kind the pool lacks first, if any.
    fn missing(&self) -> Option<bool> {
        let state = lock(&self.state);
        [false, true]
            .into_iter()
            .find(|internal| state.ready[slot(*internal)].len() < self.config.size)
    }

    fn add(&self, internal: bool, entry: Pooled) {
        lock(&self.state).ready[slot(internal)].push(entry);
    }

    /// Takes out a ready entry that has no holder yet, to arm it.
    fn take_unarmed(&self) -> Option<(bool, Pooled)> {
        let mut state = lock(&self.state);
        [false, true].into_iter().find_map(|internal| {
            let ready = &mut state.ready[slot(internal)];
            let index = ready.iter().position(|entry| entry.holder.is_none())?;
            Some((internal, ready.remove(index)))
        })
    }

    fn set_creating(&self, kind: Option<bool>) {
        lock(&self.state).creating = kind;
    }

    fn drain(&self) -> Vec<Pooled> {
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

/// The labels of this daemon's pool objects.
fn pool_labels(daemon: &Daemon) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED.to_string(), "true".to_string()),
        (labels::HOME.to_string(), daemon.home().label()),
        (labels::ROLE.to_string(), labels::role::POOL.to_string()),
        (labels::DAEMON.to_string(), daemon.instance().to_string()),
    ])
}

/// The spec of a new pool network of this daemon.
pub fn network_spec(daemon: &Daemon, internal: bool) -> NetworkSpec {
    let hex = RunId::generate().as_str().trim_start_matches("run_").to_string();
    NetworkSpec {
        name: format!("{NAME_PREFIX}{hex}"),
        labels: pool_labels(daemon),
        internal,
    }
}

/// Whether `name` is a pool network's (and so its holder's) name.
pub fn is_pool_name(name: &str) -> bool {
    name.starts_with(NAME_PREFIX)
}

/// The holder of a pool network: named like it, asleep on it as nobody,
/// its hosts file and DNS those a run's container would get there (the
/// proxy's name; for strict runs, a DNS address where nothing answers).
fn holder_spec(daemon: &Daemon, network: &NetworkInfo, internal: bool) -> ContainerSpec {
    let mut extra_hosts = Vec::new();
    if let (Some(_), Some(gateway)) = (daemon.egress(), &network.gateway) {
        extra_hosts.push((crate::egress::PROXY_HOST.to_string(), gateway.clone()));
    }
    let dns = if internal {
        vec![crate::supervisor::STRICT_DNS.to_string()]
    } else {
        Vec::new()
    };
    ContainerSpec {
        name: network.name.clone(),
        image: DEFAULT_LOCAL_BASE_IMAGE.to_string(),
        // A shell as PID 1 gets no default action for SIGTERM: it traps it,
        // so that a stop is not a kill after the grace period.
        command: ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
            .map(String::from)
            .to_vec(),
        user: Some("65534:65534".into()),
        network: Some(network.name.clone()),
        labels: pool_labels(daemon),
        extra_hosts,
        dns,
        ..Default::default()
    }
}

/// Whether an object's labels make it a pool network or holder; its
/// owner's instance (empty when unlabelled) if so.
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

/// Creates networks until the pool is full, then arms them; false when
/// something failed.
async fn fill(daemon: &Daemon, runtime: &dyn Runtime) -> bool {
    create_networks(daemon, runtime).await && arm_all(daemon, runtime).await
}

/// Creates networks until the pool has its size of each kind; false when
/// one failed.
async fn create_networks(daemon: &Daemon, runtime: &dyn Runtime) -> bool {
    let pool = daemon.network_pool();
    while let Some(internal) = pool.missing() {
        pool.until_quiet().await;
        let _creating = pool.creating.lock().await;
        if daemon.is_shutting_down() {
            return true;
        }
        let spec = network_spec(daemon, internal);
        pool.set_creating(Some(internal));
        let created = runtime.create_network(&spec).await;
        pool.set_creating(None);
        match created {
            Ok(network) if daemon.is_shutting_down() => remove(runtime, &network.name).await,
            Ok(network) => {
                tracing::debug!("network pool: {} is ready", network.name);
                pool.add(internal, Pooled { network, holder: None });
            }
            Err(e) => {
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

/// Starts a holder on every ready network that has none, where the
/// runtime can share a namespace and moat's base image is there; false
/// when one failed (that network stays in the pool, unarmed).
async fn arm_all(daemon: &Daemon, runtime: &dyn Runtime) -> bool {
    let pool = daemon.network_pool();
    if !runtime.capabilities().shared_network_namespace
        || !runtime.image_exists(DEFAULT_LOCAL_BASE_IMAGE).await.unwrap_or(false)
    {
        return true;
    }
    loop {
        pool.until_quiet().await;
        let _creating = pool.creating.lock().await;
        if daemon.is_shutting_down() {
            return true;
        }
        let Some((internal, entry)) = pool.take_unarmed() else {
            return true;
        };
        let spec = holder_spec(daemon, &entry.network, internal);
        match start_holder(runtime, &spec).await {
            Ok(()) if daemon.is_shutting_down() => {
                remove_entry(runtime, &entry.network.name, Some(&spec.name)).await;
                return true;
            }
            Ok(()) => pool.add(
                internal,
                Pooled {
                    holder: Some(spec.name),
                    ..entry
                },
            ),
            Err(e) => {
                tracing::warn!("network pool: starting the holder of {} failed ({e})", spec.name);
                if let Err(e) = runtime.remove_container(&spec.name).await {
                    tracing::warn!(
                        "network pool: removing holder {} failed ({e}); the reaper reclaims it",
                        spec.name
                    );
                }
                pool.add(internal, entry);
                return false;
            }
        }
    }
}

async fn start_holder(runtime: &dyn Runtime, spec: &ContainerSpec) -> moat_runtime::RuntimeResult<()> {
    let id = runtime.create_container(spec).await?;
    runtime.start_container(&id).await
}

/// Removes the untaken pool networks (at shutdown), waiting at most
/// [`RELEASE_WAIT`]; what is left is reclaimed by the next daemon's reaper.
pub async fn release(daemon: &Daemon) {
    let pool = daemon.network_pool();
    // A creation in flight finishes first (and, seeing the shutdown,
    // removes what it made); it is bounded by the runtime's timeout.
    let _no_creation = tokio::time::timeout(RELEASE_WAIT, pool.creating.lock()).await;
    let entries = pool.drain();
    if entries.is_empty() {
        return;
    }
    let Ok(runtime) = daemon.runtimes().get(&pool.config.runtime).await else {
        return;
    };
    let removing = futures_util::future::join_all(
        (entries.iter()).map(|entry| remove_entry(runtime.as_ref(), &entry.network.name, entry.holder.as_deref())),
    );
    if tokio::time::timeout(RELEASE_WAIT, removing).await.is_err() {
        tracing::warn!("network pool: removing the pool's networks took over {RELEASE_WAIT:?}; the reaper finishes");
    }
}

/// Removes a pool network, its holder first.
async fn remove_entry(runtime: &dyn Runtime, network: &str, holder: Option<&str>) {
    if let Some(holder) = holder
        && let Err(e) = runtime.remove_container(holder).await
    {
        tracing::warn!("network pool: removing holder {holder} failed ({e}); the reaper reclaims it");
    }
    remove(runtime, network).await;
}

async fn remove(runtime: &dyn Runtime, name: &str) {
    if let Err(e) = runtime.remove_network(name).await {
        tracing::warn!("network pool: removing {name} failed ({e}); the reaper reclaims it");
    }
}
