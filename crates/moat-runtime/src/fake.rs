//! An in-memory [`Runtime`] for tests of the daemon, supervisor and reaper:
//! containers, networks, volumes and images held in shared state, with call
//! recording, scripted failures, slow calls and scripted container runs.
//!
//! Every call goes through the same [`bounded`] timeouts as the real
//! backends, and all waiting uses tokio time, so tests with paused time see
//! slow calls time out without really waiting.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{
    Capabilities, ContainerInfo, ContainerSpec, ContainerStatus, ExecOutput, ImageInfo, NetworkInfo, NetworkSpec,
    OutputChunk, OutputStream, OutputStreamKind, Runtime, RuntimeError, RuntimeKind, RuntimeResult, Timeouts,
    VolumeInfo, VolumeSpec, bounded, labels,
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
        }
    }

    /// The timeout the real backends apply to this operation; `None` for
    /// `wait_container`, which is unbounded by contract.
    fn limit(self, timeouts: &Timeouts) -> Option<Duration> {
        match self {
            FakeOp::WaitContainer => None,
            FakeOp::CreateNetwork => Some(timeouts.network_create),
            FakeOp::ListImages | FakeOp::ListContainers | FakeOp::ListNetworks | FakeOp::ListVolumes => {
                Some(timeouts.list)
            }
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

#[derive(Default)]
struct State {
    /// Keyed by container id.
    containers: BTreeMap<String, FakeContainer>,
    /// Keyed by network name; `containers` is computed on read.
    networks: BTreeMap<String, NetworkInfo>,
    volumes: BTreeMap<String, VolumeInfo>,
    images: Vec<ImageInfo>,
    calls: Vec<FakeCall>,
    failures: HashMap<FakeOp, (FakeErrorKind, u32)>,
    delays: HashMap<FakeOp, Duration>,
    /// (container name or image, run), later entries win.
    scripts: Vec<(String, ScriptedRun)>,
    /// (program, result) for `exec`, later entries win.
    exec_results: Vec<(String, ExecOutput)>,
    serial: u64,
}

struct FakeContainer {
    info: ContainerInfo,
    script: Option<ScriptedRun>,
    /// When a scripted run exits on its own.
    exits_at: Option<Instant>,
    output: Vec<(DateTime<Utc>, OutputChunk)>,
    /// Bumped on every output or state change; dropped on removal.
    changed: watch::Sender<u64>,
}

impl FakeContainer {
    fn new(info: ContainerInfo, script: Option<ScriptedRun>) -> Self {
        FakeContainer {
            info,
            script,
            exits_at: None,
            output: Vec::new(),
            changed: watch::Sender::new(0),
        }
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn has_exited(&self) -> bool {
        matches!(self.info.status, ContainerStatus::Exited | ContainerStatus::Dead)
    }

    /// Applies a scripted exit whose time has come.
    fn settle(&mut self, now: Instant) {
        let due = self.exits_at.is_some_and(|at| at <= now);
        if due && self.info.status.is_running() {
            let code = self.script.as_ref().map_or(0, |s| s.exit_code);
            self.exit(code);
        }
    }

    fn exit(&mut self, code: i64) {
        self.info.status = ContainerStatus::Exited;
        self.info.exit_code = Some(code);
        self.exits_at = None;
        self.notify();
    }

    fn push_output(&mut self, stream: OutputStreamKind, text: &str) {
        let chunk = OutputChunk {
            stream,
            data: Bytes::copy_from_slice(text.as_bytes()),
        };
        self.output.push((Utc::now(), chunk));
        self.notify();
    }
}

impl State {
    fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// The id of the container called `id_or_name` (by id or by name).
    fn container_key(&self, id_or_name: &str) -> Option<String> {
        if self.containers.contains_key(id_or_name) {
            return Some(id_or_name.to_string());
        }
        self.containers
            .iter()
            .find(|(_, c)| c.info.name == id_or_name)
            .map(|(id, _)| id.clone())
    }

    fn container_mut(&mut self, id_or_name: &str) -> RuntimeResult<&mut FakeContainer> {
        let key = self
            .container_key(id_or_name)
            .ok_or_else(|| not_found(format!("container {id_or_name}")))?;
        let container = self
            .containers
            .get_mut(&key)
            .ok_or_else(|| not_found(format!("container {id_or_name}")))?;
        container.settle(Instant::now());
        Ok(container)
    }

    fn network_key(&self, name_or_id: &str) -> Option<String> {
        if self.networks.contains_key(name_or_id) {
            return Some(name_or_id.to_string());
        }
        self.networks
            .values()
            .find(|n| n.id == name_or_id)
            .map(|n| n.name.clone())
    }

    /// A network with its attached containers (stopped ones included).
    fn network_view(&self, name: &str) -> Option<NetworkInfo> {
        let mut network = self.networks.get(name)?.clone();
        network.containers = self
            .containers
            .values()
            .filter(|c| c.info.networks.iter().any(|n| n == name))
            .map(|c| c.info.name.clone())
            .collect();
        Some(network)
    }

    fn has_image(&self, image: &str) -> bool {
        self.images
            .iter()
            .any(|i| i.id == image || i.tags.iter().any(|t| t == image))
    }

    fn script_for(&self, spec: &ContainerSpec) -> Option<ScriptedRun> {
        self.scripts
            .iter()
            .rev()
            .find(|(pattern, _)| *pattern == spec.name || *pattern == spec.image)
            .map(|(_, run)| run.clone())
    }

    /// Consumes one scripted failure of `op`, if any is left.
    fn take_failure(&mut self, op: FakeOp) -> Option<FakeErrorKind> {
        let (kind, left) = self.failures.get_mut(&op)?;
        let kind = *kind;
        *left -= 1;
        if *left == 0 {
            self.failures.remove(&op);
        }
        Some(kind)
    }

    fn settle_all(&mut self) {
        let now = Instant::now();
        for container in self.containers.values_mut() {
            container.settle(now);
        }
    }
}

fn not_found(what: String) -> RuntimeError {
    RuntimeError::NotFound { runtime: KIND, what }
}

fn in_use(what: String, detail: String) -> RuntimeError {
    RuntimeError::InUse {
        runtime: KIND,
        what,
        detail,
    }
}

fn injected(kind: FakeErrorKind, op: FakeOp, target: &str, limit: Duration) -> RuntimeError {
    let detail = "injected failure".to_string();
    match kind {
        FakeErrorKind::NotFound => not_found(target.to_string()),
        FakeErrorKind::InUse => in_use(target.to_string(), detail),
        FakeErrorKind::Timeout => RuntimeError::Timeout {
            runtime: KIND,
            op: op_label(op, target),
            after: limit,
        },
        FakeErrorKind::Unavailable => RuntimeError::Unavailable {
            runtime: KIND,
            reason: detail,
        },
        FakeErrorKind::AddressSpaceExhausted => RuntimeError::AddressSpaceExhausted {
            runtime: KIND,
            network: target.to_string(),
            pool: "fake pool".to_string(),
        },
        FakeErrorKind::Other => RuntimeError::Other {
            runtime: KIND,
            op: op_label(op, target),
            message: detail,
        },
    }
}

/// `op target`, or just `op` when there is no target: what timed out.
fn op_label(op: FakeOp, target: &str) -> String {
    if target.is_empty() {
        op.as_str().to_string()
    } else {
        format!("{} {target}", op.as_str())
    }
}

fn is_managed(labels: &BTreeMap<String, String>) -> bool {
    labels.get(labels::MANAGED).is_some_and(|v| v == "true")
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
            privileged: true,
        };
        Self::with_config(timeouts, capabilities)
    }

    /// A runtime that reports `capabilities` (e.g. to imitate Apple's).
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
                    return Ok(container.info.exit_code);
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
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        None => {
            let _ = changed.changed().await;
        }
    }
}

