//! The fake's own semantics: removals, in-use networks, scripted failures,
//! slow calls under paused time, scripted runs and log streaming.

use std::collections::BTreeMap;

use chrono::Utc;
use futures_util::StreamExt;

use super::*;
use crate::{ContainerSpec, ContainerStatus, NetworkSpec, OutputStream, Runtime, RuntimeError, labels};

fn run_spec(name: &str, network: Option<&str>) -> ContainerSpec {
    ContainerSpec {
        name: name.to_string(),
        image: "debian:bookworm-slim".to_string(),
        network: network.map(str::to_string),
        labels: labels::for_run("home", name, labels::role::MAIN),
        ..ContainerSpec::default()
    }
}

fn net_spec(name: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.to_string(),
        labels: labels::for_run("home", "run_0123456789ab", labels::role::NETWORK),
        internal: false,
    }
}

fn fake_with_image() -> FakeRuntime {
    let fake = FakeRuntime::new();
    fake.add_image("debian:bookworm-slim");
    fake
}

async fn collect_text(stream: OutputStream) -> Vec<(OutputStreamKind, String)> {
    stream
        .map(|chunk| {
            let chunk = chunk.unwrap();
            (chunk.stream, String::from_utf8(chunk.data.to_vec()).unwrap())
        })
        .collect()
        .await
}

