//! The Kubernetes objects of a run, built from the runtime-neutral specs
//! (pure functions; the runtime sends them): the run's anchor ConfigMap,
//! its Pod, its NetworkPolicy and the Secret of its read-only files. Every
//! object carries moat's labels and, once the anchor exists, an owner
//! reference to it (docs/kubernetes.md, "Objects").

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, EnvVar, EnvVarSource, HostAlias, KeyToPath, PersistentVolumeClaimVolumeSource,
    Pod, PodDNSConfig, PodSecurityContext, PodSpec, ResourceRequirements, Secret, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use moat_runtime::{ContainerSpec, NetworkSpec, labels};

use crate::names::{self, NETWORK_LABEL, PROXY_POD_LABEL};

/// Where a run's workspace is mounted (as on Docker).
pub const WORKSPACE_TARGET: &str = "/workspace";
/// The name of the run's container inside its pod.
pub const CONTAINER_NAME: &str = "main";
/// The port of the in-cluster proxy's pods (docs/kubernetes.md, "Proxy").
pub const PROXY_PORT: i32 = 8080;
/// Environment variables that carry the run's proxy token: the pod reads
/// them from the run's Secret (`valueFrom`), so the token is not in the
/// pod's spec for whoever may `get pods`.
pub const SECRET_ENV: &[&str] = &["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"];
/// Largest file a read-only mount may copy into the run's Secret (the API
/// server refuses objects over 1 MiB).
pub const MAX_FILE_BYTES: u64 = 512 * 1024;

/// A manifest that cannot express the spec, with what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error(
        "cannot mount the host directory {host} at {target}: a pod runs on a cluster node, not on this machine; \
         the workspace comes from `kubernetes.workspace_claim` and other mounts must be read-only files"
    )]
    HostMount { host: String, target: String },
    #[error(
        "the workspace needs `kubernetes: {{workspace_claim: NAME}}` in moat.yaml: a PersistentVolumeClaim in the \
         namespace that holds the workspace (docs/kubernetes.md, \"Workspace\")"
    )]
    NoWorkspaceClaim,
    #[error("named volumes ({0}) are not available on kubernetes in this version")]
    NamedVolume(String),
    #[error("user {0:?} is not numeric: on kubernetes a run's user must be `uid` or `uid:gid`")]
    UserNotNumeric(String),
}

/// What places a pod in the cluster besides its container spec.
#[derive(Clone, Debug, Default)]
pub struct PodContext {
    pub namespace: String,
    /// The run's anchor, when the pod belongs to a run.
    pub owner: Option<OwnerReference>,
    pub workspace_claim: Option<String>,
}

/// A read-only host file copied into the run's Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMount {
    pub source: String,
    pub target: String,
    /// Its key in the Secret.
    pub key: String,
}

/// The read-only file mounts of `spec` (copied into a Secret); refuses
/// host directories other than the workspace and named volumes.
pub fn file_mounts(spec: &ContainerSpec, claim: Option<&str>) -> Result<Vec<FileMount>, ManifestError> {
    if let Some((volume, _)) = spec.volumes.first() {
        return Err(ManifestError::NamedVolume(volume.clone()));
    }
    let mut files = Vec::new();
    for mount in &spec.mounts {
        if mount.target == WORKSPACE_TARGET {
            if claim.is_none() {
                return Err(ManifestError::NoWorkspaceClaim);
            }
            continue;
        }
        if !mount.read_only || std::path::Path::new(&mount.source).is_dir() {
            return Err(ManifestError::HostMount {
                host: mount.source.clone(),
                target: mount.target.clone(),
            });
        }
        files.push(FileMount {
            source: mount.source.clone(),
            target: mount.target.clone(),
            key: format!("file-{}", files.len()),
        });
    }
    Ok(files)
}

/// The run's Secret entries for its [`SECRET_ENV`] variables, by key.
pub fn secret_env(spec: &ContainerSpec) -> BTreeMap<String, Vec<u8>> {
    spec.env
        .iter()
        .filter(|(name, _)| SECRET_ENV.contains(&name.as_str()))
        .map(|(name, value)| (secret_env_key(name), value.as_bytes().to_vec()))
        .collect()
}

fn secret_env_key(name: &str) -> String {
    format!("env-{name}")
}

