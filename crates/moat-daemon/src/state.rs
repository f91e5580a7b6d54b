//! The daemon's shared state: a cheap cloneable handle over the run store,
//! the registry, the runtimes, and the one shutdown path that signals, the
//! API and idle expiry all go through.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use moat_core::MoatHome;
use moat_core::store::RunStore;
use moat_runtime::{Runtime, RuntimeError};
use tokio_util::sync::CancellationToken;

use crate::audit::AuditLog;
use crate::egress::{Egress, EgressConfig};
use crate::pool::{NetworkPool, PoolConfig};
use crate::reaper::Reaper;
use crate::registry::Registry;

/// Where the daemon gets runtimes from (Docker/Apple in production, a fake
/// in tests).
#[async_trait]
pub trait Runtimes: Send + Sync + 'static {
    /// The runtime called `kind` (`docker`, `apple`, `fake`), connecting on
    /// first use.
    async fn get(&self, kind: &str) -> Result<Arc<dyn Runtime>, RuntimeError>;
    /// Every runtime that is reachable now (the reaper sweeps them all).
    async fn available(&self) -> Vec<Arc<dyn Runtime>>;
    /// The Kubernetes runtime for a context and namespace, connecting on
    /// first use.
    async fn kubernetes(&self, target: &moat_core::config::KubernetesConfig) -> Result<Arc<dyn Runtime>, RuntimeError> {
        let _ = target;
        Err(RuntimeError::Unavailable {
            runtime: moat_core::RuntimeKind::Kubernetes,
            reason: "this daemon has no Kubernetes runtime".into(),
        })
    }
    /// The Kubernetes runtime itself (for its in-cluster proxy).
    async fn kube(
        &self,
        target: &moat_core::config::KubernetesConfig,
    ) -> Result<Arc<moat_kube::KubeRuntime>, RuntimeError> {
        let _ = target;
        Err(RuntimeError::Unavailable {
            runtime: moat_core::RuntimeKind::Kubernetes,
            reason: "this daemon has no Kubernetes runtime".into(),
        })
    }
    /// The runtime a run's spec names (with its cluster for `kubernetes`).
    async fn for_spec(&self, spec: &crate::api::RunSpec) -> Result<Arc<dyn Runtime>, RuntimeError> {
        if spec.runtime == moat_core::RuntimeKind::Kubernetes.as_str() {
            return self.kubernetes(&spec.kubernetes).await;
        }
        self.get(&spec.runtime).await
    }
    /// The runtime a run gets when it names none: the first available.
    async fn detect(&self) -> Result<Arc<dyn Runtime>, RuntimeError> {
        self.available()
            .await
            .into_iter()
            .next()
            .ok_or_else(|| RuntimeError::Unavailable {
                runtime: moat_core::RuntimeKind::Docker,
                reason: "no container runtime answers".into(),
            })
    }
    /// Whether `image` is there for `runtime`; one that moat can build
    /// itself (its local base image) is built first, telling `progress`.
    async fn ensure_image(
        &self,
        runtime: &dyn Runtime,
        image: &str,
        _progress: &crate::progress::Progress,
    ) -> Result<bool, RuntimeError> {
        runtime.image_exists(image).await
    }
    /// Builds `context` as its tag on `runtime`, writing every line of
    /// output to `log` and the latest to `progress`.
    async fn build_image(
        &self,
        runtime: &dyn Runtime,
        _build: &crate::image_build::ImageBuild<'_>,
        _progress: &crate::progress::Progress,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unavailable {
            runtime: runtime.kind(),
            reason: "this runtime cannot build images (`dependencies:`, build hooks)".into(),
        })
    }
}

/// Daemon settings, resolved from `config.yaml` before anything starts.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub home: MoatHome,
    /// Exit after this long with no live run and no attached client.
    pub idle_timeout: Duration,
    /// Time between periodic orphan sweeps.
    pub reap_interval: Duration,
    /// An orphan is removed when seen again at least this long after its
    /// first sighting.
    pub second_sighting_after: Duration,
    /// Grace period of a graceful stop before the container is killed.
    pub stop_grace: Duration,
    /// The proxy's settings; `None` runs without a proxy (tests of
    /// lifecycle logic).
    pub egress: Option<EgressConfig>,
    /// The warm network pool (off unless configured).
    pub network_pool: PoolConfig,
    /// PEM bundle trusted while building images from `dependencies:`.
    pub build_ca_file: Option<std::path::PathBuf>,
}

