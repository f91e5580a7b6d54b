//! Kubernetes runs' egress: the namespace's in-cluster proxy, driven by
//! this daemon (docs/kubernetes.md, "The in-cluster proxy"). It owns the
//! namespace's key material (kept in `MOAT_HOME`, 0600, written
//! atomically), deploys the proxy on the first run that needs it, pushes
//! each run's token, policy and injections over the mutual-TLS control API
//! (reached through the API server's port-forward), replaces injections
//! when grants change, pulls each run's trace into its `network.jsonl`,
//! and forgets the run when it ends.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moat_core::atomic::{create_private_dir, write_atomic};
use moat_core::paths::run_files;
use moat_core::{BindMount, RunId};
use moat_kube::KubeRuntime;
use moat_kube::proxy_manifest::{ProxyPlacement, ProxySecrets, run_proxy_url};
use moat_proxy::remote::{Connecting, ControlClient, ControlStream, ControlTransport, RemoteProxyMaterial, RemoteRun};
use moat_proxy::{InjectionRule, ProxyToken};
use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::egress::{CA_CERT_IN_CONTAINER, proxy_env};
use crate::output::lock;
use crate::registry::RunHandle;

/// The image of the proxy when `kubernetes.proxy_image` names none: what
/// `scripts/proxy-image.sh` tags.
pub fn default_proxy_image() -> String {
    format!("moat-proxy:{}", env!("CARGO_PKG_VERSION"))
}

/// The name the control server's certificate carries and the daemon checks.
const CONTROL_SERVER_NAME: &str = "moat-proxy-control";
/// Each control call (connect through the API server, TLS, one request).
const CONTROL_CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the proxy's pod may take to become ready.
const PROXY_READY_TIMEOUT: Duration = Duration::from_secs(45);
/// How long its control API may lag behind the pod's readiness (which
/// only checks the proxy port).
const CONTROL_READY_TIMEOUT: Duration = Duration::from_secs(20);
const CONTROL_READY_POLL: Duration = Duration::from_millis(250);
/// How often a live run's trace is pulled.
const TRACE_PULL_INTERVAL: Duration = Duration::from_secs(1);
/// How long a run's release waits for its puller to stop.
const PULLER_STOP_TIMEOUT: Duration = Duration::from_secs(5);
const MATERIAL_FILE: &str = "proxy-material.json";
const CA_CERT_FILE: &str = "ca.crt";

#[derive(Debug, thiserror::Error)]
pub enum ClusterProxyError {
    #[error("the key material of the proxy in namespace {namespace} ({path}): {detail}")]
    Material {
        namespace: String,
        path: PathBuf,
        detail: String,
    },
    #[error("the proxy in namespace {namespace}: {source}")]
    Control {
        namespace: String,
        source: moat_proxy::remote::ControlError,
    },
    #[error("{0}")]
    Runtime(#[from] moat_runtime::RuntimeError),
}

/// One namespace's proxy as this daemon drives it.
struct Site {
    namespace: String,
    client: ControlClient,
    /// The interception CA's certificate, mounted into each run.
    ca_cert: PathBuf,
}

/// A live run on a cluster proxy, and its trace puller.
struct ClusterRun {
    site: Arc<Site>,
    stop: CancellationToken,
    /// Returns the trace cursor it reached.
    puller: JoinHandle<u64>,
}

/// What a run's container needs to use its namespace's proxy.
pub struct ClusterAttachment {
    pub env: Vec<(String, String)>,
    pub ca_mount: BindMount,
}

/// The cluster proxies this daemon drives, and the runs on them.
#[derive(Default)]
pub struct ClusterProxies {
    sites: tokio::sync::Mutex<HashMap<(String, String), Arc<Site>>>,
    runs: Mutex<HashMap<RunId, ClusterRun>>,
}

impl ClusterProxies {
    /// Deploys (or reuses) the proxy of `kube`'s namespace and registers
    /// the run with it under its token (complete before its pod starts);
    /// its trace is pulled from now on.
    pub async fn attach(
        &self,
        home: &moat_core::MoatHome,
        kube: Arc<KubeRuntime>,
        image: &str,
        handle: &RunHandle,
        token: &ProxyToken,
        injections: Vec<InjectionRule>,
    ) -> Result<ClusterAttachment, ClusterProxyError> {
        let site = self.site(home, kube, image).await?;
        let run = RemoteRun {
            token: token.as_str().to_string(),
            policy: handle.policy(),
            injections,
            redact_values: crate::egress::secret_values(&handle.spec),
            mcp_servers: crate::mcp::routes(&handle.spec.mcp),
        };
        let id = handle.id();
        site.client
            .put_run(id.as_str(), &run)
            .await
            .map_err(|source| site.error(source))?;
        let trace = home.runs_dir().join(id.as_str()).join(run_files::NETWORK);
        self.follow(&id, site.clone(), trace);
        Ok(ClusterAttachment {
            env: proxy_env(&run_proxy_url(&site.namespace, token.as_str())),
            ca_mount: BindMount {
                source: site.ca_cert.display().to_string(),
                target: CA_CERT_IN_CONTAINER.to_string(),
                read_only: true,
            },
        })
    }

