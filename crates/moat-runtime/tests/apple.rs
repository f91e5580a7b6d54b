//! The Apple `container` backend against outputs recorded in
//! `fixtures/apple-container/` (v1 = CLI 1.2.2, legacy = 0.12.3,
//! legacy07 = 0.7.1), through a scripted command runner.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use futures_util::StreamExt;
use moat_runtime::apple::{AppleOptions, AppleRuntime, ScriptedReply, ScriptedRunner};
use moat_runtime::{
    ContainerInfo, ContainerSpec, ContainerStatus, NetworkSpec, OutputStreamKind, Runtime, RuntimeError, labels,
};
use tokio::time::Instant;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("fixtures/apple-container/", $name))
    };
}

const LIST: &[&str] = &["list", "--all", "--format", "json"];
const NETWORK_LIST: &[&str] = &["network", "list", "--format", "json"];
const NETWORK_DELETE: &[&str] = &["network", "delete"];
const SYSTEM_START: &[&str] = &["system", "start"];

fn runtime(runner: &ScriptedRunner) -> AppleRuntime {
    AppleRuntime::with_runner(Arc::new(runner.clone()), AppleOptions::default())
}

async fn inspect_with(json: &str, id: &str) -> moat_runtime::apple::AppleContainer {
    let runner = ScriptedRunner::new();
    runner.always(&["inspect"], ScriptedReply::ok(json));
    runtime(&runner).inspect(id).await.unwrap()
}

/// Legacy schemas have no creation date; everything else must agree.
fn without_creation_date(mut info: ContainerInfo) -> ContainerInfo {
    info.created_at = None;
    info
}

// === schemas ===

#[tokio::test]
async fn running_container_reads_the_same_in_every_schema() {
    let id = "run_0123456789ab";
    let v1 = inspect_with(fixture!("v1-inspect-running.json"), id).await;
    let legacy = inspect_with(fixture!("legacy-inspect-running.json"), id).await;
    let legacy07 = inspect_with(fixture!("legacy07-inspect-running.json"), id).await;

    assert_eq!(v1.info.id, id);
    assert_eq!(v1.info.name, id);
    assert_eq!(v1.info.image, "docker.io/library/alpine:latest");
    assert_eq!(v1.info.status, ContainerStatus::Running);
    assert_eq!(v1.info.exit_code, None);
    assert_eq!(v1.info.networks, vec!["default".to_string()]);
    assert_eq!(v1.info.labels[labels::RUN_ID], id);
    assert_eq!(v1.info.labels[labels::ROLE], labels::role::MAIN);
    assert_eq!(
        v1.info.created_at,
        Some(Utc.with_ymd_and_hms(2026, 8, 7, 17, 2, 11).unwrap())
    );
    for other in [&legacy, &legacy07] {
        assert_eq!(
            without_creation_date(other.info.clone()),
            without_creation_date(v1.info.clone())
        );
        assert_eq!(other.info.created_at, None);
    }
    for container in [&v1, &legacy, &legacy07] {
        let attachment = &container.attachments[0];
        assert_eq!(attachment.network, "default");
        assert_eq!(attachment.ipv4(), Some("192.168.64.3"));
        assert_eq!(attachment.gateway.as_deref(), Some("192.168.64.1"));
    }
}

#[tokio::test]
async fn stopped_container_keeps_its_network_reference() {
    let id = "run_fedcba987654";
    let v1 = inspect_with(fixture!("v1-inspect-stopped.json"), id).await;
    let legacy = inspect_with(fixture!("legacy-inspect-stopped.json"), id).await;
    assert_eq!(v1.info.status, ContainerStatus::Exited);
    assert_eq!(v1.info.networks, vec!["moat-run_fedcba987654".to_string()]);
    assert!(v1.attachments.is_empty());
    assert_eq!(without_creation_date(legacy.info), without_creation_date(v1.info));
}

#[tokio::test]
async fn created_container_is_stopped_without_a_start_date() {
    let id = "c0ffee00-1234-4abc-8def-0123456789ab";
    for json in [
        fixture!("v1-inspect-created.json"),
        fixture!("legacy-inspect-created.json"),
    ] {
        let container = inspect_with(json, id).await;
        assert_eq!(container.info.status, ContainerStatus::Created);
        assert_eq!(container.info.name, id);
        assert!(container.info.labels.is_empty(), "not a moat name");
    }
}

