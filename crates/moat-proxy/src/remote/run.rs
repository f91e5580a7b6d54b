//! A whole remote proxy from command-line options (`moatd proxy ...`):
//! loads the interception CA and the control identity from files (a
//! Kubernetes Secret's volume), binds the proxy and control listeners
//! (reporting the addresses bound), and serves both.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

use super::ControlError;
use super::material::CertifiedKey;
use super::server::ControlServer;
use crate::ca::CertificateAuthority;
use crate::config::ProxyConfig;
use crate::error::{CaError, ProxyError};
use crate::proxy::ProxyHandle;

/// The usage line of `moatd proxy`.
pub const USAGE: &str = "moatd proxy --listen ADDR:PORT --control ADDR:PORT --ca-dir DIR --control-dir DIR \
--state-dir DIR [--upstream-ca FILE] [--resolve HOST=IP ...]";

/// How a remote proxy is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteProxyOptions {
    /// Where runs connect (HTTP(S)_PROXY).
    pub listen: SocketAddr,
    /// Where the daemon connects (mutual TLS).
    pub control: SocketAddr,
    /// Holds `ca.crt` and `ca.key`: the interception CA.
    pub ca_dir: PathBuf,
    /// Holds `ca.crt` (the control CA), `tls.crt` and `tls.key` (the server's identity).
    pub control_dir: PathBuf,
    /// Where run traces are written until the daemon pulls them.
    pub state_dir: PathBuf,
    /// Extra root CA for upstream TLS.
    pub upstream_ca: Option<PathBuf>,
    /// Names resolved to fixed addresses instead of DNS.
    pub resolve: Vec<(String, IpAddr)>,
}

/// Why a remote proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum RemoteProxyError {
    #[error("{0}\nusage: {USAGE}")]
    Usage(String),
    #[error("the interception CA: {0}")]
    Ca(#[from] CaError),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot create the state directory {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

impl RemoteProxyOptions {
    /// Parses `--flag value` pairs (the arguments after `moatd proxy`).
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Self, RemoteProxyError> {
        let mut flags: HashMap<String, Vec<String>> = HashMap::new();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let known = [
                "--listen",
                "--control",
                "--ca-dir",
                "--control-dir",
                "--state-dir",
                "--upstream-ca",
                "--resolve",
            ];
            if !known.contains(&flag.as_str()) {
                return Err(RemoteProxyError::Usage(format!("unknown option {flag:?}")));
            }
            let value = args
                .next()
                .ok_or_else(|| RemoteProxyError::Usage(format!("{flag} needs a value")))?;
            flags.entry(flag).or_default().push(value);
        }
        let mut one = |flag: &str| -> Result<Option<String>, RemoteProxyError> {
            match flags.remove(flag) {
                None => Ok(None),
                Some(mut values) if values.len() == 1 => Ok(values.pop()),
                Some(_) => Err(RemoteProxyError::Usage(format!("{flag} given more than once"))),
            }
        };
        let required = |value: Option<String>, flag: &str| {
            value.ok_or_else(|| RemoteProxyError::Usage(format!("{flag} is required")))
        };
        let listen = parse_addr("--listen", &required(one("--listen")?, "--listen")?)?;
        let control = parse_addr("--control", &required(one("--control")?, "--control")?)?;
        let ca_dir = required(one("--ca-dir")?, "--ca-dir")?.into();
        let control_dir = required(one("--control-dir")?, "--control-dir")?.into();
        let state_dir = required(one("--state-dir")?, "--state-dir")?.into();
        let upstream_ca = one("--upstream-ca")?.map(PathBuf::from);
        let resolve = flags
            .remove("--resolve")
            .unwrap_or_default()
            .iter()
            .map(|entry| parse_resolve(entry))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            listen,
            control,
            ca_dir,
            control_dir,
            state_dir,
            upstream_ca,
            resolve,
        })
    }

    /// Loads the keys and binds both listeners; nothing is served until
    /// [`BoundRemoteProxy::serve`].
    pub async fn bind(self) -> Result<BoundRemoteProxy, RemoteProxyError> {
        let ca = CertificateAuthority::load(&self.ca_dir.join("ca.crt"), &self.ca_dir.join("ca.key"))?;
        let control_ca_pem = read(&self.control_dir.join("ca.crt"))?;
        let identity = CertifiedKey {
            cert_pem: read(&self.control_dir.join("tls.crt"))?,
            key_pem: read(&self.control_dir.join("tls.key"))?,
        };
        moat_core::atomic::create_private_dir(&self.state_dir).map_err(|source| RemoteProxyError::StateDir {
            path: self.state_dir.clone(),
            source,
        })?;
        let config = ProxyConfig {
            extra_root_ca: self.upstream_ca.clone(),
            resolve_overrides: self.resolve.iter().cloned().collect(),
            ..ProxyConfig::default()
        };
        let proxy = ProxyHandle::new(config, Arc::new(ca))?;
        let control = Arc::new(ControlServer::new(
            proxy.clone(),
            self.state_dir.clone(),
            &control_ca_pem,
            &identity,
        )?);
        let proxy_listener = bind(self.listen).await?;
        let control_listener = bind(self.control).await?;
        Ok(BoundRemoteProxy {
            proxy_addr: local_addr(&proxy_listener, self.listen)?,
            control_addr: local_addr(&control_listener, self.control)?,
            proxy,
            control,
            proxy_listener,
            control_listener,
        })
    }
}

/// A remote proxy whose listeners are bound.
pub struct BoundRemoteProxy {
    /// Where runs connect.
    pub proxy_addr: SocketAddr,
    /// Where the daemon connects.
    pub control_addr: SocketAddr,
    proxy: ProxyHandle,
    control: Arc<ControlServer>,
    proxy_listener: TcpListener,
    control_listener: TcpListener,
}

impl BoundRemoteProxy {
    /// Serves runs and the control API until the proxy shuts down.
    pub async fn serve(self) -> Result<(), RemoteProxyError> {
        tokio::spawn(self.control.serve(self.control_listener));
        self.proxy.serve(self.proxy_listener).await?;
        Ok(())
    }
}

fn parse_addr(flag: &str, value: &str) -> Result<SocketAddr, RemoteProxyError> {
    value
        .parse()
        .map_err(|_| RemoteProxyError::Usage(format!("{flag} {value:?} is not an ADDRESS:PORT")))
}

fn parse_resolve(entry: &str) -> Result<(String, IpAddr), RemoteProxyError> {
    let invalid = || RemoteProxyError::Usage(format!("--resolve {entry:?} is not HOST=IP"));
    let (host, ip) = entry.split_once('=').ok_or_else(invalid)?;
    let ip = ip.parse().map_err(|_| invalid())?;
    if host.is_empty() {
        return Err(invalid());
    }
    Ok((host.to_ascii_lowercase(), ip))
}

fn read(path: &Path) -> Result<String, RemoteProxyError> {
    std::fs::read_to_string(path).map_err(|source| RemoteProxyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RemoteProxyError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RemoteProxyError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, RemoteProxyError> {
    listener
        .local_addr()
        .map_err(|source| RemoteProxyError::Bind { addr, source })
}