#[tokio::test]
async fn removing_missing_objects_succeeds() {
    let fake = FakeRuntime::new();
    fake.remove_container("nope").await.unwrap();
    fake.remove_network("nope").await.unwrap();
    fake.remove_volume("nope").await.unwrap();
    fake.remove_image("nope").await.unwrap();
    assert!(fake.inspect_container("nope").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn network_with_attached_container_is_in_use_until_it_is_removed() {
    let fake = fake_with_image();
    fake.create_network(&net_spec("moat-run_0123456789ab")).await.unwrap();
    let id = fake
        .create_container(&run_spec("run_0123456789ab", Some("moat-run_0123456789ab")))
        .await
        .unwrap();
    let listed = fake.list_networks().await.unwrap();
    assert_eq!(listed[0].containers, vec!["run_0123456789ab".to_string()]);

    let err = fake.remove_network("moat-run_0123456789ab").await.unwrap_err();
    assert!(matches!(err, RuntimeError::InUse { .. }), "{err}");

    fake.remove_container(&id).await.unwrap();
    fake.remove_network("moat-run_0123456789ab").await.unwrap();
    assert!(fake.networks().is_empty());
}

#[tokio::test]
async fn create_needs_the_image_and_the_network() {
    let fake = FakeRuntime::new();
    let err = fake
        .create_container(&run_spec("run_0123456789ab", None))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    fake.add_image("debian:bookworm-slim");
    let err = fake
        .create_container(&run_spec("run_0123456789ab", Some("missing")))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn scripted_failures_apply_exactly_the_given_number_of_times() {
    let fake = FakeRuntime::new();
    fake.fail_next(FakeOp::Ping, FakeErrorKind::Unavailable, 2);
    assert!(matches!(fake.ping().await, Err(RuntimeError::Unavailable { .. })));
    assert!(fake.ping().await.is_err());
    fake.ping().await.unwrap();
    assert_eq!(fake.call_count(FakeOp::Ping), 3);
}

#[tokio::test]
async fn calls_are_recorded_with_their_targets() {
    let fake = fake_with_image();
    fake.create_network(&net_spec("moat-run_0123456789ab")).await.unwrap();
    fake.remove_container("run_0123456789ab").await.unwrap();
    assert_eq!(
        fake.calls(),
        vec![
            FakeCall {
                op: FakeOp::CreateNetwork,
                target: "moat-run_0123456789ab".to_string()
            },
            FakeCall {
                op: FakeOp::RemoveContainer,
                target: "run_0123456789ab".to_string()
            },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn slow_call_times_out_with_the_backend_timeout() {
    let timeouts = Timeouts {
        network_create: Duration::from_secs(30),
        ..Timeouts::default()
    };
    let fake = FakeRuntime::with_timeouts(timeouts);
    fake.delay(FakeOp::CreateNetwork, Duration::from_secs(3600));
    let started = Instant::now();
    let err = fake
        .create_network(&net_spec("moat-run_0123456789ab"))
        .await
        .unwrap_err();
    match err {
        RuntimeError::Timeout { op, after, .. } => {
            assert_eq!(op, "create_network moat-run_0123456789ab");
            assert_eq!(after, Duration::from_secs(30));
        }
        other => panic!("expected a timeout, got {other}"),
    }
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert!(fake.networks().is_empty());

    fake.delay(FakeOp::CreateNetwork, Duration::from_secs(2));
    fake.create_network(&net_spec("moat-run_0123456789ab")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn scripted_run_prints_then_exits_after_its_duration() {
    let fake = fake_with_image();
    fake.script_container(
        "debian:bookworm-slim",
        ScriptedRun {
            output: vec![
                (OutputStreamKind::Stdout, "hello\n".to_string()),
                (OutputStreamKind::Stderr, "oops\n".to_string()),
            ],
            exit_code: 3,
            run_for: Duration::from_secs(5),
        },
    );
    let id = fake
        .create_container(&run_spec("run_0123456789ab", None))
        .await
        .unwrap();
    fake.start_container(&id).await.unwrap();
    let started = Instant::now();
    let logs = fake.logs(&id, true, None).await.unwrap();
    let output = collect_text(logs).await;
    assert_eq!(
        output,
        vec![
            (OutputStreamKind::Stdout, "hello\n".to_string()),
            (OutputStreamKind::Stderr, "oops\n".to_string()),
        ]
    );
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(fake.wait_container(&id).await.unwrap(), Some(3));
    let info = fake.inspect_container(&id).await.unwrap();
    assert_eq!(info.status, ContainerStatus::Exited);
}

#[tokio::test(start_paused = true)]
async fn exit_container_ends_wait_and_follow() {
    let fake = fake_with_image();
    let id = fake
        .create_container(&run_spec("run_0123456789ab", None))
        .await
        .unwrap();
    fake.start_container(&id).await.unwrap();
    let waiter = tokio::spawn({
        let fake = fake.clone();
        let id = id.clone();
        async move { fake.wait_container(&id).await }
    });
    let logs = fake.logs(&id, true, None).await.unwrap();
    let reader = tokio::spawn(collect_text(logs));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!waiter.is_finished());
    assert!(fake.push_output(&id, OutputStreamKind::Stdout, "late\n"));
    assert!(fake.exit_container(&id, 42));
    assert_eq!(waiter.await.unwrap().unwrap(), Some(42));
    assert_eq!(
        reader.await.unwrap(),
        vec![(OutputStreamKind::Stdout, "late\n".to_string())]
    );
}

#[tokio::test]
async fn stop_records_a_kill_exit_code() {
    let fake = fake_with_image();
    let id = fake
        .create_container(&run_spec("run_0123456789ab", None))
        .await
        .unwrap();
    fake.start_container(&id).await.unwrap();
    fake.stop_container(&id, Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        fake.wait_container("run_0123456789ab").await.unwrap(),
        Some(STOPPED_EXIT_CODE)
    );
}

#[tokio::test]
async fn inserted_containers_are_listed_when_labelled() {
    let fake = FakeRuntime::new();
    let labelled = ContainerInfo {
        address: None,
        id: "abc".to_string(),
        name: "run_0123456789ab".to_string(),
        image: "x".to_string(),
        status: ContainerStatus::Running,
        exit_code: None,
        labels: labels::for_run("home", "run_0123456789ab", labels::role::MAIN),
        networks: Vec::new(),
        created_at: None,
    };
    let foreign = ContainerInfo {
        address: None,
        id: "def".to_string(),
        name: "other".to_string(),
        labels: BTreeMap::new(),
        ..labelled.clone()
    };
    fake.insert_container(labelled.clone());
    fake.insert_container(foreign);
    assert_eq!(fake.list_containers().await.unwrap(), vec![labelled]);
    assert!(fake.exit_container("run_0123456789ab", 0));
    assert_eq!(fake.wait_container("abc").await.unwrap(), Some(0));
}

#[tokio::test]
async fn logs_without_follow_end_at_current_output() {
    let fake = fake_with_image();
    let id = fake
        .create_container(&run_spec("run_0123456789ab", None))
        .await
        .unwrap();
    fake.start_container(&id).await.unwrap();
    fake.push_output(&id, OutputStreamKind::Stdout, "a");
    let cutoff = Utc::now() + chrono::Duration::milliseconds(5);
    tokio::time::sleep(Duration::from_millis(10)).await;
    fake.push_output(&id, OutputStreamKind::Stdout, "b");
    let all = collect_text(fake.logs(&id, false, None).await.unwrap()).await;
    assert_eq!(all.len(), 2);
    let recent = collect_text(fake.logs(&id, false, Some(cutoff)).await.unwrap()).await;
    assert_eq!(recent, vec![(OutputStreamKind::Stdout, "b".to_string())]);
}

#[tokio::test]
async fn without_exit_code_capability_wait_reports_none() {
    let fake = FakeRuntime::with_config(Timeouts::default(), Capabilities::default());
    fake.add_image("debian:bookworm-slim");
    let id = fake
        .create_container(&run_spec("run_0123456789ab", None))
        .await
        .unwrap();
    fake.start_container(&id).await.unwrap();
    assert!(fake.exit_container(&id, 9));
    assert_eq!(fake.wait_container(&id).await.unwrap(), None);
}

#[tokio::test]
async fn go_era_objects_are_listed_apart_from_moats_own() {
    let fake = fake_with_image();
    fake.create_network(&net_spec("moat-run_0123456789ab")).await.unwrap();
    fake.insert_network(NetworkInfo {
        id: "go-net".into(),
        name: "moat-legacy".into(),
        labels: BTreeMap::new(),
        subnet: None,
        gateway: None,
        internal: false,
        containers: Vec::new(),
    });
    fake.insert_container(ContainerInfo {
        address: None,
        id: "go-agent".into(),
        name: "agent".into(),
        image: "img".into(),
        status: ContainerStatus::Running,
        exit_code: None,
        labels: BTreeMap::from([(labels::LEGACY_MANAGED.to_string(), "true".to_string())]),
        networks: vec!["moat-legacy".into()],
        created_at: None,
    });
    fake.create_volume(&crate::VolumeSpec {
        name: "moat-cache".into(),
        labels: BTreeMap::new(),
    })
    .await
    .unwrap();

    let legacy = fake.list_legacy().await.unwrap();
    assert_eq!(legacy.containers.len(), 1, "{:?}", legacy.containers);
    assert_eq!(legacy.containers[0].name, "agent");
    assert_eq!(legacy.networks.len(), 1, "{:?}", legacy.networks);
    assert_eq!(legacy.networks[0].name, "moat-legacy");
    assert_eq!(legacy.networks[0].containers, ["agent"]);
    assert_eq!(legacy.volumes.len(), 1);
    // moat's own listings do not see them.
    assert_eq!(fake.list_networks().await.unwrap().len(), 1);
    assert!(fake.list_containers().await.unwrap().is_empty());
}
