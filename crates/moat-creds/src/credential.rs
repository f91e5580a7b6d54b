//! What a stored credential is: the secret token plus what moat knows about
//! it, and the redacted summary that `moat grant list|show` may display.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How many trailing characters of a token a summary may show.
const VISIBLE_SUFFIX_CHARS: usize = 4;

/// What sort of secret a credential holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A long-lived API key (Anthropic, OpenAI, Gemini).
    ApiKey,
    /// An OAuth access token (Claude Code, `gh auth token`).
    OauthToken,
    /// A personal access token or any other bearer token.
    Token,
    /// SSH grants: public keys and the hosts they are granted for (no
    /// secret; the private keys stay in the host's ssh-agent).
    SshKeys,
    /// An AWS role and the host keys that assume it (the keys never reach
    /// a run; runs get short-lived keys STS issues).
    AwsRole,
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CredentialKind::ApiKey => "api key",
            CredentialKind::OauthToken => "oauth token",
            CredentialKind::Token => "token",
            CredentialKind::SshKeys => "ssh keys",
            CredentialKind::AwsRole => "aws role",
        })
    }
}

/// Optional facts about a credential, shown by `moat grant show`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialMetadata {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Where the token came from (`GH_TOKEN`, `gh auth token`, prompt, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The npm registry URL an npm grant is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
}

/// A credential as it is stored (encrypted) on disk. `Debug` never shows the
/// token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub token: String,
    pub kind: CredentialKind,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub metadata: CredentialMetadata,
    /// OAuth grants: how to refresh the token (holds the refresh token,
    /// so never part of a summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<crate::oauth::OauthState>,
}

impl Credential {
    /// A credential created now with no metadata.
    pub fn new(token: impl Into<String>, kind: CredentialKind) -> Self {
        Credential {
            token: token.into(),
            kind,
            created_at: Utc::now(),
            metadata: CredentialMetadata::default(),
            oauth: None,
        }
    }

    /// The token reduced to its last four characters, e.g. `…a1b2`; `-`
    /// for kinds whose "token" is a record (its end could be a secret's).
    pub fn redacted_token(&self) -> String {
        match self.kind {
            CredentialKind::SshKeys | CredentialKind::AwsRole => "-".to_owned(),
            _ => redact(&self.token),
        }
    }

    /// Whether the credential carries an expiry that has passed.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.metadata.expires_at.is_some_and(|at| at <= now)
    }

    /// The redacted view of this credential for `provider`.
    pub fn summary(&self, provider: &str) -> CredentialSummary {
        CredentialSummary {
            provider: provider.to_owned(),
            details: Some(RedactedCredential {
                token: self.redacted_token(),
                kind: self.kind,
                created_at: self.created_at,
                metadata: self.metadata.clone(),
            }),
            error: None,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("token", &self.redacted_token())
            .field("kind", &self.kind)
            .field("created_at", &self.created_at)
            .field("metadata", &self.metadata)
            .field("oauth", &self.oauth)
            .finish()
    }
}

/// One entry of `CredentialStore::list`: either the redacted credential or
/// why its file could not be read (so a corrupt file is reported, not
/// hidden).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CredentialSummary {
    pub provider: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub details: Option<RedactedCredential>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A credential with the token reduced to its last four characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RedactedCredential {
    pub token: String,
    pub kind: CredentialKind,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub metadata: CredentialMetadata,
}

/// `…` plus the last four characters; tokens of eight characters or fewer
/// are hidden entirely so that the suffix never reveals most of the secret.
pub fn redact(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    if chars.len() <= 2 * VISIBLE_SUFFIX_CHARS {
        return "…".to_owned();
    }
    let suffix: String = chars[chars.len() - VISIBLE_SUFFIX_CHARS..].iter().collect();
    format!("…{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_only_the_last_four_characters() {
        assert_eq!(redact("fake-token-for-tests-9f3c"), "…9f3c");
        assert_eq!(redact("short"), "…");
        assert_eq!(redact("ünïcödé-tökén"), "…ökén");
    }

    #[test]
    fn debug_output_never_contains_the_token() {
        let credential = Credential::new("fake-secret-value-1234", CredentialKind::Token);
        let shown = format!("{credential:?}");
        assert!(!shown.contains("fake-secret-value"), "{shown}");
        assert!(shown.contains("…1234"), "{shown}");
    }

    #[test]
    fn expiry_is_checked_against_the_given_time() {
        let mut credential = Credential::new("fake-token-abcdefgh", CredentialKind::OauthToken);
        assert!(!credential.is_expired(Utc::now()));
        credential.metadata.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
        assert!(credential.is_expired(Utc::now()));
    }
}
