//! The encrypted file format of one credential: a version byte, a random
//! 96-bit nonce and the AES-256-GCM ciphertext (tag appended).
//!
//! The associated data binds a file to where it belongs: the format version,
//! the profile and the provider ([`Binding`]). A file copied into another
//! profile, or renamed to another provider, fails to open instead of
//! injecting the wrong token.
//!
//! Version 1 files (written before profiles were bound) used the provider
//! name alone as associated data. They still open, so existing stores keep
//! working, and the store writes version 2 the next time it saves them;
//! until then such a file is bound to its provider but not to its profile.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Nonce, Payload};
use rand::RngExt;

use crate::keystore::MasterKey;

/// Current format version (first byte of every `.enc` file).
pub const FORMAT_VERSION: u8 = 2;
/// The format before profiles were bound: associated data = provider name.
pub const LEGACY_FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + NONCE_LEN;
/// Prefix of version 2 associated data, so it can never equal another
/// structure's.
const AD_DOMAIN: &[u8] = b"moat-credential\0";

/// Where a credential belongs: its profile (`None` = the default profile)
/// and its provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding<'a> {
    pub profile: Option<&'a str>,
    pub provider: &'a str,
}

impl Binding<'_> {
    /// The associated data of a file of format `version` bound here. Every
    /// variable-length part is length-prefixed, and the default profile is
    /// tagged apart from any named one.
    fn associated_data(&self, version: u8) -> Vec<u8> {
        if version == LEGACY_FORMAT_VERSION {
            return self.provider.as_bytes().to_vec();
        }
        let mut ad = Vec::with_capacity(AD_DOMAIN.len() + 16 + self.provider.len());
        ad.extend_from_slice(AD_DOMAIN);
        ad.push(version);
        match self.profile {
            None => ad.push(0),
            Some(profile) => {
                ad.push(1);
                push_prefixed(&mut ad, profile);
            }
        }
        push_prefixed(&mut ad, self.provider);
        ad
    }
}

fn push_prefixed(out: &mut Vec<u8>, part: &str) {
    let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(part.as_bytes());
}

/// Why a sealed blob could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("file is truncated ({len} bytes, at least {min} expected)")]
    Truncated { len: usize, min: usize },
    #[error("unknown format version {0} (this moat understands versions {LEGACY_FORMAT_VERSION} and {FORMAT_VERSION})")]
    UnknownVersion(u8),
    /// The tag did not verify: the file was modified, belongs to another
    /// profile or provider, or was written with another key.
    #[error(
        "authentication failed: the file was modified, copied from another profile, renamed from another provider, or encrypted with a different key"
    )]
    Unauthentic,
}

/// A successfully opened blob.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    pub plaintext: Vec<u8>,
    /// The file's format version; [`LEGACY_FORMAT_VERSION`] means it is not
    /// yet bound to its profile.
    pub version: u8,
}

/// AES-GCM refused to encrypt (only possible for inputs over 64 GiB).
#[derive(Debug, thiserror::Error)]
#[error("the credential is too large to encrypt")]
pub struct SealError;

/// Encrypts `plaintext` for `binding` under `key`, in the current format.
pub fn seal(key: &MasterKey, binding: Binding<'_>, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    seal_version(key, binding, plaintext, FORMAT_VERSION)
}

/// [`seal`] in a given format version; tests use it to write old files.
#[doc(hidden)]
pub fn seal_version(
    key: &MasterKey,
    binding: Binding<'_>,
    plaintext: &[u8],
    version: u8,
) -> Result<Vec<u8>, SealError> {
    let nonce_bytes: [u8; NONCE_LEN] = rand::rng().random();
    let nonce = Nonce::<Aes256Gcm>::from(nonce_bytes);
    let aad = binding.associated_data(version);
    let payload = Payload {
        msg: plaintext,
        aad: &aad,
    };
    let ciphertext = cipher(key).encrypt(&nonce, payload).map_err(|_| SealError)?;
    let mut sealed = Vec::with_capacity(HEADER_LEN + ciphertext.len());
    sealed.push(version);
    sealed.extend_from_slice(&nonce_bytes);
    sealed.extend_from_slice(&ciphertext);
    Ok(sealed)
}

