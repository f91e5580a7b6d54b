//! Proxy configuration: trust roots for upstream TLS, name resolution
//! (overrides and the resolver behind them), accepted local addresses,
//! timeouts, and the per-run limits that keep one run from starving the
//! others. Validated when the proxy is built.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::resolve::NameResolver;

/// How the proxy is set up; `Clone + Debug`.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// PEM file with extra root CAs trusted for upstream TLS (tests, corporate CAs).
    pub extra_root_ca: Option<PathBuf>,
    /// Trust the system's root store for upstream TLS (default true).
    pub use_system_roots: bool,
    /// Host name → address used instead of DNS (like curl's `--resolve`).
    pub resolve_overrides: HashMap<String, IpAddr>,
    /// Resolves names that are neither IP literals nor overridden; `None`
    /// means the system resolver (with a short cache).
    pub name_resolver: Option<Arc<dyn NameResolver>>,
    /// Local addresses connections may arrive on; others are closed at once.
    /// Empty means no restriction (the caller bound specific addresses).
    pub accept_local_addrs: Vec<IpAddr>,
    pub timeouts: ProxyTimeouts,
    pub limits: RunLimits,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            extra_root_ca: None,
            use_system_roots: true,
            resolve_overrides: HashMap::new(),
            name_resolver: None,
            accept_local_addrs: Vec::new(),
            timeouts: ProxyTimeouts::default(),
            limits: RunLimits::default(),
        }
    }
}

/// Bounds on every wait in the data path.
#[derive(Clone, Copy, Debug)]
pub struct ProxyTimeouts {
    /// DNS resolution of an upstream host.
    pub resolve: Duration,
    /// TCP connect plus TLS handshake to an upstream.
    pub upstream_connect: Duration,
    /// From sending a request upstream to receiving its response headers.
    pub upstream_response: Duration,
    /// Client TLS handshake after CONNECT, and reading a request's headers.
    pub client_handshake: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub pool_idle: Duration,
}

impl Default for ProxyTimeouts {
    fn default() -> Self {
        Self {
            resolve: Duration::from_secs(10),
            upstream_connect: Duration::from_secs(15),
            // LLM APIs may think for minutes before the first byte.
            upstream_response: Duration::from_secs(600),
            client_handshake: Duration::from_secs(30),
            pool_idle: Duration::from_secs(90),
        }
    }
}

/// What one run may hold of the proxy at once; past these, its CONNECTs
/// are refused with `429` and its extra HTTP/2 streams wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunLimits {
    /// Intercepted tunnels (CONNECTs) open at once.
    pub max_tunnels: u32,
    /// Concurrent HTTP/2 streams on one tunnel (its `SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_streams_per_tunnel: u32,
    /// New tunnels, each a TLS handshake and perhaps a certificate, per second
    /// (sustained; as many at once as a burst).
    pub handshakes_per_second: u32,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_tunnels: 256,
            max_streams_per_tunnel: 100,
            handshakes_per_second: 50,
        }
    }
}
