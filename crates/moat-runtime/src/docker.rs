//! The Docker Engine runtime, on bollard: connection (with API version
//! negotiation, done lazily inside the first bounded call), containers,
//! networks from moat's subnet pool, volumes and images. Every call is
//! bounded by [`Timeouts`] and fails with a typed [`RuntimeError`]
//! (runtime.md, "Docker (bollard)").

mod build;
mod convert;
pub use moat_core::docker_endpoint as endpoint;
mod engine;
mod errors;
mod images;
mod libpod;
mod output;
mod pool;
mod terminal;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bollard::API_DEFAULT_VERSION;
use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, ListImagesOptions, ListNetworksOptions, ListVolumesOptions,
    LogsOptions, RemoveContainerOptions, RemoveImageOptions, RemoveVolumeOptions, StopContainerOptions,
    WaitContainerOptions,
};
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use crate::select::Probe;
use crate::subnet::SubnetPool;
use crate::{
    Attached, Capabilities, ContainerInfo, ContainerSpec, ExecOutput, ExecSpec, ImageInfo, LegacyObjects, NetworkInfo,
    NetworkSpec, OutputStream, Runtime, RuntimeError, RuntimeKind, RuntimeResult, TerminalSize, Timeouts, VolumeInfo,
    VolumeSpec, bounded, labels,
};

pub use build::{BuildRequest, context_tar};
pub use endpoint::{DockerEndpoint, EndpointEnv, EndpointSource};
pub use engine::Engine;
use errors::{is_removal_in_progress, map_error};

const DOCKER: RuntimeKind = RuntimeKind::Docker;

/// bollard's own per-request timeout. Ours (`bounded`) is the real bound;
/// this one must not cut `wait` or followed logs, which may last for days.
const CLIENT_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

/// How many inspections `list_networks` runs at once.
const INSPECT_CONCURRENCY: usize = 8;

/// How to reach and use the engine.
#[derive(Clone, Debug, Default)]
pub struct DockerOptions {
    pub timeouts: Timeouts,
    pub subnet_pool: SubnetPool,
    /// Engine address (`unix:///…`, `tcp://…`); `None` = `DOCKER_HOST` or
    /// the first well-known socket that exists.
    pub endpoint: Option<String>,
}

/// The Docker runtime. Cheap to share behind an `Arc`.
pub struct DockerRuntime {
    client: Docker,
    endpoint: DockerEndpoint,
    /// The API version agreed with the engine and which engine it is,
    /// once negotiated.
    negotiated: OnceCell<Negotiated>,
    timeouts: Timeouts,
    pool: pool::NetworkPool,
}

impl DockerRuntime {
    /// Prepares a client for the engine; does no I/O beyond checking that a
    /// unix socket exists. Call [`Runtime::ping`] to check the engine.
    pub fn new(options: DockerOptions) -> RuntimeResult<DockerRuntime> {
        let endpoint = match options.endpoint {
            Some(address) => DockerEndpoint {
                address: endpoint::normalise_address(&address),
                source: EndpointSource::Explicit,
            },
            None => endpoint::discover(&EndpointEnv::from_process(), |path| path.exists()).map_err(|reason| {
                RuntimeError::Unavailable {
                    runtime: DOCKER,
                    reason,
                }
            })?,
        };
        Ok(DockerRuntime {
            client: connect(&endpoint)?,
            endpoint,
            negotiated: OnceCell::new(),
            timeouts: options.timeouts,
            pool: pool::NetworkPool::new(options.subnet_pool),
        })
    }

    /// Connects and pings, for runtime selection: `Available`, or
    /// `Unavailable` with the reason.
    pub async fn probe(options: DockerOptions) -> Probe {
        let pinged = match DockerRuntime::new(options) {
            Ok(docker) => docker.ping().await,
            Err(err) => Err(err),
        };
        match pinged {
            Ok(()) => Probe::Available,
            Err(err) => Probe::Unavailable(err.to_string()),
        }
    }

