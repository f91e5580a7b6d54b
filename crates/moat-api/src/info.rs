//! `daemon/daemon.json`: who the running daemon is (pid, socket, proxy
//! port, version). Written atomically before the daemon listens.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use moat_core::atomic::write_atomic;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub socket: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_port: Option<u16>,
    pub version: String,
    pub api_version: u32,
    pub started_at: DateTime<Utc>,
}

impl DaemonInfo {
    /// Reads `daemon.json`; a missing or unreadable file is `None` (the
    /// daemon it described is treated as gone).
    pub fn read(path: &Path) -> Option<DaemonInfo> {
        let bytes = std::fs::read(path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(info) => Some(info),
            Err(e) => {
                tracing::warn!("ignoring unreadable {}: {e}", path.display());
                None
            }
        }
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(path, &json, 0o600)
    }
}
