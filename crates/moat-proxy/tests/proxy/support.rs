//! Test fixtures: a local HTTPS upstream with its own rcgen CA (echo, SSE,
//! WebSocket and redirect routes), a moat proxy pointed at it through
//! resolve overrides, and a hyper client that tunnels through the proxy.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use moat_proxy::{
    CertificateAuthority, CredentialEndpoint, InjectionRule, McpRoute, NetworkPolicy, ProxyConfig, ProxyHandle,
    ProxyToken, RunLimits, RunRegistration,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Names the upstream certificate covers; all resolve to the upstream address.
pub const UPSTREAM_NAMES: &[&str] = &[
    "api.example.test",
    "other.example.test",
    "evil.example.test",
    "a.wild.example.test",
    "wild.example.test",
];

/// The machine's CPU, shared by the tests in this binary: a test that
/// saturates it on purpose (a flood) holds it for writing, and one that puts
/// an upper bound on a latency holds it for reading, so the two never overlap.
pub static CPU: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn unique_dir(label: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = tempfile::Builder::new()
        .prefix(&format!("moat-proxy-it-{label}-{n}-"))
        .tempdir()
        .unwrap();
    // Kept for the life of the test process: servers started from it may
    // outlive the test that made it.
    dir.keep()
}

// === Upstream ===

/// A local HTTPS server with its own CA.
pub struct Upstream {
    pub addr: SocketAddr,
    /// The same routes over plain HTTP, on the same address.
    pub plain_addr: SocketAddr,
    pub ca_pem_path: PathBuf,
}

impl Upstream {
    /// `host` as a pattern that matches this upstream: bare when it listens on
    /// 443 (tests run as root), else `host:port`.
    pub fn pattern(&self, host: &str) -> String {
        if self.addr.port() == 443 {
            host.to_string()
        } else {
            format!("{host}:{}", self.addr.port())
        }
    }

    /// `host:port` authority for CONNECT.
    pub fn authority(&self, host: &str) -> String {
        format!("{host}:{}", self.addr.port())
    }

    pub async fn start(dir: &Path) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "upstream test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut names: Vec<String> = UPSTREAM_NAMES.iter().map(|s| s.to_string()).collect();
        names.push("localhost".into());
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let ca_pem_path = dir.join("upstream-ca.pem");
        std::fs::write(&ca_pem_path, ca_cert.pem()).unwrap();

        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone(), ca_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let listener = bind_loopback().await;
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_upstream(listener, TlsAcceptor::from(Arc::new(config))));
        let plain = match TcpListener::bind((addr.ip(), 80)).await {
            Ok(listener) => listener,
            Err(_) => TcpListener::bind((addr.ip(), 0)).await.unwrap(),
        };
        let plain_addr = plain.local_addr().unwrap();
        tokio::spawn(serve_plain_upstream(plain));
        Self {
            addr,
            plain_addr,
            ca_pem_path,
        }
    }
}

/// Binds 443 on a random 127.x.y.z address when allowed, else an ephemeral port.
async fn bind_loopback() -> TcpListener {
    for _ in 0..20 {
        let [a, b, c]: [u8; 3] = rand_bytes();
        let ip = Ipv4Addr::new(127, a.max(2), b, c.max(2));
        if let Ok(listener) = TcpListener::bind((ip, 443)).await {
            return listener;
        }
    }
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

fn rand_bytes() -> [u8; 3] {
    let token = ProxyToken::generate();
    let hex = token.as_str();
    let byte = |i: usize| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap();
    [byte(0), byte(1), byte(2)]
}

async fn serve_upstream(listener: TcpListener, acceptor: TlsAcceptor) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else { return };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service_fn(upstream_route))
                .await;
        });
    }
}

async fn serve_plain_upstream(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else { return };
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(tcp), service_fn(upstream_route))
                .await;
        });
    }
}

type UpstreamBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn upstream_route(req: Request<Incoming>) -> Result<Response<UpstreamBody>, Infallible> {
    Ok(match req.uri().path() {
        "/sse" => sse_response(),
        "/ws" => websocket_echo(req),
        "/redirect" => Response::builder()
            .status(StatusCode::FOUND)
            .header("location", "https://other.example.test/")
            .body(Full::new(Bytes::new()).boxed())
            .unwrap(),
        _ => echo_response(req).await,
    })
}

/// Describes the received request as JSON.
async fn echo_response(req: Request<Incoming>) -> Response<UpstreamBody> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let headers: HashMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "authority": parts.uri.authority().map(|a| a.to_string()),
        "headers": headers,
        "body_len": body.len(),
    });
    Response::new(Full::new(Bytes::from(json.to_string())).boxed())
}

/// Two events 200 ms apart.
fn sse_response() -> Response<UpstreamBody> {
    let events = futures_util::stream::unfold(0, |sent| async move {
        let event: &'static [u8] = match sent {
            0 => b"data: one\n\n",
            1 => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                b"data: two\n\n"
            }
            _ => return None,
        };
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from_static(event))), sent + 1))
    });
    let body = http_body_util::StreamBody::new(events);
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(http_body_util::BodyExt::boxed(body))
        .unwrap()
}

fn websocket_echo(mut req: Request<Incoming>) -> Response<UpstreamBody> {
    let key = req.headers().get("sec-websocket-key").unwrap().as_bytes().to_vec();
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = on_upgrade.await.unwrap();
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let greeting = format!("auth={auth}");
        ws.send(greeting.into()).await.unwrap();
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() || message.is_binary() {
                ws.send(message).await.unwrap();
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header(
            "sec-websocket-accept",
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key),
        )
        .body(Full::new(Bytes::new()).boxed())
        .unwrap()
}

// === The proxy under test ===

pub struct TestProxy {
    pub handle: ProxyHandle,
    pub addr: SocketAddr,
    pub moat_ca_pem: String,
    pub moat_ca_path: PathBuf,
    pub dir: PathBuf,
    pub upstream: Upstream,
}

impl TestProxy {
    pub async fn start(label: &str) -> Self {
        Self::start_with(label, |_| {}).await
    }

    /// [`TestProxy::start`] with per-run limits of its own.
    pub async fn start_with_limits(label: &str, limits: RunLimits) -> Self {
        Self::start_with(label, |config| config.limits = limits).await
    }