// === impl Runtime ===

#[async_trait]
impl Runtime for FakeRuntime {
    fn kind(&self) -> RuntimeKind {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        self.shared.capabilities.clone()
    }

    fn endpoint(&self) -> String {
        "fake://in-memory".to_string()
    }

    fn host_address(&self) -> Option<String> {
        Some("host.fake.internal".to_string())
    }

    async fn ping(&self) -> RuntimeResult<()> {
        self.call(FakeOp::Ping, "", |_| Ok(())).await
    }

    async fn image_exists(&self, image: &str) -> RuntimeResult<bool> {
        self.call(FakeOp::ImageExists, image, |s| Ok(s.has_image(image))).await
    }

    async fn list_images(&self) -> RuntimeResult<Vec<ImageInfo>> {
        self.call(FakeOp::ListImages, "", |s| Ok(s.images.clone())).await
    }

    async fn remove_image(&self, image: &str) -> RuntimeResult<()> {
        self.call(FakeOp::RemoveImage, image, |s| {
            s.images.retain(|i| i.id != image && !i.tags.iter().any(|t| t == image));
            Ok(())
        })
        .await
    }

    async fn create_container(&self, spec: &ContainerSpec) -> RuntimeResult<String> {
        self.call(FakeOp::CreateContainer, &spec.name, |s| {
            if !s.has_image(&spec.image) {
                return Err(not_found(format!("image {}", spec.image)));
            }
            if s.container_key(&spec.name).is_some() {
                return Err(in_use(
                    format!("container name {}", spec.name),
                    "a container with this name already exists".to_string(),
                ));
            }
            if let Some(network) = &spec.network
                && s.network_key(network).is_none()
            {
                return Err(not_found(format!("network {network}")));
            }
            let id = format!("fake-container-{}", s.next_serial());
            let info = ContainerInfo {
                id: id.clone(),
                name: spec.name.clone(),
                image: spec.image.clone(),
                status: ContainerStatus::Created,
                exit_code: None,
                labels: spec.labels.clone(),
                networks: spec.network.iter().cloned().collect(),
                created_at: Some(Utc::now()),
            };
            let script = s.script_for(spec);
            s.containers.insert(id.clone(), FakeContainer::new(info, script));
            Ok(id)
        })
        .await
    }

