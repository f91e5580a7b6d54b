//! PKCE (RFC 7636) for the browser flow: a random code verifier, its S256
//! challenge, and the random `state` that ties the loopback callback to the
//! request moat made.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt;
use sha2::{Digest, Sha256};

/// Random bytes behind a verifier or a state (43 base64url characters).
const RANDOM_BYTES: usize = 32;

/// A code verifier and its challenge; the verifier goes only to the token
/// endpoint, the challenge into the authorization URL.
#[derive(Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    /// A fresh verifier of 43 characters from 32 random bytes.
    pub fn generate() -> Self {
        Pkce::from_verifier(random_token())
    }

    pub fn from_verifier(verifier: String) -> Self {
        let challenge = s256_challenge(&verifier);
        Pkce { verifier, challenge }
    }
}

impl std::fmt::Debug for Pkce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkce")
            .field("challenge", &self.challenge)
            .finish_non_exhaustive()
    }
}

/// `BASE64URL(SHA256(verifier))` without padding.
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// 32 random bytes, base64url: a verifier or an unguessable `state`.
pub fn random_token() -> String {
    let bytes: [u8; RANDOM_BYTES] = rand::rng().random();
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636, Appendix B.
    #[test]
    fn the_challenge_of_the_rfc_example_verifier() {
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_are_fresh_and_within_the_allowed_length() {
        let (a, b) = (Pkce::generate(), Pkce::generate());
        assert_ne!(a.verifier, b.verifier);
        assert!((43..=128).contains(&a.verifier.len()), "{}", a.verifier.len());
        assert_eq!(a.challenge, s256_challenge(&a.verifier));
        assert!(!format!("{a:?}").contains(&a.verifier));
    }
}
