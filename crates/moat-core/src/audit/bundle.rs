//! The export bundle: a run's log lines exactly as written, its signed head
//! and the signer's public key for information only. A bundle is verified
//! against a key the verifier already trusts: the key inside it proves
//! nothing, since whoever altered the log could have replaced it too.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::key::SignedHead;

/// `format` of a bundle this version writes and reads.
pub const BUNDLE_FORMAT: &str = "moat-audit-bundle-v1";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the audit bundle {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a moat audit bundle: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: String,
    pub run_id: String,
    /// The lines of `audit.jsonl`, without their newlines.
    pub lines: Vec<String>,
    /// The signed head, when the run's log had one.
    pub signature: Option<SignedHead>,
    /// The signer's public key: for information only, never for verifying.
    pub public_key_for_information: String,
}

impl Bundle {
    /// The log as the verifier reads it (each line newline-terminated).
    pub fn log_bytes(&self) -> Vec<u8> {
        let mut log = Vec::new();
        for line in &self.lines {
            log.extend_from_slice(line.as_bytes());
            log.push(b'\n');
        }
        log
    }

    pub fn read(path: &Path) -> Result<Self, BundleError> {
        let text = std::fs::read(path).map_err(|source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |reason: String| BundleError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let bundle: Bundle = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
        if bundle.format != BUNDLE_FORMAT {
            return Err(invalid(format!(
                "format {:?}, expected {BUNDLE_FORMAT:?}",
                bundle.format
            )));
        }
        if bundle.lines.iter().any(|line| line.contains('\n')) {
            return Err(invalid("a line holds a newline".to_string()));
        }
        Ok(bundle)
    }
}