    /// Where the engine is and how that was decided.
    pub fn docker_endpoint(&self) -> &DockerEndpoint {
        &self.endpoint
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    pub fn subnet_pool(&self) -> &SubnetPool {
        self.pool.subnets()
    }

    /// The engine behind the endpoint (Docker or Podman), asking it on
    /// the first call.
    pub async fn engine(&self) -> RuntimeResult<Engine> {
        bounded(DOCKER, "identify the engine", self.timeouts.call, async {
            self.client().await?;
            Ok(self.known_engine())
        })
        .await
    }

    /// The engine, once a call has identified it (Docker before that).
    fn known_engine(&self) -> Engine {
        (self.negotiated.get()).map_or(Engine::Docker, |negotiated| negotiated.engine.clone())
    }

    /// The client, after agreeing an API version with the engine (the
    /// engine may be older than bollard's default version) and learning
    /// which engine it is.
    async fn client(&self) -> RuntimeResult<&Docker> {
        self.negotiated
            .get_or_try_init(|| async {
                let negotiated = self
                    .client
                    .clone()
                    .negotiate_version()
                    .await
                    .map_err(|e| map_error("negotiate API version", "engine", e))?;
                let version = (negotiated.version().await).map_err(|e| map_error("read the version", "engine", e))?;
                let engine = match Engine::podman_version(&version) {
                    Some(version) => Engine::Podman {
                        rootless: self.podman_rootless(&version).await?,
                        version,
                    },
                    None => Engine::Docker,
                };
                Ok::<_, RuntimeError>(Negotiated {
                    api_version: negotiated.client_version().to_string(),
                    engine,
                })
            })
            .await?;
        Ok(&self.client)
    }

    /// Whether the Podman service behind the endpoint runs rootless.
    async fn podman_rootless(&self, version: &str) -> RuntimeResult<bool> {
        (libpod::is_rootless(&self.endpoint.address, version).await).map_err(|reason| RuntimeError::Other {
            runtime: DOCKER,
            op: "ask Podman whether it runs rootless".into(),
            message: reason,
        })
    }

    /// Refuses an engine moat cannot enforce its guarantees on.
    async fn check_supported(&self) -> RuntimeResult<()> {
        match self.known_engine().refusal() {
            Some(reason) => Err(RuntimeError::Refused {
                runtime: DOCKER,
                reason,
            }),
            None => Ok(()),
        }
    }
}

/// What the first call learnt about the engine.
struct Negotiated {
    api_version: String,
    engine: Engine,
}

fn connect(endpoint: &DockerEndpoint) -> RuntimeResult<Docker> {
    let address = endpoint.address.as_str();
    let connected = if address.starts_with("unix://") {
        Docker::connect_with_unix(address, CLIENT_TIMEOUT_SECS, API_DEFAULT_VERSION)
    } else if address.starts_with("tcp://") || address.starts_with("http://") {
        Docker::connect_with_http(address, CLIENT_TIMEOUT_SECS, API_DEFAULT_VERSION)
    } else {
        return Err(RuntimeError::Unavailable {
            runtime: DOCKER,
            reason: format!(
                "unsupported Docker endpoint {address} (from {}): moat supports unix:// and tcp://",
                endpoint.source
            ),
        });
    };
    connected.map_err(|e| map_error("connect", &format!("engine at {address}"), e))
}

fn managed_filter() -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{}=true", labels::MANAGED)])])
}

/// The listings that find Go-era objects: by their label, and by their
/// name prefix (a substring match: re-checked by [`labels::is_legacy`]).
fn legacy_filters() -> [HashMap<String, Vec<String>>; 2] {
    [
        HashMap::from([("label".to_string(), vec![format!("{}=true", labels::LEGACY_MANAGED)])]),
        HashMap::from([("name".to_string(), vec![labels::LEGACY_NAME_PREFIX.to_string()])]),
    ]
}

fn missing_is_ok(result: RuntimeResult<()>) -> RuntimeResult<()> {
    match result {
        Err(err) if err.is_not_found() => Ok(()),
        other => other,
    }
}

// === impl Runtime ===