#[tokio::test]
async fn list_keeps_moat_containers_only_in_both_schemas() {
    let mut listed = Vec::new();
    for json in [fixture!("v1-list-all.json"), fixture!("legacy-list-all.json")] {
        let runner = ScriptedRunner::new();
        runner.always(LIST, ScriptedReply::ok(json));
        let mut containers = runtime(&runner).list_containers().await.unwrap();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["run_0123456789ab", "run_fedcba987654"]);
        listed.push(containers.into_iter().map(without_creation_date).collect::<Vec<_>>());
    }
    assert_eq!(listed[0], listed[1]);
}

#[tokio::test]
async fn networks_list_the_same_from_json_of_both_schemas() {
    let mut results = Vec::new();
    for (networks, containers) in [
        (fixture!("v1-network-list.json"), fixture!("v1-list-all.json")),
        (fixture!("legacy-network-list.json"), fixture!("legacy-list-all.json")),
    ] {
        let runner = ScriptedRunner::new();
        runner
            .always(NETWORK_LIST, ScriptedReply::ok(networks))
            .always(LIST, ScriptedReply::ok(containers));
        let listed = runtime(&runner).list_networks().await.unwrap();
        assert_eq!(listed.len(), 1, "only moat's network: {listed:?}");
        let network = &listed[0];
        assert_eq!(network.name, "moat-run_fedcba987654");
        assert_eq!(network.subnet.as_deref(), Some("192.168.65.0/24"));
        assert_eq!(network.gateway.as_deref(), Some("192.168.65.1"));
        assert_eq!(network.containers, vec!["run_fedcba987654".to_string()]);
        assert_eq!(network.labels[labels::RUN_ID], "run_fedcba987654");
        assert_eq!(network.labels[labels::ROLE], labels::role::NETWORK);
        results.push(listed);
    }
    assert_eq!(results[0], results[1]);
}

#[tokio::test]
async fn network_table_is_parsed_when_json_is_not_understood() {
    for table in [fixture!("v1-network-list.txt"), fixture!("legacy-network-list.txt")] {
        let runner = ScriptedRunner::new();
        runner
            .always(NETWORK_LIST, ScriptedReply::fail("Error: Unknown option '--format'\n"))
            .always(&["network", "list"], ScriptedReply::ok(table))
            .always(LIST, ScriptedReply::ok(fixture!("v1-list-all.json")));
        let listed = runtime(&runner).list_networks().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "moat-run_fedcba987654");
        assert_eq!(listed[0].subnet.as_deref(), Some("192.168.65.0/24"));
        assert_eq!(listed[0].containers, vec!["run_fedcba987654".to_string()]);
        assert_eq!(runner.count(&["network", "list"]), 2);
    }
}

#[tokio::test]
async fn network_inspect_finds_the_gateway_in_every_schema() {
    for json in [
        fixture!("v1-network-inspect-default.json"),
        fixture!("legacy-network-inspect-default.json"),
        fixture!("legacy07-network-inspect-default.json"),
    ] {
        let runner = ScriptedRunner::new();
        runner
            .always(&["network", "inspect"], ScriptedReply::ok(json))
            .always(LIST, ScriptedReply::ok(fixture!("v1-list-all.json")));
        let network = runtime(&runner).inspect_network("default").await.unwrap();
        assert_eq!(network.name, "default");
        assert_eq!(network.subnet.as_deref(), Some("192.168.64.0/24"));
        assert_eq!(network.gateway.as_deref(), Some("192.168.64.1"));
        assert!(!network.labels.contains_key(labels::RUN_ID));
        assert_eq!(
            network.containers,
            vec![
                "run_0123456789ab".to_string(),
                "c0ffee00-1234-4abc-8def-0123456789ab".to_string()
            ]
        );
    }
}

#[tokio::test]
async fn images_parse_from_both_schemas() {
    for json in [fixture!("v1-image-list.json"), fixture!("legacy-image-list.json")] {
        let runner = ScriptedRunner::new();
        runner.always(&["image", "list"], ScriptedReply::ok(json));
        let images = runtime(&runner).list_images().await.unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].tags, vec!["docker.io/library/alpine:latest"]);
        assert!(images[0].id.starts_with("sha256:"), "{}", images[0].id);
    }
    for json in [fixture!("v1-image-inspect.json"), fixture!("legacy-image-inspect.json")] {
        let runner = ScriptedRunner::new();
        runner.always(&["image", "inspect"], ScriptedReply::ok(json));
        assert!(runtime(&runner).image_exists("alpine").await.unwrap());
    }
    let runner = ScriptedRunner::new();
    runner.always(
        &["image", "inspect"],
        ScriptedReply::fail(fixture!("err-image-inspect-not-found.txt")),
    );
    assert!(!runtime(&runner).image_exists("nope").await.unwrap());
}

