//! The upstream side: hyper-util pooled clients shared by every run and
//! tunnel, over a connector that never resolves names: it dials only the
//! addresses the destination check judged ([`crate::destination`]), with a
//! timeout, and verifies TLS against the system roots plus an optional extra
//! root (ALPN h2/http1.1). One client (and pool) per client protocol and
//! judged address set, so a pooled connection is only ever reused by a
//! request whose check accepted the address it was dialled to. Also
//! dedicated HTTP/1.1 connections for upgrades.

use std::fs;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use lru::LruCache;
use moat_core::tls::{self, TlsSetupError, TrustedRoots};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::body::CountingBody;
use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::policy::normalize_host;
use crate::resolve::Addresses;
use crate::tls::{ALPN_H1, ALPN_H2};

/// The shared upstream client: pooled by scheme + authority.
pub(crate) type UpstreamClient = Client<UpstreamConnector, CountingBody<hyper::body::Incoming>>;

/// Builds a pooled client over `connector`.
fn build_client(connector: UpstreamConnector, pool_idle: Duration) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(pool_idle)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// Address sets whose clients (and idle connections) are kept; the least
/// recently used go first.
const CLIENTS_LIMIT: NonZeroUsize = NonZeroUsize::new(512).expect("non-zero");

/// Which pooled client serves a request.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    /// The client spoke HTTP/2 (upstream HTTP/2 is offered).
    h2: bool,
    /// The judged addresses the client's connector dials.
    addresses: Addresses,
}

/// The shared pools, per client protocol and judged address set: a client
/// speaking HTTP/2 is served over upstream HTTP/2 where the server offers
/// it; an HTTP/1.1 client over upstream HTTP/1.1 (no multiplexing layer on
/// the hot path). Within a client, hyper pools by scheme and authority.
pub(crate) struct UpstreamClients {
    connector: UpstreamConnector,
    pool_idle: Duration,
    clients: Mutex<LruCache<ClientKey, UpstreamClient>>,
}

impl UpstreamClients {
    pub(crate) fn new(connector: &UpstreamConnector, pool_idle: Duration) -> Self {
        Self {
            connector: connector.clone(),
            pool_idle,
            clients: Mutex::new(LruCache::new(CLIENTS_LIMIT)),
        }
    }

    /// The client for requests that arrived over `version` and were judged
    /// to go to `addresses`; its connections go only there.
    pub(crate) fn for_request(&self, version: http::Version, addresses: &Addresses) -> UpstreamClient {
        let key = ClientKey {
            h2: version == http::Version::HTTP_2,
            addresses: addresses.clone(),
        };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&key) {
            return client.clone();
        }
        let connector = self.connector.dialing(addresses.clone(), key.h2);
        let client = build_client(connector, self.pool_idle);
        clients.put(key, client.clone());
        client
    }
}

/// Dials upstream servers at judged addresses. Cheap to clone.
#[derive(Clone)]
pub(crate) struct UpstreamConnector {
    /// The only addresses this connector dials (empty: it dials nothing).
    addresses: Addresses,
    /// Offers h2 and http/1.1.
    tls_h2: TlsConnector,
    /// Offers only http/1.1 (HTTP/1.1 clients, upgrades).
    tls_http1: TlsConnector,
    /// Whether pooled TLS connections offer h2.
    offer_h2: bool,
    connect_timeout: Duration,
}

impl UpstreamConnector {
    pub(crate) fn new(config: &ProxyConfig) -> Result<Self, ProxyError> {
        let roots = Arc::new(upstream_roots(config)?);
        let connector = |alpn: &[&[u8]]| -> Result<TlsConnector, ProxyError> {
            let config = tls::client_config(roots.clone(), alpn).map_err(|e| ProxyError::UpstreamTls(e.to_string()))?;
            Ok(TlsConnector::from(Arc::new(config)))
        };
        Ok(Self {
            addresses: Arc::from([]),
            tls_h2: connector(&[ALPN_H2, ALPN_H1])?,
            tls_http1: connector(&[ALPN_H1])?,
            offer_h2: true,
            connect_timeout: config.timeouts.upstream_connect,
        })
    }

    /// The same connector dialling `addresses`, offering h2 on pooled TLS
    /// connections or not.
    fn dialing(&self, addresses: Addresses, offer_h2: bool) -> Self {
        Self {
            addresses,
            offer_h2,
            ..self.clone()
        }
    }

    /// A fresh connection to `addresses` speaking HTTP/1.1 (TLS for `host`
    /// when `tls`), outside the pool.
    pub(crate) async fn connect_http1(
        &self,
        addresses: &Addresses,
        host: &str,
        port: u16,
        tls: bool,
    ) -> io::Result<UpstreamStream> {
        let this = self.dialing(addresses.clone(), false);
        let connector = tls.then_some(&this.tls_http1);
        this.connect(host, port, connector).await
    }

    async fn connect(&self, host: &str, port: u16, tls: Option<&TlsConnector>) -> io::Result<UpstreamStream> {
        let timeout = self.connect_timeout;
        let attempt = async {
            let tcp = self.dial(host, port).await?;
            match tls {
                None => Ok(UpstreamStream::Plain(tcp)),
                Some(connector) => {
                    let name = ServerName::try_from(host.to_string())
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                    let stream = connector.connect(name, tcp).await?;
                    Ok(UpstreamStream::Tls(Box::new(stream)))
                }
            }
        };
        tokio::time::timeout(timeout, attempt).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {host}:{port} timed out after {timeout:?}"),
            )
        })?
    }

    /// Connects to the first reachable judged address (no name lookup here).
    async fn dial(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        let mut last_error = None;
        for ip in self.addresses.iter() {
            match TcpStream::connect(SocketAddr::new(*ip, port)).await {
                Ok(tcp) => {
                    tcp.set_nodelay(true)?;
                    return Ok(tcp);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no checked address to dial for {host}"),
            )
        }))
    }
}

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = TokioIo<UpstreamStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .map(normalize_host)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?;
            let https = uri.scheme_str() == Some("https");
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tls = https.then_some(if this.offer_h2 { &this.tls_h2 } else { &this.tls_http1 });
            this.connect(&host, port, tls).await.map(TokioIo::new)
        })
    }
}

fn upstream_roots(config: &ProxyConfig) -> Result<rustls::RootCertStore, ProxyError> {
    let extra_pem = match &config.extra_root_ca {
        Some(path) => Some(fs::read(path).map_err(|source| ProxyError::ExtraRootRead {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let trusted = TrustedRoots {
        system: config.use_system_roots,
        extra_pem: extra_pem.as_deref(),
    };
    let roots = tls::root_store(trusted).map_err(|error| match (error, &config.extra_root_ca) {
        (TlsSetupError::InvalidExtraRoot(detail), Some(path)) => ProxyError::ExtraRootInvalid {
            path: path.clone(),
            detail,
        },
        (error, _) => ProxyError::UpstreamTls(error.to_string()),
    })?;
    if roots.is_empty() {
        return Err(ProxyError::NoUpstreamRoots);
    }
    Ok(roots)
}

// === impl UpstreamStream ===

/// A plain or TLS connection to an upstream server.
pub(crate) enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(_) => Connected::new(),
            Self::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(ALPN_H2) => Connected::new().negotiated_h2(),
            Self::Tls(_) => Connected::new(),
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
