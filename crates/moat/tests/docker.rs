//! End-to-end tests through the real `moat` binary, its daemon and the real
//! Docker engine.

// Skips and measurements are reported on stderr.
#![allow(clippy::print_stderr)]

#[path = "common/moatd.rs"]
mod moatd;

#[path = "common/fake_issuer.rs"]
mod fake_issuer;

/// These tests use the Docker engine `docker` finds.
mod engine {
    /// No `DOCKER_HOST` of the tests' own (the signature is the Podman
    /// suite's, whose service may fail to start).
    #[allow(clippy::unnecessary_wraps)]
    pub fn docker_host() -> Result<Option<String>, String> {
        Ok(None)
    }
}

mod docker {
    pub mod agents;
    pub mod audit;
    pub mod aws_grant;
    pub mod exec_status;
    pub mod fail_closed;
    pub mod fake_anthropic;
    pub mod grant_host;
    pub mod images;
    pub mod isolation;
    pub mod join;
    pub mod keys;
    pub mod lifecycle;
    pub mod mcp;
    pub mod netpool;
    pub mod npm_grant;
    pub mod oauth_grant;
    pub mod policy;
    pub mod ports;
    pub mod proxy;
    pub mod reaper;
    pub mod scale;
    pub mod services;
    pub mod snapshots;
    pub mod ssh;
    pub mod support;
    pub mod terminal;
    pub mod tmux;
    pub mod trust;
    pub mod upstream;
    pub mod warmpool;
    pub mod worktrees;
}
