//! The in-cluster proxy's objects (snapshots; every one labelled and owned
//! by the proxy's anchor), a run's proxy variables kept out of its pod's
//! spec, and deploying the proxy against the mock API server: created
//! once, reused, refused when another home's or other keys, and a stuck
//! image failing fast with the cluster's reason.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use moat_kube::manifest::{self, PodContext};
use moat_kube::mock::MockApiServer;
use moat_kube::proxy_manifest::{self, ProxyPlacement, ProxySecrets};
use moat_kube::{KubeOptions, KubeRuntime};
use moat_runtime::{BindMount, ContainerSpec, labels};

mod common;

use common::NS;
const HOME: &str = "aaaaaaaaaaaa";
const RUN: &str = "run_0123456789ab";
const TOKEN: &str = "5f0c0a8d3e1b4c2a9d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c";

fn placement(home: &str, material: &str) -> ProxyPlacement {
    ProxyPlacement {
        namespace: NS.into(),
        home: home.into(),
        image: "registry.example/moat-proxy:0.1.0".into(),
        material: material.into(),
    }
}

/// Stand-in PEM text: the manifests only carry it.
fn secrets() -> ProxySecrets {
    let pem = |what: &str| format!("-----BEGIN {what}-----\nnot a real one\n-----END {what}-----\n");
    ProxySecrets {
        interception_ca_cert: pem("CERTIFICATE"),
        interception_ca_key: pem("PRIVATE KEY"),
        control_ca_cert: pem("CERTIFICATE"),
        control_server_cert: pem("CERTIFICATE"),
        control_server_key: pem("PRIVATE KEY"),
    }
}

fn anchor() -> k8s_openapi::api::core::v1::ConfigMap {
    let mut anchor = proxy_manifest::proxy_anchor(&placement(HOME, "sha256:material"), "2026-01-01T00:00:00+00:00");
    anchor.metadata.uid = Some("uid-proxy-anchor".into());
    anchor
}

#[test]
fn the_objects_of_the_proxy() {
    let owner = manifest::owner_reference(&anchor());
    let objects = proxy_manifest::proxy_objects(&placement(HOME, "sha256:material"), &secrets(), owner.as_ref());
    insta::assert_json_snapshot!("proxy_configmap", anchor());
    insta::assert_json_snapshot!("proxy_ca_secret", objects.ca_secret);
    insta::assert_json_snapshot!("proxy_control_secret", objects.control_secret);
    insta::assert_json_snapshot!("proxy_deployment", objects.deployment);
    insta::assert_json_snapshot!("proxy_service", objects.service);
}

#[test]
fn every_object_of_the_proxy_carries_the_labels_and_the_owner() {
    let owner = manifest::owner_reference(&anchor());
    let objects = proxy_manifest::proxy_objects(&placement(HOME, "sha256:material"), &secrets(), owner.as_ref());
    let template = objects.deployment.spec.clone().unwrap().template.metadata.unwrap();
    let anchor = anchor();
    let owned: [(&str, &ObjectMeta); 4] = [
        ("ca secret", &objects.ca_secret.metadata),
        ("control secret", &objects.control_secret.metadata),
        ("deployment", &objects.deployment.metadata),
        ("service", &objects.service.metadata),
    ];
    let labelled = owned
        .iter()
        .map(|(kind, meta)| (*kind, *meta))
        .chain([("anchor", &anchor.metadata), ("pod template", &template)]);
    for (kind, meta) in labelled.collect::<Vec<_>>() {
        let labels = meta.labels.clone().unwrap();
        assert_eq!(labels[labels::MANAGED], "true", "{kind}");
        assert_eq!(labels[labels::HOME], HOME, "{kind}");
        assert_eq!(labels[labels::ROLE], proxy_manifest::PROXY_ROLE, "{kind}");
        assert!(!labels.contains_key(labels::RUN_ID), "{kind} belongs to no run");
    }
    for (kind, meta) in owned {
        let owners = meta.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1, "{kind} has one owner");
        assert_eq!(
            (owners[0].name.as_str(), owners[0].uid.as_str()),
            (proxy_manifest::PROXY_ANCHOR, "uid-proxy-anchor"),
            "{kind}"
        );
    }
    // The run's NetworkPolicy lets strict runs reach exactly these pods.
    let pod_labels = template.labels.unwrap();
    assert_eq!(pod_labels["app.kubernetes.io/name"], "moat-proxy");
}

fn run_container(ca: &str) -> ContainerSpec {
    let url = proxy_manifest::run_proxy_url(NS, TOKEN);
    let mut env: Vec<(String, String)> = manifest::SECRET_ENV
        .iter()
        .map(|k| (k.to_string(), url.clone()))
        .collect();
    env.push(("SSL_CERT_FILE".into(), "/etc/moat/ca/ca.crt".into()));
    ContainerSpec {
        name: RUN.into(),
        image: "ghcr.io/example/agent:1".into(),
        env,
        mounts: vec![BindMount {
            source: ca.into(),
            target: "/etc/moat/ca/ca.crt".into(),
            read_only: true,
        }],
        labels: labels::for_run(HOME, RUN, labels::role::MAIN),
        ..Default::default()
    }
}

