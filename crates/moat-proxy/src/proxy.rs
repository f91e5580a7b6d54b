//! The proxy as a whole: shared state, the public handle, and the accept
//! loop. Each accepted connection goes: local-address check → HTTP/1.1
//! server → per request: a request to the proxy's own name (→ [`crate::relay`]),
//! else authenticate the run → CONNECT (→ [`crate::tunnel`]) or an
//! absolute-form URL (→ [`crate::forward`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::body::ProxyBody;
use crate::ca::CertificateAuthority;
use crate::config::{ProxyConfig, ProxyTimeouts};
use crate::destination::{Destination, HostAddresses, check_destination};
use crate::error::ProxyError;
use crate::forward::{Target, forward, local_response, policy_refusal};
use crate::injection::InjectionRule;
use crate::policy::{NetworkPolicy, normalize_host};
use crate::registry::{Registry, RunEntry, RunRegistration, RunTraceSummary};
use crate::resolve::{Resolver, SystemResolver};
use crate::token::presented_secret;
use crate::upstream::{UpstreamClients, UpstreamConnector};

/// Pause after a failed accept (e.g. out of file descriptors) before retrying.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// State shared by every connection.
pub(crate) struct Shared {
    pub(crate) registry: Registry,
    pub(crate) ca: Arc<CertificateAuthority>,
    pub(crate) resolver: Resolver,
    pub(crate) host_addresses: HostAddresses,
    pub(crate) connector: UpstreamConnector,
    pub(crate) clients: UpstreamClients,
    pub(crate) timeouts: ProxyTimeouts,
    accept_local_addrs: Vec<IpAddr>,
    pub(crate) shutdown: watch::Sender<bool>,
}

/// A cheap-to-clone handle on the proxy: register runs, serve listeners.
#[derive(Clone)]
pub struct ProxyHandle(Arc<Shared>);

impl ProxyHandle {
    /// Validates `config` (loads trust roots) and builds a proxy using `ca`
    /// for interception. Nothing listens until [`ProxyHandle::serve`].
    pub fn new(config: ProxyConfig, ca: Arc<CertificateAuthority>) -> Result<Self, ProxyError> {
        let dns = config
            .name_resolver
            .clone()
            .unwrap_or_else(|| Arc::new(SystemResolver::new()));
        let resolver = Resolver::new(&config.resolve_overrides, dns, config.timeouts.resolve);
        let connector = UpstreamConnector::new(&config)?;
        let clients = UpstreamClients::new(&connector, config.timeouts.pool_idle);
        let shared = Shared {
            registry: Registry::new(config.limits),
            ca,
            resolver,
            host_addresses: HostAddresses::new(),
            connector,
            clients,
            timeouts: config.timeouts,
            accept_local_addrs: config.accept_local_addrs.iter().map(|ip| ip.to_canonical()).collect(),
            shutdown: watch::channel(false).0,
        };
        Ok(Self(Arc::new(shared)))
    }
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle").finish_non_exhaustive()
    }
}

impl ProxyHandle {
    /// Makes a run visible to the proxy, fully built (policy, injections,
    /// trace writer). Must be called inside a Tokio runtime.
    pub fn register_run(&self, registration: RunRegistration) -> Result<(), ProxyError> {
        self.0.registry.register(registration)
    }

    /// Forgets a run: its token stops working, open tunnels refuse further
    /// requests, and its trace is flushed and closed.
    pub fn unregister_run(&self, run_id: &str) -> Result<RunTraceSummary, ProxyError> {
        self.0.registry.unregister(run_id)
    }

    /// Lists the host's interface addresses again now (they are otherwise
    /// re-listed at most once a second): call after adding an address, e.g.
    /// a new run network's gateway, so that it is refused at once.
    pub fn refresh_host_addresses(&self) {
        self.0.host_addresses.refresh();
    }

    /// Replaces a run's injection rules; applies to open tunnels from their
    /// next request (and closes WebSocket tunnels carrying a removed grant).
    pub fn update_injections(&self, run_id: &str, rules: Vec<InjectionRule>) -> Result<(), ProxyError> {
        self.0.registry.update_injections(run_id, &rules)
    }

    /// Replaces a live run's network rules (its mode stays); requests judged
    /// from now on see them.
    pub fn update_policy(&self, run_id: &str, policy: &NetworkPolicy) -> Result<(), ProxyError> {
        self.0.registry.update_policy(run_id, policy)
    }