    async fn start_container(&self, id: &str) -> RuntimeResult<()> {
        self.call(FakeOp::StartContainer, id, |s| {
            let container = s.container_mut(id)?;
            if container.info.status.is_running() {
                return Ok(());
            }
            container.info.status = ContainerStatus::Running;
            container.info.exit_code = None;
            if let Some(script) = container.script.clone() {
                container.exits_at = Some(Instant::now() + script.run_for);
                for (stream, text) in &script.output {
                    container.push_output(*stream, text);
                }
            }
            container.notify();
            Ok(())
        })
        .await
    }

    async fn stop_container(&self, id: &str, _grace: Duration) -> RuntimeResult<()> {
        self.call(FakeOp::StopContainer, id, |s| {
            let container = s.container_mut(id)?;
            if container.info.status.is_running() {
                container.exit(STOPPED_EXIT_CODE);
            }
            Ok(())
        })
        .await
    }

    async fn remove_container(&self, id: &str) -> RuntimeResult<()> {
        self.call(FakeOp::RemoveContainer, id, |s| {
            if let Some(key) = s.container_key(id) {
                s.containers.remove(&key);
            }
            Ok(())
        })
        .await
    }

    async fn wait_container(&self, id: &str) -> RuntimeResult<Option<i64>> {
        let key = self
            .call(FakeOp::WaitContainer, id, |s| {
                s.container_key(id).ok_or_else(|| not_found(format!("container {id}")))
            })
            .await?;
        self.wait_for_exit(&key).await
    }

    async fn inspect_container(&self, id: &str) -> RuntimeResult<ContainerInfo> {
        self.call(FakeOp::InspectContainer, id, |s| Ok(s.container_mut(id)?.info.clone()))
            .await
    }

    async fn logs(&self, id: &str, follow: bool, since: Option<DateTime<Utc>>) -> RuntimeResult<OutputStream> {
        let key = self
            .call(FakeOp::Logs, id, |s| {
                s.container_key(id).ok_or_else(|| not_found(format!("container {id}")))
            })
            .await?;
        let cursor = LogCursor {
            fake: self.clone(),
            key,
            next: 0,
            follow,
            since,
        };
        let stream = futures_util::stream::unfold(cursor, |mut cursor| async move {
            let chunk = cursor.next_chunk().await?;
            Some((Ok(chunk), cursor))
        });
        Ok(Box::pin(stream))
    }

    async fn exec(&self, id: &str, command: &[String]) -> RuntimeResult<ExecOutput> {
        self.call(FakeOp::Exec, id, |s| {
            let container = s.container_mut(id)?;
            if !container.info.status.is_running() {
                return Err(RuntimeError::Other {
                    runtime: KIND,
                    op: format!("exec in {id}"),
                    message: "container is not running".to_string(),
                });
            }
            let program = command.first().map(String::as_str).unwrap_or_default();
            let scripted = s
                .exec_results
                .iter()
                .rev()
                .find(|(p, _)| p == program)
                .map(|(_, result)| result.clone());
            Ok(scripted.unwrap_or(ExecOutput {
                exit_code: Some(0),
                stdout: Vec::new(),
                stderr: Vec::new(),
            }))
        })
        .await
    }

