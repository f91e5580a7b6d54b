//! Error types of the proxy crate; every message names the file, host or rule
//! it concerns.

use std::path::PathBuf;

/// Failures loading or creating the CA, or minting a leaf certificate.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA file {path} is not valid PEM: {detail}")]
    InvalidPem { path: PathBuf, detail: String },
    #[error("CA certificate {cert} does not belong to key {key}: {detail}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    #[error("cannot generate the moat CA: {0}")]
    Generate(rcgen::Error),
    #[error("cannot mint a leaf certificate for {host}: {detail}")]
    Leaf { host: String, detail: String },
}

/// Failures configuring the proxy or registering a run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot read extra upstream root CA {path}: {source}")]
    ExtraRootRead { path: PathBuf, source: std::io::Error },
    #[error("extra upstream root CA {path} holds no usable certificate: {detail}")]
    ExtraRootInvalid { path: PathBuf, detail: String },
    #[error("cannot build the upstream TLS configuration: {0}")]
    UpstreamTls(String),
    #[error("no trusted upstream root certificates: system store empty and no extra root configured")]
    NoUpstreamRoots,
    #[error("invalid host pattern {pattern:?}: {reason}")]
    InvalidHostPattern { pattern: String, reason: String },
    #[error("invalid method/path rule {rule:?} for host {host:?}: {reason}")]
    InvalidMethodPathRule { host: String, rule: String, reason: String },
    #[error("invalid injection rule for {host:?} (grant {grant}): {reason}")]
    InvalidInjection {
        host: String,
        grant: String,
        reason: String,
    },
    #[error("invalid credential endpoint name {0:?}: it must be one plain path segment")]
    InvalidCredentialEndpoint(String),
    #[error("invalid MCP server {name:?}: {reason}")]
    InvalidMcpRoute { name: String, reason: String },
    #[error("run {0} is already registered with the proxy")]
    DuplicateRun(String),
    #[error("run {0} is not registered with the proxy")]
    UnknownRun(String),
    #[error("run {run_id}'s policy is {}; it cannot become {} while it runs", from.as_str(), to.as_str())]
    PolicyModeChange {
        run_id: String,
        from: crate::policy::PolicyMode,
        to: crate::policy::PolicyMode,
    },
    #[error("cannot open trace file {path}: {source}")]
    TraceOpen { path: PathBuf, source: std::io::Error },
    #[error("register_run for {0} must be called inside a Tokio runtime")]
    NoRuntime(String),
    #[error("proxy listener failed to accept: {0}")]
    Accept(std::io::Error),
}