fn env_var(spec: &ContainerSpec, name: &str, value: &str) -> EnvVar {
    if !SECRET_ENV.contains(&name) {
        return EnvVar {
            name: name.to_string(),
            value: Some(value.to_string()),
            value_from: None,
        };
    }
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: names::files_secret_name(&spec.name),
                key: secret_env_key(name),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

/// Metadata for an object moat names `name` with `labels`.
fn metadata(
    name: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    owner: Option<&OwnerReference>,
) -> ObjectMeta {
    let (valid, annotations) = names::split_labels(name, labels);
    ObjectMeta {
        name: Some(names::object_name(name)),
        namespace: Some(namespace.to_string()),
        labels: Some(valid),
        annotations: Some(annotations),
        owner_references: owner.map(|o| vec![o.clone()]),
        ..Default::default()
    }
}

/// The run's anchor: owns the run's other objects and carries its
/// metadata (run id, moat home, when it was created).
pub fn anchor(namespace: &str, labels: &BTreeMap<String, String>, created: &str) -> ConfigMap {
    let run_id = labels.get(labels::RUN_ID).cloned().unwrap_or_default();
    let mut own = labels.clone();
    own.insert(labels::ROLE.to_string(), "run".to_string());
    let data = BTreeMap::from([
        ("run-id".to_string(), run_id.clone()),
        (
            "home".to_string(),
            labels.get(labels::HOME).cloned().unwrap_or_default(),
        ),
        ("created".to_string(), created.to_string()),
    ]);
    ConfigMap {
        metadata: metadata(&names::anchor_name(&run_id), namespace, &own, None),
        data: Some(data),
        ..Default::default()
    }
}

/// The owner reference other objects of the run carry; `None` until the
/// anchor has its uid from the API server.
pub fn owner_reference(anchor: &ConfigMap) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".to_string(),
        kind: "ConfigMap".to_string(),
        name: anchor.metadata.name.clone()?,
        uid: anchor.metadata.uid.clone()?,
        block_owner_deletion: None,
        controller: Some(false),
    })
}

/// A run's "network": ingress closed, egress to anywhere (permissive) or,
/// for an internal network, only to the proxy's pods and the cluster DNS.
pub fn network_policy(spec: &NetworkSpec, namespace: &str, owner: Option<&OwnerReference>) -> NetworkPolicy {
    let selector = BTreeMap::from([(NETWORK_LABEL.to_string(), names::object_name(&spec.name))]);
    let egress = if spec.internal {
        vec![proxy_egress(), dns_egress()]
    } else {
        vec![NetworkPolicyEgressRule::default()]
    };
    NetworkPolicy {
        metadata: metadata(&spec.name, namespace, &spec.labels, owner),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ingress: Some(Vec::new()),
            egress: Some(egress),
        }),
    }
}

fn port(protocol: &str, number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_string()),
        port: Some(IntOrString::Int(number)),
        end_port: None,
    }
}

fn proxy_egress() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    PROXY_POD_LABEL.0.to_string(),
                    PROXY_POD_LABEL.1.to_string(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![port("TCP", PROXY_PORT)]),
    }
}

/// DNS to the cluster resolver only (kube-system's `k8s-app=kube-dns`).
fn dns_egress() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    "kube-system".to_string(),
                )])),
                ..Default::default()
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())])),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
    }
}

