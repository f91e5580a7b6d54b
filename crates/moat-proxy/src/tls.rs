//! Shared TLS plumbing of the proxy: the crypto provider (moat's one, see
//! [`moat_core::tls`]) and ALPN identifiers.

pub(crate) use moat_core::tls::crypto_provider;

pub(crate) const ALPN_H2: &[u8] = b"h2";
pub(crate) const ALPN_H1: &[u8] = b"http/1.1";
