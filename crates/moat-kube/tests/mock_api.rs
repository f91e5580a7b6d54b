//! The runtime against the mock API server: a run from creation to
//! cleanup, the orphan sweep's calls, and each kind of API failure with
//! the message a user sees.

use std::time::Duration;

use futures_util::StreamExt;
use hyper::Method;
use moat_kube::mock::{Fault, MockApiServer, PodScript};
use moat_kube::{KubeOptions, KubeRuntime};
use moat_runtime::{BindMount, ContainerSpec, ContainerStatus, NetworkSpec, Runtime, RuntimeError, Timeouts, labels};

mod common;
const RUN: &str = "run_0123456789ab";

struct Harness {
    mock: MockApiServer,
    runtime: KubeRuntime,
    _kubeconfig: tempfile::NamedTempFile,
}

async fn harness(timeouts: Timeouts) -> Harness {
    let mock = MockApiServer::start().await.unwrap();
    let options = KubeOptions {
        workspace_claim: Some("workspace".into()),
        timeouts,
        start_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let (runtime, kubeconfig) = common::connect(&mock, options).await;
    Harness {
        mock,
        runtime,
        _kubeconfig: kubeconfig,
    }
}

fn network(internal: bool) -> NetworkSpec {
    NetworkSpec {
        name: format!("moat-{RUN}"),
        labels: labels::for_run("home", RUN, labels::role::NETWORK),
        internal,
    }
}

fn container() -> ContainerSpec {
    ContainerSpec {
        name: RUN.into(),
        image: "busybox".into(),
        command: vec!["sh".into(), "-c".into(), "echo hello".into()],
        mounts: vec![BindMount {
            source: "/home/me/project".into(),
            target: "/workspace".into(),
            read_only: false,
        }],
        network: Some(network(true).name),
        labels: labels::for_run("home", RUN, labels::role::MAIN),
        ..Default::default()
    }
}

async fn output(runtime: &KubeRuntime, id: &str) -> String {
    let mut stream = runtime.logs(id, true, None).await.unwrap();
    let mut text = Vec::new();
    while let Some(chunk) = stream.next().await {
        text.extend_from_slice(&chunk.unwrap().data);
    }
    String::from_utf8(text).unwrap()
}

fn fault(method: Method, path: &str, status: u16) -> Fault {
    Fault {
        method,
        path_contains: path.into(),
        status,
        delay: Duration::ZERO,
        times: 1,
    }
}

#[tokio::test]
async fn a_run_streams_its_output_exits_with_its_code_and_is_cleaned_up() {
    let h = harness(Timeouts::default()).await;
    h.mock.script(PodScript {
        output: "hello from the pod\n".into(),
        exit_code: 3,
        ..Default::default()
    });
    h.runtime.ping().await.unwrap();
    let net = h.runtime.create_network(&network(true)).await.unwrap();
    assert!(net.internal);
    let id = h.runtime.create_container(&container()).await.unwrap();
    assert_eq!(id, "run-0123456789ab");
    assert!(
        h.mock.names("pods").is_empty(),
        "a created container is not running yet"
    );
    assert_eq!(
        h.runtime.inspect_container(&id).await.unwrap().status,
        ContainerStatus::Created
    );
    assert_eq!(h.mock.names("configmaps"), ["run-0123456789ab-meta"]);
    h.runtime.start_container(&id).await.unwrap();
    assert_eq!(output(&h.runtime, &id).await, "hello from the pod\n");
    assert_eq!(h.runtime.wait_container(&id).await.unwrap(), Some(3));
    let info = h.runtime.inspect_container(RUN).await.unwrap();
    assert_eq!((info.status, info.exit_code), (ContainerStatus::Exited, Some(3)));
    assert_eq!(info.name, RUN, "moat's name comes back");
    assert_eq!(info.networks, ["moat-run-0123456789ab"]);
    assert_eq!(
        h.runtime.inspect_network(&net.name).await.unwrap().containers,
        [id.as_str()]
    );

    h.runtime.remove_container(&id).await.unwrap();
    assert!(h.mock.names("pods").is_empty());
    assert!(h.mock.names("configmaps").is_empty(), "the run's anchor is deleted");
    assert!(
        h.mock.names("networkpolicies").is_empty(),
        "the policy went with its owner"
    );
    h.runtime.remove_network(&net.name).await.unwrap();
    h.runtime.remove_container(&id).await.unwrap();
}

#[tokio::test]
async fn an_expired_watch_is_started_again() {
    let h = harness(Timeouts::default()).await;
    h.mock.script(PodScript {
        exit_code: 0,
        runs_for: Duration::from_millis(300),
        ..Default::default()
    });
    h.mock.expire_watches(1);
    let id = h.runtime.create_container(&container()).await.unwrap();
    h.runtime.start_container(&id).await.unwrap();
    assert_eq!(h.runtime.wait_container(&id).await.unwrap(), Some(0));
    let watches = h.mock.requests().iter().filter(|r| r.contains("watch=true")).count();
    assert_eq!(watches, 2, "one expired (410), one to the end");
}

#[tokio::test]
async fn an_image_the_cluster_cannot_pull_fails_the_wait_with_the_reason() {
    let h = harness(Timeouts::default()).await;
    h.mock.script(PodScript {
        cannot_start: Some("ErrImagePull".into()),
        ..Default::default()
    });
    let id = h.runtime.create_container(&container()).await.unwrap();
    h.runtime.start_container(&id).await.unwrap();
    let err = h.runtime.wait_container(&id).await.unwrap_err().to_string();
    assert!(err.contains("cannot start") && err.contains("ErrImagePull"), "{err}");
    let err = h.runtime.logs(&id, true, None).await.err().unwrap().to_string();
    assert!(err.contains("ErrImagePull"), "{err}");
}

#[tokio::test]
async fn orphans_are_listed_and_only_stopped_ones_removed() {
    let h = harness(Timeouts::default()).await;
    h.mock.script(PodScript {
        runs_for: Duration::from_secs(30),
        ..Default::default()
    });
    let id = h.runtime.create_container(&container()).await.unwrap();
    h.runtime.create_network(&network(true)).await.unwrap();
    h.runtime.start_container(&id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let listed = h.runtime.list_containers().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].labels[labels::RUN_ID], RUN);
    assert!(listed[0].status.is_running());
    let err = h.runtime.remove_stopped_container(&id).await.unwrap_err();
    assert!(matches!(err, RuntimeError::InUse { .. }), "{err}");
    let err = h.runtime.remove_network(&network(true).name).await.unwrap_err();
    assert!(matches!(err, RuntimeError::InUse { .. }), "{err}");
    let networks = h.runtime.list_networks().await.unwrap();
    assert_eq!(networks.len(), 1);
    assert_eq!(networks[0].name, network(true).name);

    h.runtime.stop_container(&id, Duration::ZERO).await.unwrap();
    assert!(h.runtime.list_containers().await.unwrap().is_empty());
    assert_eq!(
        h.mock.names("configmaps").len(),
        1,
        "a stopped run keeps its anchor until removed"
    );
    h.runtime.remove_container(&id).await.unwrap();
    assert!(
        h.mock.names("configmaps").is_empty(),
        "removing a stopped run's pod removes its anchor"
    );
    assert!(h.mock.names("networkpolicies").is_empty(), "and the policy it owned");
    h.runtime.remove_network(&network(true).name).await.unwrap();
}