impl DaemonConfig {
    pub fn new(home: MoatHome) -> Self {
        DaemonConfig {
            home,
            idle_timeout: Duration::from_secs(300),
            reap_interval: Duration::from_secs(600),
            second_sighting_after: crate::reaper::decide::SECOND_SIGHTING_AFTER,
            stop_grace: Duration::from_secs(10),
            egress: Some(EgressConfig::default()),
            network_pool: PoolConfig::default(),
            build_ca_file: None,
        }
    }

    /// The settings `config.yaml` gives a production daemon.
    pub fn from_global(home: MoatHome, global: &moat_core::config::GlobalConfig) -> Self {
        let mut config = DaemonConfig::new(home);
        config.idle_timeout = global.idle_timeout;
        config.reap_interval = global.reap_interval;
        config.second_sighting_after = global.reap_second_sighting;
        config.network_pool = PoolConfig {
            size: global.network_pool_size as usize,
            runtime: global
                .runtime
                .map_or(moat_core::RuntimeKind::Docker.as_str(), |kind| kind.as_str())
                .to_string(),
        };
        config.build_ca_file = global.build_ca_file.clone();
        config.egress = Some(EgressConfig {
            preferred_port: global.proxy_port,
            routing_port: global.routing_port,
            extra_root_ca: global.extra_ca_file.clone(),
            resolve_overrides: global.resolve.iter().map(|(host, ip)| (host.clone(), *ip)).collect(),
            limits: moat_proxy::RunLimits {
                max_tunnels: global.proxy_max_tunnels,
                max_streams_per_tunnel: global.proxy_max_streams,
                handshakes_per_second: global.proxy_handshakes_per_second,
            },
        });
        config
    }
}

/// STS is reached the way the proxy reaches upstreams: the same extra
/// root CA and `resolve:` pins.
fn aws_issuer(config: &DaemonConfig, audit: AuditLog) -> crate::aws::AwsIssuer {
    let egress = config.egress.clone().unwrap_or_default();
    crate::aws::AwsIssuer::new(egress.extra_root_ca.as_deref(), egress.resolve_overrides, audit)
}

/// Shared daemon state.
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

struct Inner {
    config: DaemonConfig,
    store: RunStore,
    registry: Arc<Registry>,
    reaper: Reaper,
    runtimes: Arc<dyn Runtimes>,
    shutdown: CancellationToken,
    shutting_down: AtomicBool,
    attached_clients: AtomicUsize,
    cleanups_in_flight: AtomicUsize,
    cleanup_finished: tokio::sync::Notify,
    started_at: DateTime<Utc>,
    /// This daemon's instance (`<pid>-<random hex>`), on its pool networks.
    instance: String,
    network_pool: NetworkPool,
    egress: Option<Arc<Egress>>,
    audit: AuditLog,
    ssh_agents: crate::ssh_agent::SshAgents,
    oauth: crate::oauth_refresh::Refresher,
    aws: Arc<crate::aws::AwsIssuer>,
    cluster_proxies: crate::cluster_proxy::ClusterProxies,
    /// Set when the registry could not be fully restored: the reaper
    /// pauses rather than judge liveness from an incomplete registry.
    registry_error: std::sync::Mutex<Option<String>>,
}

impl Daemon {
    pub fn new(config: DaemonConfig, runtimes: Arc<dyn Runtimes>, egress: Option<Arc<Egress>>) -> Self {
        let store = RunStore::new(config.home.clone());
        let registry = Arc::new(Registry::new(config.home.runs_json()));
        let reaper = Reaper::load(&config.home.reaper_json());
        let hex = moat_core::RunId::generate()
            .as_str()
            .trim_start_matches("run_")
            .to_string();
        let instance = format!("{}-{hex}", std::process::id());
        let network_pool = NetworkPool::new(config.network_pool.clone());
        let audit = AuditLog::start(&config.home);
        let aws = Arc::new(aws_issuer(&config, audit.clone()));
        Daemon {
            inner: Arc::new(Inner {
                config,
                store,
                registry,
                reaper,
                runtimes,
                shutdown: CancellationToken::new(),
                shutting_down: AtomicBool::new(false),
                attached_clients: AtomicUsize::new(0),
                cleanups_in_flight: AtomicUsize::new(0),
                cleanup_finished: tokio::sync::Notify::new(),
                started_at: Utc::now(),
                instance,
                network_pool,
                egress,
                audit,
                ssh_agents: crate::ssh_agent::SshAgents::default(),
                oauth: crate::oauth_refresh::Refresher::default(),
                aws,
                cluster_proxies: crate::cluster_proxy::ClusterProxies::default(),
                registry_error: std::sync::Mutex::new(None),
            }),
        }
    }

