//! Core types shared by every moat crate: paths under `MOAT_HOME`, run ids,
//! run metadata and its state machine, the run store, log records and the
//! configuration files, the ownership and mode checks for files moat
//! trusts, workspace snapshots, and the TLS client set-up shared by the proxy and grant
//! validation, and the bounded runner for other programs. Nothing here talks
//! to the network or a runtime.

pub mod atomic;
pub mod audit;
pub mod config;
pub mod deps;
pub mod docker_endpoint;
pub mod env_vars;
pub mod fs_perms;
pub mod host_pattern;
pub mod id;
pub mod lock;
pub mod logs;
pub mod metadata;
pub mod mount;
pub mod paths;
pub mod run_index;
pub mod snapshot;
pub mod store;
pub mod subprocess;
pub mod terminal;
pub mod tls;
pub mod trust;

pub use config::RuntimeKind;
pub use host_pattern::HostPattern;
pub use id::RunId;
pub use metadata::{RunMetadata, RunState};
pub use mount::BindMount;
pub use paths::MoatHome;
pub use terminal::TerminalSize;