/// Decrypts a blob produced by [`seal`] (or by an older moat, in format 1)
/// for the same binding and key.
pub fn open(key: &MasterKey, binding: Binding<'_>, sealed: &[u8]) -> Result<Opened, OpenError> {
    let min = HEADER_LEN + TAG_LEN;
    if sealed.len() < min {
        return Err(OpenError::Truncated { len: sealed.len(), min });
    }
    let version = sealed[0];
    if version != FORMAT_VERSION && version != LEGACY_FORMAT_VERSION {
        return Err(OpenError::UnknownVersion(version));
    }
    let nonce_bytes: [u8; NONCE_LEN] = sealed[1..HEADER_LEN].try_into().map_err(|_| OpenError::Unauthentic)?;
    let aad = binding.associated_data(version);
    let payload = Payload {
        msg: &sealed[HEADER_LEN..],
        aad: &aad,
    };
    let plaintext = cipher(key)
        .decrypt(&Nonce::<Aes256Gcm>::from(nonce_bytes), payload)
        .map_err(|_| OpenError::Unauthentic)?;
    Ok(Opened { plaintext, version })
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

    fn at(profile: Option<&'static str>, provider: &'static str) -> Binding<'static> {
        Binding { profile, provider }
    }

    #[test]
    fn round_trip_and_fresh_nonce_per_seal() {
        let a = seal(&key(7), at(None, "github"), b"fake payload").unwrap();
        let b = seal(&key(7), at(None, "github"), b"fake payload").unwrap();
        assert_ne!(a, b, "two seals must use different nonces");
        assert_eq!(a[0], FORMAT_VERSION);
        let opened = open(&key(7), at(None, "github"), &a).unwrap();
        assert_eq!(opened.plaintext, b"fake payload");
        assert_eq!(opened.version, FORMAT_VERSION);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let sealed = seal(&key(1), at(Some("work"), "openai"), b"fake payload").unwrap();
        for index in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[index] ^= 0x01;
            assert!(
                open(&key(1), at(Some("work"), "openai"), &tampered).is_err(),
                "byte {index}"
            );
        }
    }

    #[test]
    fn another_profile_provider_or_key_cannot_open() {
        let sealed = seal(&key(1), at(Some("work"), "openai"), b"fake payload").unwrap();
        for other in [
            at(Some("work"), "gemini"),
            at(Some("personal"), "openai"),
            at(None, "openai"),
            at(Some("workopenai"), ""),
        ] {
            assert_eq!(open(&key(1), other, &sealed), Err(OpenError::Unauthentic), "{other:?}");
        }
        assert_eq!(
            open(&key(2), at(Some("work"), "openai"), &sealed),
            Err(OpenError::Unauthentic)
        );
    }

    #[test]
    fn the_version_byte_is_bound_too() {
        // Relabelling a version 2 file as version 1 drops the profile from
        // the associated data; it must not open that way.
        let mut sealed = seal(&key(1), at(Some("work"), "openai"), b"fake payload").unwrap();
        sealed[0] = LEGACY_FORMAT_VERSION;
        assert_eq!(
            open(&key(1), at(Some("personal"), "openai"), &sealed),
            Err(OpenError::Unauthentic)
        );
    }

    #[test]
    fn legacy_files_open_bound_to_their_provider_only() {
        let sealed = seal_version(&key(1), at(None, "openai"), b"old", LEGACY_FORMAT_VERSION).unwrap();
        let opened = open(&key(1), at(Some("work"), "openai"), &sealed).unwrap();
        assert_eq!(opened.plaintext, b"old");
        assert_eq!(opened.version, LEGACY_FORMAT_VERSION);
        assert_eq!(open(&key(1), at(None, "gemini"), &sealed), Err(OpenError::Unauthentic));
    }

    #[test]
    fn truncated_and_future_versions_are_named() {
        let sealed = seal(&key(1), at(None, "openai"), b"x").unwrap();
        assert!(matches!(
            open(&key(1), at(None, "openai"), &sealed[..10]),
            Err(OpenError::Truncated { len: 10, .. })
        ));
        let mut future = sealed.clone();
        future[0] = 9;
        assert_eq!(
            open(&key(1), at(None, "openai"), &future),
            Err(OpenError::UnknownVersion(9))
        );
    }
}