    pub fn config(&self) -> &DaemonConfig {
        &self.inner.config
    }

    pub fn home(&self) -> &MoatHome {
        &self.inner.config.home
    }

    pub fn store(&self) -> &RunStore {
        &self.inner.store
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    pub fn reaper(&self) -> &Reaper {
        &self.inner.reaper
    }

    pub fn runtimes(&self) -> &Arc<dyn Runtimes> {
        &self.inner.runtimes
    }

    pub fn started_at(&self) -> DateTime<Utc> {
        self.inner.started_at
    }

    /// This daemon's instance; its pool networks carry it.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    pub fn network_pool(&self) -> &NetworkPool {
        &self.inner.network_pool
    }

    pub fn proxy_port(&self) -> Option<u16> {
        self.inner.egress.as_ref().map(|e| e.port())
    }

    pub fn routing_port(&self) -> Option<u16> {
        self.inner.egress.as_ref().map(|e| e.routing_port())
    }

    /// The proxy, when this daemon runs one (tests may run without).
    pub fn egress(&self) -> Option<&Arc<Egress>> {
        self.inner.egress.as_ref()
    }

    /// The runs' audit logs (one writer for the whole daemon).
    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    /// The ssh agents of live runs with the ssh grant.
    pub fn ssh_agents(&self) -> &crate::ssh_agent::SshAgents {
        &self.inner.ssh_agents
    }

    /// The aws grants of live runs and the credentials issued for them.
    pub fn aws(&self) -> &Arc<crate::aws::AwsIssuer> {
        &self.inner.aws
    }

    /// The in-cluster proxies of Kubernetes runs.
    pub fn cluster_proxies(&self) -> &crate::cluster_proxy::ClusterProxies {
        &self.inner.cluster_proxies
    }

    /// Why the registry is not to be trusted, when it is not.
    pub fn registry_error(&self) -> Option<String> {
        crate::output::lock(&self.inner.registry_error).clone()
    }

    pub fn set_registry_error(&self, reason: String) {
        *crate::output::lock(&self.inner.registry_error) = Some(reason);
    }

    /// The refresher of OAuth (and gh-sourced) grants.
    pub fn oauth(&self) -> &crate::oauth_refresh::Refresher {
        &self.inner.oauth
    }

    /// Cancelled when the daemon begins shutting down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// The one shutdown path: stop accepting new runs and wake every task.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        self.inner.shutdown.cancel();
    }

    /// Set (under the registry lock) once the daemon has decided to exit;
    /// run creation checks it under the same lock.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    pub(crate) fn mark_shutting_down(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Counts an attached client for as long as the guard lives.
    pub fn client_attached(&self) -> AttachGuard {
        self.inner.attached_clients.fetch_add(1, Ordering::SeqCst);
        AttachGuard { daemon: self.clone() }
    }

    pub fn attached_clients(&self) -> usize {
        self.inner.attached_clients.load(Ordering::SeqCst)
    }

    /// Counts a run's cleanup as in flight for as long as the guard lives.
    pub fn cleanup_started(&self) -> CleanupGuard {
        self.inner.cleanups_in_flight.fetch_add(1, Ordering::SeqCst);
        CleanupGuard { daemon: self.clone() }
    }

    /// Waits (at most `grace`) for cleanups in flight, so that a shutdown
    /// never leaves a run half torn down. Returns whether all finished.
    pub async fn drain_cleanups(&self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let finished = self.inner.cleanup_finished.notified();
            if self.inner.cleanups_in_flight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return false;
            }
        }
    }
}

/// Marks the end of a cleanup on drop.
pub struct CleanupGuard {
    daemon: Daemon,
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        self.daemon.inner.cleanups_in_flight.fetch_sub(1, Ordering::SeqCst);
        self.daemon.inner.cleanup_finished.notify_waiters();
    }
}

/// Decrements the attached-client count on drop.
pub struct AttachGuard {
    daemon: Daemon,
}

impl Drop for AttachGuard {
    fn drop(&mut self) {
        self.daemon.inner.attached_clients.fetch_sub(1, Ordering::SeqCst);
    }
}