#[tokio::test]
async fn forbidden_calls_say_which_permission_is_missing() {
    let h = harness(Timeouts::default()).await;
    h.mock.inject(fault(Method::POST, "/pods", 403));
    let id = h.runtime.create_container(&container()).await.unwrap();
    let err = h.runtime.start_container(&id).await.unwrap_err().to_string();
    assert!(err.contains("create pod run-0123456789ab"), "{err}");
    assert!(
        err.contains("forbidden") && err.contains("RBAC") && err.contains("namespace agents"),
        "{err}"
    );
}

#[tokio::test]
async fn a_name_in_use_is_a_conflict_that_says_so() {
    let h = harness(Timeouts::default()).await;
    h.runtime.create_network(&network(false)).await.unwrap();
    let err = h.runtime.create_network(&network(false)).await.unwrap_err().to_string();
    assert!(err.contains("conflict") && err.contains("already exists"), "{err}");
}

#[tokio::test]
async fn a_slow_api_server_times_out_naming_the_call() {
    let h = harness(Timeouts {
        call: Duration::from_millis(300),
        ..Timeouts::default()
    })
    .await;
    h.mock.inject(Fault {
        delay: Duration::from_secs(3),
        status: 200,
        ..fault(Method::GET, "/version", 200)
    });
    let err = h.runtime.ping().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(err.to_string().contains("ask the API server its version"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_with_the_reason() {
    let mock = MockApiServer::start().await.unwrap();
    let kubeconfig = common::kubeconfig(&mock);
    drop(mock);
    let runtime = KubeRuntime::connect(KubeOptions {
        kubeconfig: Some(kubeconfig.path().to_path_buf()),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = runtime.ping().await.unwrap_err();
    assert!(matches!(err, RuntimeError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("cannot reach the API server"), "{err}");
}

#[tokio::test]
async fn a_missing_kubeconfig_context_is_refused_with_the_fix() {
    let mock = MockApiServer::start().await.unwrap();
    let kubeconfig = common::kubeconfig(&mock);
    let err = KubeRuntime::connect(KubeOptions {
        kubeconfig: Some(kubeconfig.path().to_path_buf()),
        context: Some("prod".into()),
        ..Default::default()
    })
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("context prod"), "{err}");
}
