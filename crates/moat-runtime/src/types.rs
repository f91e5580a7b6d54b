//! Plain data exchanged with runtimes: specs for what to create and
//! descriptions of what exists.

use std::collections::BTreeMap;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};

pub use moat_core::logs::Stream as OutputStreamKind;
pub use moat_core::{BindMount, RuntimeKind};

use crate::RuntimeResult;

/// What a runtime can do; callers adapt instead of failing late.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub labels: bool,
    pub named_volumes: bool,
    pub exit_codes: bool,
    pub host_network: bool,
    pub internal_networks: bool,
    pub privileged: bool,
    /// A container can join another running container's network
    /// namespace ([`ContainerSpec::network_of`]).
    pub shared_network_namespace: bool,
    /// The host gets a network's gateway address only once a container
    /// has joined the network (Podman creates the bridge then), so a
    /// listener on the gateway needs a container on the network first.
    pub gateway_needs_a_container: bool,
}

/// Everything needed to create a container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Container name (the run id for a run's main container).
    pub name: String,
    pub image: String,
    /// Command and arguments; empty = the image's default.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<BindMount>,
    pub working_dir: Option<String>,
    /// `uid:gid` to run as.
    pub user: Option<String>,
    /// Network to attach to.
    pub network: Option<String>,
    /// A running container whose network namespace this one joins instead
    /// of attaching to a network (addresses, hosts file and DNS are that
    /// container's: `network`, `extra_hosts` and `dns` stay empty). Only
    /// where [`Capabilities::shared_network_namespace`].
    pub network_of: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Extra `/etc/hosts` entries: (name, address).
    pub extra_hosts: Vec<(String, String)>,
    pub memory_bytes: Option<i64>,
    pub cpus: Option<f64>,
    /// Resource limits by name (`nofile`, `nproc`, ...); -1 is unlimited.
    pub ulimits: BTreeMap<String, moat_core::config::Ulimit>,
    pub pids_limit: Option<u32>,
    pub dns: Vec<String>,
    pub tty: bool,
    pub open_stdin: bool,
    /// The terminal's size when the process starts (with `tty`), so its
    /// first frame is drawn at the client's size, not 80x24.
    pub console_size: Option<TerminalSize>,
    pub cap_add: Vec<String>,
    /// Named volumes: (volume, absolute path in the container).
    pub volumes: Vec<(String, String)>,
}

pub use moat_core::TerminalSize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    Created,
    Running,
    Paused,
    Restarting,
    Exited,
    Dead,
    Unknown,
}

impl ContainerStatus {
    pub fn is_running(&self) -> bool {
        matches!(
            self,
            ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Restarting
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub status: ContainerStatus,
    pub exit_code: Option<i64>,
    pub labels: BTreeMap<String, String>,
    /// Names of the networks it is attached to.
    pub networks: Vec<String>,
    /// The container's address on its network, where the runtime reports
    /// one (the host reaches published `ports:` there).
    pub address: Option<std::net::IpAddr>,
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A chunk of container output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: OutputStreamKind,
    pub data: Bytes,
}

pub type OutputStream = Pin<Box<dyn Stream<Item = RuntimeResult<OutputChunk>> + Send>>;

/// A container's (or an exec's) attached streams: its output as it comes,
/// and its stdin. Dropping `input` closes the container's stdin where it
/// was created to close with its first attachment (no TTY).
pub struct Attached {
    pub output: OutputStream,
    pub input: Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attached")
    }
}

/// What to run with `exec_attached`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSpec {
    pub command: Vec<String>,
    /// A TTY of this size; `None` = plain pipes.
    pub tty: Option<TerminalSize>,
    /// `uid:gid` (or a name) to run as; `None` = the container's user.
    pub user: Option<String>,
    /// Variables added to (or replacing) the container's for this command.
    pub env: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: Option<i64>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// No route out of the network (strict egress).
    pub internal: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub internal: bool,
    /// Names (or ids) of attached containers.
    pub containers: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub id: String,
    pub tags: Vec<String>,
    pub size: Option<u64>,
    /// When the image was built (Unix seconds), where the runtime says.
    #[serde(default)]
    pub created: Option<i64>,
}

/// Objects left by moat's earlier (Go) implementation
/// ([`crate::labels::is_legacy`]). Listed for people, never swept: removed
/// only on explicit request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LegacyObjects {
    pub containers: Vec<ContainerInfo>,
    pub networks: Vec<NetworkInfo>,
    pub volumes: Vec<VolumeInfo>,
}

impl LegacyObjects {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.networks.is_empty() && self.volumes.is_empty()
    }
}