    /// Accepts connections on `listener` until [`ProxyHandle::shutdown`].
    /// May run on several listeners at once.
    pub async fn serve(&self, listener: TcpListener) -> Result<(), ProxyError> {
        let mut shutdown = self.0.shutdown.subscribe();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stopped(&mut shutdown) => return Ok(()),
            };
            match accepted {
                Ok((stream, peer)) => self.spawn_connection(stream, peer),
                Err(e) => {
                    tracing::warn!("proxy accept failed: {e}");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                }
            }
        }
    }

    /// Turns true when the proxy shuts down.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.0.shutdown.subscribe()
    }

    /// Stops every `serve` loop and asks every connection to finish its
    /// in-flight requests and close (spliced upgrades are left alone).
    pub fn shutdown(&self) {
        self.0.shutdown.send_replace(true);
    }

    /// [`ProxyHandle::shutdown`], then waits up to `grace` for connections to
    /// close. Returns whether all of them did.
    pub async fn shutdown_gracefully(&self, grace: Duration) -> bool {
        self.shutdown();
        tokio::time::timeout(grace, self.0.shutdown.closed()).await.is_ok()
    }

    fn spawn_connection(&self, stream: TcpStream, peer: SocketAddr) {
        if !self.accepts_local_address(&stream) {
            tracing::warn!(%peer, "closing proxy connection that arrived on a non-allowed local address");
            return;
        }
        let _ = stream.set_nodelay(true);
        let shared = self.0.clone();
        let mut stop = self.0.shutdown.subscribe();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle_client_request(shared.clone(), req));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let served = until_shutdown(connection, &mut stop, |c| c.graceful_shutdown()).await;
            if let Err(e) = served {
                tracing::debug!(%peer, "proxy client connection ended: {e}");
            }
        });
    }

    fn accepts_local_address(&self, stream: &TcpStream) -> bool {
        let allowed = &self.0.accept_local_addrs;
        allowed.is_empty()
            || stream
                .local_addr()
                .is_ok_and(|local| allowed.contains(&local.ip().to_canonical()))
    }
}

/// Drives `connection`; when shutdown is signalled, calls `begin_graceful`
/// and lets it finish. Holding `stop` marks the connection live for
/// [`ProxyHandle::shutdown_gracefully`].
pub(crate) async fn until_shutdown<C: Future>(
    connection: C,
    stop: &mut watch::Receiver<bool>,
    begin_graceful: impl FnOnce(Pin<&mut C>),
) -> C::Output {
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        output = connection.as_mut() => output,
        () = stopped(stop) => {
            begin_graceful(connection.as_mut());
            connection.await
        }
    }
}

/// Completes once shutdown is signalled (or the proxy is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// One request on a client's proxy connection.
async fn handle_client_request(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
    if crate::relay::is_relay_request(&req) {
        return Ok(crate::relay::serve(shared, req).await);
    }
    let Some(run) = authenticate(&shared, &req) else {
        return Ok(proxy_auth_required());
    };
    let response = if req.method() == Method::CONNECT {
        crate::tunnel::open(shared, run, req).await
    } else {
        forward_absolute(shared, run, req).await
    };
    Ok(response)
}

fn authenticate(shared: &Shared, req: &Request<Incoming>) -> Option<Arc<RunEntry>> {
    let value = req.headers().get(header::PROXY_AUTHORIZATION)?;
    let secret = presented_secret(value.as_bytes())?;
    shared.registry.authenticate(&secret)
}

/// `407` with the challenge git and libcurl need in order to retry with credentials.
pub(crate) fn proxy_auth_required() -> Response<ProxyBody> {
    let mut response = local_response(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "auth",
        "moat proxy: missing or unknown run token in Proxy-Authorization\n".to_string(),
    );
    response.headers_mut().insert(
        header::PROXY_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"moat\""),
    );
    response
}

/// A plain `http://` (or `https://`) absolute-form request.
async fn forward_absolute(shared: Arc<Shared>, run: Arc<RunEntry>, req: Request<Incoming>) -> Response<ProxyBody> {
    let Some(target) = absolute_target(&req) else {
        return local_response(
            StatusCode::BAD_REQUEST,
            "request",
            "moat proxy: expected CONNECT or an absolute http:// URL\n".to_string(),
        );
    };
    // Host, method/path and destination checks all happen per request in `forward`.
    forward(shared, run, Arc::new(target), req).await
}

fn absolute_target<B>(req: &Request<B>) -> Option<Target> {
    let uri = req.uri();
    let tls = match uri.scheme_str()? {
        "http" => false,
        "https" => true,
        _ => return None,
    };
    let host = normalize_host(uri.host()?);
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Some(Target {
        tls,
        host,
        port,
        destination: None,
    })
}

/// Host-level policy and the resolved-address check, before any upstream
/// traffic; returns the judged addresses the tunnel will use.
pub(crate) async fn check_host_and_destination(
    shared: &Shared,
    run: &RunEntry,
    target: &Target,
    method: &Method,
) -> Result<Destination, crate::forward::Refusal> {
    let implicit = run.implicit_allowance(&run.injections(), &target.host, target.port);
    let decision = run.policy().check_host(&target.host, target.port, implicit);
    if !decision.allowed {
        return Err(policy_refusal(&decision, target, method, ""));
    }
    check_destination(shared, run, target).await
}