    /// Whether `run_id` is on a cluster proxy.
    pub fn serves(&self, run_id: &RunId) -> bool {
        lock(&self.runs).contains_key(run_id)
    }

    /// Replaces a live run's injections (revoked or refreshed grants); the
    /// push happens in the background, a failure is logged.
    pub fn update_injections(&self, run_id: &RunId, rules: Vec<InjectionRule>) {
        let Some(site) = lock(&self.runs).get(run_id).map(|run| run.site.clone()) else {
            return;
        };
        let id = run_id.clone();
        tokio::spawn(async move {
            if let Err(e) = site.client.set_injections(id.as_str(), &rules).await {
                tracing::warn!(run = %id, "updating injections on the proxy in namespace {}: {e}", site.namespace);
            }
        });
    }

    /// Forgets the run: its token stops working, the rest of its trace is
    /// pulled, and the proxy drops its copy.
    pub async fn release(&self, home: &moat_core::MoatHome, run_id: &RunId) {
        let Some(run) = lock(&self.runs).remove(run_id) else {
            return;
        };
        let trace = home.runs_dir().join(run_id.as_str()).join(run_files::NETWORK);
        run.stop.cancel();
        let cursor = match tokio::time::timeout(PULLER_STOP_TIMEOUT, run.puller).await {
            Ok(Ok(cursor)) => cursor,
            _ => file_length(&trace),
        };
        let site = run.site;
        if let Err(e) = site.client.remove_run(run_id.as_str()).await {
            tracing::warn!(run = %run_id, "unregistering from the proxy in namespace {}: {e}", site.namespace);
        }
        pull_all(&site, run_id, &trace, cursor).await;
        if let Err(e) = site.client.forget_trace(run_id.as_str()).await {
            tracing::warn!(run = %run_id, "dropping the trace on the proxy in namespace {}: {e}", site.namespace);
        }
    }

