//! The routing endpoint: one loopback listener that sends
//! `https://<endpoint>.<run>.localhost:<port>/` (and `http://…`) to the
//! container port a run named in `ports:`. TLS is terminated with a leaf
//! from moat's CA for the requested name; HTTP/1.1, HTTP/2 and WebSocket
//! upgrades pass through. `<run>.localhost` alone goes to the run's first
//! endpoint; any other name gets a page listing the live endpoints.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;

use crate::ca::CertificateAuthority;

/// The domain every route lives under (browsers resolve it to loopback).
pub const ROUTE_DOMAIN: &str = "localhost";
/// Connecting to a container's port.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A container's answer (headers) to one request; dev servers compile on
/// first load.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// A client's first byte and TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// First byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

type RouteBody = BoxBody<Bytes, hyper::Error>;

/// One run's endpoints, in the order of its `ports:` (the first is the
/// run's default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRoutes {
    pub run_id: String,
    /// Host label of the run (lowercase; letters, digits and `-`).
    pub host: String,
    pub endpoints: Vec<(String, SocketAddr)>,
}

/// The live routes and the listener that serves them.
pub struct Router {
    ca: Arc<CertificateAuthority>,
    routes: RwLock<BTreeMap<String, RunRoutes>>,
    client: Client<HttpConnector, Incoming>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    pub fn new(ca: Arc<CertificateAuthority>) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Arc::new(Router {
            ca,
            routes: RwLock::new(BTreeMap::new()),
            client,
        })
    }

    /// Adds or replaces a run's routes (keyed by its host label).
    pub fn set_run(&self, mut routes: RunRoutes) {
        routes.host.make_ascii_lowercase();
        for (name, _) in &mut routes.endpoints {
            name.make_ascii_lowercase();
        }
        let mut table = self.routes.write().unwrap_or_else(|p| p.into_inner());
        table.retain(|_, r| r.run_id != routes.run_id);
        table.insert(routes.host.clone(), routes);
    }

    /// Forgets a run's routes.
    pub fn remove_run(&self, run_id: &str) {
        let mut table = self.routes.write().unwrap_or_else(|p| p.into_inner());
        table.retain(|_, r| r.run_id != run_id);
    }

    /// The live routes, by host label.
    pub fn routes(&self) -> Vec<RunRoutes> {
        let table = self.routes.read().unwrap_or_else(|p| p.into_inner());
        table.values().cloned().collect()
    }

    /// Where `host` (a request's host name, without port) goes.
    fn target(&self, host: &str) -> Option<SocketAddr> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let labels = host.strip_suffix(ROUTE_DOMAIN)?.strip_suffix('.')?;
        let (endpoint, run) = match labels.split_once('.') {
            Some((endpoint, run)) => (Some(endpoint), run),
            None => (None, labels),
        };
        let table = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let routes = table.get(run)?;
        match endpoint {
            None => routes.endpoints.first().map(|(_, addr)| *addr),
            Some(name) => routes.endpoints.iter().find(|(n, _)| n == name).map(|(_, addr)| *addr),
        }
    }

    /// Accepts connections until the listener fails for good.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let router = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = router.connection(stream).await {
                            tracing::debug!("routing connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("routing endpoint accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Serves one client connection, over TLS when it opens with a handshake.
    async fn connection(self: Arc<Self>, stream: TcpStream) -> Result<(), String> {
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first))
            .await
            .map_err(|_| format!("no request within {HANDSHAKE_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        if peeked == 0 {
            return Ok(());
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            return self.serve_http(stream).await;
        }
        let handshake = async {
            let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                .await
                .map_err(|e| format!("TLS client hello: {e}"))?;
            let name = start.client_hello().server_name().unwrap_or(ROUTE_DOMAIN).to_string();
            let config = self.ca.server_config_for(&name).await.map_err(|e| e.to_string())?;
            start
                .into_stream(config)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))
        };
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| format!("TLS handshake not done within {HANDSHAKE_TIMEOUT:?}"))??;
        self.serve_http(tls).await
    }

    async fn serve_http<S>(self: Arc<Self>, io: S) -> Result<(), String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = hyper::service::service_fn(move |request| {
            let router = self.clone();
            async move { Ok::<_, std::convert::Infallible>(router.route(request).await) }
        });
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .await
            .map_err(|e| e.to_string())
    }

    async fn route(&self, request: Request<Incoming>) -> Response<RouteBody> {
        let host = request_host(&request);
        let Some(target) = host.as_deref().and_then(|h| self.target(h)) else {
            return self.unknown_name_page(host.as_deref());
        };
        self.forward(request, target).await
    }

    /// Sends the request to the container (HTTP/1.1), splicing upgrades.
    async fn forward(&self, mut request: Request<Incoming>, target: SocketAddr) -> Response<RouteBody> {
        let client_upgrade = request
            .headers()
            .contains_key(http::header::UPGRADE)
            .then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        if !parts.headers.contains_key(HOST)
            && let Some(value) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(HOST, value);
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = match format!("http://{target}{path}").parse::<Uri>() {
            Ok(uri) => uri,
            Err(e) => return text_response(StatusCode::BAD_REQUEST, format!("bad request path: {e}")),
        };
        parts.version = http::Version::HTTP_11;
        let sent = tokio::time::timeout(RESPONSE_TIMEOUT, self.client.request(Request::from_parts(parts, body)));
        let mut response = match sent.await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                return text_response(
                    StatusCode::BAD_GATEWAY,
                    format!("the container's port {target} did not answer: {e}"),
                );
            }
            Err(_) => {
                return text_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("the container's port {target} sent no response within {RESPONSE_TIMEOUT:?}"),
                );
            }
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(splice(client_upgrade, upstream_upgrade));
        }
        response.map(BodyExt::boxed)
    }

    fn unknown_name_page(&self, host: Option<&str>) -> Response<RouteBody> {
        let items: String = self
            .routes()
            .iter()
            .flat_map(|run| {
                run.endpoints.iter().map(move |(name, _)| {
                    let host = format!("{name}.{}.{ROUTE_DOMAIN}", run.host);
                    format!("<li>{} (run {})</li>\n", escape(&host), escape(&run.run_id))
                })
            })
            .collect();
        let page = format!(
            "<!doctype html><title>moat: no such endpoint</title>\n<h1>No live endpoint is called {}</h1>\n\
             <p>Live endpoints:</p>\n<ul>\n{items}</ul>\n",
            escape(host.unwrap_or("(no host)"))
        );
        let mut response = text_response(StatusCode::NOT_FOUND, page);
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        response
    }
}

