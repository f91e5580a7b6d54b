//! The remote proxy's control server: HTTPS that requires a client
//! certificate issued by the namespace's control CA (any other client fails
//! the handshake), serving the per-run state API of [`super::wire`] on a
//! [`ProxyHandle`]. Each run's trace goes to `<state dir>/<run id>.jsonl`,
//! read back by byte cursor.

use std::convert::Infallible;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::ControlError;
use super::material::CertifiedKey;
use super::wire::{
    HEALTH_PATH, MAX_REQUEST_BODY, MAX_TRACE_CHUNK, RUNS_PREFIX, RemoteRun, TRACE_NEXT_HEADER, valid_run_id,
};
use crate::error::ProxyError;
use crate::injection::InjectionRule;
use crate::proxy::ProxyHandle;
use crate::registry::RunRegistration;
use crate::tls::crypto_provider;
use crate::token::ProxyToken;

/// How long a control client has for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a control connection may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

type ControlBody = Full<Bytes>;

/// Serves the control API for one proxy.
pub struct ControlServer {
    proxy: ProxyHandle,
    state_dir: PathBuf,
    acceptor: TlsAcceptor,
}

impl ControlServer {
    /// A control server presenting `identity`, accepting only clients whose
    /// certificate `control_ca_pem` issued; traces go under `state_dir`.
    pub fn new(
        proxy: ProxyHandle,
        state_dir: PathBuf,
        control_ca_pem: &str,
        identity: &CertifiedKey,
    ) -> Result<Self, ControlError> {
        let config = server_config(control_ca_pem, identity)?;
        Ok(Self {
            proxy,
            state_dir,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Accepts control connections on `listener` until the proxy shuts down.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut stop = self.proxy.shutdown_signal();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let server = self.clone();
                    tokio::spawn(async move { server.serve_connection(tcp, peer).await });
                }
                Err(e) => {
                    tracing::warn!("control accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn serve_connection(self: Arc<Self>, tcp: tokio::net::TcpStream, peer: std::net::SocketAddr) {
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::warn!(%peer, "refused a control client: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "a control client's TLS handshake timed out");
                return;
            }
        };
        let server = self.clone();
        let service = service_fn(move |req| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.handle(req).await) }
        });
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(tls), service)
            .await;
        if let Err(e) = served {
            tracing::debug!(%peer, "control connection ended: {e}");
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<ControlBody> {
        let path = req.uri().path().to_string();
        if path == HEALTH_PATH && req.method() == Method::GET {
            return text(StatusCode::OK, "ok\n");
        }
        let Some(rest) = path.strip_prefix(RUNS_PREFIX) else {
            return text(StatusCode::NOT_FOUND, "no such control path\n");
        };
        let (run_id, what) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_run_id(run_id) {
            return text(StatusCode::BAD_REQUEST, "invalid run id\n");
        }
        let run_id = run_id.to_string();
        match (req.method().clone(), what) {
            (Method::PUT, "") => self.put_run(&run_id, req).await,
            (Method::DELETE, "") => self.remove_run(&run_id),
            (Method::PUT, "injections") => self.set_injections(&run_id, req).await,
            (Method::GET, "trace") => self.read_trace(&run_id, cursor(&req)).await,
            (Method::DELETE, "trace") => self.forget_trace(&run_id).await,
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "no such control operation\n"),
        }
    }

    /// Registers the run, replacing an earlier registration of the same id
    /// (a daemon that restarted pushes its runs again).
    async fn put_run(&self, run_id: &str, req: Request<Incoming>) -> Response<ControlBody> {
        let run: RemoteRun = match json_body(req).await {
            Ok(run) => run,
            Err(response) => return response,
        };
        let Some(token) = ProxyToken::parse(&run.token) else {
            return text(StatusCode::BAD_REQUEST, "the run token is not 64 hex characters\n");
        };
        let _ = self.proxy.unregister_run(run_id);
        let registration = RunRegistration {
            run_id: run_id.to_string(),
            token,
            policy: run.policy,
            injections: run.injections,
            trace_path: self.trace_path(run_id),
            host_ports: Vec::new(),
            redact_values: run.redact_values,
            events: None,
            mcp_servers: run.mcp_servers,
            // Served by the daemon's own issuers; none reach a remote proxy.
            credential_endpoints: Vec::new(),
        };
        match self.proxy.register_run(registration) {
            Ok(()) => text(StatusCode::NO_CONTENT, ""),
            Err(e) => proxy_error(&e),
        }
    }

    fn remove_run(&self, run_id: &str) -> Response<ControlBody> {
        match self.proxy.unregister_run(run_id) {
            Ok(_) => text(StatusCode::NO_CONTENT, ""),
            Err(e) => proxy_error(&e),
        }
    }

    async fn set_injections(&self, run_id: &str, req: Request<Incoming>) -> Response<ControlBody> {
        let rules: Vec<InjectionRule> = match json_body(req).await {
            Ok(rules) => rules,
            Err(response) => return response,
        };
        match self.proxy.update_injections(run_id, rules) {
            Ok(()) => text(StatusCode::NO_CONTENT, ""),
            Err(e) => proxy_error(&e),
        }
    }

    async fn read_trace(&self, run_id: &str, cursor: Option<u64>) -> Response<ControlBody> {
        let Some(cursor) = cursor else {
            return text(StatusCode::BAD_REQUEST, "expected ?from=<byte offset>\n");
        };
        match read_lines_from(&self.trace_path(run_id), cursor).await {
            Ok(Some((records, next))) => {
                let mut response = Response::new(Full::new(Bytes::from(records)));
                response
                    .headers_mut()
                    .insert(TRACE_NEXT_HEADER, HeaderValue::from(next));
                response
            }
            Ok(None) => text(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "the cursor is past the trace's end\n",
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                text(StatusCode::NOT_FOUND, "no trace for that run\n")
            }
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot read the trace: {e}\n"),
            ),
        }
    }

    async fn forget_trace(&self, run_id: &str) -> Response<ControlBody> {
        match tokio::fs::remove_file(self.trace_path(run_id)).await {
            Ok(()) => text(StatusCode::NO_CONTENT, ""),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => text(StatusCode::NO_CONTENT, ""),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot remove the trace: {e}\n"),
            ),
        }
    }

    fn trace_path(&self, run_id: &str) -> PathBuf {
        self.state_dir.join(format!("{run_id}.jsonl"))
    }
}