    async fn list_containers(&self) -> RuntimeResult<Vec<ContainerInfo>> {
        self.call(FakeOp::ListContainers, "", |s| {
            s.settle_all();
            Ok(s.containers
                .values()
                .filter(|c| is_managed(&c.info.labels))
                .map(|c| c.info.clone())
                .collect())
        })
        .await
    }

    async fn create_network(&self, spec: &NetworkSpec) -> RuntimeResult<NetworkInfo> {
        self.call(FakeOp::CreateNetwork, &spec.name, |s| {
            if s.networks.contains_key(&spec.name) {
                return Err(in_use(
                    format!("network {}", spec.name),
                    "a network with this name already exists".to_string(),
                ));
            }
            let serial = s.next_serial();
            let block = serial % 256;
            let info = NetworkInfo {
                id: format!("fake-network-{serial}"),
                name: spec.name.clone(),
                labels: spec.labels.clone(),
                subnet: Some(format!("10.209.{block}.0/24")),
                gateway: Some(format!("10.209.{block}.1")),
                internal: spec.internal,
                containers: Vec::new(),
            };
            s.networks.insert(spec.name.clone(), info.clone());
            Ok(info)
        })
        .await
    }

    async fn remove_network(&self, name: &str) -> RuntimeResult<()> {
        self.call(FakeOp::RemoveNetwork, name, |s| {
            let Some(key) = s.network_key(name) else {
                return Ok(());
            };
            let attached = s.network_view(&key).map(|n| n.containers).unwrap_or_default();
            if !attached.is_empty() {
                return Err(in_use(
                    format!("network {name}"),
                    format!("containers still attached: {}", attached.join(", ")),
                ));
            }
            s.networks.remove(&key);
            Ok(())
        })
        .await
    }

    async fn list_networks(&self) -> RuntimeResult<Vec<NetworkInfo>> {
        self.call(FakeOp::ListNetworks, "", |s| {
            Ok(s.networks
                .values()
                .filter(|n| is_managed(&n.labels))
                .filter_map(|n| s.network_view(&n.name))
                .collect())
        })
        .await
    }

