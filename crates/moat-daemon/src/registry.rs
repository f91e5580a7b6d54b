//! The registry of live runs (daemon-and-reaper.md §3): run id → entry, kept
//! in memory and persisted to `daemon/runs.json` (atomic, 0600, debounced).
//! Every state change is written to the run's `metadata.json` before the
//! side effect it announces. Each run's `registration.json` holds its own
//! part of the registry, so a lost or corrupt `runs.json` loses no run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moat_core::atomic::write_atomic;
use moat_core::config::{HostRule, NetworkPolicy};
use moat_core::paths::run_files;
use moat_core::store::{RunStore, StoreError};
use moat_core::{RunId, RunMetadata};
use moat_proxy::ProxyToken;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::api::{RunSpec, RunView, SecretEnv};
use crate::output::{OutputHub, lock};
use crate::terminal::TerminalHub;

/// `runs.json` format version.
const RUNS_JSON_VERSION: u32 = 1;
/// How long, and how many, runs that left the registry keep their output
/// for late attachers (each holds at most the 1 MiB replay buffer).
const FINISHED_KEPT_FOR: Duration = Duration::from_secs(120);
const FINISHED_KEPT: usize = 16;
/// Coalesces bursts of state changes into one write.
const PERSIST_DEBOUNCE: Duration = Duration::from_millis(50);

/// One run under the daemon's supervision.
pub struct RunHandle {
    pub spec: RunSpec,
    meta: Mutex<RunMetadata>,
    pub output: OutputHub,
    /// The terminal of an interactive run (`spec.interactive`).
    pub terminal: TerminalHub,
    /// The run's proxy token; persisted (containers have it baked into
    /// their proxy settings), never logged.
    proxy_token: Mutex<Option<ProxyToken>>,
    cleanup_claimed: AtomicBool,
    /// Signalled when the run leaves the registry.
    pub done: Notify,
}

impl RunHandle {
    pub fn new(spec: RunSpec, meta: RunMetadata) -> Arc<Self> {
        Arc::new(RunHandle {
            terminal: TerminalHub::new(spec.terminal),
            spec,
            meta: Mutex::new(meta),
            output: OutputHub::default(),
            proxy_token: Mutex::new(None),
            cleanup_claimed: AtomicBool::new(false),
            done: Notify::new(),
        })
    }

    pub fn id(&self) -> RunId {
        lock(&self.meta).id.clone()
    }

    pub fn metadata(&self) -> RunMetadata {
        lock(&self.meta).clone()
    }

    /// Applies `change` and writes `metadata.json` atomically before
    /// returning, so the new state is on disk before its side effect.
    pub fn update(&self, store: &RunStore, change: impl FnOnce(&mut RunMetadata)) -> Result<RunMetadata, StoreError> {
        let mut meta = lock(&self.meta);
        let mut next = meta.clone();
        change(&mut next);
        store.save(&next)?;
        *meta = next.clone();
        Ok(next)
    }

    /// The run's grants: those it was created with and those added while
    /// it ran (`moat join`, recorded in its metadata), each once.
    pub fn grants(&self) -> Vec<String> {
        let meta = lock(&self.meta);
        let mut grants = self.spec.grants.clone();
        for grant in &meta.grants {
            if !grants.contains(grant) {
                grants.push(grant.clone());
            }
        }
        grants
    }

    /// The run's network policy: its spec's, with the hosts added while it
    /// ran (`moat join`).
    pub fn policy(&self) -> NetworkPolicy {
        let meta = lock(&self.meta);
        let mut policy = self.spec.policy.clone();
        for host in &meta.added_hosts {
            if !policy.rules.iter().any(|rule| &rule.host == host) {
                policy.rules.push(HostRule {
                    host: host.clone(),
                    requests: Vec::new(),
                });
            }
        }
        policy
    }

    pub fn proxy_token(&self) -> Option<ProxyToken> {
        lock(&self.proxy_token).clone()
    }

    pub fn set_proxy_token(&self, token: ProxyToken) {
        *lock(&self.proxy_token) = Some(token);
    }

    /// True for exactly one caller: whoever tears the run down.
    pub fn claim_cleanup(&self) -> bool {
        !self.cleanup_claimed.swap(true, Ordering::SeqCst)
    }

    /// What clients see of the run; its endpoints' URLs when the routing
    /// endpoint listens on `routing_port`.
    pub fn view(&self, routing_port: Option<u16>) -> RunView {
        let meta = lock(&self.meta);
        let endpoints = routing_port
            .map(|port| self.spec.endpoint_urls(&meta.id, port))
            .unwrap_or_default();
        RunView {
            endpoints,
            run_id: meta.id.clone(),
            name: meta.name.clone(),
            state: meta.state,
            runtime: meta.runtime.clone(),
            container_id: meta.container_id.clone(),
            exit_code: meta.exit_code,
            created_at: meta.created_at,
        }
    }
}