/// TLS that requires a client certificate from `control_ca_pem`.
fn server_config(control_ca_pem: &str, identity: &CertifiedKey) -> Result<rustls::ServerConfig, ControlError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(control_ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| ControlError::Tls(format!("the control CA certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| ControlError::Tls(format!("the control CA certificate: {e}")))?;
    }
    let provider = crypto_provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ControlError::Tls(format!("the client certificate verifier: {e}")))?;
    let (chain, key) = parse_identity(identity)?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_client_cert_verifier(verifier).with_single_cert(chain, key))
        .map_err(|e| ControlError::Tls(format!("the control server identity: {e}")))
}

/// A PEM certificate chain and its key, for rustls.
pub(crate) fn parse_identity(
    identity: &CertifiedKey,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ControlError> {
    let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ControlError::Tls(format!("a control certificate: {e}")))?;
    if chain.is_empty() {
        return Err(ControlError::Tls(
            "a control certificate PEM holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|e| ControlError::Tls(format!("a control private key: {e}")))?;
    Ok((chain, key))
}

fn cursor(req: &Request<Incoming>) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("from="))?
        .parse()
        .ok()
}

/// Whole lines of `path` from byte `cursor` (at most [`MAX_TRACE_CHUNK`]
/// bytes) and the cursor after them; `None` when `cursor` is past the end.
async fn read_lines_from(path: &std::path::Path, cursor: u64) -> std::io::Result<Option<(Vec<u8>, u64)>> {
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    if cursor > len {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(cursor)).await?;
    let mut chunk = Vec::new();
    file.take(MAX_TRACE_CHUNK).read_to_end(&mut chunk).await?;
    let whole = match chunk.iter().rposition(|b| *b == b'\n') {
        Some(last) => last + 1,
        // One line longer than a chunk: hand it over in pieces.
        None if chunk.len() as u64 == MAX_TRACE_CHUNK => chunk.len(),
        None => 0,
    };
    chunk.truncate(whole);
    Ok(Some((chunk, cursor + whole as u64)))
}

async fn json_body<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Response<ControlBody>> {
    let body = Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
        .map_err(|e| {
            text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("cannot read the request body: {e}\n"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| text(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}\n")))
}

fn proxy_error(error: &ProxyError) -> Response<ControlBody> {
    let status = match error {
        ProxyError::UnknownRun(_) => StatusCode::NOT_FOUND,
        ProxyError::TraceOpen { .. } | ProxyError::NoRuntime(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    text(status, &format!("{error}\n"))
}

fn text(status: StatusCode, body: &str) -> Response<ControlBody> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}