    /// [`TestProxy::start`] with the configuration adjusted by `configure`
    /// (e.g. a scripted name resolver, an override removed).
    pub async fn start_with(label: &str, configure: impl FnOnce(&mut ProxyConfig)) -> Self {
        let dir = unique_dir(label);
        let upstream = Upstream::start(&dir).await;
        let ca = Arc::new(CertificateAuthority::load_or_create(&dir.join("ca")).unwrap());
        let mut resolve_overrides: HashMap<String, IpAddr> = UPSTREAM_NAMES
            .iter()
            .map(|name| (name.to_string(), upstream.addr.ip()))
            .collect();
        resolve_overrides.insert(moat_proxy::HOST_SERVICE_NAME.into(), upstream.addr.ip());
        resolve_overrides.insert("metadata.example.test".into(), "169.254.169.254".parse().unwrap());
        let mut config = ProxyConfig {
            extra_root_ca: Some(upstream.ca_pem_path.clone()),
            use_system_roots: false,
            resolve_overrides,
            ..ProxyConfig::default()
        };
        configure(&mut config);
        let handle = ProxyHandle::new(config, ca.clone()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = handle.clone();
        tokio::spawn(async move { serving.serve(listener).await });
        Self {
            handle,
            addr,
            moat_ca_pem: ca.certificate_pem().to_string(),
            moat_ca_path: ca.public_cert_path().to_path_buf(),
            dir,
            upstream,
        }
    }

    /// Registers a run allowed to reach the upstream's loopback port.
    pub fn register(&self, run_id: &str, policy: NetworkPolicy, injections: Vec<InjectionRule>) -> TestRun {
        self.register_with_mcp(run_id, policy, injections, vec![])
    }

    /// [`TestProxy::register`] with MCP servers for the relay.
    pub fn register_with_mcp(
        &self,
        run_id: &str,
        policy: NetworkPolicy,
        injections: Vec<InjectionRule>,
        mcp_servers: Vec<McpRoute>,
    ) -> TestRun {
        self.register_with_endpoints(run_id, policy, injections, mcp_servers, vec![])
    }

    /// [`TestProxy::register_with_mcp`] with credential endpoints too.
    pub fn register_with_endpoints(
        &self,
        run_id: &str,
        policy: NetworkPolicy,
        injections: Vec<InjectionRule>,
        mcp_servers: Vec<McpRoute>,
        credential_endpoints: Vec<CredentialEndpoint>,
    ) -> TestRun {
        let token = ProxyToken::generate();
        let trace_path = self.dir.join(format!("{run_id}-network.jsonl"));
        self.handle
            .register_run(RunRegistration {
                run_id: run_id.to_string(),
                token: token.clone(),
                policy,
                injections,
                trace_path: trace_path.clone(),
                host_ports: vec![self.upstream.addr.port(), self.upstream.plain_addr.port()],
                redact_values: vec![],
                events: None,
                mcp_servers,
                credential_endpoints,
            })
            .unwrap();
        TestRun { token, trace_path }
    }

    pub fn client(&self, token: &ProxyToken) -> ProxyClient {
        ProxyClient {
            proxy: self.addr,
            auth: Some(basic_auth(token.as_str())),
            moat_ca_pem: self.moat_ca_pem.clone(),
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.handle.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct TestRun {
    pub token: ProxyToken,
    pub trace_path: PathBuf,
}

impl TestRun {
    /// Waits until the trace holds at least `count` records, then returns them.
    pub async fn trace_records(&self, count: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            let text = std::fs::read_to_string(&self.trace_path).unwrap_or_default();
            let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            if records.len() >= count {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("trace {} never reached {count} records", self.trace_path.display());
    }
}

pub fn basic_auth(password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("moat:{password}"));
    format!("Basic {encoded}")
}

pub fn injection(
    host_pattern: &str,
    header: &str,
    value: &str,
    placeholder: Option<&str>,
    grant: &str,
) -> InjectionRule {
    InjectionRule {
        host_pattern: host_pattern.to_string(),
        header_name: header.to_string(),
        header_value: value.to_string(),
        placeholder: placeholder.map(str::to_string),
        grant: grant.to_string(),
        plaintext: false,
        list_additions: Vec::new(),
        removals: Vec::new(),
    }
}

// === Client through the proxy ===

pub struct ProxyClient {
    pub proxy: SocketAddr,
    pub auth: Option<String>,
    pub moat_ca_pem: String,
}

/// An established, intercepted tunnel speaking HTTP/1.1 or HTTP/2.
pub enum Tunnel {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Tunnel {
    /// Sends once the connection can take a request (an HTTP/1.1 one is
    /// busy until the previous response has been read to its end).
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Response<Incoming> {
        match self {
            Self::Http1(sender) => {
                sender.ready().await.unwrap();
                sender.send_request(req).await.unwrap()
            }
            Self::Http2(sender) => {
                sender.ready().await.unwrap();
                sender.send_request(req).await.unwrap()
            }
        }
    }

    /// Sends and decodes the upstream's JSON echo.
    pub async fn echo(&mut self, req: Request<Full<Bytes>>) -> serde_json::Value {
        let response = self.send(req).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }
}

impl ProxyClient {
    /// Sends an absolute-form request (plain `http://`) on a fresh proxy connection.
    pub async fn absolute(&self, url: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
        let tcp = TcpStream::connect(self.proxy).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(connection);
        let uri: http::Uri = url.parse().unwrap();
        let mut req = Request::get(url).header("host", uri.authority().unwrap().as_str());
        if let Some(auth) = &self.auth {
            req = req.header("proxy-authorization", auth);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        sender
            .send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap()
    }

    /// Sends CONNECT; returns the proxy's response (and the raw tunnel on 200).
    pub async fn connect(&self, authority: &str) -> (Response<Incoming>, Option<hyper::upgrade::Upgraded>) {
        let tcp = TcpStream::connect(self.proxy).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(connection.with_upgrades());
        let mut req = Request::connect(authority).header("host", authority);
        if let Some(auth) = &self.auth {
            req = req.header("proxy-authorization", auth);
        }
        let mut response = sender
            .send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        if response.status() != StatusCode::OK {
            return (response, None);
        }
        let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
        (response, Some(upgraded))
    }

    /// CONNECT written on a raw socket (cheaper than [`ProxyClient::connect`],
    /// for floods): the proxy's status and body, and on `200` the socket,
    /// which is then the tunnel. Errors are returned, not unwrapped.
    pub async fn connect_raw(&self, authority: &str) -> std::io::Result<(StatusCode, String, TcpStream)> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = TcpStream::connect(self.proxy).await?;
        let auth = self
            .auth
            .as_ref()
            .map(|a| format!("Proxy-Authorization: {a}\r\n"))
            .unwrap_or_default();
        let connect = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n");
        tcp.write_all(connect.as_bytes()).await?;
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        // Nothing follows a 200 until the client's TLS hello, so reading
        // past the head cannot swallow tunnel bytes.
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 1024];
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let read = tcp.read(&mut chunk).await?;
            if read == 0 {
                return Err(invalid("proxy closed during CONNECT"));
            }
            buffer.extend_from_slice(&chunk[..read]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| StatusCode::from_bytes(code.as_bytes()).ok())
            .ok_or_else(|| invalid(&format!("not an HTTP response: {head:?}")))?;
        let length: usize = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let read = tcp.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            buffer.extend_from_slice(&chunk[..read]);
        }
        Ok((status, String::from_utf8_lossy(&buffer[head_end..]).into_owned(), tcp))
    }

    /// A TLS client trusting only the moat CA, offering `alpn`.
    pub fn tls_connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        let der: CertificateDer<'static> = CertificateDer::from_pem_slice(self.moat_ca_pem.as_bytes()).unwrap();
        roots.add(der).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }

    /// TLS through the tunnel, trusting only the moat CA, with the given ALPN.
    pub async fn tls(
        &self,
        upgraded: hyper::upgrade::Upgraded,
        sni: &str,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<TokioIo<hyper::upgrade::Upgraded>> {
        self.tls_connector(alpn)
            .connect(ServerName::try_from(sni.to_string()).unwrap(), TokioIo::new(upgraded))
            .await
            .unwrap()
    }

    /// CONNECT + TLS + HTTP handshake (`h2` chooses HTTP/2 via ALPN).
    pub async fn tunnel(&self, authority: &str, h2: bool) -> Tunnel {
        let (response, upgraded) = self.connect(authority).await;
        assert_eq!(response.status(), StatusCode::OK, "CONNECT {authority} refused");
        let sni = authority.rsplit_once(':').unwrap().0;
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let tls = self.tls(upgraded.unwrap(), sni, alpn).await;
        let io = TokioIo::new(tls);
        if h2 {
            let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(connection);
            Tunnel::Http2(sender)
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(connection.with_upgrades());
            Tunnel::Http1(sender)
        }
    }
}

/// A GET with the given path, `Host` header (HTTP/1.1) and extra headers.
pub fn get(host: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::get(path).header("host", host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::new(Bytes::new())).unwrap()
}

/// A GET with an absolute URI (needed for HTTP/2's :authority).
pub fn get_h2(authority: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("https://{authority}{path}"))
        .version(http::Version::HTTP_2)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

pub async fn body_text(response: Response<Incoming>) -> String {
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// Reads the next data frame of a streaming body.
pub async fn next_data(body: &mut Incoming) -> Option<Bytes> {
    loop {
        let frame: Frame<Bytes> = body.frame().await?.unwrap();
        if let Ok(data) = frame.into_data() {
            return Some(data);
        }
    }
}
