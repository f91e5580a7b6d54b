//! An in-memory [`Runtime`] for tests of the daemon, supervisor and reaper:
//! containers, networks, volumes and images held in shared state, with call
//! recording, scripted failures, slow calls and scripted container runs.
//!
//! Every call goes through the same [`bounded`] timeouts as the real
//! backends, and all waiting uses tokio time, so tests with paused time see
//! slow calls time out without really waiting.

mod runtime;
mod state;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use state::{FakeContainer, State, injected, not_found, op_label};

use crate::{
    Capabilities, ContainerInfo, ExecOutput, ImageInfo, NetworkInfo, OutputStreamKind, RuntimeKind, RuntimeResult,
    Timeouts, VolumeInfo, bounded,
};

/// Exit code recorded when a running container is stopped (killed).
pub const STOPPED_EXIT_CODE: i64 = 137;

const KIND: RuntimeKind = RuntimeKind::Fake;

/// The operations of [`Runtime`], for recording and scripting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FakeOp {
    Ping,
    ImageExists,
    ListImages,
    RemoveImage,
    CreateContainer,
    StartContainer,
    StopContainer,
    RemoveContainer,
    WaitContainer,
    InspectContainer,
    Logs,
    Exec,
    ListContainers,
    CreateNetwork,
    RemoveNetwork,
    ListNetworks,
    InspectNetwork,
    CreateVolume,
    RemoveVolume,
    ListVolumes,
    ListLegacy,
}

impl FakeOp {
    /// The trait method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            FakeOp::Ping => "ping",
            FakeOp::ImageExists => "image_exists",
            FakeOp::ListImages => "list_images",
            FakeOp::RemoveImage => "remove_image",
            FakeOp::CreateContainer => "create_container",
            FakeOp::StartContainer => "start_container",
            FakeOp::StopContainer => "stop_container",
            FakeOp::RemoveContainer => "remove_container",
            FakeOp::WaitContainer => "wait_container",
            FakeOp::InspectContainer => "inspect_container",
            FakeOp::Logs => "logs",
            FakeOp::Exec => "exec",
            FakeOp::ListContainers => "list_containers",
            FakeOp::CreateNetwork => "create_network",
            FakeOp::RemoveNetwork => "remove_network",
            FakeOp::ListNetworks => "list_networks",
            FakeOp::InspectNetwork => "inspect_network",
            FakeOp::CreateVolume => "create_volume",
            FakeOp::RemoveVolume => "remove_volume",
            FakeOp::ListVolumes => "list_volumes",
            FakeOp::ListLegacy => "list_legacy",
        }
    }

    /// The timeout the real backends apply to this operation; `None` for
    /// `wait_container`, which is unbounded by contract.
    fn limit(self, timeouts: &Timeouts) -> Option<Duration> {
        match self {
            FakeOp::WaitContainer => None,
            FakeOp::Exec => Some(timeouts.exec),
            FakeOp::CreateNetwork => Some(timeouts.network_create),
            FakeOp::ListImages
            | FakeOp::ListContainers
            | FakeOp::ListNetworks
            | FakeOp::ListVolumes
            | FakeOp::ListLegacy => Some(timeouts.list),
            FakeOp::RemoveImage | FakeOp::RemoveContainer | FakeOp::RemoveNetwork | FakeOp::RemoveVolume => {
                Some(timeouts.remove)
            }
            _ => Some(timeouts.call),
        }
    }
}

/// Which [`RuntimeError`] a scripted failure produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeErrorKind {
    NotFound,
    InUse,
    Timeout,
    Unavailable,
    AddressSpaceExhausted,
    Other,
}

/// One recorded call: the operation and what it was about (an id, a name,
/// an image; empty for list calls and `ping`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeCall {
    pub op: FakeOp,
    pub target: String,
}

/// What a container does once started: prints `output` at once, then exits
/// with `exit_code` after `run_for`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptedRun {
    pub output: Vec<(OutputStreamKind, String)>,
    pub exit_code: i64,
    pub run_for: Duration,
}

/// Cheap, cloneable handle to one in-memory runtime.
#[derive(Clone)]
pub struct FakeRuntime {
    shared: Arc<Shared>,
}

struct Shared {
    timeouts: Timeouts,
    capabilities: Capabilities,
    state: Mutex<State>,
}

