//! `MOAT_HOME` and every path under it, in one place (ARCHITECTURE.md,
//! "On-disk layout").

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::env_vars;
use crate::id::RunId;

/// The root of one moat installation's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoatHome {
    root: PathBuf,
}

/// `MOAT_HOME` could not be determined.
#[derive(Debug, thiserror::Error)]
#[error("cannot locate moat's home: neither MOAT_HOME nor HOME is set")]
pub struct NoHome;

impl MoatHome {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        MoatHome { root: root.into() }
    }

    /// `MOAT_HOME`, or `~/.moat`.
    pub fn from_env() -> Result<Self, NoHome> {
        if let Some(dir) = env_vars::read_os_non_empty(env_vars::MOAT_HOME) {
            return Ok(Self::new(absolute(PathBuf::from(dir))));
        }
        let home = env_vars::read_os_non_empty(env_vars::HOME).ok_or(NoHome)?;
        Ok(Self::new(PathBuf::from(home).join(".moat")))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Short, stable hash of this home, used as the `dev.moat.home` label so
    /// that two homes on one machine never reap each other's objects.
    pub fn label(&self) -> String {
        let digest = Sha256::digest(self.root.to_string_lossy().as_bytes());
        hex::encode(&digest[..6])
    }

    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.yaml")
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    pub fn run_dir(&self, id: &RunId) -> PathBuf {
        self.runs_dir().join(id.as_str())
    }

    pub fn daemon_dir(&self) -> PathBuf {
        self.root.join("daemon")
    }

    pub fn daemon_json(&self) -> PathBuf {
        self.daemon_dir().join("daemon.json")
    }

    pub fn daemon_socket(&self) -> PathBuf {
        self.daemon_dir().join("daemon.sock")
    }

    pub fn spawn_lock(&self) -> PathBuf {
        self.daemon_dir().join("spawn.lock")
    }

    /// Held by the daemon for its whole life: one daemon per `MOAT_HOME`.
    /// The kernel releases it when the daemon dies, however it dies.
    pub fn daemon_lock(&self) -> PathBuf {
        self.daemon_dir().join("daemon.lock")
    }

    /// Approved `moat.yaml` files (trust on change).
    pub fn trust_json(&self) -> PathBuf {
        self.root.join("trust.json")
    }

    pub fn runs_json(&self) -> PathBuf {
        self.daemon_dir().join("runs.json")
    }

    pub fn reaper_json(&self) -> PathBuf {
        self.daemon_dir().join("reaper.json")
    }

    pub fn daemon_log(&self) -> PathBuf {
        self.daemon_dir().join("daemon.log")
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    /// Directory holding only the CA certificate; mounted read-only into
    /// containers.
    pub fn ca_public_dir(&self) -> PathBuf {
        self.ca_dir().join("public")
    }

    pub fn credentials_dir(&self) -> PathBuf {
        self.root.join("credentials")
    }

    pub fn providers_dir(&self) -> PathBuf {
        self.root.join("providers")
    }
}

/// Files inside one run's directory.
pub mod run_files {
    pub const METADATA: &str = "metadata.json";
    pub const LOGS: &str = "logs.jsonl";
    pub const NETWORK: &str = "network.jsonl";
    pub const AUDIT: &str = "audit.jsonl";
    /// The signed head of `audit.jsonl`.
    pub const AUDIT_SIGNATURE: &str = "audit.sig";
    pub const LOCK: &str = ".lock";
    /// What the daemon needs to re-adopt the run (spec without secret
    /// values, proxy token); written before the run's first runtime object.
    pub const REGISTRATION: &str = "registration.json";
}

fn absolute(path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        return path;
    }
    std::env::current_dir().map(|cwd| cwd.join(&path)).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_differ_between_homes_and_are_stable() {
        let a = MoatHome::new("/tmp/a");
        let b = MoatHome::new("/tmp/b");
        assert_ne!(a.label(), b.label());
        assert_eq!(a.label(), MoatHome::new("/tmp/a").label());
        assert_eq!(a.label().len(), 12);
    }

    #[test]
    fn layout_matches_the_architecture() {
        let home = MoatHome::new("/h");
        let id: RunId = "run_0123456789ab".parse().unwrap();
        assert_eq!(home.run_dir(&id), Path::new("/h/runs/run_0123456789ab"));
        assert_eq!(home.daemon_socket(), Path::new("/h/daemon/daemon.sock"));
        assert_eq!(home.runs_json(), Path::new("/h/daemon/runs.json"));
        assert_eq!(home.ca_public_dir(), Path::new("/h/ca/public"));
    }
}
