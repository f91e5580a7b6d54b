//! SSH grants (`moat grant ssh --host HOST`): which host may use which
//! key, recorded as the key's public half and fingerprint, never its
//! private half. The private key stays in the host's ssh-agent; a run's
//! daemon-served agent forwards signing requests for granted keys to it.
//! Stored in the credential store under the grant name `ssh`, one entry
//! per host.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as BASE64, STANDARD_NO_PAD as BASE64_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::credential::{Credential, CredentialKind};

/// The grant name runs use: `grants: [ssh]`.
pub const SSH_GRANT: &str = "ssh";

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("not an OpenSSH public key line (`TYPE BASE64 [COMMENT]`): {0}")]
    NotAPublicKey(String),
    #[error("the stored ssh grant is unreadable: {0}")]
    Unreadable(#[from] serde_json::Error),
    #[error("not a known_hosts line (`HOST[,HOST…] TYPE BASE64`): {0}")]
    NotAKnownHostsLine(String),
}

/// A public key: its wire blob, as agents and `authorized_keys` carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub blob: Vec<u8>,
}

impl PublicKey {
    /// From `TYPE BASE64 [COMMENT]` (a `.pub` file's line).
    pub fn parse_openssh(line: &str) -> Result<Self, SshError> {
        let invalid = || SshError::NotAPublicKey(line.chars().take(80).collect());
        let mut fields = line.split_whitespace();
        let (Some(kind), Some(encoded)) = (fields.next(), fields.next()) else {
            return Err(invalid());
        };
        let blob = BASE64.decode(encoded).map_err(|_| invalid())?;
        let key = PublicKey { blob };
        if key.algorithm().as_deref() != Some(kind) {
            return Err(invalid());
        }
        Ok(key)
    }

    /// The algorithm the blob names (its first field), e.g. `ssh-ed25519`.
    pub fn algorithm(&self) -> Option<String> {
        let len = u32::from_be_bytes(self.blob.get(..4)?.try_into().ok()?) as usize;
        let name = self.blob.get(4..4 + len)?;
        String::from_utf8(name.to_vec()).ok()
    }

    /// `SHA256:…`, as `ssh-keygen -l` and `ssh-add -l` print it.
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", BASE64_NO_PAD.encode(Sha256::digest(&self.blob)))
    }

    /// `TYPE BASE64`, without a comment.
    pub fn to_openssh(&self) -> String {
        format!(
            "{} {}",
            self.algorithm().unwrap_or_else(|| "unknown".into()),
            BASE64.encode(&self.blob)
        )
    }
}

/// One host's grant: the key it may use and the host keys to trust.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshKeyGrant {
    /// The host as ssh names it in known_hosts: `github.com` or
    /// `[git.example.com]:2222`.
    pub host: String,
    /// `SHA256:…` of the key.
    pub fingerprint: String,
    /// `TYPE BASE64` of the key (public).
    pub public_key: String,
    /// known_hosts lines for `host`, staged read-only in runs.
    pub known_hosts: Vec<String>,
    /// The host agent socket seen at grant time; the daemon's own
    /// `SSH_AUTH_SOCK` is used when this one is gone.
    pub agent_socket: Option<PathBuf>,
}

impl SshKeyGrant {
    pub fn key(&self) -> Result<PublicKey, SshError> {
        PublicKey::parse_openssh(&self.public_key)
    }
}

/// Every host's ssh grant of one profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshGrants {
    pub keys: Vec<SshKeyGrant>,
}

impl SshGrants {
    /// The grants a stored credential holds (its "token" is this record,
    /// which holds no secret).
    pub fn from_credential(credential: &Credential) -> Result<Self, SshError> {
        Ok(serde_json::from_str(&credential.token)?)
    }