// === not found ===

#[tokio::test]
async fn unknown_container_is_not_found_in_both_conventions() {
    let id = "run_000000000000";
    for reply in [
        ScriptedReply::ok(fixture!("legacy-inspect-missing.json")),
        ScriptedReply::fail(fixture!("err-inspect-not-found.txt")),
    ] {
        let runner = ScriptedRunner::new();
        runner.always(&["inspect"], reply);
        let rt = runtime(&runner);
        let err = rt.inspect_container(id).await.unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().contains(id), "{err}");
        assert!(rt.wait_container(id).await.unwrap_err().is_not_found());
    }
}

#[tokio::test]
async fn unknown_network_is_not_found_in_both_conventions() {
    for reply in [
        ScriptedReply::ok("[]\n"),
        ScriptedReply::fail(fixture!("err-network-inspect-not-found.txt")),
    ] {
        let runner = ScriptedRunner::new();
        runner.always(&["network", "inspect"], reply);
        let err = runtime(&runner)
            .inspect_network("moat-run_000000000000")
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }
}

#[tokio::test]
async fn removing_missing_objects_succeeds() {
    let runner = ScriptedRunner::new();
    runner
        .always(
            NETWORK_DELETE,
            ScriptedReply::fail(fixture!("err-network-delete-not-found.txt")),
        )
        .always(
            &["delete", "--force"],
            ScriptedReply::fail(fixture!("err-inspect-not-found.txt")),
        );
    let rt = runtime(&runner);
    rt.remove_network("moat-run_000000000000").await.unwrap();
    rt.remove_container("run_000000000000").await.unwrap();
    assert_eq!(runner.count(NETWORK_DELETE), 1, "not found is not retried");
}

// === network deletion retries ===

#[tokio::test(start_paused = true)]
async fn network_delete_succeeds_after_transient_refusals() {
    let runner = ScriptedRunner::new();
    runner
        .once(
            NETWORK_DELETE,
            ScriptedReply::fail(fixture!("err-network-delete-pending.txt")),
        )
        .once(
            NETWORK_DELETE,
            ScriptedReply::fail(fixture!("err-network-delete-in-use.txt")),
        )
        .once(
            NETWORK_DELETE,
            ScriptedReply::fail(fixture!("err-network-delete-allocator-legacy.txt")),
        )
        .always(NETWORK_DELETE, ScriptedReply::ok(fixture!("v1-network-delete.txt")));
    let started = Instant::now();
    runtime(&runner).remove_network("moat-run_fedcba987654").await.unwrap();
    assert_eq!(runner.count(NETWORK_DELETE), 4);
    // Backoff 250 ms, 500 ms, 1 s.
    assert_eq!(started.elapsed(), Duration::from_millis(1750));
}

#[tokio::test(start_paused = true)]
async fn network_delete_gives_up_with_in_use_after_the_bound() {
    let runner = ScriptedRunner::new();
    runner.always(
        NETWORK_DELETE,
        ScriptedReply::fail(fixture!("err-network-delete-in-use.txt")),
    );
    let started = Instant::now();
    let err = runtime(&runner)
        .remove_network("moat-run_fedcba987654")
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        RuntimeError::InUse { what, detail, .. } => {
            assert_eq!(what, "network moat-run_fedcba987654");
            assert!(detail.contains("referring containers"), "{detail}");
            assert!(detail.contains("run_fedcba987654"), "{detail}");
        }
        other => panic!("expected InUse, got {other}"),
    }
    assert!(elapsed <= Duration::from_secs(10), "{elapsed:?}");
    assert!(elapsed >= Duration::from_secs(8), "{elapsed:?}");
    // 0, .25, .75, 1.75, 3.75, 5.75, 7.75, 9.75 s.
    assert_eq!(runner.count(NETWORK_DELETE), 8);
}

#[tokio::test(start_paused = true)]
async fn other_network_delete_failures_are_not_retried() {
    let runner = ScriptedRunner::new();
    runner.always(
        NETWORK_DELETE,
        ScriptedReply::fail(fixture!("err-network-delete-builtin.txt")),
    );
    let err = runtime(&runner).remove_network("default").await.unwrap_err();
    assert!(matches!(err, RuntimeError::Other { .. }), "{err}");
    assert_eq!(runner.count(NETWORK_DELETE), 1);
}

