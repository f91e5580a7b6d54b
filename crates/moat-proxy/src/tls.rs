//! Shared TLS plumbing: the ring crypto provider (chosen explicitly so another
//! crate enabling aws-lc cannot change it) and ALPN identifiers.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub(crate) const ALPN_H2: &[u8] = b"h2";
pub(crate) const ALPN_H1: &[u8] = b"http/1.1";

/// The crypto provider every TLS configuration in this crate uses.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
