//! The daemon's API as its clients see it: the wire types of every request
//! and answer (versioned by [`API_VERSION`], additive), the typed client
//! over the daemon's Unix socket, and starting the daemon (`moatd`) when
//! none answers. The CLI depends on this crate, never on the daemon's
//! internals, the runtimes or the proxy.

pub mod client;
pub mod fault;
pub mod images;
pub mod info;
mod logfile;
pub mod spawn;
pub mod suggestion;
pub mod sweep;
pub mod terminal;
mod wire;

pub use client::{ClientError, DaemonClient};
pub use spawn::{SpawnError, ensure_running};
pub use wire::*;

/// Proxy variables a user may not set: moat owns them.
pub const PROXY_VARIABLES: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];
