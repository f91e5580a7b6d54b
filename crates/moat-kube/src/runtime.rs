//! [`KubeRuntime`]: moat's runtime calls on one namespace of one cluster
//! context. A container is created in two steps like on Docker: creation
//! prepares its objects (anchor, Secret) and keeps the Pod manifest, the
//! start creates the Pod. A network is a NetworkPolicy; volumes and images
//! belong to the cluster (docs/kubernetes.md, "Mapping").

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::io::AsyncReadExt;
use futures_util::{AsyncBufRead, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use moat_runtime::{
    Capabilities, ContainerInfo, ContainerSpec, ExecOutput, ImageInfo, NetworkInfo, NetworkSpec, OutputChunk,
    OutputStream, OutputStreamKind, Runtime, RuntimeError, RuntimeKind, RuntimeResult, Timeouts, VolumeInfo,
    VolumeSpec, bounded, labels,
};

use crate::errors::{KUBERNETES, map_error, missing_is_ok};
use crate::manifest::{self, FileMount, PodContext};
use crate::names::{self, NETWORK_LABEL};
use crate::pod_state::{self, Progress};

mod proxy;
mod proxy_control;

/// How often a pod that has not started yet is looked at again.
const START_POLL: Duration = Duration::from_millis(500);
/// The longest a watch asks the API server to stay open (it must be
/// under the server's own limit); the wait re-watches after it.
const WATCH_SECONDS: u32 = 290;

/// Which cluster, which namespace, and how long calls may take.
#[derive(Clone, Debug, Default)]
pub struct KubeOptions {
    /// `None`: `KUBECONFIG`, else `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// `None`: the kubeconfig's current context.
    pub context: Option<String>,
    /// `None`: the context's namespace, else `default`.
    pub namespace: Option<String>,
    /// The PersistentVolumeClaim mounted at /workspace.
    pub workspace_claim: Option<String>,
    pub timeouts: Timeouts,
    /// How long a pod may take to start (schedule, pull its image) before
    /// its output is read; `None`: five minutes.
    pub start_timeout: Option<Duration>,
}

/// The Kubernetes runtime for one context and namespace.
pub struct KubeRuntime {
    client: Client,
    server: String,
    context: String,
    namespace: String,
    workspace_claim: Option<String>,
    timeouts: Timeouts,
    start_timeout: Duration,
    /// Pods created but not started, by object name.
    pending: Mutex<HashMap<String, Pod>>,
    /// Owner references of the runs' anchors, by run id.
    anchors: Mutex<HashMap<String, OwnerReference>>,
}

fn unavailable(reason: String) -> RuntimeError {
    RuntimeError::Unavailable {
        runtime: KUBERNETES,
        reason,
    }
}

impl KubeRuntime {
    /// Reads the kubeconfig and prepares a client; no call to the API
    /// server yet ([`Runtime::ping`] checks it).
    pub async fn connect(options: KubeOptions) -> RuntimeResult<KubeRuntime> {
        let kubeconfig = match &options.kubeconfig {
            Some(path) => Kubeconfig::read_from(path),
            None => Kubeconfig::read(),
        }
        .map_err(|e| {
            unavailable(format!(
                "cannot read the kubeconfig ({e}); set KUBECONFIG or create ~/.kube/config"
            ))
        })?;
        let context = options
            .context
            .clone()
            .or_else(|| kubeconfig.current_context.clone())
            .ok_or_else(|| unavailable("the kubeconfig has no current context; set `kubernetes.context`".into()))?;
        let config_options = KubeConfigOptions {
            context: Some(context.clone()),
            ..Default::default()
        };
        let loading = async {
            Config::from_custom_kubeconfig(kubeconfig, &config_options)
                .await
                .map_err(|e| unavailable(format!("context {context} of the kubeconfig cannot be used: {e}")))
        };
        let mut config = bounded(KUBERNETES, "load the kubeconfig", options.timeouts.call, loading).await?;
        // Followed logs and waits last as long as the run; our own bounds
        // (`bounded`) cover every other call.
        config.read_timeout = None;
        config.write_timeout = Some(options.timeouts.call);
        config.connect_timeout = Some(options.timeouts.call);
        let namespace = options
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| unavailable(format!("cannot build a client: {e}")))?;
        Ok(KubeRuntime {
            client,
            server,
            context,
            namespace,
            workspace_claim: options.workspace_claim,
            timeouts: options.timeouts,
            start_timeout: options.start_timeout.unwrap_or(Duration::from_secs(300)),
            pending: Mutex::new(HashMap::new()),
            anchors: Mutex::new(HashMap::new()),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn context(&self) -> &str {
        &self.context
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn error(&self, op: &str, what: &str, err: kube::Error) -> RuntimeError {
        map_error(op, what, &self.namespace, err)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pod>> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The owner reference of the run `labels` name, creating the run's
    /// anchor ConfigMap the first time; `None` for objects of no run.
    async fn anchor(&self, labels: &BTreeMap<String, String>) -> RuntimeResult<Option<OwnerReference>> {
        let Some(run_id) = labels.get(labels::RUN_ID) else {
            return Ok(None);
        };
        let known = self
            .anchors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(run_id)
            .cloned();
        if known.is_some() {
            return Ok(known);
        }
        let mut run_labels = labels.clone();
        run_labels.retain(|k, _| k == labels::MANAGED || k == labels::RUN_ID || k == labels::HOME);
        let anchor = manifest::anchor(&self.namespace, &run_labels, &chrono::Utc::now().to_rfc3339());
        let name = names::anchor_name(run_id);
        let api: Api<ConfigMap> = self.api();
        let created = match api.create(&PostParams::default(), &anchor).await {
            Ok(created) => created,
            Err(kube::Error::Api(status)) if status.code == 409 => api
                .get(&name)
                .await
                .map_err(|e| self.error("read the run's ConfigMap", &format!("configmap {name}"), e))?,
            Err(e) => return Err(self.error("create the run's ConfigMap", &format!("configmap {name}"), e)),
        };
        let owner = manifest::owner_reference(&created).ok_or_else(|| RuntimeError::Other {
            runtime: KUBERNETES,
            op: "create the run's ConfigMap".into(),
            message: format!("the API server gave configmap {name} no uid"),
        })?;
        self.anchors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(run_id.clone(), owner.clone());
        Ok(Some(owner))
    }

    /// Deletes the anchor named `name` (the cluster then removes what it
    /// owns). Missing = success.
    async fn remove_anchor(&self, name: &str) -> RuntimeResult<()> {
        self.anchors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, owner| owner.name != name);
        let api: Api<ConfigMap> = self.api();
        let op = format!("delete configmap {name}");
        missing_is_ok(
            api.delete(name, &DeleteParams::background())
                .await
                .map(|_| ())
                .map_err(|e| self.error(&op, &format!("configmap {name}"), e)),
        )
    }

    /// The contents of the read-only files a container mounts.
    async fn read_files(&self, files: &[FileMount]) -> RuntimeResult<BTreeMap<String, Vec<u8>>> {
        let mut contents = BTreeMap::new();
        for file in files {
            let refuse = |message: String| RuntimeError::Other {
                runtime: KUBERNETES,
                op: format!("copy {} into the run's Secret", file.source),
                message,
            };
            let meta = tokio::fs::metadata(&file.source)
                .await
                .map_err(|e| refuse(e.to_string()))?;
            if meta.len() > manifest::MAX_FILE_BYTES {
                return Err(refuse(format!(
                    "{} bytes is over the {} bytes a mounted file may have on kubernetes",
                    meta.len(),
                    manifest::MAX_FILE_BYTES
                )));
            }
            let bytes = tokio::fs::read(&file.source).await.map_err(|e| refuse(e.to_string()))?;
            contents.insert(file.key.clone(), bytes);
        }
        Ok(contents)
    }

    async fn prepare_pod(&self, spec: &ContainerSpec, op: &str) -> RuntimeResult<Pod> {
        let refuse = |e: manifest::ManifestError| RuntimeError::Other {
            runtime: KUBERNETES,
            op: op.to_string(),
            message: e.to_string(),
        };
        let files = manifest::file_mounts(spec, self.workspace_claim.as_deref()).map_err(refuse)?;
        let mut contents = self.read_files(&files).await?;
        contents.extend(manifest::secret_env(spec));
        let owner = self.anchor(&spec.labels).await?;
        let context = PodContext {
            namespace: self.namespace.clone(),
            owner: owner.clone(),
            workspace_claim: self.workspace_claim.clone(),
        };
        let pod = manifest::pod(spec, &context, &files).map_err(refuse)?;
        if !contents.is_empty() {
            let secret = manifest::files_secret(spec, &self.namespace, owner.as_ref(), contents);
            let name = names::files_secret_name(&spec.name);
            let api: Api<Secret> = self.api();
            api.create(&PostParams::default(), &secret)
                .await
                .map_err(|e| self.error(op, &format!("secret {name}"), e))?;
        }
        Ok(pod)
    }

    async fn get_pod(&self, name: &str) -> RuntimeResult<Pod> {
        let api: Api<Pod> = self.api();
        api.get(name)
            .await
            .map_err(|e| self.error(&format!("read pod {name}"), &format!("pod {name}"), e))
    }

    async fn remove_pod(&self, id: &str, force: bool) -> RuntimeResult<()> {
        let name = names::object_name(id);
        let pending = self.pending().remove(&name);
        // A main pod's anchor is named after it (the pod is named after
        // its run); a pod already gone (stopped) may still have one.
        let (labels, running) = match pending {
            Some(pod) => (pod.metadata.labels.unwrap_or_default(), false),
            None => match self.get_pod(&name).await {
                Ok(pod) => {
                    let running = matches!(pod_state::progress(&pod), Progress::Running | Progress::Waiting);
                    (pod_state::container_info(&pod).labels, running)
                }
                Err(err) if err.is_not_found() => {
                    return self.remove_anchor(&names::anchor_name(&name)).await;
                }
                Err(err) => return Err(err),
            },
        };
        if running && !force {
            return Err(RuntimeError::InUse {
                runtime: KUBERNETES,
                what: format!("pod {name}"),
                detail: "it is running".into(),
            });
        }
        let api: Api<Pod> = self.api();
        let op = format!("delete pod {name}");
        missing_is_ok(
            api.delete(&name, &DeleteParams::default().grace_period(0))
                .await
                .map(|_| ())
                .map_err(|e| self.error(&op, &format!("pod {name}"), e)),
        )?;
        let secrets: Api<Secret> = self.api();
        let secret = names::files_secret_name(&name);
        missing_is_ok(
            secrets
                .delete(&secret, &DeleteParams::default())
                .await
                .map(|_| ())
                .map_err(|e| self.error(&format!("delete secret {secret}"), &format!("secret {secret}"), e)),
        )?;
        match (labels.get(labels::ROLE).map(String::as_str), labels.get(labels::RUN_ID)) {
            (Some(labels::role::MAIN), Some(run_id)) => self.remove_anchor(&names::anchor_name(run_id)).await,
            _ => Ok(()),
        }
    }

    /// Waits until the pod's container runs or has ended; a container
    /// that cannot start (a bad image) fails with the cluster's reason.
    async fn started(&self, name: &str) -> RuntimeResult<()> {
        let op = format!("wait for pod {name} to start");
        bounded(KUBERNETES, &op, self.start_timeout, async {
            loop {
                let pod = bounded(KUBERNETES, &op, self.timeouts.call, self.get_pod(name)).await?;
                match pod_state::progress(&pod) {
                    Progress::Running | Progress::Ended(_) => return Ok(()),
                    Progress::CannotStart(reason) => return Err(cannot_start(name, &reason)),
                    Progress::Waiting => tokio::time::sleep(START_POLL).await,
                }
            }
        })
        .await
    }

    /// Watches the pod from `version` until it ends; `None` when the
    /// watch closes (or expires, 410) first and must be started again.
    async fn watch_until_end(&self, name: &str, version: &str) -> RuntimeResult<Option<Option<i64>>> {
        let api: Api<Pod> = self.api();
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(WATCH_SECONDS);
        let op = format!("watch pod {name}");
        let mut events = bounded(KUBERNETES, &op, self.timeouts.call, async {
            api.watch(&params, version)
                .await
                .map_err(|e| self.error(&op, &format!("pod {name}"), e))
        })
        .await?
        .boxed();
        while let Some(event) = events.next().await {
            match event.map_err(|e| self.error(&op, &format!("pod {name}"), e))? {
                WatchEvent::Added(pod) | WatchEvent::Modified(pod) => match pod_state::progress(&pod) {
                    Progress::Ended(code) => return Ok(Some(code)),
                    Progress::CannotStart(reason) => return Err(cannot_start(name, &reason)),
                    Progress::Running | Progress::Waiting => {}
                },
                WatchEvent::Deleted(pod) => {
                    return match pod_state::progress(&pod) {
                        Progress::Ended(code) => Ok(Some(code)),
                        _ => Ok(Some(None)),
                    };
                }
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(status) if status.code == 410 => {
                    tracing::debug!("watch of pod {name} expired (410 Gone); reading it again");
                    return Ok(None);
                }
                WatchEvent::Error(status) => {
                    return Err(crate::errors::from_status(
                        &op,
                        &format!("pod {name}"),
                        &self.namespace,
                        status.code,
                        &status.message,
                    ));
                }
            }
        }
        Ok(None)
    }

    async fn pods_with(&self, selector: &str) -> RuntimeResult<Vec<Pod>> {
        let api: Api<Pod> = self.api();
        api.list(&ListParams::default().labels(selector))
            .await
            .map(|list| list.items)
            .map_err(|e| self.error("list pods", "pods", e))
    }

    fn network_info(&self, policy: &NetworkPolicy, pods: &[Pod]) -> NetworkInfo {
        let meta = &policy.metadata;
        let object = meta.name.clone().unwrap_or_default();
        let (name, labels) = names::restore(&object, meta.labels.as_ref(), meta.annotations.as_ref());
        let internal = policy
            .spec
            .as_ref()
            .and_then(|s| s.egress.as_ref())
            .is_some_and(|rules| rules.iter().all(|rule| rule.to.is_some()));
        let containers = pods
            .iter()
            .filter(|pod| pod.metadata.labels.as_ref().and_then(|l| l.get(NETWORK_LABEL)) == Some(&object))
            .filter_map(|pod| pod.metadata.name.clone())
            .collect();
        NetworkInfo {
            id: object,
            name,
            labels,
            subnet: None,
            gateway: None,
            internal,
            containers,
        }
    }
}

fn cannot_start(name: &str, reason: &str) -> RuntimeError {
    RuntimeError::Other {
        runtime: KUBERNETES,
        op: format!("start pod {name}"),
        message: format!("its container cannot start ({reason})"),
    }
}

fn managed_selector() -> String {
    format!("{}=true", labels::MANAGED)
}

/// A pod's log as moat's output chunks (Kubernetes merges stdout and
/// stderr; all of it is reported as stdout).
fn chunks(reader: impl AsyncBufRead + Send + 'static, name: String) -> OutputStream {
    let reader: std::pin::Pin<Box<dyn AsyncBufRead + Send>> = Box::pin(reader);
    let stream = futures_util::stream::unfold(Some(reader), move |state| {
        let name = name.clone();
        async move {
            let mut reader = state?;
            let mut buffer = vec![0_u8; 8192];
            match reader.read(&mut buffer).await {
                Ok(0) => None,
                Ok(read) => {
                    buffer.truncate(read);
                    let chunk = OutputChunk {
                        stream: OutputStreamKind::Stdout,
                        data: bytes::Bytes::from(buffer),
                    };
                    Some((Ok(chunk), Some(reader)))
                }
                Err(e) => Some((
                    Err(RuntimeError::Other {
                        runtime: KUBERNETES,
                        op: format!("read the log of pod {name}"),
                        message: e.to_string(),
                    }),
                    None,
                )),
            }
        }
    });
    Box::pin(stream)
}

#[async_trait]
impl Runtime for KubeRuntime {
    fn kind(&self) -> RuntimeKind {
        KUBERNETES
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            labels: true,
            named_volumes: false,
            exit_codes: true,
            host_network: false,
            internal_networks: true,
            // A pod is the unit of a namespace: a run cannot join another's.
            shared_network_namespace: false,
            // The proxy is not on a bridge of this host.
            gateway_needs_a_container: false,
            privileged: false,
        }
    }

    fn endpoint(&self) -> String {
        format!(
            "{} (context {}, namespace {})",
            self.server, self.context, self.namespace
        )
    }

    fn host_address(&self) -> Option<String> {
        None
    }

    async fn ping(&self) -> RuntimeResult<()> {
        bounded(
            KUBERNETES,
            "ask the API server its version",
            self.timeouts.call,
            async {
                self.client
                    .apiserver_version()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.error("ask the API server its version", "the API server", e))
            },
        )
        .await
    }

    /// The cluster pulls images when a pod starts; one it cannot pull
    /// fails the start with the cluster's reason.
    async fn image_exists(&self, _image: &str) -> RuntimeResult<bool> {
        Ok(true)
    }

    async fn list_images(&self) -> RuntimeResult<Vec<ImageInfo>> {
        Ok(Vec::new())
    }

    async fn remove_image(&self, image: &str) -> RuntimeResult<()> {
        Err(self.unsupported(&format!("remove image {image} (images live on the cluster's nodes)")))
    }

    async fn create_container(&self, spec: &ContainerSpec) -> RuntimeResult<String> {
        let op = format!("create pod {}", names::object_name(&spec.name));
        let pod = bounded(KUBERNETES, &op, self.timeouts.call, self.prepare_pod(spec, &op)).await?;
        let name = names::object_name(&spec.name);
        self.pending().insert(name.clone(), pod);
        Ok(name)
    }

    async fn start_container(&self, id: &str) -> RuntimeResult<()> {
        let name = names::object_name(id);
        let op = format!("create pod {name}");
        let Some(pod) = self.pending().remove(&name) else {
            // Started already, or never created.
            return bounded(KUBERNETES, &op, self.timeouts.call, self.get_pod(&name))
                .await
                .map(|_| ());
        };
        let api: Api<Pod> = self.api();
        bounded(KUBERNETES, &op, self.timeouts.call, async {
            api.create(&PostParams::default(), &pod)
                .await
                .map(|_| ())
                .map_err(|e| self.error(&op, &format!("pod {name}"), e))
        })
        .await
    }

    /// Deletes the pod with `grace` for its process to end (SIGTERM, then
    /// SIGKILL): a stopped pod does not stay on Kubernetes.
    async fn stop_container(&self, id: &str, grace: Duration) -> RuntimeResult<()> {
        let name = names::object_name(id);
        self.pending().remove(&name);
        let op = format!("stop pod {name}");
        let api: Api<Pod> = self.api();
        let params = DeleteParams::default().grace_period(u32::try_from(grace.as_secs()).unwrap_or(u32::MAX));
        let result = bounded(KUBERNETES, &op, self.timeouts.call, async {
            api.delete(&name, &params)
                .await
                .map(|_| ())
                .map_err(|e| self.error(&op, &format!("pod {name}"), e))
        })
        .await;
        missing_is_ok(result)
    }

    async fn remove_container(&self, id: &str) -> RuntimeResult<()> {
        let op = format!("remove pod {}", names::object_name(id));
        bounded(KUBERNETES, &op, self.timeouts.call, self.remove_pod(id, true)).await
    }

    async fn remove_stopped_container(&self, id: &str) -> RuntimeResult<()> {
        let op = format!("remove pod {}", names::object_name(id));
        bounded(KUBERNETES, &op, self.timeouts.call, self.remove_pod(id, false)).await
    }

    /// Reads the pod, then watches it from that version until its
    /// container ends; an expired watch (410 Gone) starts over.
    async fn wait_container(&self, id: &str) -> RuntimeResult<Option<i64>> {
        let name = names::object_name(id);
        loop {
            let op = format!("read pod {name}");
            let pod = bounded(KUBERNETES, &op, self.timeouts.call, self.get_pod(&name)).await?;
            match pod_state::progress(&pod) {
                Progress::Ended(code) => return Ok(code),
                Progress::CannotStart(reason) => return Err(cannot_start(&name, &reason)),
                Progress::Running | Progress::Waiting => {}
            }
            let version = pod.metadata.resource_version.clone().unwrap_or_default();
            if let Some(code) = self.watch_until_end(&name, &version).await? {
                return Ok(code);
            }
        }
    }

    async fn inspect_container(&self, id: &str) -> RuntimeResult<ContainerInfo> {
        let name = names::object_name(id);
        if let Some(pod) = self.pending().get(&name) {
            let mut info = pod_state::container_info(pod);
            info.status = moat_runtime::ContainerStatus::Created;
            return Ok(info);
        }
        let op = format!("read pod {name}");
        let pod = bounded(KUBERNETES, &op, self.timeouts.call, self.get_pod(&name)).await?;
        Ok(pod_state::container_info(&pod))
    }

    async fn logs(
        &self,
        id: &str,
        follow: bool,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> RuntimeResult<OutputStream> {
        let name = names::object_name(id);
        self.started(&name).await?;
        let params = LogParams {
            container: Some(manifest::CONTAINER_NAME.to_string()),
            follow,
            since_seconds: since.map(|time| (chrono::Utc::now() - time).num_seconds().max(1)),
            ..Default::default()
        };
        let op = format!("read the log of pod {name}");
        let api: Api<Pod> = self.api();
        let reader = bounded(KUBERNETES, &op, self.timeouts.call, async {
            api.log_stream(&name, &params)
                .await
                .map_err(|e| self.error(&op, &format!("pod {name}"), e))
        })
        .await?;
        Ok(chunks(reader, name))
    }

    async fn exec(&self, id: &str, _command: &[String]) -> RuntimeResult<ExecOutput> {
        Err(self.unsupported(&format!("run a command in pod {id} (the exec subresource)")))
    }

    async fn list_containers(&self) -> RuntimeResult<Vec<ContainerInfo>> {
        bounded(KUBERNETES, "list pods", self.timeouts.list, async {
            let pods = self.pods_with(&managed_selector()).await?;
            Ok(pods.iter().map(pod_state::container_info).collect())
        })
        .await
    }

    async fn create_network(&self, spec: &NetworkSpec) -> RuntimeResult<NetworkInfo> {
        let name = names::object_name(&spec.name);
        let op = format!("create networkpolicy {name}");
        bounded(KUBERNETES, &op, self.timeouts.network_create, async {
            let owner = self.anchor(&spec.labels).await?;
            let policy = manifest::network_policy(spec, &self.namespace, owner.as_ref());
            let api: Api<NetworkPolicy> = self.api();
            let created = api
                .create(&PostParams::default(), &policy)
                .await
                .map_err(|e| self.error(&op, &format!("networkpolicy {name}"), e))?;
            Ok(self.network_info(&created, &[]))
        })
        .await
    }

    /// Refused (`InUse`) while a running pod is on it, like Docker.
    async fn remove_network(&self, name: &str) -> RuntimeResult<()> {
        let object = names::object_name(name);
        let op = format!("delete networkpolicy {object}");
        let result = bounded(KUBERNETES, &op, self.timeouts.call, async {
            let pods = self.pods_with(&format!("{NETWORK_LABEL}={object}")).await?;
            if let Some(pod) = pods
                .iter()
                .find(|p| matches!(pod_state::progress(p), Progress::Running | Progress::Waiting))
            {
                return Err(RuntimeError::InUse {
                    runtime: KUBERNETES,
                    what: format!("networkpolicy {object}"),
                    detail: format!("pod {} is running on it", pod.metadata.name.clone().unwrap_or_default()),
                });
            }
            let api: Api<NetworkPolicy> = self.api();
            api.delete(&object, &DeleteParams::default())
                .await
                .map(|_| ())
                .map_err(|e| self.error(&op, &format!("networkpolicy {object}"), e))
        })
        .await;
        missing_is_ok(result)
    }

    async fn list_networks(&self) -> RuntimeResult<Vec<NetworkInfo>> {
        bounded(KUBERNETES, "list networkpolicies", self.timeouts.list, async {
            let api: Api<NetworkPolicy> = self.api();
            let policies = api
                .list(&ListParams::default().labels(&managed_selector()))
                .await
                .map_err(|e| self.error("list networkpolicies", "networkpolicies", e))?;
            let pods = self.pods_with(&managed_selector()).await?;
            let mut networks: Vec<NetworkInfo> = policies.items.iter().map(|p| self.network_info(p, &pods)).collect();
            networks.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(networks)
        })
        .await
    }

    async fn inspect_network(&self, name: &str) -> RuntimeResult<NetworkInfo> {
        let object = names::object_name(name);
        let op = format!("read networkpolicy {object}");
        bounded(KUBERNETES, &op, self.timeouts.call, async {
            let api: Api<NetworkPolicy> = self.api();
            let policy = api
                .get(&object)
                .await
                .map_err(|e| self.error(&op, &format!("networkpolicy {object}"), e))?;
            let pods = self.pods_with(&format!("{NETWORK_LABEL}={object}")).await?;
            Ok(self.network_info(&policy, &pods))
        })
        .await
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> RuntimeResult<()> {
        Err(self.unsupported(&format!("create volume {} (use a PersistentVolumeClaim)", spec.name)))
    }

    /// Moat creates no volumes on Kubernetes: nothing to remove.
    async fn remove_volume(&self, _name: &str) -> RuntimeResult<()> {
        Ok(())
    }

    async fn list_volumes(&self) -> RuntimeResult<Vec<VolumeInfo>> {
        Ok(Vec::new())
    }
}