#[tokio::test(start_paused = true)]
async fn hanging_network_create_times_out_naming_the_command() {
    let runner = ScriptedRunner::new();
    runner.always(&["network", "create"], ScriptedReply::hang());
    let spec = NetworkSpec {
        name: "moat-run_fedcba987654".to_string(),
        ..NetworkSpec::default()
    };
    let err = runtime(&runner).create_network(&spec).await.unwrap_err();
    match err {
        RuntimeError::Timeout { op, after, .. } => {
            assert_eq!(op, "container network create moat-run_fedcba987654");
            assert_eq!(after, Duration::from_secs(30));
        }
        other => panic!("expected a timeout, got {other}"),
    }
}

#[tokio::test]
async fn created_network_reports_subnet_and_gateway() {
    let runner = ScriptedRunner::new();
    runner
        .always(
            &["network", "create"],
            ScriptedReply::ok(fixture!("v1-network-create.txt")),
        )
        .always(
            &["network", "inspect"],
            ScriptedReply::ok(fixture!("v1-network-inspect-custom.json")),
        );
    let spec = NetworkSpec {
        name: "moat-run_fedcba987654".to_string(),
        ..NetworkSpec::default()
    };
    let network = runtime(&runner).create_network(&spec).await.unwrap();
    assert_eq!(network.gateway.as_deref(), Some("192.168.65.1"));
    assert_eq!(network.labels[labels::RUN_ID], "run_fedcba987654");
}

// === auto-start ===