/// The Secret of a container's read-only files and [`SECRET_ENV`]
/// variables (`contents` by key).
pub fn files_secret(
    spec: &ContainerSpec,
    namespace: &str,
    owner: Option<&OwnerReference>,
    contents: BTreeMap<String, Vec<u8>>,
) -> Secret {
    let name = names::files_secret_name(&spec.name);
    let mut meta = metadata(&name, namespace, &spec.labels, owner);
    meta.name = Some(name);
    Secret {
        metadata: meta,
        data: Some(contents.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        immutable: Some(true),
        type_: Some("Opaque".to_string()),
        ..Default::default()
    }
}

/// The pod of a container: never restarted, no service-account token, no
/// service links, on its network's policy by label.
pub fn pod(spec: &ContainerSpec, context: &PodContext, files: &[FileMount]) -> Result<Pod, ManifestError> {
    let mut meta = metadata(&spec.name, &context.namespace, &spec.labels, context.owner.as_ref());
    if let (Some(network), Some(labels)) = (&spec.network, meta.labels.as_mut()) {
        labels.insert(NETWORK_LABEL.to_string(), names::object_name(network));
    }
    let (volumes, mounts) = volumes(spec, context, files);
    let container = Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(spec.image.clone()),
        args: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(
            spec.env
                .iter()
                .map(|(name, value)| env_var(spec, name, value))
                .collect(),
        ),
        working_dir: spec.working_dir.clone(),
        resources: resources(spec),
        security_context: (!spec.cap_add.is_empty()).then(|| SecurityContext {
            capabilities: Some(Capabilities {
                add: Some(spec.cap_add.clone()),
                drop: None,
            }),
            ..Default::default()
        }),
        stdin: Some(spec.open_stdin),
        stdin_once: Some(spec.open_stdin),
        tty: Some(spec.tty),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let pod_spec = PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".to_string()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: security_context(spec.user.as_deref())?,
        host_aliases: host_aliases(&spec.extra_hosts),
        dns_policy: (!spec.dns.is_empty()).then(|| "None".to_string()),
        dns_config: (!spec.dns.is_empty()).then(|| PodDNSConfig {
            nameservers: Some(spec.dns.clone()),
            ..Default::default()
        }),
        volumes: Some(volumes),
        ..Default::default()
    };
    Ok(Pod {
        metadata: meta,
        spec: Some(pod_spec),
        status: None,
    })
}

fn volumes(spec: &ContainerSpec, context: &PodContext, files: &[FileMount]) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let has_workspace = spec.mounts.iter().any(|m| m.target == WORKSPACE_TARGET);
    if let (true, Some(claim)) = (has_workspace, &context.workspace_claim) {
        volumes.push(Volume {
            name: "workspace".to_string(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(false),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "workspace".to_string(),
            mount_path: WORKSPACE_TARGET.to_string(),
            ..Default::default()
        });
    }
    if !files.is_empty() {
        volumes.push(Volume {
            name: "files".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::files_secret_name(&spec.name)),
                items: Some(
                    files
                        .iter()
                        .map(|f| KeyToPath {
                            key: f.key.clone(),
                            path: f.key.clone(),
                            mode: None,
                        })
                        .collect(),
                ),
                default_mode: Some(0o444),
                optional: Some(false),
            }),
            ..Default::default()
        });
        mounts.extend(files.iter().map(|f| VolumeMount {
            name: "files".to_string(),
            mount_path: f.target.clone(),
            sub_path: Some(f.key.clone()),
            read_only: Some(true),
            ..Default::default()
        }));
    }
    (volumes, mounts)
}

fn resources(spec: &ContainerSpec) -> Option<ResourceRequirements> {
    let mut limits = BTreeMap::new();
    if let Some(bytes) = spec.memory_bytes {
        limits.insert("memory".to_string(), Quantity(bytes.to_string()));
    }
    if let Some(cpus) = spec.cpus {
        limits.insert(
            "cpu".to_string(),
            Quantity(format!("{}m", (cpus * 1000.0).round() as i64)),
        );
    }
    (!limits.is_empty()).then(|| ResourceRequirements {
        limits: Some(limits),
        ..Default::default()
    })
}

/// `uid[:gid]` as the pod's user; names cannot be resolved by Kubernetes.
fn security_context(user: Option<&str>) -> Result<Option<PodSecurityContext>, ManifestError> {
    let Some(user) = user else { return Ok(None) };
    let (uid, gid) = user.split_once(':').map_or((user, None), |(u, g)| (u, Some(g)));
    let number = |text: &str| {
        text.parse::<i64>()
            .map_err(|_| ManifestError::UserNotNumeric(user.to_string()))
    };
    Ok(Some(PodSecurityContext {
        run_as_user: Some(number(uid)?),
        run_as_group: gid.map(number).transpose()?,
        ..Default::default()
    }))
}

fn host_aliases(extra_hosts: &[(String, String)]) -> Option<Vec<HostAlias>> {
    let mut by_address: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, address) in extra_hosts {
        by_address.entry(address).or_default().push(name.clone());
    }
    (!by_address.is_empty()).then(|| {
        by_address
            .into_iter()
            .map(|(ip, hostnames)| HostAlias {
                ip: ip.to_string(),
                hostnames: Some(hostnames),
            })
            .collect()
    })
}
