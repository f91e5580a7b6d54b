//! Upstream name resolution shared by the policy check and the connector:
//! overrides first, then a short-lived cache over the system resolver, so the
//! address the policy checked is the address the connector dials. Also
//! classifies addresses that need an explicit opt-in (loopback, link-local,
//! unspecified).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a resolved address set is reused.
const CACHE_TTL: Duration = Duration::from_secs(30);
/// Cached names beyond which the cache is cleared.
const CACHE_LIMIT: usize = 4096;

pub(crate) type Addresses = Arc<[IpAddr]>;

pub(crate) struct Resolver {
    overrides: HashMap<String, IpAddr>,
    cache: Mutex<HashMap<String, (Instant, Addresses)>>,
    timeout: Duration,
}

impl Resolver {
    pub(crate) fn new(overrides: &HashMap<String, IpAddr>, timeout: Duration) -> Self {
        let overrides = overrides
            .iter()
            .map(|(host, ip)| (host.to_ascii_lowercase(), *ip))
            .collect();
        Self {
            overrides,
            cache: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    /// Addresses for `host` (normalized, without brackets).
    pub(crate) async fn resolve(&self, host: &str) -> io::Result<Addresses> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Arc::from([ip]));
        }
        if let Some(ip) = self.overrides.get(host) {
            return Ok(Arc::from([*ip]));
        }
        if let Some(addresses) = self.cached(host) {
            return Ok(addresses);
        }
        let lookup = tokio::net::lookup_host((host, 0));
        let found = tokio::time::timeout(self.timeout, lookup).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("resolving {host} timed out after {:?}", self.timeout),
            )
        })??;
        let addresses: Addresses = found.map(|a: SocketAddr| a.ip()).collect();
        if addresses.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} resolved to no address"),
            ));
        }
        self.remember(host, addresses.clone());
        Ok(addresses)
    }

    fn cached(&self, host: &str) -> Option<Addresses> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(host)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, a)| a.clone())
    }

    fn remember(&self, host: &str, addresses: Addresses) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(host.to_string(), (Instant::now(), addresses));
    }
}

/// Addresses a name must not reach without an explicit opt-in: loopback,
/// link-local (cloud metadata at 169.254.169.254), unspecified.
pub(crate) fn is_restricted(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unicast_link_local() || v6.is_unspecified(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_restricted_addresses() {
        for ip in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_restricted(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "10.1.2.3", "2001:db8::1"] {
            assert!(!is_restricted(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn overrides_win_over_dns() {
        let overrides = HashMap::from([("API.example.test".to_string(), "127.0.0.2".parse().unwrap())]);
        let resolver = Resolver::new(&overrides, Duration::from_secs(1));
        let found = resolver.resolve("api.example.test").await.unwrap();
        assert_eq!(&found[..], &["127.0.0.2".parse::<IpAddr>().unwrap()]);
    }
}
