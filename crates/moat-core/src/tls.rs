//! The one way moat builds an outbound TLS client: the crypto provider
//! (ring, chosen explicitly so another crate enabling aws-lc cannot change
//! it, with the project's cipher-suite preference), the trusted roots
//! (system store plus an optional extra PEM root), and the client
//! configuration over them. Used by the proxy's upstream side and by grant
//! validation.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use rustls::{CipherSuite, ClientConfig, RootCertStore};

/// Suites in the order moat prefers, on every TLS side. AES-128-GCM first:
/// as strong as needed here and, with SHA-256, cheaper per handshake and
/// per record than AES-256/SHA-384 (rustls's default first choice).
const PREFERRED_SUITES: &[CipherSuite] = &[
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];

/// Why a root store or client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("the extra root CA holds no usable certificate: {0}")]
    InvalidExtraRoot(String),
    #[error("cannot build the TLS client configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Which roots a client trusts.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrustedRoots<'a> {
    /// The operating system's store.
    pub system: bool,
    /// PEM certificates trusted in addition (tests, corporate CAs).
    pub extra_pem: Option<&'a [u8]>,
}

/// The crypto provider every TLS configuration in moat uses.
pub fn crypto_provider() -> Arc<CryptoProvider> {
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

/// The root store for `trusted`. Unreadable system certificates are
/// skipped (logged); an extra root that is not PEM, or holds a certificate
/// rustls rejects, is an error. The store may be empty: callers that need
/// a root decide what that means.
pub fn root_store(trusted: TrustedRoots<'_>) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    if trusted.system {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!("skipping a system root certificate: {error}");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "loaded system root certificates");
    }
    if let Some(pem) = trusted.extra_pem {
        add_pem_roots(&mut roots, pem)?;
    }
    Ok(roots)
}

fn add_pem_roots(roots: &mut RootCertStore, pem: &[u8]) -> Result<(), TlsSetupError> {
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| TlsSetupError::InvalidExtraRoot(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsSetupError::InvalidExtraRoot(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(TlsSetupError::InvalidExtraRoot("no PEM certificate found".into()));
    }
    Ok(())
}

/// A client configuration trusting `roots`, offering `alpn` (most
/// preferred first), safe default protocol versions, no client auth.
pub fn client_config(roots: Arc<RootCertStore>, alpn: &[&[u8]]) -> Result<ClientConfig, TlsSetupError> {
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
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

    #[test]
    fn garbage_extra_root_is_an_error() {
        let trusted = TrustedRoots {
            system: false,
            extra_pem: Some(b"not pem"),
        };
        let err = root_store(trusted).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn a_corrupt_certificate_in_the_extra_root_is_an_error() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let trusted = TrustedRoots {
            system: false,
            extra_pem: Some(pem),
        };
        assert!(matches!(root_store(trusted), Err(TlsSetupError::InvalidExtraRoot(_))));
    }

    #[test]
    fn no_sources_give_an_empty_store_and_alpn_is_offered_in_order() {
        let roots = root_store(TrustedRoots::default()).unwrap();
        assert!(roots.is_empty());
        let config = client_config(Arc::new(roots), &[b"h2", b"http/1.1"]).unwrap();
        assert_eq!(config.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    }
}
