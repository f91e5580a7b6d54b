//! The run-facing side of the proxy (proxy.md, "Where it listens"): one
//! proxy for all runs on a stable port, listening on loopback and on the
//! gateway address of each run's network (never on the LAN), the per-run
//! registration, and what a container needs to use it (proxy variables, the
//! `moat-proxy` host name, CA trust).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use moat_core::BindMount;
use moat_core::{MoatHome, RunId};
use moat_proxy::{
    CertificateAuthority, CredentialEndpoint, InjectionRule, NetworkPolicy, ProxyConfig, ProxyEventSink, ProxyHandle,
    ProxyToken, Router, RunLimits, RunRegistration, RunRoutes,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::RunSpec;
use crate::output::lock;
use crate::registry::RunHandle;

/// Host name containers use for the proxy.
pub const PROXY_HOST: &str = moat_proxy::PROXY_HOST_NAME;
/// Where the CA certificate directory is mounted in containers.
pub const CA_MOUNT_DIR: &str = "/etc/moat/ca";
/// The CA certificate inside containers.
pub const CA_CERT_IN_CONTAINER: &str = "/etc/moat/ca/ca.crt";
pub use moat_api::PROXY_VARIABLES;
/// The proxy variables a run gets, each naming the proxy with its token.
const PROXY_URL_VARIABLES: &[&str] = &["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"];
/// Trust variables pointing tools at the moat CA.
const TRUST_VARIABLES: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "CURL_CA_BUNDLE",
];

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("proxy CA in {dir}: {source}")]
    Ca { dir: PathBuf, source: moat_proxy::CaError },
    #[error("starting the proxy: {0}")]
    Proxy(#[from] moat_proxy::ProxyError),
    #[error("binding the proxy on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("network {network} has no gateway address for the proxy to listen on")]
    NoGateway { network: String },
}

/// Settings for the proxy, from `config.yaml`.
#[derive(Clone, Debug, Default)]
pub struct EgressConfig {
    /// Port to keep (previous daemon's, or configured); 0 = any.
    pub preferred_port: u16,
    /// The routing endpoint's port to keep (previous daemon's, or
    /// configured); 0 = any.
    pub routing_port: u16,
    pub extra_root_ca: Option<PathBuf>,
    pub resolve_overrides: HashMap<String, IpAddr>,
    /// What one run may hold of the proxy (tunnels, streams, handshakes).
    pub limits: RunLimits,
}

/// Where the proxy reports on a run and what it serves it besides egress.
pub struct RunOutputs {
    /// The run's `network.jsonl`.
    pub trace_path: PathBuf,
    /// The run's audit log.
    pub events: ProxyEventSink,
    /// Short-lived credentials the daemon issues (the aws grant).
    pub credential_endpoints: Vec<CredentialEndpoint>,
}

/// The running proxy and its per-run listeners.
pub struct Egress {
    proxy: ProxyHandle,
    port: u16,
    router: Arc<Router>,
    routing_port: u16,
    ca_public_dir: PathBuf,
    gateway_listeners: Mutex<HashMap<RunId, JoinHandle<()>>>,
}

