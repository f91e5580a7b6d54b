//! The encrypted file format of one credential: a version byte, a random
//! 96-bit nonce and the AES-256-GCM ciphertext (tag appended). The provider
//! name is the associated data, so a file copied over another provider's
//! fails to open instead of injecting the wrong token.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Nonce, Payload};
use rand::RngExt;

use crate::keystore::MasterKey;

/// Current format version (first byte of every `.enc` file).
pub const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + NONCE_LEN;

/// Why a sealed blob could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("file is truncated ({len} bytes, at least {min} expected)")]
    Truncated { len: usize, min: usize },
    #[error("unknown format version {0} (this moat understands version {FORMAT_VERSION})")]
    UnknownVersion(u8),
    /// The tag did not verify: the file was modified, belongs to another
    /// provider, or was written with another key.
    #[error(
        "authentication failed: the file was modified, renamed from another provider, or encrypted with a different key"
    )]
    Unauthentic,
}

/// AES-GCM refused to encrypt (only possible for inputs over 64 GiB).
#[derive(Debug, thiserror::Error)]
#[error("the credential is too large to encrypt")]
pub struct SealError;

/// Encrypts `plaintext` for `provider` under `key`.
pub fn seal(key: &MasterKey, provider: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let nonce_bytes: [u8; NONCE_LEN] = rand::rng().random();
    let nonce = Nonce::<Aes256Gcm>::from(nonce_bytes);
    let payload = Payload {
        msg: plaintext,
        aad: provider.as_bytes(),
    };
    let ciphertext = cipher(key).encrypt(&nonce, payload).map_err(|_| SealError)?;
    let mut sealed = Vec::with_capacity(HEADER_LEN + ciphertext.len());
    sealed.push(FORMAT_VERSION);
    sealed.extend_from_slice(&nonce_bytes);
    sealed.extend_from_slice(&ciphertext);
    Ok(sealed)
}

/// Decrypts a blob produced by [`seal`] for the same provider and key.
pub fn open(key: &MasterKey, provider: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    let min = HEADER_LEN + TAG_LEN;
    if sealed.len() < min {
        return Err(OpenError::Truncated { len: sealed.len(), min });
    }
    if sealed[0] != FORMAT_VERSION {
        return Err(OpenError::UnknownVersion(sealed[0]));
    }
    let nonce_bytes: [u8; NONCE_LEN] = sealed[1..HEADER_LEN].try_into().map_err(|_| OpenError::Unauthentic)?;
    let payload = Payload {
        msg: &sealed[HEADER_LEN..],
        aad: provider.as_bytes(),
    };
    cipher(key)
        .decrypt(&Nonce::<Aes256Gcm>::from(nonce_bytes), payload)
        .map_err(|_| OpenError::Unauthentic)
}

fn cipher(key: &MasterKey) -> Aes256Gcm {
    Aes256Gcm::new(&(*key.bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes([byte; 32])
    }

    #[test]
    fn round_trip_and_fresh_nonce_per_seal() {
        let a = seal(&key(7), "github", b"fake payload").unwrap();
        let b = seal(&key(7), "github", b"fake payload").unwrap();
        assert_ne!(a, b, "two seals must use different nonces");
        assert_eq!(a[0], FORMAT_VERSION);
        assert_eq!(open(&key(7), "github", &a).unwrap(), b"fake payload");
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let sealed = seal(&key(1), "openai", b"fake payload").unwrap();
        for index in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[index] ^= 0x01;
            assert!(open(&key(1), "openai", &tampered).is_err(), "byte {index}");
        }
    }

    #[test]
    fn another_provider_or_key_cannot_open() {
        let sealed = seal(&key(1), "openai", b"fake payload").unwrap();
        assert_eq!(open(&key(1), "gemini", &sealed), Err(OpenError::Unauthentic));
        assert_eq!(open(&key(2), "openai", &sealed), Err(OpenError::Unauthentic));
    }

    #[test]
    fn truncated_and_future_versions_are_named() {
        let sealed = seal(&key(1), "openai", b"x").unwrap();
        assert!(matches!(
            open(&key(1), "openai", &sealed[..10]),
            Err(OpenError::Truncated { len: 10, .. })
        ));
        let mut future = sealed.clone();
        future[0] = 9;
        assert_eq!(open(&key(1), "openai", &future), Err(OpenError::UnknownVersion(9)));
    }
}