// === impl FakeRuntime: test controls ===

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeRuntime {
    /// An empty runtime with default timeouts and every capability.
    pub fn new() -> Self {
        Self::with_timeouts(Timeouts::default())
    }

    pub fn with_timeouts(timeouts: Timeouts) -> Self {
        let capabilities = Capabilities {
            labels: true,
            named_volumes: true,
            exit_codes: true,
            host_network: true,
            internal_networks: true,
            shared_network_namespace: true,
            privileged: true,
            gateway_needs_a_container: false,
        };
        Self::with_config(timeouts, capabilities)
    }

    /// A runtime that reports `capabilities` (e.g. to imitate Apple's);
    /// without `exit_codes`, `wait_container` answers `None` like Apple's.
    pub fn with_config(timeouts: Timeouts, capabilities: Capabilities) -> Self {
        FakeRuntime {
            shared: Arc::new(Shared {
                timeouts,
                capabilities,
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// How many calls of `op` were made.
    pub fn call_count(&self, op: FakeOp) -> usize {
        self.lock().calls.iter().filter(|c| c.op == op).count()
    }

    /// Makes the next `times` calls of `op` fail with `kind` (replacing any
    /// failures still scripted for `op`).
    pub fn fail_next(&self, op: FakeOp, kind: FakeErrorKind, times: u32) {
        let mut state = self.lock();
        if times == 0 {
            state.failures.remove(&op);
        } else {
            state.failures.insert(op, (kind, times));
        }
    }

    /// Makes every later call of `op` take `delay` (tokio time) before doing
    /// anything; `Duration::ZERO` removes the delay.
    pub fn delay(&self, op: FakeOp, delay: Duration) {
        let mut state = self.lock();
        if delay.is_zero() {
            state.delays.remove(&op);
        } else {
            state.delays.insert(op, delay);
        }
    }

    /// Containers created later whose name or image equals `name_or_image`
    /// follow `run` once started.
    pub fn script_container(&self, name_or_image: &str, run: ScriptedRun) {
        self.lock().scripts.push((name_or_image.to_string(), run));
    }

    /// `exec` of a command whose program is `program` returns `result`
    /// (by default every exec succeeds with no output).
    pub fn script_exec(&self, program: &str, result: ExecOutput) {
        self.lock().exec_results.push((program.to_string(), result));
    }

    /// Makes `image` exist (by tag).
    pub fn add_image(&self, image: &str) {
        let mut state = self.lock();
        if state.has_image(image) {
            return;
        }
        let serial = state.next_serial();
        state.images.push(ImageInfo {
            id: format!("sha256:fake-image-{serial}"),
            tags: vec![image.to_string()],
            size: None,
            created: None,
        });
    }

    /// Adds a container as if it already existed (e.g. created by an earlier
    /// daemon). A `Running` one runs until stopped or [`Self::exit_container`].
    pub fn insert_container(&self, info: ContainerInfo) {
        let id = info.id.clone();
        self.lock().containers.insert(id, FakeContainer::new(info, None));
    }

    /// Adds a network as if it already existed; its `containers` field is
    /// ignored (attachment comes from the containers' `networks`).
    pub fn insert_network(&self, info: NetworkInfo) {
        self.lock().networks.insert(info.name.clone(), info);
    }

    /// Adds a volume as if it already existed.
    pub fn insert_volume(&self, info: VolumeInfo) {
        self.lock().volumes.insert(info.name.clone(), info);
    }

    /// Appends output to a container, as if it printed it now. Returns
    /// whether the container exists.
    pub fn push_output(&self, id_or_name: &str, stream: OutputStreamKind, text: &str) -> bool {
        let mut state = self.lock();
        match state.container_mut(id_or_name) {
            Ok(container) => {
                container.push_output(stream, text);
                true
            }
            Err(_) => false,
        }
    }

    /// Ends a running container with `code`. Returns whether it was running.
    pub fn exit_container(&self, id_or_name: &str, code: i64) -> bool {
        let mut state = self.lock();
        match state.container_mut(id_or_name) {
            Ok(container) if container.info.status.is_running() => {
                container.exit(code);
                true
            }
            _ => false,
        }
    }

    /// A container's current description, if it exists.
    pub fn container(&self, id_or_name: &str) -> Option<ContainerInfo> {
        let mut state = self.lock();
        state.container_mut(id_or_name).ok().map(|c| c.info.clone())
    }

    /// Every container, moat's or not.
    pub fn containers(&self) -> Vec<ContainerInfo> {
        let mut state = self.lock();
        state.settle_all();
        state.containers.values().map(|c| c.info.clone()).collect()
    }

    /// Every network, moat's or not, with attached containers.
    pub fn networks(&self) -> Vec<NetworkInfo> {
        let state = self.lock();
        state
            .networks
            .keys()
            .filter_map(|name| state.network_view(name))
            .collect()
    }

    /// Every volume, moat's or not.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        self.lock().volumes.values().cloned().collect()
    }

    // === call plumbing ===

    /// Records the call, then (bounded by the op's timeout) applies the
    /// scripted delay and failure and finally `body` on the state.
    async fn call<T>(
        &self,
        op: FakeOp,
        target: &str,
        body: impl FnOnce(&mut State) -> RuntimeResult<T>,
    ) -> RuntimeResult<T> {
        let delay = {
            let mut state = self.lock();
            state.calls.push(FakeCall {
                op,
                target: target.to_string(),
            });
            state.delays.get(&op).copied()
        };
        let limit = op.limit(&self.shared.timeouts);
        let work = async {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let mut state = self.lock();
            if let Some(kind) = state.take_failure(op) {
                return Err(injected(kind, op, target, limit.unwrap_or_default()));
            }
            body(&mut state)
        };
        match limit {
            Some(limit) => bounded(KIND, &op_label(op, target), limit, work).await,
            None => work.await,
        }
    }

    /// What to await before looking at container `key` again: its change
    /// notification and its scripted exit time.
    fn watch_container(&self, key: &str) -> Option<(watch::Receiver<u64>, Option<Instant>)> {
        let state = self.lock();
        let container = state.containers.get(key)?;
        Some((container.changed.subscribe(), container.exits_at))
    }

    /// The exit code once container `key` has exited.
    async fn wait_for_exit(&self, key: &str) -> RuntimeResult<Option<i64>> {
        loop {
            let (mut changed, exits_at) = self
                .watch_container(key)
                .ok_or_else(|| not_found(format!("container {key} (removed while waiting)")))?;
            {
                let mut state = self.lock();
                let container = state.container_mut(key)?;
                if container.has_exited() {
                    let reported = self.shared.capabilities.exit_codes;
                    return Ok(container.info.exit_code.filter(|_| reported));
                }
            }
            wait_for_change(&mut changed, exits_at).await;
        }
    }
}

/// Returns when `changed` fires, its sender is dropped, or `deadline` passes.
async fn wait_for_change(changed: &mut watch::Receiver<u64>, deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => {
            tokio::select! {
                _ = changed.changed() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
        None => {
            let _ = changed.changed().await;
        }
    }
}