impl Egress {
    /// Creates (or loads) the CA, starts the proxy on loopback, and keeps the
    /// preferred port when it is free.
    pub async fn start(home: &MoatHome, config: EgressConfig) -> Result<Arc<Self>, EgressError> {
        let ca = CertificateAuthority::load_or_create(&home.ca_dir()).map_err(|source| EgressError::Ca {
            dir: home.ca_dir(),
            source,
        })?;
        let mut resolve_overrides = config.resolve_overrides;
        // `moat-host` is the host's own services (`network.host` ports),
        // which the proxy on the host reaches on loopback.
        resolve_overrides
            .entry(moat_proxy::HOST_SERVICE_NAME.to_string())
            .or_insert(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let proxy_config = ProxyConfig {
            extra_root_ca: config.extra_root_ca,
            resolve_overrides,
            limits: config.limits,
            ..ProxyConfig::default()
        };
        let ca = Arc::new(ca);
        let proxy = ProxyHandle::new(proxy_config, ca.clone())?;
        let (listener, port) = bind_loopback(config.preferred_port).await?;
        let serving = proxy.clone();
        tokio::spawn(async move {
            if let Err(e) = serving.serve(listener).await {
                tracing::error!("the proxy's loopback listener stopped: {e}");
            }
        });
        let (router, routing_port) = start_router(ca, config.routing_port).await?;
        Ok(Arc::new(Egress {
            proxy,
            port,
            router,
            routing_port,
            ca_public_dir: home.ca_public_dir(),
            gateway_listeners: Mutex::new(HashMap::new()),
        }))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn routing_port(&self) -> u16 {
        self.routing_port
    }

    /// Routes the run's endpoints (`spec.ports`) to its container at `address`.
    pub fn route(&self, run_id: &RunId, spec: &RunSpec, address: IpAddr) {
        if spec.ports.is_empty() {
            return;
        }
        self.router.set_run(RunRoutes {
            run_id: run_id.to_string(),
            host: spec.route_host(run_id),
            endpoints: spec
                .ports
                .iter()
                .map(|(name, port)| (name.clone(), SocketAddr::new(address, *port)))
                .collect(),
        });
    }

    pub fn proxy(&self) -> &ProxyHandle {
        &self.proxy
    }

    /// Makes the run known to the proxy under `token`, with its policy as
    /// it stands (hosts added by `moat join` included). Complete before the
    /// container starts, so a fast container never meets a half-registered run.
    pub fn register(
        &self,
        handle: &RunHandle,
        token: &ProxyToken,
        injections: Vec<InjectionRule>,
        outputs: RunOutputs,
    ) -> Result<(), EgressError> {
        let spec = &handle.spec;
        self.proxy.register_run(RunRegistration {
            run_id: handle.id().to_string(),
            token: token.clone(),
            policy: handle.policy(),
            injections,
            trace_path: outputs.trace_path,
            host_ports: spec.host_ports.clone(),
            redact_values: secret_values(spec),
            events: Some(outputs.events),
            mcp_servers: crate::mcp::routes(&spec.mcp),
            credential_endpoints: outputs.credential_endpoints,
        })?;
        Ok(())
    }

    /// Listens on the run network's gateway (where its containers reach the
    /// host) on the proxy's port.
    pub async fn listen_on_gateway(
        &self,
        run_id: &RunId,
        network: &str,
        gateway: Option<&str>,
    ) -> Result<IpAddr, EgressError> {
        let ip: IpAddr = gateway
            .and_then(|g| g.split('/').next())
            .and_then(|g| g.parse().ok())
            .ok_or_else(|| EgressError::NoGateway {
                network: network.to_string(),
            })?;
        let addr = SocketAddr::new(ip, self.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EgressError::Bind { addr, source })?;
        // The gateway is one of the host's addresses now: refuse it as a
        // destination from this moment, not from the proxy's next re-listing.
        self.proxy.refresh_host_addresses();
        let serving = self.proxy.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = serving.serve(listener).await {
                tracing::warn!("the proxy listener on {addr} stopped: {e}");
            }
        });
        if let Some(previous) = lock(&self.gateway_listeners).insert(run_id.clone(), task) {
            previous.abort();
        }
        Ok(ip)
    }

    /// Forgets the run: its token stops working and its listener closes.
    pub fn release(&self, run_id: &RunId) {
        self.router.remove_run(run_id.as_str());
        if let Some(task) = lock(&self.gateway_listeners).remove(run_id) {
            task.abort();
        }
        match self.proxy.unregister_run(run_id.as_str()) {
            Ok(summary) if summary.dropped_records > 0 => {
                tracing::warn!(run = %run_id, "{} trace record(s) were dropped (slow disk)", summary.dropped_records)
            }
            _ => {}
        }
    }

    /// Replaces a live run's injection rules (revoked or refreshed grants).
    pub fn update_injections(&self, run_id: &RunId, rules: Vec<InjectionRule>) {
        if let Err(e) = self.proxy.update_injections(run_id.as_str(), rules) {
            tracing::warn!(run = %run_id, "updating injections failed: {e}");
        }
    }

    /// Replaces a live run's network rules (hosts added by `moat join`).
    pub fn update_policy(&self, run_id: &RunId, policy: &NetworkPolicy) -> Result<(), moat_proxy::ProxyError> {
        self.proxy.update_policy(run_id.as_str(), policy)
    }