#[async_trait]
impl Runtime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        DOCKER
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            labels: true,
            named_volumes: true,
            exit_codes: true,
            host_network: !self.endpoint.is_desktop_vm(),
            internal_networks: true,
            shared_network_namespace: true,
            privileged: true,
            gateway_needs_a_container: self.known_engine().is_podman(),
        }
    }

    fn endpoint(&self) -> String {
        let address = &self.endpoint.address;
        let source = &self.endpoint.source;
        match self.negotiated.get() {
            Some(Negotiated {
                api_version,
                engine: Engine::Docker,
            }) => format!("{address} ({source}, API {api_version})"),
            Some(Negotiated { api_version, engine }) => {
                format!("{} at {address} ({source}, API {api_version})", engine.describe())
            }
            None => format!("{address} ({source})"),
        }
    }

    /// On Linux a container reaches the host at its network's gateway
    /// (`NetworkInfo::gateway`), so there is no fixed address; VM-based
    /// engines forward `host.docker.internal`.
    fn host_address(&self) -> Option<String> {
        self.endpoint
            .is_desktop_vm()
            .then(|| "host.docker.internal".to_string())
    }

    /// Checks that the engine answers and that moat can keep its
    /// guarantees on it (rootless Podman is refused here, before any run
    /// object exists).
    async fn ping(&self) -> RuntimeResult<()> {
        bounded(DOCKER, "ping", self.timeouts.call, async {
            let docker = self.client().await?;
            docker
                .ping()
                .await
                .map(|_| ())
                .map_err(|e| map_error("ping", "engine", e))?;
            self.check_supported().await
        })
        .await
    }

    async fn image_exists(&self, image: &str) -> RuntimeResult<bool> {
        let op = format!("inspect image {image}");
        bounded(DOCKER, &op, self.timeouts.call, async {
            let docker = self.client().await?;
            match docker.inspect_image(image).await {
                Ok(_) => Ok(true),
                Err(e) => match map_error(&op, &format!("image {image}"), e) {
                    err if err.is_not_found() => Ok(false),
                    err => Err(err),
                },
            }
        })
        .await
    }

    async fn list_images(&self) -> RuntimeResult<Vec<ImageInfo>> {
        bounded(DOCKER, "list images", self.timeouts.list, async {
            let docker = self.client().await?;
            let images = docker
                .list_images(None::<ListImagesOptions>)
                .await
                .map_err(|e| map_error("list images", "images", e))?;
            Ok(images
                .into_iter()
                .map(|image| ImageInfo {
                    id: image.id,
                    tags: image.repo_tags,
                    size: u64::try_from(image.size).ok(),
                    created: Some(image.created),
                })
                .collect())
        })
        .await
    }

    async fn remove_image(&self, image: &str) -> RuntimeResult<()> {
        let op = format!("remove image {image}");
        let result = bounded(DOCKER, &op, self.timeouts.remove, async {
            let docker = self.client().await?;
            docker
                .remove_image(image, None::<RemoveImageOptions>, None)
                .await
                .map(|_| ())
                .map_err(|e| map_error(&op, &format!("image {image}"), e))
        })
        .await;
        missing_is_ok(result)
    }

    async fn create_container(&self, spec: &ContainerSpec) -> RuntimeResult<String> {
        let op = format!("create container {}", spec.name);
        bounded(DOCKER, &op, self.timeouts.call, async {
            let docker = self.client().await?;
            let options = CreateContainerOptions {
                name: Some(spec.name.clone()),
                ..Default::default()
            };
            docker
                .create_container(Some(options), convert::container_create_body(spec))
                .await
                .map(|created| created.id)
                .map_err(|e| map_error(&op, &format!("container {}", spec.name), e))
        })
        .await
    }

    async fn start_container(&self, id: &str) -> RuntimeResult<()> {
        let op = format!("start container {id}");
        bounded(DOCKER, &op, self.timeouts.call, async {
            let docker = self.client().await?;
            docker
                .start_container(id, None)
                .await
                .map_err(|e| map_error(&op, &format!("container {id}"), e))
        })
        .await
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> RuntimeResult<()> {
        let op = format!("stop container {id}");
        let grace_secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        bounded(DOCKER, &op, self.timeouts.call + grace, async {
            let docker = self.client().await?;
            let options = StopContainerOptions {
                t: Some(grace_secs),
                signal: None,
            };
            docker
                .stop_container(id, Some(options))
                .await
                .map_err(|e| map_error(&op, &format!("container {id}"), e))
        })
        .await
    }

    async fn remove_container(&self, id: &str) -> RuntimeResult<()> {
        self.remove_container_with(id, true).await
    }

    async fn remove_stopped_container(&self, id: &str) -> RuntimeResult<()> {
        self.remove_container_with(id, false).await
    }

    async fn wait_container(&self, id: &str) -> RuntimeResult<Option<i64>> {
        let op = format!("wait for container {id}");
        let docker = bounded(DOCKER, &op, self.timeouts.call, self.client()).await?;
        let mut waits = docker.wait_container(id, None::<WaitContainerOptions>);
        match waits.next().await {
            Some(Ok(response)) => Ok(Some(response.status_code)),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(Some(code)),
            Some(Err(e)) => Err(map_error(&op, &format!("container {id}"), e)),
            None => Err(RuntimeError::Other {
                runtime: DOCKER,
                op,
                message: "the engine closed the wait without an exit code".to_string(),
            }),
        }
    }

    async fn inspect_container(&self, id: &str) -> RuntimeResult<ContainerInfo> {
        let op = format!("inspect container {id}");
        bounded(DOCKER, &op, self.timeouts.call, async {
            let docker = self.client().await?;
            match docker.inspect_container(id, None).await {
                Ok(inspection) => Ok(convert::container_info_from_inspect(inspection)),
                // Podman names states the client's types do not know.
                Err(bollard::errors::Error::JsonDataError { .. }) => self.inspect_raw(&op, id).await,
                Err(e) => Err(map_error(&op, &format!("container {id}"), e)),
            }
        })
        .await
    }

    async fn logs(
        &self,
        id: &str,
        follow: bool,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> RuntimeResult<OutputStream> {
        // Fail early and typed (NotFound) rather than inside the stream.
        self.inspect_container(id).await?;
        let docker = self.client().await?.clone();
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            since: since.map_or(0, |time| i32::try_from(time.timestamp()).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        let op = format!("read logs of container {id}");
        let what = format!("container {id}");
        let chunks = docker
            .logs(id, Some(options))
            .map_err(move |e| map_error(&op, &what, e))
            .try_filter_map(|output| async move { Ok(output::log_chunk(output)) });
        Ok(Box::pin(chunks))
    }

    async fn exec(&self, id: &str, command: &[String]) -> RuntimeResult<ExecOutput> {
        let op = format!("exec in container {id}");
        let what = format!("container {id}");
        bounded(DOCKER, &op, self.timeouts.exec, async {
            let docker = self.client().await?;
            output::exec(docker, id, command)
                .await
                .map_err(|e| map_error(&op, &what, e))
        })
        .await
    }

    async fn attach_container(&self, id: &str) -> RuntimeResult<Attached> {
        let op = format!("attach to container {id}");
        bounded(DOCKER, &op, self.timeouts.call, async {
            terminal::attach(self.client().await?, id).await
        })
        .await
    }

    async fn resize_container(&self, id: &str, size: TerminalSize) -> RuntimeResult<()> {
        let op = format!("resize the TTY of container {id}");
        bounded(DOCKER, &op, self.timeouts.call, async {
            terminal::resize_container(self.client().await?, id, size).await
        })
        .await
    }

    async fn exec_attached(&self, id: &str, spec: &ExecSpec) -> RuntimeResult<(String, Attached)> {
        let op = format!("exec in container {id}");
        bounded(DOCKER, &op, self.timeouts.call, async {
            terminal::exec(self.client().await?, id, spec).await
        })
        .await
    }

    async fn resize_exec(&self, exec_id: &str, size: TerminalSize) -> RuntimeResult<()> {
        let op = format!("resize the TTY of exec {exec_id}");
        bounded(DOCKER, &op, self.timeouts.call, async {
            terminal::resize_exec(self.client().await?, exec_id, size).await
        })
        .await
    }

    async fn exec_exit_code(&self, exec_id: &str) -> RuntimeResult<Option<i64>> {
        let op = format!("inspect exec {exec_id}");
        bounded(DOCKER, &op, self.timeouts.call, async {
            terminal::exec_exit_code(self.client().await?, exec_id).await
        })
        .await
    }

    async fn list_containers(&self) -> RuntimeResult<Vec<ContainerInfo>> {
        bounded(DOCKER, "list containers", self.timeouts.list, async {
            let docker = self.client().await?;
            self.containers_matching(docker, managed_filter()).await
        })
        .await
    }

    async fn create_network(&self, spec: &NetworkSpec) -> RuntimeResult<NetworkInfo> {
        let op = format!("create network {}", spec.name);
        bounded(DOCKER, &op, self.timeouts.network_create, async {
            let docker = self.client().await?;
            self.pool.create_network(docker, spec, &op).await
        })
        .await
    }

    async fn remove_network(&self, name: &str) -> RuntimeResult<()> {
        let op = format!("remove network {name}");
        let result = bounded(DOCKER, &op, self.timeouts.remove, async {
            let docker = self.client().await?;
            docker
                .remove_network(name)
                .await
                .map_err(|e| map_error(&op, &format!("network {name}"), e))
        })
        .await;
        missing_is_ok(result)
    }

    async fn list_networks(&self) -> RuntimeResult<Vec<NetworkInfo>> {
        bounded(DOCKER, "list networks", self.timeouts.list, async {
            let docker = self.client().await?;
            self.networks_matching(docker, managed_filter(), |_, _| true).await
        })
        .await
    }

    async fn inspect_network(&self, name: &str) -> RuntimeResult<NetworkInfo> {
        let op = format!("inspect network {name}");
        bounded(DOCKER, &op, self.timeouts.call, async {
            let docker = self.client().await?;
            self.inspect_network_with(docker, name).await
        })
        .await
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> RuntimeResult<()> {
        let op = format!("create volume {}", spec.name);
        bounded(DOCKER, &op, self.timeouts.call, async {
            let docker = self.client().await?;
            let request = bollard::models::VolumeCreateRequest {
                name: Some(spec.name.clone()),
                labels: Some(convert::to_hash_map(&spec.labels)),
                ..Default::default()
            };
            docker
                .create_volume(request)
                .await
                .map(|_| ())
                .map_err(|e| map_error(&op, &format!("volume {}", spec.name), e))
        })
        .await
    }

    async fn remove_volume(&self, name: &str) -> RuntimeResult<()> {
        let op = format!("remove volume {name}");
        let result = bounded(DOCKER, &op, self.timeouts.remove, async {
            let docker = self.client().await?;
            docker
                .remove_volume(name, None::<RemoveVolumeOptions>)
                .await
                .map_err(|e| map_error(&op, &format!("volume {name}"), e))
        })
        .await;
        missing_is_ok(result)
    }

    async fn list_volumes(&self) -> RuntimeResult<Vec<VolumeInfo>> {
        bounded(DOCKER, "list volumes", self.timeouts.list, async {
            let docker = self.client().await?;
            volumes_matching(docker, managed_filter()).await
        })
        .await
    }

    /// Two listings per kind (by the Go label, by the name prefix), merged;
    /// Docker's name filter matches substrings, so the prefix and the
    /// absence of `dev.moat.*` labels are checked here.
    async fn list_legacy(&self) -> RuntimeResult<LegacyObjects> {
        bounded(DOCKER, "list Go-era objects", self.timeouts.list, async {
            let docker = self.client().await?;
            let mut legacy = LegacyObjects::default();
            for filters in legacy_filters() {
                legacy
                    .containers
                    .extend(self.containers_matching(docker, filters.clone()).await?);
                legacy.networks.extend(
                    self.networks_matching(docker, filters.clone(), labels::is_legacy)
                        .await?,
                );
                legacy.volumes.extend(volumes_matching(docker, filters).await?);
            }
            legacy.containers.retain(|c| labels::is_legacy(&c.name, &c.labels));
            legacy.networks.retain(|n| labels::is_legacy(&n.name, &n.labels));
            legacy.volumes.retain(|v| labels::is_legacy(&v.name, &v.labels));
            legacy.containers.sort_by(|a, b| a.name.cmp(&b.name));
            legacy.containers.dedup_by(|a, b| a.id == b.id);
            legacy.networks.sort_by(|a, b| a.name.cmp(&b.name));
            legacy.networks.dedup_by(|a, b| a.id == b.id);
            legacy.volumes.sort_by(|a, b| a.name.cmp(&b.name));
            legacy.volumes.dedup_by(|a, b| a.name == b.name);
            Ok(legacy)
        })
        .await
    }
}

/// Volumes matching `filters`, sorted by name; unbounded.
async fn volumes_matching(docker: &Docker, filters: HashMap<String, Vec<String>>) -> RuntimeResult<Vec<VolumeInfo>> {
    let options = ListVolumesOptions { filters: Some(filters) };
    let listed = docker
        .list_volumes(Some(options))
        .await
        .map_err(|e| map_error("list volumes", "volumes", e))?;
    let mut volumes: Vec<VolumeInfo> = listed
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|volume| VolumeInfo {
            name: volume.name,
            labels: volume.labels.into_iter().collect(),
        })
        .collect();
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(volumes)
}

impl DockerRuntime {
    /// Containers (running or not) matching `filters`; unbounded, for use
    /// inside a bounded call. A listing the typed client rejects (Podman's
    /// `stopped` state) is read again as raw JSON.
    async fn containers_matching(
        &self,
        docker: &Docker,
        filters: HashMap<String, Vec<String>>,
    ) -> RuntimeResult<Vec<ContainerInfo>> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        };
        let summaries = match docker.list_containers(Some(options)).await {
            Ok(summaries) => summaries,
            Err(bollard::errors::Error::JsonDataError { .. }) => self.list_raw(&filters).await?,
            Err(e) => return Err(map_error("list containers", "containers", e)),
        };
        Ok(summaries
            .into_iter()
            .map(convert::container_info_from_summary)
            .collect())
    }

    /// The containers matching `filters` listed as raw JSON; the caller
    /// bounds it.
    async fn list_raw(&self, filters: &HashMap<String, Vec<String>>) -> RuntimeResult<Vec<ContainerSummary>> {
        let failed = |message: String| RuntimeError::Other {
            runtime: DOCKER,
            op: "list containers".to_string(),
            message,
        };
        let listed = libpod::list_containers(&self.endpoint.address, filters)
            .await
            .map_err(failed)?;
        serde_json::from_value(serde_json::Value::Array(listed)).map_err(|e| failed(e.to_string()))
    }

    /// Container `id` inspected as raw JSON, for an engine that answered
    /// with a state the typed client rejects (Podman's `stopped`); the
    /// caller bounds it.
    async fn inspect_raw(&self, op: &str, id: &str) -> RuntimeResult<ContainerInfo> {
        let failed = |message: String| RuntimeError::Other {
            runtime: DOCKER,
            op: op.to_string(),
            message,
        };
        let inspection = libpod::inspect_container(&self.endpoint.address, id)
            .await
            .map_err(failed)?;
        let typed = serde_json::from_value(inspection).map_err(|e| failed(e.to_string()))?;
        Ok(convert::container_info_from_inspect(typed))
    }

    /// Removes a container; without `force` Docker refuses a running one.
    async fn remove_container_with(&self, id: &str, force: bool) -> RuntimeResult<()> {
        let op = format!("remove container {id}");
        let result = bounded(DOCKER, &op, self.timeouts.remove, async {
            let docker = self.client().await?;
            let options = RemoveContainerOptions {
                force,
                v: true,
                link: false,
            };
            match docker.remove_container(id, Some(options)).await {
                Err(e) if is_removal_in_progress(&e) => Ok(()),
                other => other.map_err(|e| map_error(&op, &format!("container {id}"), e)),
            }
        })
        .await;
        missing_is_ok(result)
    }

    /// Networks matching `filters` and then `wanted` (name, labels), with
    /// their attached containers, sorted by name; unbounded.
    async fn networks_matching(
        &self,
        docker: &Docker,
        filters: HashMap<String, Vec<String>>,
        wanted: fn(&str, &BTreeMap<String, String>) -> bool,
    ) -> RuntimeResult<Vec<NetworkInfo>> {
        let options = ListNetworksOptions { filters: Some(filters) };
        let names: Vec<String> = docker
            .list_networks(Some(options))
            .await
            .map_err(|e| map_error("list networks", "networks", e))?
            .into_iter()
            .filter_map(|network| {
                let name = network.name?;
                wanted(&name, &convert::to_btree_map(network.labels)).then_some(name)
            })
            .collect();
        // The list answer does not name attached containers: inspect each
        // network, skipping any that vanished meanwhile.
        let inspected: Vec<RuntimeResult<NetworkInfo>> = futures_util::stream::iter(names)
            .map(|name| async move { self.inspect_network_with(docker, &name).await })
            .buffer_unordered(INSPECT_CONCURRENCY)
            .collect()
            .await;
        let mut networks = Vec::new();
        for network in inspected {
            match network {
                Ok(info) => networks.push(info),
                Err(err) if err.is_not_found() => {}
                Err(err) => return Err(err),
            }
        }
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(networks)
    }

    async fn inspect_network_with(&self, docker: &Docker, name: &str) -> RuntimeResult<NetworkInfo> {
        docker
            .inspect_network(name, None)
            .await
            .map(convert::network_info_from_inspect)
            .map_err(|e| map_error(&format!("inspect network {name}"), &format!("network {name}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_schemes_are_unavailable_with_a_reason() {
        let endpoint = DockerEndpoint {
            address: "ssh://host".into(),
            source: EndpointSource::DockerHost,
        };
        let err = connect(&endpoint).err().unwrap();
        assert!(err.to_string().contains("unix:// and tcp://"), "{err}");
    }
}
