//! The Kubernetes objects of a namespace's in-cluster proxy (pure
//! functions; the runtime sends them): its anchor ConfigMap, which owns the
//! rest; a Secret with the interception CA; a `kubernetes.io/tls` Secret
//! with the control server's identity and the control CA; the `moat-proxy`
//! Deployment running `moatd proxy`; and the Service runs reach it by. All
//! carry moat's labels with role `proxy` (no run id: later runs reuse them).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EmptyDirVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    Secret, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use moat_runtime::labels;

use crate::manifest::PROXY_PORT;
use crate::names::PROXY_POD_LABEL;

/// The Deployment's and the Service's name (runs use `moat-proxy.<namespace>.svc`).
pub const PROXY_NAME: &str = "moat-proxy";
/// The anchor ConfigMap that owns the proxy's other objects.
pub const PROXY_ANCHOR: &str = "moat-proxy-meta";
/// The Secret holding the interception CA (`ca.crt`, `ca.key`).
pub const PROXY_CA_SECRET: &str = "moat-proxy-ca";
/// The Secret holding the control identity (`tls.crt`, `tls.key`, `ca.crt`).
pub const PROXY_CONTROL_SECRET: &str = "moat-proxy-control";
/// The control API's port on the proxy's pods (reached by port-forward, not by the Service).
pub const CONTROL_PORT: i32 = 8443;
/// The proxy's container in its pods.
pub const PROXY_CONTAINER: &str = "proxy";
/// The role label of every object of the proxy.
pub const PROXY_ROLE: &str = "proxy";
/// Annotation (anchor and pod template) naming the material the proxy holds:
/// a digest of the control CA certificate.
pub const MATERIAL_ANNOTATION: &str = "dev.moat/proxy-material";
/// The unprivileged user the proxy runs as; its Secrets are readable by its group.
const PROXY_UID: i64 = 65532;

const CA_DIR: &str = "/etc/moat/ca";
const CONTROL_DIR: &str = "/etc/moat/control";
const STATE_VOLUME_DIR: &str = "/var/lib/moat-proxy";

/// The key material the proxy's Secrets hold, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxySecrets {
    pub interception_ca_cert: String,
    pub interception_ca_key: String,
    pub control_ca_cert: String,
    pub control_server_cert: String,
    pub control_server_key: String,
}

impl std::fmt::Debug for ProxySecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxySecrets(<redacted>)")
    }
}

/// Where and as what the proxy is deployed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyPlacement {
    pub namespace: String,
    /// The moat home label of the daemon that deploys it.
    pub home: String,
    /// An image holding `moatd` on its PATH (docs/kubernetes.md, "The proxy image").
    pub image: String,
    /// Digest of the material (see [`MATERIAL_ANNOTATION`]).
    pub material: String,
}

/// Every object of the proxy, in creation order after the anchor.
#[derive(Clone, Debug)]
pub struct ProxyObjects {
    pub ca_secret: Secret,
    pub control_secret: Secret,
    pub deployment: Deployment,
    pub service: Service,
}

/// The labels of every proxy object.
pub fn proxy_labels(home: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED.to_string(), "true".to_string()),
        (labels::HOME.to_string(), home.to_string()),
        (labels::ROLE.to_string(), PROXY_ROLE.to_string()),
    ])
}

fn metadata(name: &str, placement: &ProxyPlacement, owner: Option<&OwnerReference>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(placement.namespace.clone()),
        labels: Some(proxy_labels(&placement.home)),
        owner_references: owner.map(|o| vec![o.clone()]),
        ..Default::default()
    }
}

/// The anchor: owns the proxy's objects, names the material they hold.
pub fn proxy_anchor(placement: &ProxyPlacement, created: &str) -> ConfigMap {
    let mut meta = metadata(PROXY_ANCHOR, placement, None);
    meta.annotations = Some(BTreeMap::from([(
        MATERIAL_ANNOTATION.to_string(),
        placement.material.clone(),
    )]));
    ConfigMap {
        metadata: meta,
        data: Some(BTreeMap::from([
            ("home".to_string(), placement.home.clone()),
            ("created".to_string(), created.to_string()),
            ("image".to_string(), placement.image.clone()),
        ])),
        ..Default::default()
    }
}

