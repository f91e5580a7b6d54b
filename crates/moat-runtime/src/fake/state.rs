//! The fake's shared state: its objects, scripts and recorded calls, and
//! the errors it produces.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{
    ContainerInfo, ContainerSpec, ContainerStatus, ExecOutput, ImageInfo, NetworkInfo, OutputChunk, OutputStreamKind,
    RuntimeError, RuntimeResult, VolumeInfo, labels,
};

use super::{FakeCall, FakeErrorKind, FakeOp, KIND, ScriptedRun};

#[derive(Default)]
pub(super) struct State {
    /// Keyed by container id.
    pub(super) containers: BTreeMap<String, FakeContainer>,
    /// Keyed by network name; `containers` is computed on read.
    pub(super) networks: BTreeMap<String, NetworkInfo>,
    pub(super) volumes: BTreeMap<String, VolumeInfo>,
    pub(super) images: Vec<ImageInfo>,
    pub(super) calls: Vec<FakeCall>,
    pub(super) failures: HashMap<FakeOp, (FakeErrorKind, u32)>,
    pub(super) delays: HashMap<FakeOp, Duration>,
    /// (container name or image, run), later entries win.
    pub(super) scripts: Vec<(String, ScriptedRun)>,
    /// (program, result) for `exec`, later entries win.
    pub(super) exec_results: Vec<(String, ExecOutput)>,
    pub(super) serial: u64,
}

pub(super) struct FakeContainer {
    pub(super) info: ContainerInfo,
    pub(super) script: Option<ScriptedRun>,
    /// When a scripted run exits on its own.
    pub(super) exits_at: Option<Instant>,
    pub(super) output: Vec<(DateTime<Utc>, OutputChunk)>,
    /// Bumped on every output or state change; dropped on removal.
    pub(super) changed: watch::Sender<u64>,
}

impl FakeContainer {
    pub(super) fn new(info: ContainerInfo, script: Option<ScriptedRun>) -> Self {
        FakeContainer {
            info,
            script,
            exits_at: None,
            output: Vec::new(),
            changed: watch::Sender::new(0),
        }
    }

    pub(super) fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    pub(super) fn has_exited(&self) -> bool {
        matches!(self.info.status, ContainerStatus::Exited | ContainerStatus::Dead)
    }

    /// Applies a scripted exit whose time has come.
    pub(super) fn settle(&mut self, now: Instant) {
        let due = self.exits_at.is_some_and(|at| at <= now);
        if due && self.info.status.is_running() {
            let code = self.script.as_ref().map_or(0, |s| s.exit_code);
            self.exit(code);
        }
    }

    pub(super) fn exit(&mut self, code: i64) {
        self.info.status = ContainerStatus::Exited;
        self.info.exit_code = Some(code);
        self.exits_at = None;
        self.notify();
    }

    pub(super) fn push_output(&mut self, stream: OutputStreamKind, text: &str) {
        let chunk = OutputChunk {
            stream,
            data: Bytes::copy_from_slice(text.as_bytes()),
        };
        self.output.push((Utc::now(), chunk));
        self.notify();
    }
}

impl State {
    pub(super) fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// The id of the container called `id_or_name` (by id or by name).
    pub(super) fn container_key(&self, id_or_name: &str) -> Option<String> {
        if self.containers.contains_key(id_or_name) {
            return Some(id_or_name.to_string());
        }
        self.containers
            .iter()
            .find(|(_, c)| c.info.name == id_or_name)
            .map(|(id, _)| id.clone())
    }

    pub(super) fn container_mut(&mut self, id_or_name: &str) -> RuntimeResult<&mut FakeContainer> {
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

    pub(super) fn network_key(&self, name_or_id: &str) -> Option<String> {
        if self.networks.contains_key(name_or_id) {
            return Some(name_or_id.to_string());
        }
        self.networks
            .values()
            .find(|n| n.id == name_or_id)
            .map(|n| n.name.clone())
    }

    /// A network with its attached containers (stopped ones included).
    pub(super) fn network_view(&self, name: &str) -> Option<NetworkInfo> {
        let mut network = self.networks.get(name)?.clone();
        network.containers = self
            .containers
            .values()
            .filter(|c| c.info.networks.iter().any(|n| n == name))
            .map(|c| c.info.name.clone())
            .collect();
        Some(network)
    }

    pub(super) fn has_image(&self, image: &str) -> bool {
        self.images
            .iter()
            .any(|i| i.id == image || i.tags.iter().any(|t| t == image))
    }

    pub(super) fn script_for(&self, spec: &ContainerSpec) -> Option<ScriptedRun> {
        self.scripts
            .iter()
            .rev()
            .find(|(pattern, _)| *pattern == spec.name || *pattern == spec.image)
            .map(|(_, run)| run.clone())
    }

    /// Consumes one scripted failure of `op`, if any is left.
    pub(super) fn take_failure(&mut self, op: FakeOp) -> Option<FakeErrorKind> {
        let (kind, left) = self.failures.get_mut(&op)?;
        let kind = *kind;
        *left -= 1;
        if *left == 0 {
            self.failures.remove(&op);
        }
        Some(kind)
    }

    pub(super) fn settle_all(&mut self) {
        let now = Instant::now();
        for container in self.containers.values_mut() {
            container.settle(now);
        }
    }
}

pub(super) fn not_found(what: String) -> RuntimeError {
    RuntimeError::NotFound { runtime: KIND, what }
}

pub(super) fn in_use(what: String, detail: String) -> RuntimeError {
    RuntimeError::InUse {
        runtime: KIND,
        what,
        detail,
    }
}

pub(super) fn injected(kind: FakeErrorKind, op: FakeOp, target: &str, limit: Duration) -> RuntimeError {
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
pub(super) fn op_label(op: FakeOp, target: &str) -> String {
    if target.is_empty() {
        op.as_str().to_string()
    } else {
        format!("{} {target}", op.as_str())
    }
}

pub(super) fn is_managed(labels: &BTreeMap<String, String>) -> bool {
    labels.get(labels::MANAGED).is_some_and(|v| v == "true")
}
