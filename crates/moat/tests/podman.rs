//! The real-engine suite a second time, against a real rootful Podman
//! service: the modules of `tests/docker/` whose guarantees hold on every
//! engine, run through the real `moat` binary and daemon with
//! `DOCKER_HOST` pointing at a Podman service this test binary starts
//! (see `podman/engine.rs`), plus Podman's own checks.

// Skips and measurements are reported on stderr.
#![allow(clippy::print_stderr)]

#[path = "common/moatd.rs"]
mod moatd;

#[path = "podman/engine.rs"]
mod engine;

#[path = "podman/podman_only.rs"]
mod podman_only;

/// The same files as the Docker suite's (`tests/docker/`).
#[path = "docker"]
mod docker {
    pub mod exec_status;
    pub mod grant_host;
    pub mod isolation;
    pub mod lifecycle;
    pub mod proxy;
    pub mod reaper;
    pub mod support;
    pub mod terminal;
    pub mod tmux;
    pub mod upstream;
}
