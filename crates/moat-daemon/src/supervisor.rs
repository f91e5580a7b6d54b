//! Creates, supervises and tears down runs (daemon-and-reaper.md §3). A run
//! is registered (`creating`, persisted) before its first runtime object
//! exists; its output is captured to `logs.jsonl` as it arrives; its exit
//! code and times are recorded; its objects are removed exactly once.

use std::time::Duration;

use chrono::Utc;
use moat_core::{RunMetadata, RunState};
use moat_runtime::RuntimeError;

use crate::deadline::DeadlineExceeded;
use crate::egress::EgressError;
use crate::firewall::{self};
use crate::grants::GrantError;
use crate::network::{self, NetworkError};

mod cleanup;
mod container;
mod holder;
pub(crate) use container::STRICT_DNS;
mod create;
mod proxy;
mod services;
mod stop;
mod watch;

pub(crate) use container::{agent_exec, command_user};

pub use cleanup::cleanup;
pub use create::{CreatedRun, Timings, create_run, create_run_reporting};
pub use proxy::reattach_proxy;
pub use services::project_volume;
pub use stop::stop_run;
pub use watch::supervise;

/// Where the workspace appears in the container.
pub const WORKSPACE_TARGET: &str = "/workspace";
/// Bound on waiting for the run's `.lock` (held only by a creating process).
pub(super) const RUN_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("workspace {0} does not exist or is not a directory")]
    MissingWorkspace(String),
    #[error("home file {path:?}: {reason}")]
    HomeFile { path: String, reason: String },
    #[error("image {image} is not available to {runtime}")]
    UnknownImage { image: String, runtime: String },
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error("{0} is not available on the kubernetes runtime in this version (docs/kubernetes.md)")]
    NotOnKubernetes(String),
    #[error("run {0} is not live")]
    NotLive(String),
    #[error("cannot destroy run {id}: {reason}")]
    StillOwned { id: String, reason: String },
    #[error("a live run is already named {name:?} ({id})")]
    NameTaken { name: String, id: String },
    #[error("run name {0:?} cannot name endpoints: with `ports:` a name may use only letters, digits and '-'")]
    NotAHostLabel(String),
    #[error("the runtime did not report the container's address, so its `ports:` cannot be routed")]
    NoAddress,
    #[error("mcp: servers are relayed by moat's proxy, which this daemon runs without")]
    McpWithoutProxy,
    #[error("{0}")]
    Kubernetes(String),
    #[error("strict run refused: its host cannot be closed off ({0})")]
    IsolationUnavailable(firewall::FirewallError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Deadline(#[from] DeadlineExceeded),
    #[error("{0}")]
    Store(#[from] moat_core::store::StoreError),
    #[error("{0}")]
    Registry(#[from] crate::registry::RegistryError),
    #[error("{0}")]
    Lock(#[from] moat_core::lock::LockError),
    #[error("{0}")]
    Egress(#[from] EgressError),
    #[error("{0}")]
    Grant(#[from] GrantError),
    #[error("{0}")]
    Build(#[from] crate::image_build::BuildError),
    #[error("service {0:?} is not one moat runs")]
    UnknownService(String),
    #[error("service {service} did not become ready: {reason}; its last log lines:\n{tail}")]
    ServiceNotReady {
        service: String,
        reason: String,
        tail: String,
    },
    #[error("the pre-run snapshot failed: {0}")]
    Snapshot(moat_core::snapshot::SnapshotError),
    #[error(
        "the pre-run snapshot of {0} did not finish within the {1:?} a run's creation may take; the run was undone"
    )]
    SnapshotTooSlow(String, Duration),
}

impl RunError {
    /// A next step for the user, when there is an obvious one.
    pub fn hint(&self) -> Option<String> {
        match self {
            RunError::UnknownImage { .. } => Some(
                "build the local base image with `scripts/base-image.sh` (or `--image moat-base:bookworm`), or `docker build` your own".into(),
            ),
            RunError::MissingWorkspace(_) => Some("pass an existing directory: `moat run PATH`".into()),
            RunError::NotOnKubernetes(_) => Some("drop it from the run, or run it with `--runtime docker`".into()),
            RunError::Grant(e) => e.hint(),
            RunError::ShuttingDown => Some("retry: the next command starts a new daemon".into()),
            RunError::IsolationUnavailable(_) => Some(
                "the daemon needs iptables and root to add the firewall rules; run it as root, or drop \
                 --require-isolation to accept a run whose host services stay reachable"
                    .into(),
            ),
            RunError::NameTaken { name, id } => Some(format!(
                "pick another name (`--name`), or stop the other run first: `moat stop {id}` ({name})"
            )),
            RunError::NotAHostLabel(_) => Some("rename the run, e.g. `--name my-app`".into()),
            RunError::StillOwned { id, .. } => Some(format!(
                "stop it with `moat stop {id}` and retry once it has exited and been cleaned up"
            )),
            RunError::Runtime(RuntimeError::Unavailable {
                runtime: moat_core::RuntimeKind::Kubernetes,
                ..
            }) => Some(
                "check the cluster with `kubectl cluster-info`; the daemon reads the KUBECONFIG it was started \
                 with (`moat daemon restart` picks up a new one)"
                    .into(),
            ),
            RunError::Runtime(RuntimeError::Unavailable { .. }) => {
                Some("start the container runtime (e.g. `systemctl start docker`) and check `moat doctor`".into())
            }
            RunError::Network(e) => Some(e.hint()),
            RunError::Build(crate::image_build::BuildError::HookFailed { hook, .. }) => Some(format!(
                "fix {hook} in moat.yaml (it runs while the image is built); `moat run --rebuild` builds again \
                 without the cache"
            )),
            RunError::Build(crate::image_build::BuildError::Failed { .. }) => Some(
                "fix the failing dependency in moat.yaml; `moat run --rebuild` builds again without the cache".into(),
            ),
            RunError::Build(_) => Some("docs/dependencies.md lists what `dependencies:` accepts".into()),
            RunError::ServiceNotReady { service, .. } => Some(format!(
                "check `services.{service}` in moat.yaml (env, ready_timeout); docs/services.md describes each service"
            )),
            RunError::Snapshot(_) | RunError::SnapshotTooSlow(..) => Some(
                "leave large or unreadable directories out with `snapshots.exclude.additional`, or turn the \
                 snapshot off with `snapshots.disabled: true` (docs/snapshots.md)"
                    .into(),
            ),
            RunError::Deadline(_) => Some(format!(
                "the container runtime may be wedged: `moat doctor` checks it, `{}` lists moat's networks",
                network::list_moat_networks(moat_core::RuntimeKind::Docker)
            )),
            _ => None,
        }
    }
}

pub(super) fn fail(meta: &mut RunMetadata, reason: &str) {
    meta.state = RunState::Failed;
    meta.failure = Some(reason.to_string());
    meta.exited_at.get_or_insert_with(Utc::now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_cluster_is_not_told_to_start_docker() {
        let unavailable = |runtime| {
            RunError::Runtime(RuntimeError::Unavailable {
                runtime,
                reason: "no answer".into(),
            })
            .hint()
            .unwrap_or_default()
        };
        let cluster = unavailable(moat_core::RuntimeKind::Kubernetes);
        assert!(
            cluster.contains("kubectl cluster-info") && !cluster.contains("docker"),
            "{cluster}"
        );
        assert!(unavailable(moat_core::RuntimeKind::Docker).contains("systemctl start docker"));
    }
}
