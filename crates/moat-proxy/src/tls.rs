//! Shared TLS plumbing: the ring crypto provider (chosen explicitly so another
//! crate enabling aws-lc cannot change it), its cipher-suite preference, and
//! ALPN identifiers.

use std::sync::{Arc, OnceLock};

use rustls::CipherSuite;
use rustls::crypto::CryptoProvider;

pub(crate) const ALPN_H2: &[u8] = b"h2";
pub(crate) const ALPN_H1: &[u8] = b"http/1.1";

/// Suites in the order the proxy prefers, on both of its TLS sides. AES-128-GCM
/// first: as strong as needed here and, with SHA-256, cheaper per handshake
/// and per record than AES-256/SHA-384 (rustls's default first choice).
const PREFERRED_SUITES: &[CipherSuite] = &[
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];

/// The crypto provider every TLS configuration in this crate uses.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = rustls::crypto::ring::default_provider();
            provider.cipher_suites.sort_by_key(|suite| {
                PREFERRED_SUITES
                    .iter()
                    .position(|preferred| *preferred == suite.suite())
                    .unwrap_or(PREFERRED_SUITES.len())
            });
            Arc::new(provider)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_128_gcm_is_preferred_and_no_suite_is_lost() {
        let provider = crypto_provider();
        assert_eq!(provider.cipher_suites[0].suite(), CipherSuite::TLS13_AES_128_GCM_SHA256);
        let default_count = rustls::crypto::ring::default_provider().cipher_suites.len();
        assert_eq!(provider.cipher_suites.len(), default_count);
    }
}
