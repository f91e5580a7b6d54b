//! Upstream name resolution: IP literals and configured overrides first,
//! then a [`NameResolver`] (the system resolver behind a short-lived cache
//! by default; tests script their own). Every request resolves its target
//! **once**: the destination check judges that answer and the connector
//! dials exactly the addresses it judged (no second lookup), so a name that
//! answers differently from one lookup to the next (DNS rebinding) cannot
//! slip a refused address past the check.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

/// How long the system resolver's answer for a name is reused.
const CACHE_TTL: Duration = Duration::from_secs(30);
/// Names the system resolver's cache holds (least recently used go first).
const CACHE_LIMIT: NonZeroUsize = NonZeroUsize::new(4096).expect("non-zero");
/// Addresses kept from one answer: bounds dial attempts and pool keys.
const MAX_ADDRESSES: usize = 16;

/// Resolved addresses, in the order they are dialled.
pub(crate) type Addresses = Arc<[IpAddr]>;

/// The future a [`NameResolver`] returns.
pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Where the proxy looks up upstream names that are neither IP literals nor
/// in [`crate::ProxyConfig::resolve_overrides`]. The proxy bounds each lookup
/// with [`crate::ProxyTimeouts::resolve`], calls it once per checked
/// destination, and dials only the addresses it returned.
pub trait NameResolver: fmt::Debug + Send + Sync {
    /// Addresses of `host` (lowercase, no brackets, no trailing dot), in
    /// preference order.
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a>;
}

/// The operating system's resolver (`getaddrinfo`), answers cached for
/// [`CACHE_TTL`]. The cache only saves lookups: nothing relies on two
/// lookups agreeing.
pub(crate) struct SystemResolver {
    cache: Mutex<LruCache<String, (Instant, Vec<IpAddr>)>>,
}

impl SystemResolver {
    pub(crate) fn new() -> Self {
        Self {
            cache: Mutex::new(LruCache::new(CACHE_LIMIT)),
        }
    }

    fn cached(&self, host: &str) -> Option<Vec<IpAddr>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(host) {
            Some((at, addresses)) if at.elapsed() < CACHE_TTL => Some(addresses.clone()),
            _ => None,
        }
    }

    fn remember(&self, host: &str, addresses: &[IpAddr]) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.put(host.to_string(), (Instant::now(), addresses.to_vec()));
    }
}

impl fmt::Debug for SystemResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemResolver").finish_non_exhaustive()
    }
}

impl NameResolver for SystemResolver {
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            if let Some(addresses) = self.cached(host) {
                return Ok(addresses);
            }
            let found: Vec<IpAddr> = tokio::net::lookup_host((host, 0))
                .await?
                .map(|a: SocketAddr| a.ip())
                .collect();
            if !found.is_empty() {
                self.remember(host, &found);
            }
            Ok(found)
        })
    }
}

/// One lookup's answer.
#[derive(Clone, Debug)]
pub(crate) struct Resolution {
    /// Deduplicated, at most [`MAX_ADDRESSES`], never empty.
    pub(crate) addresses: Addresses,
    /// The answer came from configuration (an IP literal or a resolve
    /// override), not from a DNS answer a run could influence.
    pub(crate) configured: bool,
}

/// Literals, overrides, then the [`NameResolver`], bounded by a timeout.
pub(crate) struct Resolver {
    overrides: HashMap<String, IpAddr>,
    dns: Arc<dyn NameResolver>,
    timeout: Duration,
}

impl Resolver {
    pub(crate) fn new(overrides: &HashMap<String, IpAddr>, dns: Arc<dyn NameResolver>, timeout: Duration) -> Self {
        let overrides = overrides
            .iter()
            .map(|(host, ip)| (host.to_ascii_lowercase(), *ip))
            .collect();
        Self {
            overrides,
            dns,
            timeout,
        }
    }

    /// Addresses for `host` (normalized, without brackets).
    pub(crate) async fn resolve(&self, host: &str) -> io::Result<Resolution> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(configured(ip));
        }
        if let Some(ip) = self.overrides.get(host) {
            return Ok(configured(*ip));
        }
        let found = tokio::time::timeout(self.timeout, self.dns.lookup(host))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("resolving {host} timed out after {:?}", self.timeout),
                )
            })??;
        let mut addresses: Vec<IpAddr> = Vec::with_capacity(found.len().min(MAX_ADDRESSES));
        for ip in found {
            if addresses.len() == MAX_ADDRESSES {
                break;
            }
            if !addresses.contains(&ip) {
                addresses.push(ip);
            }
        }
        if addresses.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} resolved to no address"),
            ));
        }
        Ok(Resolution {
            addresses: addresses.into(),
            configured: false,
        })
    }
}

fn configured(ip: IpAddr) -> Resolution {
    Resolution {
        addresses: Arc::from([ip]),
        configured: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers from a list, one entry per lookup, counting lookups.
    #[derive(Debug)]
    struct Scripted(Mutex<Vec<Vec<IpAddr>>>);

    impl NameResolver for Scripted {
        fn lookup<'a>(&'a self, _host: &'a str) -> LookupFuture<'a> {
            let answer = self.0.lock().unwrap().remove(0);
            Box::pin(async move { Ok(answer) })
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn overrides_and_literals_win_over_dns_and_count_as_configured() {
        let overrides = HashMap::from([("API.example.test".to_string(), ip("127.0.0.2"))]);
        let dns = Arc::new(Scripted(Mutex::new(vec![vec![ip("192.0.2.7")]])));
        let resolver = Resolver::new(&overrides, dns, Duration::from_secs(1));
        let found = resolver.resolve("api.example.test").await.unwrap();
        assert_eq!(&found.addresses[..], &[ip("127.0.0.2")]);
        assert!(found.configured);
        let found = resolver.resolve("::1").await.unwrap();
        assert_eq!(&found.addresses[..], &[ip("::1")]);
        assert!(found.configured);
        let found = resolver.resolve("dns.example.test").await.unwrap();
        assert_eq!(&found.addresses[..], &[ip("192.0.2.7")]);
        assert!(!found.configured);
    }

    #[tokio::test]
    async fn answers_are_deduplicated_bounded_and_never_empty() {
        let many: Vec<IpAddr> = (0..40u8).map(|n| IpAddr::from([192, 0, 2, n / 2])).collect();
        let dns = Arc::new(Scripted(Mutex::new(vec![many, vec![]])));
        let resolver = Resolver::new(&HashMap::new(), dns, Duration::from_secs(1));
        let found = resolver.resolve("many.example.test").await.unwrap();
        assert_eq!(found.addresses.len(), MAX_ADDRESSES);
        assert_eq!(found.addresses[1], ip("192.0.2.1"));
        let empty = resolver.resolve("none.example.test").await.unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::NotFound);
    }

    /// Never answers.
    #[derive(Debug)]
    struct Silent;

    impl NameResolver for Silent {
        fn lookup<'a>(&'a self, _host: &'a str) -> LookupFuture<'a> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn a_silent_resolver_times_out() {
        let resolver = Resolver::new(&HashMap::new(), Arc::new(Silent), Duration::from_millis(20));
        let error = resolver.resolve("slow.example.test").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
