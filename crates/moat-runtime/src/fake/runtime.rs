//! [`Runtime`] for [`FakeRuntime`]: every operation on the shared state,
//! through the recorded, delayed, failure-injecting call path.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::{
    Capabilities, ContainerInfo, ContainerSpec, ContainerStatus, ExecOutput, ImageInfo, LegacyObjects, NetworkInfo,
    NetworkSpec, OutputChunk, OutputStream, Runtime, RuntimeError, RuntimeKind, RuntimeResult, VolumeInfo, VolumeSpec,
    labels,
};

use super::state::{FakeContainer, in_use, is_managed, not_found};
use super::{FakeOp, FakeRuntime, KIND, STOPPED_EXIT_CODE, wait_for_change};

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
            if let Some(holder) = &spec.network_of
                && !s
                    .container_key(holder)
                    .is_some_and(|key| s.containers[&key].info.status.is_running())
            {
                return Err(not_found(format!("running container {holder} to share the network of")));
            }
            let id = format!("fake-container-{}", s.next_serial());
            let info = ContainerInfo {
                address: None,
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

    async fn remove_stopped_container(&self, id: &str) -> RuntimeResult<()> {
        self.call(FakeOp::RemoveContainer, id, |s| {
            let Some(key) = s.container_key(id) else {
                return Ok(());
            };
            if s.containers.get(&key).is_some_and(|c| c.info.status.is_running()) {
                return Err(in_use(format!("container {id}"), "it is running".into()));
            }
            s.containers.remove(&key);
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

    async fn list_legacy(&self) -> RuntimeResult<LegacyObjects> {
        self.call(FakeOp::ListLegacy, "", |s| {
            s.settle_all();
            Ok(LegacyObjects {
                containers: s
                    .containers
                    .values()
                    .filter(|c| labels::is_legacy(&c.info.name, &c.info.labels))
                    .map(|c| c.info.clone())
                    .collect(),
                networks: s
                    .networks
                    .values()
                    .filter(|n| labels::is_legacy(&n.name, &n.labels))
                    .filter_map(|n| s.network_view(&n.name))
                    .collect(),
                volumes: s
                    .volumes
                    .values()
                    .filter(|v| labels::is_legacy(&v.name, &v.labels))
                    .cloned()
                    .collect(),
            })
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