/// What `runs.json` holds for one run: enough to re-adopt it, no secrets.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PersistedRun {
    pub spec: RunSpec,
    pub meta: RunMetadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_token: Option<String>,
}

/// The spec minus the values of `secrets:` (their names stay): secret
/// values never reach `runs.json`.
pub(crate) fn without_secret_values(spec: &RunSpec) -> RunSpec {
    let mut spec = spec.clone();
    spec.secrets = SecretEnv::default();
    spec
}

/// A run's own `registration.json`: its spec (without secret values) and
/// proxy token, written before its first runtime object exists.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Registration {
    pub spec: RunSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_token: Option<String>,
}

impl Registration {
    /// Writes the handle's registration into its run directory (atomic, 0600).
    pub fn write(store: &RunStore, handle: &RunHandle) -> Result<(), RegistryError> {
        let registration = Registration {
            spec: without_secret_values(&handle.spec),
            proxy_token: handle.proxy_token().map(|t| t.as_str().to_string()),
        };
        let path = store.run_dir(&handle.id()).join(run_files::REGISTRATION);
        let json = serde_json::to_vec_pretty(&registration).map_err(|e| RegistryError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &json, 0o600).map_err(|source| RegistryError::Io { path, source })
    }

    /// Reads a run's registration; `None` when the run never got one (it
    /// was cut short before registering, or predates the file).
    pub fn read(store: &RunStore, id: &RunId) -> Result<Option<Registration>, RegistryError> {
        let path = store.run_dir(id).join(run_files::REGISTRATION);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RegistryError::Io { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RegistryError::Corrupt {
                path,
                reason: e.to_string(),
            })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct RunsFile {
    version: u32,
    runs: Vec<PersistedRun>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{path}: unreadable run registry: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Live runs by id. Cheap to share behind an `Arc`.
pub struct Registry {
    runs: Mutex<HashMap<RunId, Arc<RunHandle>>>,
    path: PathBuf,
    dirty: Notify,
    /// Serialises snapshot + write, so an older snapshot never overwrites
    /// a newer one.
    writer: Mutex<()>,
    /// Runs that just left, newest last (see `recently_finished`).
    finished: Mutex<std::collections::VecDeque<(std::time::Instant, Arc<RunHandle>)>>,
}

impl Registry {
    pub fn new(path: PathBuf) -> Self {
        Registry {
            runs: Mutex::new(HashMap::new()),
            path,
            dirty: Notify::new(),
            writer: Mutex::new(()),
            finished: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Locks the run table; used by idle shutdown to re-check under the lock.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Arc<RunHandle>>> {
        lock(&self.runs)
    }

    pub fn get(&self, id: &RunId) -> Option<Arc<RunHandle>> {
        self.lock().get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<RunHandle>> {
        self.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Adds a run and persists the registry synchronously: a run is on disk
    /// before any of its runtime objects exist.
    pub fn insert(&self, handle: Arc<RunHandle>) -> Result<(), RegistryError> {
        self.lock().insert(handle.id(), handle);
        self.persist_now()
    }

    pub fn remove(&self, id: &RunId) {
        if let Some(handle) = self.lock().remove(id) {
            handle.done.notify_waiters();
            self.remember_finished(handle);
        }
        self.persist_soon();
    }

    /// Keeps a run that just left the registry for a while, so a client
    /// that attaches late (a fast run's own `moat run`) still gets its
    /// output replayed exactly.
    fn remember_finished(&self, handle: Arc<RunHandle>) {
        let mut finished = lock(&self.finished);
        let now = std::time::Instant::now();
        finished.retain(|(at, _)| now.duration_since(*at) < FINISHED_KEPT_FOR);
        if finished.len() >= FINISHED_KEPT {
            finished.pop_front();
        }
        finished.push_back((now, handle));
    }

    /// A run that left the registry moments ago (see `remove`).
    pub fn recently_finished(&self, id: &RunId) -> Option<Arc<RunHandle>> {
        let finished = lock(&self.finished);
        let now = std::time::Instant::now();
        (finished.iter())
            .filter(|(at, _)| now.duration_since(*at) < FINISHED_KEPT_FOR)
            .find(|(_, handle)| handle.id() == *id)
            .map(|(_, handle)| handle.clone())
    }

    /// Schedules a debounced write of `runs.json`.
    pub fn persist_soon(&self) {
        self.dirty.notify_one();
    }

    /// Writes `runs.json` now (atomic, 0600). Writers take turns, and each
    /// snapshots the table only once it holds its turn, so the file always
    /// ends with the newest run set.
    pub fn persist_now(&self) -> Result<(), RegistryError> {
        let _turn = lock(&self.writer);
        let runs = self
            .all()
            .iter()
            .map(|h| PersistedRun {
                spec: without_secret_values(&h.spec),
                meta: h.metadata(),
                proxy_token: h.proxy_token().map(|t| t.as_str().to_string()),
            })
            .collect();
        let file = RunsFile {
            version: RUNS_JSON_VERSION,
            runs,
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| RegistryError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.path, &json, 0o600).map_err(|source| RegistryError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Runs until cancelled, writing `runs.json` after bursts of changes.
    pub async fn persist_loop(self: Arc<Self>) {
        loop {
            self.dirty.notified().await;
            tokio::time::sleep(PERSIST_DEBOUNCE).await;
            if let Err(e) = self.persist_now() {
                tracing::error!("persisting the run registry failed: {e}");
            }
        }
    }

    /// Reads a previous daemon's `runs.json` (missing = empty).
    pub fn load_persisted(&self) -> Result<Vec<PersistedRun>, RegistryError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RegistryError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let file: RunsFile = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        if file.version != RUNS_JSON_VERSION {
            return Err(RegistryError::Corrupt {
                path: self.path.clone(),
                reason: format!("format version {} is not {RUNS_JSON_VERSION}", file.version),
            });
        }
        Ok(file.runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_core::MoatHome;

    /// What `moat join` added lives in the metadata (the spec is what the
    /// run was created with): a re-adopted handle, made from the spec and
    /// the metadata on disk, has both.
    #[test]
    fn grants_and_hosts_added_while_running_join_the_specs() {
        let spec = RunSpec {
            grants: vec!["github".into()],
            policy: NetworkPolicy {
                mode: moat_core::config::PolicyMode::Strict,
                rules: vec![HostRule {
                    host: "example.com".into(),
                    requests: Vec::new(),
                }],
            },
            ..Default::default()
        };
        let mut meta = RunMetadata::new(RunId::generate(), "/w".into(), "img".into(), "fake".into());
        meta.grants = vec!["github".into(), "claude".into()];
        meta.added_hosts = vec!["api.anthropic.com".into(), "example.com".into()];
        let handle = RunHandle::new(spec, meta);
        assert_eq!(handle.grants(), ["github", "claude"]);
        let policy = handle.policy();
        assert_eq!(policy.mode, moat_core::config::PolicyMode::Strict);
        let hosts: Vec<&str> = policy.rules.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(hosts, ["example.com", "api.anthropic.com"]);
    }

    #[test]
    fn persisted_runs_round_trip_and_corruption_is_reported() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().join("moat-registry");
        let home = MoatHome::new(&root);
        let store = RunStore::new(home.clone());
        std::fs::create_dir_all(home.daemon_dir()).unwrap();
        let registry = Registry::new(home.runs_json());
        let meta = RunMetadata::new(RunId::generate(), "/w".into(), "img".into(), "fake".into());
        store.create(&meta).unwrap();
        let spec = RunSpec {
            image: "img".into(),
            runtime: "fake".into(),
            ..Default::default()
        };
        registry.insert(RunHandle::new(spec, meta.clone())).unwrap();
        let loaded = registry.load_persisted().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].meta, meta);

        let back = Registration::read(&store, &meta.id).unwrap();
        assert!(back.is_none(), "insert alone writes no registration");

        std::fs::write(home.runs_json(), b"{not json").unwrap();
        let err = registry.load_persisted().unwrap_err().to_string();
        assert!(err.contains("runs.json: unreadable run registry"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }

    /// The attack: many writers persist at once, each after adding its own
    /// run; an unserialised writer holding an older snapshot could finish
    /// last and drop runs from the file.
    #[test]
    fn concurrent_persists_leave_the_newest_run_set() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().join("moat-registry");
        let home = MoatHome::new(&root);
        std::fs::create_dir_all(home.daemon_dir()).unwrap();
        let registry = Arc::new(Registry::new(home.runs_json()));
        for round in 0..20 {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let registry = registry.clone();
                    std::thread::spawn(move || {
                        let meta = RunMetadata::new(RunId::generate(), "/w".into(), "img".into(), "fake".into());
                        registry.insert(RunHandle::new(RunSpec::default(), meta)).unwrap();
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            let on_disk = registry.load_persisted().unwrap().len();
            assert_eq!(on_disk, registry.len(), "round {round}: runs.json lost runs");
        }
        std::fs::remove_dir_all(root).unwrap();
    }
}
