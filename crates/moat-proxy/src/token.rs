//! Per-run proxy tokens: generation, parsing from `Proxy-Authorization`, and
//! constant-time comparison (proxy.md § Attribution).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngExt as _;
use subtle::ConstantTimeEq as _;

/// Number of random bytes in a token (256 bits).
const TOKEN_BYTES: usize = 32;

/// A run's secret for authenticating to the proxy: 256 random bits, shown as
/// 64 lowercase hex characters (safe inside a proxy URL's userinfo).
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyToken(String);

impl ProxyToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        let bytes: [u8; TOKEN_BYTES] = rand::rng().random();
        let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(hex)
    }

    /// Wraps a token received from elsewhere (e.g. the daemon's run record).
    /// Returns `None` unless it is exactly 64 hex characters.
    pub fn parse(text: &str) -> Option<Self> {
        let well_formed = text.len() == TOKEN_BYTES * 2 && text.bytes().all(|b| b.is_ascii_hexdigit());
        well_formed.then(|| Self(text.to_ascii_lowercase()))
    }

    /// The token's text, for building `http://moat:<token>@host:port`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares with a presented secret in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented))
    }
}

impl fmt::Debug for ProxyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProxyToken(<redacted>)")
    }
}

/// Extracts the presented secret from a `Proxy-Authorization` value:
/// the password of `Basic user:password`, or the whole `Bearer` credential.
pub(crate) fn presented_secret(header_value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(header_value).ok()?.trim();
    let (scheme, credential) = text.split_once(' ')?;
    let credential = credential.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = BASE64.decode(credential).ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        Some(decoded[colon + 1..].to_vec())
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(credential.as_bytes().to_vec())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_distinct_and_well_formed() {
        let a = ProxyToken::generate();
        let b = ProxyToken::generate();
        assert_ne!(a, b);
        assert_eq!(ProxyToken::parse(a.as_str()), Some(a.clone()));
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn parse_rejects_wrong_length_and_non_hex() {
        assert!(ProxyToken::parse("abc").is_none());
        assert!(ProxyToken::parse(&"z".repeat(64)).is_none());
    }

    #[test]
    fn basic_password_and_bearer_are_extracted() {
        let basic = format!("Basic {}", BASE64.encode("moat:s3cret"));
        assert_eq!(presented_secret(basic.as_bytes()).as_deref(), Some(&b"s3cret"[..]));
        assert_eq!(presented_secret(b"Bearer tok").as_deref(), Some(&b"tok"[..]));
        assert_eq!(presented_secret(b"Digest x"), None);
        assert_eq!(presented_secret(b"Basic !!!"), None);
    }

    #[test]
    fn matches_only_the_exact_token() {
        let token = ProxyToken::generate();
        assert!(token.matches(token.as_str().as_bytes()));
        assert!(!token.matches(&token.as_str().as_bytes()[1..]));
        assert!(!token.matches(ProxyToken::generate().as_str().as_bytes()));
    }
}