/// The host a request names: its `:authority` (HTTP/2) or `Host` header,
/// without a port.
fn request_host<B>(request: &Request<B>) -> Option<String> {
    let authority = request.uri().authority().map(|a| a.host().to_string());
    authority.or_else(|| {
        let value = request.headers().get(HOST)?.to_str().ok()?;
        let host = value.parse::<http::uri::Authority>().ok()?;
        Some(host.host().to_string())
    })
}

async fn splice(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!("routed upgrade ended: {e}");
            }
        }
        Err(e) => tracing::debug!("routed upgrade failed: {e}"),
    }
}

fn text_response(status: StatusCode, text: String) -> Response<RouteBody> {
    let body = Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Arc<Router> {
        let dir = std::env::temp_dir().join(format!("moat-router-{}", std::process::id()));
        let ca = CertificateAuthority::load_or_create(&dir).unwrap();
        let router = Router::new(Arc::new(ca));
        router.set_run(RunRoutes {
            run_id: "run_1".into(),
            host: "demo".into(),
            endpoints: vec![
                ("web".into(), "10.0.0.2:3000".parse().unwrap()),
                ("api".into(), "10.0.0.2:8080".parse().unwrap()),
            ],
        });
        router
    }

    #[tokio::test]
    async fn names_pick_endpoints_and_the_bare_run_name_the_first() {
        let router = router();
        assert_eq!(
            router.target("web.demo.localhost"),
            Some("10.0.0.2:3000".parse().unwrap())
        );
        assert_eq!(
            router.target("API.demo.localhost."),
            Some("10.0.0.2:8080".parse().unwrap())
        );
        assert_eq!(router.target("demo.localhost"), Some("10.0.0.2:3000".parse().unwrap()));
        assert_eq!(router.target("db.demo.localhost"), None);
        assert_eq!(router.target("web.other.localhost"), None);
        assert_eq!(router.target("web.demo.example.com"), None);
        router.remove_run("run_1");
        assert_eq!(router.target("demo.localhost"), None);
    }
}