    /// Environment a container needs to use the proxy and trust its CA.
    pub fn container_env(&self, token: &ProxyToken) -> Vec<(String, String)> {
        proxy_env(&format!("http://moat:{}@{PROXY_HOST}:{}", token.as_str(), self.port))
    }

    /// Read-only mount of the CA's public directory.
    pub fn ca_mount(&self) -> BindMount {
        BindMount {
            source: self.ca_public_dir.display().to_string(),
            target: CA_MOUNT_DIR.to_string(),
            read_only: true,
        }
    }
}

/// Environment a container needs to use the proxy at `url` (which holds
/// its token) and trust moat's CA at [`CA_CERT_IN_CONTAINER`].
pub fn proxy_env(url: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = PROXY_URL_VARIABLES
        .iter()
        .map(|k| (k.to_string(), url.to_string()))
        .collect();
    env.extend(
        ["NO_PROXY", "no_proxy"]
            .iter()
            .map(|k| (k.to_string(), "localhost,127.0.0.1".to_string())),
    );
    env.extend(
        TRUST_VARIABLES
            .iter()
            .map(|k| (k.to_string(), CA_CERT_IN_CONTAINER.to_string())),
    );
    env
}

/// The values of the run's `secrets:`, for the proxy to redact from the run's trace. In memory only: a re-adopted run's
/// spec no longer has them, so its trace is redacted of injected
/// credentials and placeholders only.
pub(crate) fn secret_values(spec: &RunSpec) -> Vec<String> {
    spec.secrets
        .0
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(_, value)| value.clone())
        .collect()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// A loopback listener on `preferred` when free (else any port), and its port.
async fn bind_loopback(preferred: u16) -> Result<(TcpListener, u16), EgressError> {
    let listener = bind_preferred(preferred).await?;
    let port = listener
        .local_addr()
        .map_err(|source| EgressError::Bind {
            addr: loopback(0),
            source,
        })?
        .port();
    Ok((listener, port))
}

async fn bind_preferred(preferred: u16) -> Result<TcpListener, EgressError> {
    if preferred != 0 {
        match TcpListener::bind(loopback(preferred)).await {
            Ok(listener) => return Ok(listener),
            Err(e) => {
                tracing::warn!("port {preferred} is taken ({e}); using another (running containers keep the old one)")
            }
        }
    }
    TcpListener::bind(loopback(0))
        .await
        .map_err(|source| EgressError::Bind {
            addr: loopback(0),
            source,
        })
}

/// Starts the routing endpoint on loopback, keeping `preferred` when free.
async fn start_router(ca: Arc<CertificateAuthority>, preferred: u16) -> Result<(Arc<Router>, u16), EgressError> {
    let (listener, port) = bind_loopback(preferred).await?;
    let router = Router::new(ca);
    tokio::spawn(router.clone().serve(listener));
    Ok((router, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SecretEnv;

    /// Leak: a run's `secrets:` value put in a URL by the agent is written
    /// to its trace unless the proxy is told the value to redact.
    #[test]
    fn secret_values_never_show_in_debug_output() {
        let spec = RunSpec {
            secrets: SecretEnv(vec![("DB_PASSWORD".into(), "fake-db-pass".into())]),
            ..RunSpec::default()
        };
        let shown = format!("{spec:?}");
        assert!(shown.contains("DB_PASSWORD=<redacted>"), "{shown}");
        assert!(!shown.contains("fake-db-pass"), "{shown}");
    }

    #[test]
    fn the_proxy_learns_the_values_of_the_runs_secrets_only() {
        let spec = RunSpec {
            env: vec![("EDITOR".into(), "vi".into())],
            secret_names: vec!["DB_PASSWORD".into(), "EMPTY_SECRET".into()],
            secrets: SecretEnv(vec![
                ("DB_PASSWORD".into(), "fake-db-pass".into()),
                ("EMPTY_SECRET".into(), String::new()),
            ]),
            ..RunSpec::default()
        };
        assert_eq!(secret_values(&spec), ["fake-db-pass"]);
    }
}