    async fn inspect_network(&self, name: &str) -> RuntimeResult<NetworkInfo> {
        self.call(FakeOp::InspectNetwork, name, |s| {
            s.network_key(name)
                .and_then(|key| s.network_view(&key))
                .ok_or_else(|| not_found(format!("network {name}")))
        })
        .await
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> RuntimeResult<()> {
        self.call(FakeOp::CreateVolume, &spec.name, |s| {
            s.volumes.entry(spec.name.clone()).or_insert_with(|| VolumeInfo {
                name: spec.name.clone(),
                labels: spec.labels.clone(),
            });
            Ok(())
        })
        .await
    }

    async fn remove_volume(&self, name: &str) -> RuntimeResult<()> {
        self.call(FakeOp::RemoveVolume, name, |s| {
            s.volumes.remove(name);
            Ok(())
        })
        .await
    }

    async fn list_volumes(&self) -> RuntimeResult<Vec<VolumeInfo>> {
        self.call(FakeOp::ListVolumes, "", |s| {
            Ok(s.volumes.values().filter(|v| is_managed(&v.labels)).cloned().collect())
        })
        .await
    }
}

// === logs ===

/// Position of one `logs` stream in a container's output.
struct LogCursor {
    fake: FakeRuntime,
    key: String,
    next: usize,
    follow: bool,
    since: Option<DateTime<Utc>>,
}

impl LogCursor {
    /// The next chunk; `None` at the end (not following and caught up, the
    /// container exited and everything was read, or it was removed).
    async fn next_chunk(&mut self) -> Option<OutputChunk> {
        loop {
            let (mut changed, exits_at) = self.fake.watch_container(&self.key)?;
            {
                let mut state = self.fake.lock();
                let container = state.container_mut(&self.key).ok()?;
                while let Some((at, chunk)) = container.output.get(self.next) {
                    self.next += 1;
                    if self.since.is_none_or(|since| *at >= since) {
                        return Some(chunk.clone());
                    }
                }
                if !self.follow || container.has_exited() {
                    return None;
                }
            }
            wait_for_change(&mut changed, exits_at).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn run_spec(name: &str, network: Option<&str>) -> ContainerSpec {
        ContainerSpec {
            name: name.to_string(),
            image: "debian:bookworm-slim".to_string(),
            network: network.map(str::to_string),
            labels: labels::for_run("home", name, labels::role::MAIN),
            ..ContainerSpec::default()
        }
    }

    fn net_spec(name: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.to_string(),
            labels: labels::for_run("home", "run_0123456789ab", labels::role::NETWORK),
            internal: false,
        }
    }

    fn fake_with_image() -> FakeRuntime {
        let fake = FakeRuntime::new();
        fake.add_image("debian:bookworm-slim");
        fake
    }

    async fn collect_text(stream: OutputStream) -> Vec<(OutputStreamKind, String)> {
        stream
            .map(|chunk| {
                let chunk = chunk.unwrap();
                (chunk.stream, String::from_utf8(chunk.data.to_vec()).unwrap())
            })
            .collect()
            .await
    }

    #[tokio::test]
    async fn removing_missing_objects_succeeds() {
        let fake = FakeRuntime::new();
        fake.remove_container("nope").await.unwrap();
        fake.remove_network("nope").await.unwrap();
        fake.remove_volume("nope").await.unwrap();
        fake.remove_image("nope").await.unwrap();
        assert!(fake.inspect_container("nope").await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn network_with_attached_container_is_in_use_until_it_is_removed() {
        let fake = fake_with_image();
        fake.create_network(&net_spec("moat-run_0123456789ab")).await.unwrap();
        let id = fake
            .create_container(&run_spec("run_0123456789ab", Some("moat-run_0123456789ab")))
            .await
            .unwrap();
        let listed = fake.list_networks().await.unwrap();
        assert_eq!(listed[0].containers, vec!["run_0123456789ab".to_string()]);

        let err = fake.remove_network("moat-run_0123456789ab").await.unwrap_err();
        assert!(matches!(err, RuntimeError::InUse { .. }), "{err}");

        fake.remove_container(&id).await.unwrap();
        fake.remove_network("moat-run_0123456789ab").await.unwrap();
        assert!(fake.networks().is_empty());
    }

    #[tokio::test]
    async fn create_needs_the_image_and_the_network() {
        let fake = FakeRuntime::new();
        let err = fake
            .create_container(&run_spec("run_0123456789ab", None))
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
        fake.add_image("debian:bookworm-slim");
        let err = fake
            .create_container(&run_spec("run_0123456789ab", Some("missing")))
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[tokio::test]
    async fn scripted_failures_apply_exactly_the_given_number_of_times() {
        let fake = FakeRuntime::new();
        fake.fail_next(FakeOp::Ping, FakeErrorKind::Unavailable, 2);
        assert!(matches!(fake.ping().await, Err(RuntimeError::Unavailable { .. })));
        assert!(fake.ping().await.is_err());
        fake.ping().await.unwrap();
        assert_eq!(fake.call_count(FakeOp::Ping), 3);
    }

    #[tokio::test]
    async fn calls_are_recorded_with_their_targets() {
        let fake = fake_with_image();
        fake.create_network(&net_spec("moat-run_0123456789ab")).await.unwrap();
        fake.remove_container("run_0123456789ab").await.unwrap();
        assert_eq!(
            fake.calls(),
            vec![
                FakeCall {
                    op: FakeOp::CreateNetwork,
                    target: "moat-run_0123456789ab".to_string()
                },
                FakeCall {
                    op: FakeOp::RemoveContainer,
                    target: "run_0123456789ab".to_string()
                },
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_call_times_out_with_the_backend_timeout() {
        let timeouts = Timeouts {
            network_create: Duration::from_secs(30),
            ..Timeouts::default()
        };
        let fake = FakeRuntime::with_timeouts(timeouts);
        fake.delay(FakeOp::CreateNetwork, Duration::from_secs(3600));
        let started = Instant::now();
        let err = fake
            .create_network(&net_spec("moat-run_0123456789ab"))
            .await
            .unwrap_err();
        match err {
            RuntimeError::Timeout { op, after, .. } => {
                assert_eq!(op, "create_network moat-run_0123456789ab");
                assert_eq!(after, Duration::from_secs(30));
            }
            other => panic!("expected a timeout, got {other}"),
        }
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert!(fake.networks().is_empty());

        fake.delay(FakeOp::CreateNetwork, Duration::from_secs(2));
        fake.create_network(&net_spec("moat-run_0123456789ab")).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_run_prints_then_exits_after_its_duration() {
        let fake = fake_with_image();
        fake.script_container(
            "debian:bookworm-slim",
            ScriptedRun {
                output: vec![
                    (OutputStreamKind::Stdout, "hello\n".to_string()),
                    (OutputStreamKind::Stderr, "oops\n".to_string()),
                ],
                exit_code: 3,
                run_for: Duration::from_secs(5),
            },
        );
        let id = fake
            .create_container(&run_spec("run_0123456789ab", None))
            .await
            .unwrap();
        fake.start_container(&id).await.unwrap();
        let started = Instant::now();
        let logs = fake.logs(&id, true, None).await.unwrap();
        let output = collect_text(logs).await;
        assert_eq!(
            output,
            vec![
                (OutputStreamKind::Stdout, "hello\n".to_string()),
                (OutputStreamKind::Stderr, "oops\n".to_string()),
            ]
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(fake.wait_container(&id).await.unwrap(), Some(3));
        let info = fake.inspect_container(&id).await.unwrap();
        assert_eq!(info.status, ContainerStatus::Exited);
    }

    #[tokio::test(start_paused = true)]
    async fn exit_container_ends_wait_and_follow() {
        let fake = fake_with_image();
        let id = fake
            .create_container(&run_spec("run_0123456789ab", None))
            .await
            .unwrap();
        fake.start_container(&id).await.unwrap();
        let waiter = tokio::spawn({
            let fake = fake.clone();
            let id = id.clone();
            async move { fake.wait_container(&id).await }
        });
        let logs = fake.logs(&id, true, None).await.unwrap();
        let reader = tokio::spawn(collect_text(logs));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished());
        assert!(fake.push_output(&id, OutputStreamKind::Stdout, "late\n"));
        assert!(fake.exit_container(&id, 42));
        assert_eq!(waiter.await.unwrap().unwrap(), Some(42));
        assert_eq!(
            reader.await.unwrap(),
            vec![(OutputStreamKind::Stdout, "late\n".to_string())]
        );
    }

    #[tokio::test]
    async fn stop_records_a_kill_exit_code() {
        let fake = fake_with_image();
        let id = fake
            .create_container(&run_spec("run_0123456789ab", None))
            .await
            .unwrap();
        fake.start_container(&id).await.unwrap();
        fake.stop_container(&id, Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            fake.wait_container("run_0123456789ab").await.unwrap(),
            Some(STOPPED_EXIT_CODE)
        );
    }

    #[tokio::test]
    async fn inserted_containers_are_listed_when_labelled() {
        let fake = FakeRuntime::new();
        let labelled = ContainerInfo {
            id: "abc".to_string(),
            name: "run_0123456789ab".to_string(),
            image: "x".to_string(),
            status: ContainerStatus::Running,
            exit_code: None,
            labels: labels::for_run("home", "run_0123456789ab", labels::role::MAIN),
            networks: Vec::new(),
            created_at: None,
        };
        let foreign = ContainerInfo {
            id: "def".to_string(),
            name: "other".to_string(),
            labels: BTreeMap::new(),
            ..labelled.clone()
        };
        fake.insert_container(labelled.clone());
        fake.insert_container(foreign);
        assert_eq!(fake.list_containers().await.unwrap(), vec![labelled]);
        assert!(fake.exit_container("run_0123456789ab", 0));
        assert_eq!(fake.wait_container("abc").await.unwrap(), Some(0));
    }

    #[tokio::test]
    async fn logs_without_follow_end_at_current_output() {
        let fake = fake_with_image();
        let id = fake
            .create_container(&run_spec("run_0123456789ab", None))
            .await
            .unwrap();
        fake.start_container(&id).await.unwrap();
        fake.push_output(&id, OutputStreamKind::Stdout, "a");
        let cutoff = Utc::now() + chrono::Duration::milliseconds(5);
        tokio::time::sleep(Duration::from_millis(10)).await;
        fake.push_output(&id, OutputStreamKind::Stdout, "b");
        let all = collect_text(fake.logs(&id, false, None).await.unwrap()).await;
        assert_eq!(all.len(), 2);
        let recent = collect_text(fake.logs(&id, false, Some(cutoff)).await.unwrap()).await;
        assert_eq!(recent, vec![(OutputStreamKind::Stdout, "b".to_string())]);
    }
}
