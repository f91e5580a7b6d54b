//! The objects of one run, as snapshots, and the rule that every object
//! of a run carries moat's labels and an owner reference to its anchor.

use std::collections::BTreeMap;
use std::io::Write;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use moat_kube::manifest::{self, FileMount, ManifestError, PodContext};
use moat_runtime::{BindMount, ContainerSpec, NetworkSpec, labels};

const RUN: &str = "run_0123456789ab";
const HOME: &str = "aaaaaaaaaaaa";

fn anchor() -> k8s_openapi::api::core::v1::ConfigMap {
    let mut anchor = manifest::anchor(
        "agents",
        &labels::for_run(HOME, RUN, "run"),
        "2026-01-01T00:00:00+00:00",
    );
    anchor.metadata.uid = Some("uid-anchor".into());
    anchor
}

fn network() -> NetworkSpec {
    NetworkSpec {
        name: format!("moat-{RUN}"),
        labels: labels::for_run(HOME, RUN, labels::role::NETWORK),
        internal: true,
    }
}

fn container(ca: &str) -> ContainerSpec {
    let mut labels = labels::for_run(HOME, RUN, labels::role::MAIN);
    labels.insert("team".into(), "platform".into());
    ContainerSpec {
        name: RUN.into(),
        image: "ghcr.io/example/agent:1".into(),
        command: vec!["make".into(), "test".into()],
        env: vec![("CI".into(), "1".into())],
        mounts: vec![
            BindMount {
                source: "/home/me/project".into(),
                target: "/workspace".into(),
                read_only: false,
            },
            BindMount {
                source: ca.into(),
                target: "/etc/moat/ca.pem".into(),
                read_only: true,
            },
        ],
        working_dir: Some("/workspace".into()),
        user: Some("1000:1000".into()),
        network: Some(network().name),
        labels,
        memory_bytes: Some(512 * 1024 * 1024),
        cpus: Some(1.5),
        ..Default::default()
    }
}

fn context() -> PodContext {
    PodContext {
        namespace: "agents".into(),
        owner: manifest::owner_reference(&anchor()),
        workspace_claim: Some("project-workspace".into()),
    }
}

fn ca_file() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n")
        .unwrap();
    file
}

#[test]
fn the_objects_of_a_run() {
    let ca = ca_file();
    let spec = container("/tmp/ca.pem");
    let files = vec![FileMount {
        source: "/tmp/ca.pem".into(),
        target: "/etc/moat/ca.pem".into(),
        key: "file-0".into(),
    }];
    let owner = manifest::owner_reference(&anchor());
    let contents = BTreeMap::from([("file-0".to_string(), std::fs::read(ca.path()).unwrap())]);
    insta::assert_json_snapshot!("configmap", anchor());
    insta::assert_json_snapshot!("pod", manifest::pod(&spec, &context(), &files).unwrap());
    insta::assert_json_snapshot!(
        "networkpolicy",
        manifest::network_policy(&network(), "agents", owner.as_ref())
    );
    insta::assert_json_snapshot!(
        "secret",
        manifest::files_secret(&spec, "agents", owner.as_ref(), contents)
    );
}

#[test]
fn a_permissive_network_lets_egress_out_and_nothing_in() {
    let spec = NetworkSpec {
        internal: false,
        ..network()
    };
    let policy = manifest::network_policy(&spec, "agents", None).spec.unwrap();
    assert_eq!(policy.ingress, Some(Vec::new()), "no ingress at all");
    let egress = policy.egress.unwrap();
    assert_eq!(egress.len(), 1);
    assert!(egress[0].to.is_none(), "one rule with no peer: anywhere");
}

#[test]
fn every_object_of_a_run_carries_the_labels_and_the_owner() {
    let ca = ca_file();
    let ca_path = ca.path().display().to_string();
    let spec = container(&ca_path);
    let files = manifest::file_mounts(&spec, Some("project-workspace")).unwrap();
    assert_eq!(files.len(), 1, "the CA is the one file copied");
    let owner = manifest::owner_reference(&anchor());
    let pod = manifest::pod(&spec, &context(), &files).unwrap();
    let policy = manifest::network_policy(&network(), "agents", owner.as_ref());
    let secret = manifest::files_secret(&spec, "agents", owner.as_ref(), BTreeMap::new());
    let owned: [(&str, &ObjectMeta); 3] = [
        ("pod", &pod.metadata),
        ("networkpolicy", &policy.metadata),
        ("secret", &secret.metadata),
    ];
    for (kind, meta) in owned {
        let labels = meta.labels.clone().unwrap();
        for key in [labels::MANAGED, labels::RUN_ID, labels::HOME, labels::ROLE] {
            assert!(labels.contains_key(key), "{kind} lacks {key}");
        }
        assert_eq!(labels[labels::RUN_ID], RUN, "{kind}");
        let owners = meta.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1, "{kind} has one owner");
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].uid.as_str()),
            ("ConfigMap", "uid-anchor"),
            "{kind}"
        );
        assert_eq!(owners[0].name, "run-0123456789ab-meta", "{kind}");
    }
    let anchor_labels = anchor().metadata.labels.unwrap();
    assert_eq!(anchor_labels[labels::RUN_ID], RUN);
    assert_eq!(anchor_labels[labels::MANAGED], "true");
}

#[test]
fn the_pod_holds_no_service_account_token_and_never_restarts() {
    let ca = ca_file();
    let spec = container(&ca.path().display().to_string());
    let pod = manifest::pod(&spec, &context(), &[]).unwrap().spec.unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.enable_service_links, Some(false));
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
}

#[test]
fn what_a_pod_cannot_have_is_refused_with_the_fix() {
    let ca = ca_file();
    let spec = container(&ca.path().display().to_string());
    assert_eq!(manifest::file_mounts(&spec, None), Err(ManifestError::NoWorkspaceClaim));
    let mut writable = spec.clone();
    writable.mounts[1].read_only = false;
    let err = manifest::file_mounts(&writable, Some("claim")).unwrap_err();
    assert!(err.to_string().contains("cannot mount the host directory"), "{err}");
    let mut named = spec.clone();
    named.user = Some("agent".into());
    let err = manifest::pod(&named, &context(), &[]).unwrap_err();
    assert_eq!(err, ManifestError::UserNotNumeric("agent".into()));
    let mut volume = spec;
    volume.volumes = vec![("cache".into(), "/cache".into())];
    assert!(matches!(
        manifest::file_mounts(&volume, Some("claim")),
        Err(ManifestError::NamedVolume(_))
    ));
}