/// The proxy's Secrets, Deployment and Service, owned by `owner` (the anchor).
pub fn proxy_objects(
    placement: &ProxyPlacement,
    secrets: &ProxySecrets,
    owner: Option<&OwnerReference>,
) -> ProxyObjects {
    ProxyObjects {
        ca_secret: secret(
            PROXY_CA_SECRET,
            "Opaque",
            placement,
            owner,
            [
                ("ca.crt", &secrets.interception_ca_cert),
                ("ca.key", &secrets.interception_ca_key),
            ],
        ),
        control_secret: secret(
            PROXY_CONTROL_SECRET,
            "kubernetes.io/tls",
            placement,
            owner,
            [
                ("tls.crt", &secrets.control_server_cert),
                ("tls.key", &secrets.control_server_key),
                ("ca.crt", &secrets.control_ca_cert),
            ],
        ),
        deployment: deployment(placement, owner),
        service: service(placement, owner),
    }
}

fn secret<const N: usize>(
    name: &str,
    type_: &str,
    placement: &ProxyPlacement,
    owner: Option<&OwnerReference>,
    entries: [(&str, &String); N],
) -> Secret {
    Secret {
        metadata: metadata(name, placement, owner),
        data: Some(
            entries
                .into_iter()
                .map(|(key, value)| (key.to_string(), ByteString(value.as_bytes().to_vec())))
                .collect(),
        ),
        type_: Some(type_.to_string()),
        ..Default::default()
    }
}

fn pod_labels(home: &str) -> BTreeMap<String, String> {
    let mut labels = proxy_labels(home);
    labels.insert(PROXY_POD_LABEL.0.to_string(), PROXY_POD_LABEL.1.to_string());
    labels
}

fn deployment(placement: &ProxyPlacement, owner: Option<&OwnerReference>) -> Deployment {
    let selector = BTreeMap::from([(PROXY_POD_LABEL.0.to_string(), PROXY_POD_LABEL.1.to_string())]);
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels(&placement.home)),
            // A change of material rolls the pods, so they load the new Secrets.
            annotations: Some(BTreeMap::from([(
                MATERIAL_ANNOTATION.to_string(),
                placement.material.clone(),
            )])),
            ..Default::default()
        }),
        spec: Some(proxy_pod_spec(&placement.image)),
    };
    Deployment {
        metadata: metadata(PROXY_NAME, placement, owner),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            // One proxy at a time: the daemon's control channel reaches one pod.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".to_string()),
                rolling_update: None,
            }),
            template,
            ..Default::default()
        }),
        status: None,
    }
}

fn proxy_pod_spec(image: &str) -> PodSpec {
    let secret_volume = |name: &str, secret: &str| Volume {
        name: name.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            default_mode: Some(0o440),
            optional: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let args = [
        "proxy",
        "--listen",
        &format!("0.0.0.0:{PROXY_PORT}"),
        "--control",
        &format!("0.0.0.0:{CONTROL_PORT}"),
        "--ca-dir",
        CA_DIR,
        "--control-dir",
        CONTROL_DIR,
        "--state-dir",
        &format!("{STATE_VOLUME_DIR}/traces"),
    ]
    .map(str::to_string);
    let container = Container {
        name: PROXY_CONTAINER.to_string(),
        image: Some(image.to_string()),
        command: Some(vec!["moatd".to_string()]),
        args: Some(args.to_vec()),
        ports: Some(vec![
            container_port("proxy", PROXY_PORT),
            container_port("control", CONTROL_PORT),
        ]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(PROXY_PORT),
                host: None,
            }),
            period_seconds: Some(2),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("ca", CA_DIR, true),
            mount("control", CONTROL_DIR, true),
            mount("state", STATE_VOLUME_DIR, false),
        ]),
        ..Default::default()
    };
    PodSpec {
        containers: vec![container],
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_user: Some(PROXY_UID),
            run_as_group: Some(PROXY_UID),
            fs_group: Some(PROXY_UID),
            ..Default::default()
        }),
        volumes: Some(vec![
            secret_volume("ca", PROXY_CA_SECRET),
            secret_volume("control", PROXY_CONTROL_SECRET),
            Volume {
                name: "state".to_string(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

/// The Service runs' HTTP(S)_PROXY names: the proxy port only (the control
/// port is reached through the API server's port-forward).
fn service(placement: &ProxyPlacement, owner: Option<&OwnerReference>) -> Service {
    Service {
        metadata: metadata(PROXY_NAME, placement, owner),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([(
                PROXY_POD_LABEL.0.to_string(),
                PROXY_POD_LABEL.1.to_string(),
            )])),
            ports: Some(vec![ServicePort {
                name: Some("proxy".to_string()),
                port: PROXY_PORT,
                target_port: Some(IntOrString::Int(PROXY_PORT)),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            }]),
            type_: Some("ClusterIP".to_string()),
            ..Default::default()
        }),
        status: None,
    }
}

/// The proxy URL a run in `namespace` uses, with its token.
pub fn run_proxy_url(namespace: &str, token: &str) -> String {
    format!("http://moat:{token}@{PROXY_NAME}.{namespace}.svc:{PROXY_PORT}")
}
