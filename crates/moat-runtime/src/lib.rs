//! Container runtimes behind one async trait: Docker (bollard), Apple's
//! `container` CLI, and an in-memory fake for tests. Also owns moat's object
//! labels, the per-run subnet pool and runtime selection. Knows nothing of
//! runs' policy or credentials (runtime.md).

pub mod apple;
pub mod base_image;
pub mod docker;
pub mod error;
pub mod fake;
pub mod labels;
pub mod select;
pub mod subnet;
pub mod types;

pub use error::{RuntimeError, RuntimeResult};
pub use types::*;

use std::time::Duration;

use async_trait::async_trait;

/// One container runtime. Every call is bounded by a timeout inside the
/// implementation and fails with [`RuntimeError::Timeout`] naming the
/// operation; removals of missing objects succeed.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    fn kind(&self) -> RuntimeKind;
    fn capabilities(&self) -> Capabilities;
    /// Human-readable endpoint, e.g. `unix:///var/run/docker.sock (API 1.41)`.
    fn endpoint(&self) -> String;
    /// How a container on a moat network reaches the host, when known.
    fn host_address(&self) -> Option<String>;

    async fn ping(&self) -> RuntimeResult<()>;

    async fn image_exists(&self, image: &str) -> RuntimeResult<bool>;
    async fn list_images(&self) -> RuntimeResult<Vec<ImageInfo>>;
    async fn remove_image(&self, image: &str) -> RuntimeResult<()>;

    /// Creates (does not start) a container; returns its id.
    async fn create_container(&self, spec: &ContainerSpec) -> RuntimeResult<String>;
    async fn start_container(&self, id: &str) -> RuntimeResult<()>;
    /// Asks the container to stop, killing it after `grace`.
    async fn stop_container(&self, id: &str, grace: Duration) -> RuntimeResult<()>;
    /// Removes a container (forcefully: it may be running). Missing = success.
    async fn remove_container(&self, id: &str) -> RuntimeResult<()>;
    /// Removes a container only if it is not running (a running one is
    /// refused with `InUse`). Missing = success. The reaper's removal.
    async fn remove_stopped_container(&self, id: &str) -> RuntimeResult<()>;
    /// Waits (unbounded: containers may run for days) until the container
    /// exits and returns its exit code (`None` where the runtime cannot tell).
    async fn wait_container(&self, id: &str) -> RuntimeResult<Option<i64>>;
    async fn inspect_container(&self, id: &str) -> RuntimeResult<ContainerInfo>;
    /// The container's output, stdout and stderr tagged, in arrival order.
    /// With `follow`, the stream ends when the container exits. `since`
    /// skips output before that time (for re-adoption).
    async fn logs(
        &self,
        id: &str,
        follow: bool,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> RuntimeResult<OutputStream>;
    /// Runs a command in a running container; returns exit code and output.
    async fn exec(&self, id: &str, command: &[String]) -> RuntimeResult<ExecOutput>;
    /// Attaches to a created (or running) container's stdin and output;
    /// attached before the start, nothing the process writes is missed.
    /// Unbounded once attached (the stream lasts as long as the container).
    async fn attach_container(&self, id: &str) -> RuntimeResult<Attached> {
        Err(self.unsupported(&format!("attach to container {id}")))
    }
    /// Sets the size of a container's TTY.
    async fn resize_container(&self, id: &str, size: TerminalSize) -> RuntimeResult<()> {
        let _ = size;
        Err(self.unsupported(&format!("resize the terminal of container {id}")))
    }
    /// Starts a command in a running container with its stdin and output
    /// attached; returns the exec's id (for resize and exit code).
    async fn exec_attached(&self, id: &str, spec: &ExecSpec) -> RuntimeResult<(String, Attached)> {
        let _ = spec;
        Err(self.unsupported(&format!("run an interactive command in container {id}")))
    }
    async fn resize_exec(&self, exec_id: &str, size: TerminalSize) -> RuntimeResult<()> {
        let _ = size;
        Err(self.unsupported(&format!("resize the terminal of exec {exec_id}")))
    }
    /// How an `exec_attached` command ended (`None` while it runs or when
    /// the runtime cannot tell).
    async fn exec_exit_code(&self, exec_id: &str) -> RuntimeResult<Option<i64>> {
        Err(self.unsupported(&format!("read the exit code of exec {exec_id}")))
    }
    /// Containers carrying moat's labels (Docker) or moat's names (Apple).
    async fn list_containers(&self) -> RuntimeResult<Vec<ContainerInfo>>;

    /// Creates a network (subnet from moat's pool where supported).
    async fn create_network(&self, spec: &NetworkSpec) -> RuntimeResult<NetworkInfo>;
    /// Removes a network. Missing = success; attached containers = `InUse`.
    async fn remove_network(&self, name: &str) -> RuntimeResult<()>;
    /// Moat-managed networks, with their attached containers.
    async fn list_networks(&self) -> RuntimeResult<Vec<NetworkInfo>>;
    async fn inspect_network(&self, name: &str) -> RuntimeResult<NetworkInfo>;

    async fn create_volume(&self, spec: &VolumeSpec) -> RuntimeResult<()>;
    async fn remove_volume(&self, name: &str) -> RuntimeResult<()>;
    async fn list_volumes(&self) -> RuntimeResult<Vec<VolumeInfo>>;

    /// Objects left by moat's earlier (Go) implementation: labelled
    /// `moat.managed=true` or named `moat-…`, without any `dev.moat.*`
    /// label. Runtimes the Go implementation never used have none.
    async fn list_legacy(&self) -> RuntimeResult<LegacyObjects> {
        Ok(LegacyObjects::default())
    }

    /// The error of a call this runtime does not offer.
    fn unsupported(&self, what: &str) -> RuntimeError {
        RuntimeError::Unsupported {
            runtime: self.kind(),
            what: what.to_string(),
        }
    }
}

/// Per-call timeouts (runtime.md, daemon-and-reaper.md §5).
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// Ordinary calls (inspect, start, create container, ...).
    pub call: Duration,
    /// Network creation (30 s default): bounded on its own because a wedged
    /// runtime hangs there first.
    pub network_create: Duration,
    /// List calls.
    pub list: Duration,
    /// One removal.
    pub remove: Duration,
    /// A command run with `exec` (a build or a test may take minutes).
    pub exec: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            call: Duration::from_secs(30),
            network_create: Duration::from_secs(30),
            list: Duration::from_secs(30),
            remove: Duration::from_secs(5),
            exec: Duration::from_secs(600),
        }
    }
}

/// Runs `fut` with a timeout; on expiry, a `Timeout` error naming `op`.
pub async fn bounded<T>(
    runtime: RuntimeKind,
    op: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = RuntimeResult<T>>,
) -> RuntimeResult<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(RuntimeError::Timeout {
            runtime,
            op: op.to_string(),
            after: limit,
        }),
    }
}
