//! The proxy's remote mode: the same proxy run as its own process (in a
//! Kubernetes namespace, `moatd proxy`), with each run's state set, updated
//! and removed over a control API authenticated by mutual TLS, and its
//! trace pulled back by cursor. [`material`] makes the keys, [`wire`] is
//! what is said, [`server`] and [`client`] are the two ends, and
//! [`RemoteProxyOptions`] runs a whole remote proxy.

mod client;
mod material;
mod run;
mod server;
mod wire;

use std::time::Duration;

pub use client::{Connecting, ControlClient, ControlStream, ControlTransport, TcpTransport};
pub use material::{CertifiedKey, RemoteProxyMaterial};
pub use run::{BoundRemoteProxy, RemoteProxyError, RemoteProxyOptions, USAGE as REMOTE_PROXY_USAGE};
pub use server::ControlServer;
pub use wire::{RemoteRun, TraceChunk};

/// Failures of the control channel, on either end.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control channel TLS: {0}")]
    Tls(String),
    #[error("cannot reach the proxy's control API: {0}")]
    Connect(std::io::Error),
    #[error("the proxy's control API failed the TLS handshake: {0}")]
    Handshake(std::io::Error),
    #[error("the proxy's control API failed to {what}: {detail}")]
    Http { what: &'static str, detail: String },
    #[error("the proxy's control API refused to {what} ({status}): {message}")]
    Refused {
        what: &'static str,
        status: u16,
        message: String,
    },
    #[error("the proxy's control API: {0}")]
    Protocol(String),
    #[error("timed out after {timeout:?} waiting for the proxy's control API to {what}")]
    Timeout { what: &'static str, timeout: Duration },
}
