//! The daemon's side of the control channel: one HTTPS request per call,
//! over a transport the caller chooses (a TCP address, or a stream the
//! Kubernetes API server port-forwards), presenting the daemon's client
//! certificate and trusting only the control CA. Every call is bounded by
//! one timeout that names the operation.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use super::ControlError;
use super::material::CertifiedKey;
use super::server::parse_identity;
use super::wire::{HEALTH_PATH, MAX_TRACE_CHUNK, RUNS_PREFIX, RemoteRun, TRACE_NEXT_HEADER, TraceChunk, valid_run_id};
use crate::injection::InjectionRule;
use crate::tls::crypto_provider;

/// A byte stream to the control server.
pub trait ControlStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ControlStream for T {}

/// A stream being opened.
pub type Connecting<'a> = Pin<Box<dyn Future<Output = io::Result<Box<dyn ControlStream>>> + Send + 'a>>;

/// Opens a stream to the control server, once per call.
pub trait ControlTransport: Send + Sync {
    fn connect(&self) -> Connecting<'_>;
}

/// Dials the control server at a TCP address.
#[derive(Clone, Copy, Debug)]
pub struct TcpTransport(pub SocketAddr);

impl ControlTransport for TcpTransport {
    fn connect(&self) -> Connecting<'_> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(self.0).await?;
            Ok(Box::new(stream) as Box<dyn ControlStream>)
        })
    }
}

/// A client of one remote proxy's control API.
pub struct ControlClient {
    transport: Arc<dyn ControlTransport>,
    tls: TlsConnector,
    server_name: ServerName<'static>,
    timeout: Duration,
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient")
            .field("server_name", &self.server_name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ControlClient {
    /// A client presenting `identity`, expecting a server certificate for
    /// `server_name` issued by `control_ca_pem`; each call gets `timeout`.
    pub fn new(
        transport: Arc<dyn ControlTransport>,
        control_ca_pem: &str,
        identity: &CertifiedKey,
        server_name: &str,
        timeout: Duration,
    ) -> Result<Self, ControlError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(control_ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| ControlError::Tls(format!("the control CA certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ControlError::Tls(format!("the control CA certificate: {e}")))?;
        }
        let (chain, key) = parse_identity(identity)?;
        let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ControlError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| ControlError::Tls(format!("the daemon's control identity: {e}")))?;
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| ControlError::Tls(format!("control server name {server_name:?}: {e}")))?;
        Ok(Self {
            transport,
            tls: TlsConnector::from(Arc::new(config)),
            server_name,
            timeout,
        })
    }

    /// Succeeds once the control server answers an authenticated request.
    pub async fn health(&self) -> Result<(), ControlError> {
        self.call("check its health", Method::GET, HEALTH_PATH.to_string(), None)
            .await
            .map(drop)
    }

    /// Registers (or replaces) run `run_id` with its token, policy and injections.
    pub async fn put_run(&self, run_id: &str, run: &RemoteRun) -> Result<(), ControlError> {
        let body = encode(run)?;
        self.call("register a run", Method::PUT, run_path(run_id, "")?, Some(body))
            .await
            .map(drop)
    }

    /// Replaces the run's injections (revoking a grant leaves it out).
    pub async fn set_injections(&self, run_id: &str, rules: &[InjectionRule]) -> Result<(), ControlError> {
        let body = encode(&rules)?;
        self.call(
            "update a run's injections",
            Method::PUT,
            run_path(run_id, "/injections")?,
            Some(body),
        )
        .await
        .map(drop)
    }

    /// Unregisters the run: its token stops working at once. Its trace stays
    /// until [`ControlClient::forget_trace`].
    pub async fn remove_run(&self, run_id: &str) -> Result<(), ControlError> {
        self.call("unregister a run", Method::DELETE, run_path(run_id, "")?, None)
            .await
            .map(drop)
    }

    /// The run's trace records from byte `cursor` on (at most about 1 MiB).
    pub async fn pull_trace(&self, run_id: &str, cursor: u64) -> Result<TraceChunk, ControlError> {
        let path = format!("{}?from={cursor}", run_path(run_id, "/trace")?);
        let (headers, records) = self.call("send a run's trace", Method::GET, path, None).await?;
        let next_cursor = headers
            .get(TRACE_NEXT_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok())
            .filter(|next| *next == cursor + records.len() as u64)
            .ok_or_else(|| ControlError::Protocol(format!("a trace response without a valid {TRACE_NEXT_HEADER}")))?;
        Ok(TraceChunk {
            records: records.to_vec(),
            next_cursor,
        })
    }

    /// Deletes the run's trace on the proxy (after the last pull).
    pub async fn forget_trace(&self, run_id: &str) -> Result<(), ControlError> {
        self.call(
            "delete a run's trace",
            Method::DELETE,
            run_path(run_id, "/trace")?,
            None,
        )
        .await
        .map(drop)
    }

    async fn call(
        &self,
        what: &'static str,
        method: Method,
        path: String,
        body: Option<Bytes>,
    ) -> Result<(http::HeaderMap, Bytes), ControlError> {
        tokio::time::timeout(self.timeout, self.exchange(what, method, path, body))
            .await
            .map_err(|_| ControlError::Timeout {
                what,
                timeout: self.timeout,
            })?
    }

    async fn exchange(
        &self,
        what: &'static str,
        method: Method,
        path: String,
        body: Option<Bytes>,
    ) -> Result<(http::HeaderMap, Bytes), ControlError> {
        let stream = self.transport.connect().await.map_err(ControlError::Connect)?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), stream)
            .await
            .map_err(ControlError::Handshake)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ControlError::Http {
                what,
                detail: e.to_string(),
            })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("control connection ended: {e}");
            }
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "moat-proxy-control");
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| ControlError::Http {
                what,
                detail: e.to_string(),
            })?;
        let response = sender.send_request(request).await.map_err(|e| ControlError::Http {
            what,
            detail: e.to_string(),
        })?;
        let (parts, body) = response.into_parts();
        let limit = MAX_TRACE_CHUNK as usize + 64 * 1024;
        let bytes = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| ControlError::Http {
                what,
                detail: e.to_string(),
            })?
            .to_bytes();
        if !parts.status.is_success() {
            return Err(refusal(what, parts.status, &bytes));
        }
        Ok((parts.headers, bytes))
    }
}

fn run_path(run_id: &str, suffix: &str) -> Result<String, ControlError> {
    if !valid_run_id(run_id) {
        return Err(ControlError::Protocol(format!(
            "run id {run_id:?} cannot name a remote run"
        )));
    }
    Ok(format!("{RUNS_PREFIX}{run_id}{suffix}"))
}

fn encode(value: &impl serde::Serialize) -> Result<Bytes, ControlError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ControlError::Protocol(format!("cannot encode a request: {e}")))
}

fn refusal(what: &'static str, status: StatusCode, body: &[u8]) -> ControlError {
    ControlError::Refused {
        what,
        status: status.as_u16(),
        message: String::from_utf8_lossy(body).trim().chars().take(500).collect(),
    }
}
