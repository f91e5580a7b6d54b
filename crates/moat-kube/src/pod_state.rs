//! What a pod's status says: whether its container waits, runs or has
//! ended (with which exit code), whether it can never start (a bad image),
//! and the runtime-neutral [`ContainerInfo`] moat keeps.

use k8s_openapi::api::core::v1::Pod;
use moat_runtime::{ContainerInfo, ContainerStatus};

use crate::manifest::CONTAINER_NAME;
use crate::names;

/// Waiting reasons after which the container will not start by itself.
const FATAL_WAITING_REASONS: [&str; 5] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Where the run's container is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Not started yet (scheduling, pulling, creating).
    Waiting,
    /// It cannot start: the reason and the cluster's message.
    CannotStart(String),
    Running,
    /// Ended, with its exit code where the kubelet reported one.
    Ended(Option<i64>),
}

pub(crate) fn progress(pod: &Pod) -> Progress {
    container_progress(pod, CONTAINER_NAME)
}

/// Where the pod's container named `container` is in its life.
pub(crate) fn container_progress(pod: &Pod, container: &str) -> Progress {
    let status = pod.status.as_ref();
    let container = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|c| c.name == container));
    let state = container.and_then(|c| c.state.as_ref());
    if let Some(ended) = state.and_then(|s| s.terminated.as_ref()) {
        return Progress::Ended(Some(i64::from(ended.exit_code)));
    }
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = waiting.reason.clone().unwrap_or_default();
        if FATAL_WAITING_REASONS.contains(&reason.as_str()) {
            let message = waiting.message.clone().unwrap_or_default();
            return Progress::CannotStart(format!("{reason}: {message}"));
        }
    }
    if state.is_some_and(|s| s.running.is_some()) {
        return Progress::Running;
    }
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Succeeded" | "Failed") => Progress::Ended(None),
        _ => Progress::Waiting,
    }
}

pub(crate) fn container_info(pod: &Pod) -> ContainerInfo {
    let meta = &pod.metadata;
    let object = meta.name.clone().unwrap_or_default();
    let (name, labels) = names::restore(&object, meta.labels.as_ref(), meta.annotations.as_ref());
    let (status, exit_code) = match progress(pod) {
        Progress::Waiting | Progress::Running => (ContainerStatus::Running, None),
        Progress::CannotStart(_) => (ContainerStatus::Created, None),
        Progress::Ended(code) => (ContainerStatus::Exited, code),
    };
    let networks = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(names::NETWORK_LABEL))
        .cloned()
        .into_iter()
        .collect();
    ContainerInfo {
        id: object,
        name,
        image: pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default(),
        status,
        exit_code,
        labels,
        networks,
        address: pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok()),
        created_at: meta
            .creation_timestamp
            .as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp(t.0.as_second(), 0)),
    }
}
