//! End-to-end tests of the `moat` binary on a temporary MOAT_HOME with
//! fabricated runs (no runtime; a daemon only where a command asks one).

#[path = "common/moatd.rs"]
mod moatd;

#[path = "common/fake_issuer.rs"]
mod fake_issuer;

mod cli {
    pub mod agents;
    pub mod audit;
    pub mod credentials;
    pub mod help;
    pub mod honesty;
    pub mod init;
    pub mod oauth;
    pub mod policy;
    pub mod run_dry_run;
    pub mod snapshots;
    pub mod store_commands;
    pub mod support;
}