#[tokio::test(start_paused = true)]
async fn a_call_finding_the_system_down_starts_it_and_retries() {
    let runner = ScriptedRunner::new();
    runner
        .once(LIST, ScriptedReply::fail(fixture!("err-apiserver-not-running.txt")))
        .always(LIST, ScriptedReply::ok(fixture!("v1-list-all.json")))
        .always(SYSTEM_START, ScriptedReply::ok("").taking(Duration::from_secs(3)));
    let containers = runtime(&runner).list_containers().await.unwrap();
    assert_eq!(containers.len(), 2);
    let commands: Vec<String> = runner.invocations().iter().map(|args| args.join(" ")).collect();
    assert_eq!(
        commands,
        [
            "list --all --format json",
            "system start --disable-kernel-install",
            "list --all --format json"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_system_start_gives_a_clear_error() {
    let runner = ScriptedRunner::new();
    runner
        .always(LIST, ScriptedReply::fail(fixture!("err-apiserver-not-running.txt")))
        .always(SYSTEM_START, ScriptedReply::hang());
    let started = Instant::now();
    let err = runtime(&runner).list_containers().await.unwrap_err();
    assert_eq!(started.elapsed(), AppleOptions::default().system_start);
    let text = err.to_string();
    assert!(matches!(err, RuntimeError::Unavailable { .. }), "{text}");
    assert!(text.contains("`container system start`"), "{text}");
    assert!(text.contains("did not finish within 60s"), "{text}");
    assert_eq!(runner.count(LIST), 1, "no retry without a started system");
}

#[tokio::test(start_paused = true)]
async fn concurrent_calls_start_the_system_once() {
    let runner = ScriptedRunner::new();
    let down = ScriptedReply::fail(fixture!("err-apiserver-not-running.txt"));
    runner
        .once(LIST, down.clone())
        .once(LIST, down)
        .always(LIST, ScriptedReply::ok(fixture!("v1-list-all.json")))
        .always(SYSTEM_START, ScriptedReply::ok("").taking(Duration::from_secs(2)));
    let rt = runtime(&runner);
    let (a, b) = tokio::join!(rt.list_containers(), rt.list_containers());
    assert_eq!(a.unwrap().len(), 2);
    assert_eq!(b.unwrap().len(), 2);
    assert_eq!(runner.count(SYSTEM_START), 1);
}

#[tokio::test(start_paused = true)]
async fn ping_starts_a_stopped_system() {
    let runner = ScriptedRunner::new();
    let not_running = ScriptedReply {
        output: moat_runtime::apple::CommandOutput {
            status: 1,
            stdout: fixture!("v1-system-status-not-running.txt").to_string(),
            stderr: String::new(),
        },
        takes: Duration::ZERO,
    };
    runner
        .once(&["system", "status"], not_running)
        .always(
            &["system", "status"],
            ScriptedReply::ok(fixture!("v1-system-status.txt")),
        )
        .always(SYSTEM_START, ScriptedReply::ok(""));
    runtime(&runner).ping().await.unwrap();
    assert_eq!(runner.count(SYSTEM_START), 1);
    assert_eq!(runner.count(&["system", "status"]), 2);
}

// === containers ===

#[tokio::test]
async fn create_returns_the_printed_id() {
    let runner = ScriptedRunner::new();
    runner.always(&["create"], ScriptedReply::ok(fixture!("v1-create-stdout.txt")));
    let spec = ContainerSpec {
        name: "run_0123456789ab".to_string(),
        image: "alpine:latest".to_string(),
        ..ContainerSpec::default()
    };
    let id = runtime(&runner).create_container(&spec).await.unwrap();
    assert_eq!(id, "run_0123456789ab");
    assert_eq!(
        runner.invocations()[0].join(" "),
        "create --name run_0123456789ab alpine:latest"
    );
}

#[tokio::test(start_paused = true)]
async fn wait_polls_inspect_and_reports_no_exit_code() {
    let runner = ScriptedRunner::new();
    let running = ScriptedReply::ok(fixture!("v1-inspect-running.json"));
    runner
        .once(&["inspect"], running.clone())
        .once(&["inspect"], running)
        .always(&["inspect"], ScriptedReply::ok(fixture!("v1-inspect-stopped.json")));
    let started = Instant::now();
    let code = runtime(&runner).wait_container("run_0123456789ab").await.unwrap();
    assert_eq!(code, None);
    assert_eq!(runner.count(&["inspect"]), 3);
    assert_eq!(started.elapsed(), Duration::from_secs(4));
}

#[tokio::test(start_paused = true)]
async fn followed_logs_end_once_the_container_stops() {
    let runner = ScriptedRunner::new();
    let running = ScriptedReply::ok(fixture!("v1-inspect-running.json"));
    runner
        .once(&["inspect"], running.clone())
        .once(&["inspect"], running)
        .always(&["inspect"], ScriptedReply::ok(fixture!("v1-inspect-stopped.json")))
        .always(&["logs", "--follow"], ScriptedReply::ok("hello\nworld\n"));
    let stream = runtime(&runner).logs("run_0123456789ab", true, None).await.unwrap();
    let chunks: Vec<_> = stream.map(|c| c.unwrap()).collect().await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].stream, OutputStreamKind::Stdout);
    assert_eq!(&chunks[0].data[..], b"hello\nworld\n");
    assert_eq!(runner.count(&["inspect"]), 3);
}

#[tokio::test]
async fn what_the_cli_cannot_do_is_refused_clearly() {
    let rt = runtime(&ScriptedRunner::new());
    let since = Some(Utc::now());
    let err = rt.logs("run_0123456789ab", false, since).await.err();
    assert!(err.is_some_and(|e| e.to_string().contains("--since")));
    let internal = NetworkSpec {
        name: "moat-run_0123456789ab".to_string(),
        internal: true,
        ..NetworkSpec::default()
    };
    let err = rt.create_network(&internal).await.unwrap_err().to_string();
    assert!(err.contains("not supported"), "{err}");
    assert!(rt.list_volumes().await.unwrap().is_empty());
    assert_eq!(rt.capabilities(), moat_runtime::Capabilities::default());
}

#[tokio::test]
async fn exec_passes_the_command_status_through() {
    let runner = ScriptedRunner::new();
    runner
        .once(&["exec"], ScriptedReply::ok("hi\n"))
        .once(
            &["exec"],
            ScriptedReply {
                output: moat_runtime::apple::CommandOutput {
                    status: 127,
                    stdout: String::new(),
                    stderr: "sh: 1: frobnicate: not found\n".to_string(),
                },
                takes: Duration::ZERO,
            },
        )
        .once(&["exec"], ScriptedReply::fail(fixture!("err-inspect-not-found.txt")));
    let rt = runtime(&runner);
    let command = ["sh".to_string(), "-c".to_string(), "echo hi".to_string()];
    let ok = rt.exec("run_0123456789ab", &command).await.unwrap();
    assert_eq!((ok.exit_code, ok.stdout), (Some(0), b"hi\n".to_vec()));
    let missing_program = rt.exec("run_0123456789ab", &command).await.unwrap();
    assert_eq!(missing_program.exit_code, Some(127));
    let err = rt.exec("run_000000000000", &command).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(runner.invocations()[0].join(" "), "exec run_0123456789ab sh -c echo hi");
}