    /// The namespace's proxy: connected once per daemon, deployed when missing.
    async fn site(
        &self,
        home: &moat_core::MoatHome,
        kube: Arc<KubeRuntime>,
        image: &str,
    ) -> Result<Arc<Site>, ClusterProxyError> {
        let key = (kube.context().to_string(), kube.namespace().to_string());
        let mut sites = self.sites.lock().await;
        if let Some(site) = sites.get(&key) {
            return Ok(site.clone());
        }
        let namespace = kube.namespace().to_string();
        let dir = site_dir(home, kube.context(), &namespace);
        let material = load_or_create_material(&dir, &namespace)?;
        let placement = ProxyPlacement {
            namespace: namespace.clone(),
            home: home.label(),
            image: image.to_string(),
            material: material_digest(&material),
        };
        kube.ensure_proxy(&placement, &secrets(&material), PROXY_READY_TIMEOUT)
            .await?;
        let control_error = |source| ClusterProxyError::Control {
            namespace: namespace.clone(),
            source,
        };
        let client = ControlClient::new(
            Arc::new(PortForward(kube.clone())),
            &material.control_ca_pem,
            &material.control_client,
            CONTROL_SERVER_NAME,
            CONTROL_CALL_TIMEOUT,
        )
        .map_err(control_error)?;
        wait_for_control(&client).await.map_err(control_error)?;
        let ca_cert = dir.join(CA_CERT_FILE);
        write_atomic(&ca_cert, material.interception_ca.cert_pem.as_bytes(), 0o644).map_err(|e| {
            ClusterProxyError::Material {
                namespace: namespace.clone(),
                path: ca_cert.clone(),
                detail: e.to_string(),
            }
        })?;
        let site = Arc::new(Site {
            namespace,
            client,
            ca_cert,
        });
        sites.insert(key, site.clone());
        Ok(site)
    }

    /// Pulls the run's trace every [`TRACE_PULL_INTERVAL`] into `trace`,
    /// from where the file ends (a re-adopted run's earlier records are
    /// already there: the file holds exactly the bytes pulled).
    fn follow(&self, run_id: &RunId, site: Arc<Site>, trace: PathBuf) {
        let stop = CancellationToken::new();
        let id = run_id.clone();
        let stopped = stop.clone();
        let pulling_site = site.clone();
        let puller = tokio::spawn(async move {
            let mut cursor = file_length(&trace);
            loop {
                tokio::select! {
                    _ = stopped.cancelled() => return cursor,
                    _ = tokio::time::sleep(TRACE_PULL_INTERVAL) => {}
                }
                cursor = pull_all(&pulling_site, &id, &trace, cursor).await;
            }
        });
        if let Some(previous) = lock(&self.runs).insert(run_id.clone(), ClusterRun { site, stop, puller }) {
            previous.stop.cancel();
        }
    }
}

impl Site {
    fn error(&self, source: moat_proxy::remote::ControlError) -> ClusterProxyError {
        ClusterProxyError::Control {
            namespace: self.namespace.clone(),
            source,
        }
    }
}

/// Dials the proxy pod's control port through the API server.
struct PortForward(Arc<KubeRuntime>);

impl ControlTransport for PortForward {
    fn connect(&self) -> Connecting<'_> {
        Box::pin(async move {
            let stream = self.0.open_proxy_control().await.map_err(std::io::Error::other)?;
            Ok(Box::new(stream) as Box<dyn ControlStream>)
        })
    }
}

/// Waits (bounded) until the control API answers an authenticated request.
async fn wait_for_control(client: &ControlClient) -> Result<(), moat_proxy::remote::ControlError> {
    let deadline = tokio::time::Instant::now() + CONTROL_READY_TIMEOUT;
    loop {
        match client.health().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(e) => tracing::debug!("the proxy's control API is not answering yet: {e}"),
        }
        tokio::time::sleep(CONTROL_READY_POLL).await;
    }
}

/// Appends every trace record the proxy holds from `cursor` on; returns
/// the cursor reached. A failed pull is retried on the next round.
async fn pull_all(site: &Site, run_id: &RunId, trace: &Path, mut cursor: u64) -> u64 {
    loop {
        match site.client.pull_trace(run_id.as_str(), cursor).await {
            Ok(chunk) if chunk.records.is_empty() => return cursor,
            Ok(chunk) => match append(trace, &chunk.records) {
                Ok(()) => cursor = chunk.next_cursor,
                Err(e) => {
                    tracing::warn!(run = %run_id, "writing {}: {e}", trace.display());
                    return cursor;
                }
            },
            Err(e) => {
                tracing::debug!(run = %run_id, "pulling the trace from namespace {}: {e}", site.namespace);
                return cursor;
            }
        }
    }
}

fn append(path: &Path, records: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(records)
}