#[test]
fn a_runs_proxy_token_is_in_its_secret_not_in_its_pod() {
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), "namespace CA").unwrap();
    let spec = run_container(&ca.path().display().to_string());
    let files = manifest::file_mounts(&spec, None).unwrap();
    let context = PodContext {
        namespace: NS.into(),
        ..Default::default()
    };
    let pod = manifest::pod(&spec, &context, &files).unwrap();
    let pod_json = serde_json::to_string(&pod).unwrap();
    assert!(!pod_json.contains(TOKEN), "the token is in the pod's spec");
    insta::assert_json_snapshot!("run_pod_with_proxy", pod);

    let env = manifest::secret_env(&spec);
    assert_eq!(env.len(), manifest::SECRET_ENV.len());
    let url = format!("http://moat:{TOKEN}@moat-proxy.{NS}.svc:8080");
    assert!(env.values().all(|value| value == url.as_bytes()));
    let mut contents = BTreeMap::from([("file-0".to_string(), b"namespace CA".to_vec())]);
    contents.extend(env);
    let secret = manifest::files_secret(&spec, NS, None, contents);
    let keys: Vec<&String> = secret.data.as_ref().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "env-HTTPS_PROXY",
            "env-HTTP_PROXY",
            "env-http_proxy",
            "env-https_proxy",
            "file-0"
        ]
    );
}

// === Against the mock API server ===

async fn runtime(mock: &MockApiServer) -> (KubeRuntime, tempfile::NamedTempFile) {
    common::connect(mock, KubeOptions::default()).await
}

fn creations(mock: &MockApiServer) -> Vec<String> {
    mock.requests().into_iter().filter(|r| r.starts_with("POST ")).collect()
}

#[tokio::test]
async fn the_proxy_is_deployed_once_and_reused() {
    let mock = MockApiServer::start().await.unwrap();
    let (runtime, _config) = runtime(&mock).await;
    let ready = Duration::from_secs(5);
    runtime
        .ensure_proxy(&placement(HOME, "sha256:one"), &secrets(), ready)
        .await
        .unwrap();
    for (kind, name) in [
        ("configmaps", "moat-proxy-meta"),
        ("secrets", "moat-proxy-ca"),
        ("secrets", "moat-proxy-control"),
        ("deployments", "moat-proxy"),
        ("services", "moat-proxy"),
    ] {
        let object = mock.object(kind, name).unwrap_or_else(|| panic!("no {kind} {name}"));
        assert_eq!(object["metadata"]["labels"][labels::HOME], HOME, "{kind} {name}");
    }
    assert!(
        mock.requests()
            .iter()
            .any(|r| r.contains("/apis/apps/v1/namespaces/agents/deployments"))
    );
    let created = creations(&mock).len();
    assert_eq!(created, 5);

    // A later run reuses the same objects (each creation meets 409).
    let before = mock.object("deployments", "moat-proxy").unwrap()["metadata"]["uid"].clone();
    runtime
        .ensure_proxy(&placement(HOME, "sha256:one"), &secrets(), ready)
        .await
        .unwrap();
    assert_eq!(
        mock.object("deployments", "moat-proxy").unwrap()["metadata"]["uid"],
        before
    );
    assert_eq!(mock.names("deployments").len(), 1);

    // Everything hangs off the anchor, so deleting it removes the proxy.
    let owned_by_anchor = mock.object("services", "moat-proxy").unwrap()["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .map(str::to_string);
    assert_eq!(owned_by_anchor.as_deref(), Some("moat-proxy-meta"));
}

#[tokio::test]
async fn another_homes_proxy_or_other_keys_are_refused_with_the_fix() {
    let mock = MockApiServer::start().await.unwrap();
    let (runtime, _config) = runtime(&mock).await;
    let ready = Duration::from_secs(5);
    runtime
        .ensure_proxy(&placement(HOME, "sha256:one"), &secrets(), ready)
        .await
        .unwrap();
    let other_home = runtime
        .ensure_proxy(&placement("bbbbbbbbbbbb", "sha256:one"), &secrets(), ready)
        .await
        .unwrap_err()
        .to_string();
    assert!(other_home.contains("another moat home"), "{other_home}");
    let other_keys = runtime
        .ensure_proxy(&placement(HOME, "sha256:two"), &secrets(), ready)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        other_keys.contains("kubectl -n agents delete configmap moat-proxy-meta"),
        "{other_keys}"
    );
}

#[tokio::test]
async fn a_proxy_whose_image_cannot_be_pulled_fails_fast_with_the_reason() {
    let mock = MockApiServer::start().await.unwrap();
    mock.stick_deployments("ErrImagePull");
    let (runtime, _config) = runtime(&mock).await;
    let started = Instant::now();
    let err = runtime
        .ensure_proxy(&placement(HOME, "sha256:one"), &secrets(), Duration::from_secs(20))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ErrImagePull") && err.contains("proxy image"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for the whole timeout"
    );
}

#[tokio::test]
async fn a_proxy_that_never_gets_ready_times_out_naming_the_wait() {
    let mock = MockApiServer::start().await.unwrap();
    let (runtime, _config) = runtime(&mock).await;
    mock.inject(moat_kube::mock::Fault {
        method: hyper::Method::GET,
        path_contains: "/deployments/moat-proxy".into(),
        status: 200,
        delay: Duration::from_secs(2),
        times: 10,
    });
    let err = runtime
        .ensure_proxy(&placement(HOME, "sha256:one"), &secrets(), Duration::from_millis(500))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("wait for deployment moat-proxy in namespace agents to have a ready pod"),
        "{err}"
    );
}