    /// The credential to store; its account names the hosts and keys.
    pub fn to_credential(&self) -> Result<Credential, SshError> {
        let mut credential = Credential::new(serde_json::to_string(self)?, CredentialKind::SshKeys);
        credential.metadata.account = Some(
            self.keys
                .iter()
                .map(|k| format!("{} {}", k.host, k.fingerprint))
                .collect::<Vec<_>>()
                .join(", "),
        );
        credential.metadata.source = Some("ssh-agent".into());
        Ok(credential)
    }

    /// Adds `grant`, replacing an earlier grant for the same host.
    pub fn upsert(&mut self, grant: SshKeyGrant) {
        self.keys.retain(|k| k.host != grant.host);
        self.keys.push(grant);
    }

    /// The known_hosts file of every granted host.
    pub fn known_hosts(&self) -> String {
        self.keys
            .iter()
            .flat_map(|k| k.known_hosts.iter())
            .map(|line| format!("{line}\n"))
            .collect()
    }
}

/// Checks a known_hosts line names `host` and carries a key; returns it
/// trimmed.
pub fn check_known_hosts_line(line: &str, host: &str) -> Result<String, SshError> {
    let line = line.trim();
    let mut fields = line.split_whitespace();
    let hosts = fields.next().unwrap_or_default();
    let key = fields.collect::<Vec<_>>().join(" ");
    let names_host = hosts.split(',').any(|h| h == host);
    if !names_host || PublicKey::parse_openssh(&key).is_err() {
        return Err(SshError::NotAKnownHostsLine(line.chars().take(80).collect()));
    }
    Ok(line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ed25519 public key made for this test (its private half is gone).
    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMrLTKnXEOZtZPfHq03jc7B/i/x3eeJH7ZF0c8K1PtdB test@moat";

    #[test]
    fn public_keys_parse_and_fingerprint_like_ssh_keygen() {
        let key = PublicKey::parse_openssh(KEY).unwrap();
        assert_eq!(key.algorithm().as_deref(), Some("ssh-ed25519"));
        assert_eq!(key.to_openssh(), KEY.trim_end_matches(" test@moat"));
        // `ssh-keygen -lf` of this key.
        assert_eq!(key.fingerprint(), "SHA256:DvVIxh2/gJxzuaJS/fns6xTiiTdW96ppcFFwOHfCwE8");
        assert!(
            PublicKey::parse_openssh("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIMrLTKnXEOZtZPfHq03jc7B/i/x3eeJH7ZF0c8K1PtdB")
                .is_err()
        );
        assert!(PublicKey::parse_openssh("garbage").is_err());
    }

    #[test]
    fn a_grant_round_trips_through_a_credential_and_replaces_per_host() {
        let key = PublicKey::parse_openssh(KEY).unwrap();
        let grant = |host: &str| SshKeyGrant {
            host: host.into(),
            fingerprint: key.fingerprint(),
            public_key: key.to_openssh(),
            known_hosts: vec![format!("{host} {}", key.to_openssh())],
            agent_socket: None,
        };
        let mut grants = SshGrants::default();
        grants.upsert(grant("github.com"));
        grants.upsert(grant("gitlab.com"));
        grants.upsert(grant("github.com"));
        assert_eq!(grants.keys.len(), 2);
        let credential = grants.to_credential().unwrap();
        assert_eq!(credential.kind, CredentialKind::SshKeys);
        assert_eq!(SshGrants::from_credential(&credential).unwrap(), grants);
        assert_eq!(grants.known_hosts().lines().count(), 2);
    }

    #[test]
    fn known_hosts_lines_must_name_the_host_and_a_key() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMrLTKnXEOZtZPfHq03jc7B/i/x3eeJH7ZF0c8K1PtdB";
        assert!(check_known_hosts_line(&format!("github.com,1.2.3.4 {key}"), "github.com").is_ok());
        assert!(check_known_hosts_line(&format!("gitlab.com {key}"), "github.com").is_err());
        assert!(check_known_hosts_line("github.com ssh-ed25519", "github.com").is_err());
    }
}
