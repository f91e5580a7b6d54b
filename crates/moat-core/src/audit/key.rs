//! The audit signing key: one Ed25519 key per `MOAT_HOME`
//! (`audit/signing.key`, 0600, in a 0700 directory, refused if another user
//! owns or could write it), created once, never exported. It signs a run's
//! chain head; the public key is what a verifier pins.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::MoatHome;
use crate::atomic::create_private_dir;
use crate::fs_perms::{UntrustedFile, read_trusted};

/// Domain tag of a signed head.
const HEAD_DOMAIN: &[u8] = b"moat-audit-head-v1";
/// How a public key is written: `ed25519:<64 hex digits>`.
const PUBLIC_KEY_PREFIX: &str = "ed25519:";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot use the audit signing key {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Untrusted(#[from] UntrustedFile),
    #[error(
        "the audit signing key {0} is not 64 hex digits; move it away to make a new key (old signatures then no longer verify against it)"
    )]
    Malformed(PathBuf),
    #[error("{0:?} is not an Ed25519 public key (expected ed25519:<64 hex digits>)")]
    BadPublicKey(String),
}

/// The private signing key of this `MOAT_HOME`.
pub struct AuditKey {
    key: SigningKey,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey({})", self.public())
    }
}

impl AuditKey {
    /// The key file of `home`.
    pub fn path(home: &MoatHome) -> PathBuf {
        home.root().join("audit").join("signing.key")
    }

    /// Loads the key if this home has one (read-only callers: the CLI).
    pub fn load_existing(home: &MoatHome) -> Result<Option<Self>, KeyError> {
        if !Self::path(home).exists() {
            return Ok(None);
        }
        Self::load_or_create(home).map(Some)
    }

    /// Loads the key, creating it on first use (two creators racing agree
    /// on one key: the file appears complete or not at all).
    pub fn load_or_create(home: &MoatHome) -> Result<Self, KeyError> {
        let path = Self::path(home);
        if !path.exists() {
            create(&path)?;
        }
        let text = read_trusted(&path)?;
        let seed: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| KeyError::Malformed(path.clone()))?;
        Ok(AuditKey {
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    /// Signs the head of run `run_id`'s chain at entry `seq` with `hash`.
    pub fn sign_head(&self, run_id: &str, seq: u64, hash: &str) -> SignedHead {
        let signature = self.key.sign(&head_message(run_id, seq, hash));
        SignedHead {
            run_id: run_id.to_string(),
            seq,
            hash: hash.to_string(),
            signature: hex::encode(signature.to_bytes()),
            public_key: self.public().to_string(),
        }
    }
}

/// Writes a new random key to `path` without ever exposing a partial file:
/// a complete temp file is hard-linked into place (which fails if another
/// creator won).
fn create(path: &Path) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir).map_err(io)?;
    let seed: [u8; 32] = rand::rng().random();
    let temp = dir.join(format!(
        ".signing.key.{}.{}",
        std::process::id(),
        hex::encode(&seed[..4])
    ));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(hex::encode(seed).as_bytes())?;
        file.sync_all()?;
        match std::fs::hard_link(&temp, path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    })();
    let _ = std::fs::remove_file(&temp);
    written.map_err(io)
}

/// The bytes a head signature covers: a domain tag, the run id
/// (length-prefixed), the seq and the entry hash.
pub fn head_message(run_id: &str, seq: u64, hash: &str) -> Vec<u8> {
    let mut message = HEAD_DOMAIN.to_vec();
    message.extend((run_id.len() as u64).to_be_bytes());
    message.extend(run_id.as_bytes());
    message.extend(seq.to_be_bytes());
    message.extend((hash.len() as u64).to_be_bytes());
    message.extend(hash.as_bytes());
    message
}

/// A public key a verifier trusts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Reads `ed25519:<hex>` (or the bare hex).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bad = || KeyError::BadPublicKey(text.to_string());
        let digits = text.strip_prefix(PUBLIC_KEY_PREFIX).unwrap_or(text);
        let bytes: [u8; 32] = hex::decode(digits)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(bad)?;
        VerifyingKey::from_bytes(&bytes).map(PublicKey).map_err(|_| bad())
    }

    /// Whether `head`'s signature is this key's over its run, seq and hash.
    pub fn verifies(&self, head: &SignedHead) -> bool {
        let Some(bytes) = hex::decode(&head.signature)
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
        else {
            return false;
        };
        let signature = Signature::from_bytes(&bytes);
        self.0
            .verify(&head_message(&head.run_id, head.seq, &head.hash), &signature)
            .is_ok()
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PUBLIC_KEY_PREFIX}{}", hex::encode(self.0.as_bytes()))
    }
}

/// A signed chain head (`audit.sig`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    pub run_id: String,
    pub seq: u64,
    /// The `hash` of entry `seq`.
    pub hash: String,
    /// Hex Ed25519 signature of [`head_message`].
    pub signature: String,
    /// The signer's public key, for information only: a verifier checks
    /// against a key it already trusts, never this one.
    pub public_key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A home in a fresh directory, removed with the returned guard.
    fn temp_home() -> (tempfile::TempDir, MoatHome) {
        let dir = tempfile::tempdir().unwrap();
        let home = MoatHome::new(dir.path().join("home"));
        (dir, home)
    }

    #[test]
    fn a_key_is_created_once_private_and_signs_heads() {
        use std::os::unix::fs::PermissionsExt;
        let (_scratch, home) = temp_home();
        let key = AuditKey::load_or_create(&home).unwrap();
        let again = AuditKey::load_or_create(&home).unwrap();
        assert_eq!(key.public(), again.public());
        let mode = std::fs::metadata(AuditKey::path(&home)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let head = key.sign_head("run_1", 3, "abc");
        assert!(key.public().verifies(&head));
        let parsed = PublicKey::parse(&key.public().to_string()).unwrap();
        assert!(parsed.verifies(&head));
        let mut moved = head.clone();
        moved.seq = 2;
        assert!(!parsed.verifies(&moved));
        std::fs::remove_dir_all(home.root()).unwrap();
    }

    #[test]
    fn malformed_public_keys_are_refused() {
        assert!(PublicKey::parse("ed25519:zz").is_err());
        assert!(PublicKey::parse("").is_err());
    }
}