fn file_length(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// `MOAT_HOME/kubernetes/<namespace>-<digest of context and namespace>`:
/// readable, and distinct for namespaces of the same name in two clusters.
fn site_dir(home: &moat_core::MoatHome, context: &str, namespace: &str) -> PathBuf {
    let digest = Sha256::digest(format!("{context}\0{namespace}").as_bytes());
    home.root()
        .join("kubernetes")
        .join(format!("{namespace}-{}", &hex::encode(digest)[..12]))
}

/// The namespace's material: read back, or made and written (0600,
/// atomically) before anything in the cluster holds it.
fn load_or_create_material(dir: &Path, namespace: &str) -> Result<RemoteProxyMaterial, ClusterProxyError> {
    let path = dir.join(MATERIAL_FILE);
    let failed = |detail: String| ClusterProxyError::Material {
        namespace: namespace.to_string(),
        path: path.clone(),
        detail,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            return serde_json::from_slice(&bytes).map_err(|e| {
                failed(format!(
                    "unreadable ({e}); remove it and the namespace's proxy (`kubectl delete configmap moat-proxy-meta`)"
                ))
            });
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e.to_string())),
        Err(_) => {}
    }
    let material =
        RemoteProxyMaterial::generate(&[CONTROL_SERVER_NAME.to_string()]).map_err(|e| failed(e.to_string()))?;
    let json = serde_json::to_vec_pretty(&material).map_err(|e| failed(e.to_string()))?;
    create_private_dir(dir.parent().unwrap_or(dir)).map_err(|e| failed(e.to_string()))?;
    create_private_dir(dir).map_err(|e| failed(e.to_string()))?;
    write_atomic(&path, &json, 0o600).map_err(|e| failed(e.to_string()))?;
    Ok(material)
}

/// What the proxy's Secrets hold (never the daemon's client key).
fn secrets(material: &RemoteProxyMaterial) -> ProxySecrets {
    ProxySecrets {
        interception_ca_cert: material.interception_ca.cert_pem.clone(),
        interception_ca_key: material.interception_ca.key_pem.clone(),
        control_ca_cert: material.control_ca_pem.clone(),
        control_server_cert: material.control_server.cert_pem.clone(),
        control_server_key: material.control_server.key_pem.clone(),
    }
}

/// Names the material a proxy holds: the digest of its control CA.
fn material_digest(material: &RemoteProxyMaterial) -> String {
    hex::encode(Sha256::digest(material.control_ca_pem.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn material_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("kubernetes/agents-0123");
        let made = load_or_create_material(&site, "agents").unwrap();
        let mode = std::fs::metadata(site.join(MATERIAL_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create_material(&site, "agents").unwrap();
        assert_eq!(made, again);
        assert_eq!(material_digest(&made), material_digest(&again));
    }

    #[test]
    fn unreadable_material_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MATERIAL_FILE), b"{ not json").unwrap();
        let error = load_or_create_material(dir.path(), "agents").err().unwrap().to_string();
        assert!(error.contains("namespace agents"), "{error}");
        assert!(error.contains("moat-proxy-meta"), "{error}");
    }

    #[test]
    fn the_daemons_client_key_is_not_in_the_clusters_secrets() {
        let material = RemoteProxyMaterial::generate(&[CONTROL_SERVER_NAME.to_string()]).unwrap();
        let secrets = secrets(&material);
        let held = [
            &secrets.interception_ca_cert,
            &secrets.interception_ca_key,
            &secrets.control_ca_cert,
            &secrets.control_server_cert,
            &secrets.control_server_key,
        ];
        assert!(held.iter().all(|value| **value != material.control_client.key_pem));
    }

    #[test]
    fn sites_of_the_same_namespace_in_two_clusters_differ() {
        let home = moat_core::MoatHome::new("/tmp/home");
        let a = site_dir(&home, "cluster-a", "agents");
        let b = site_dir(&home, "cluster-b", "agents");
        assert_ne!(a, b);
        assert!(a.file_name().unwrap().to_string_lossy().starts_with("agents-"));
    }
}
