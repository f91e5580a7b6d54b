//! Daemon lifecycle against the in-memory fake runtime: creation,
//! supervision, cleanup exactly once, failures, idle shutdown, re-adoption,
//! and the API end to end over a real Unix socket.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::Fixture;
use futures_util::StreamExt;
use moat_core::logs::Stream;
use moat_core::{RunId, RunState};
use moat_daemon::api::AttachEvent;
use moat_daemon::registry::RunHandle;
use moat_daemon::supervisor;
use moat_runtime::fake::{FakeErrorKind, FakeOp, FakeRuntime, ScriptedRun};
use moat_runtime::{ContainerInfo, ContainerStatus};

fn script(fake: &FakeRuntime, exit_code: i64, run_for: Duration) {
    fake.script_container(
        "img",
        ScriptedRun {
            output: vec![(Stream::Stdout, "out\n".into()), (Stream::Stderr, "err\n".into())],
            exit_code,
            run_for,
        },
    );
}

#[tokio::test]
async fn a_run_is_recorded_and_cleaned_up_exactly_once() {
    let fx = Fixture::new(|_| {});
    script(&fx.fake, 7, Duration::from_millis(20));
    let id = supervisor::create_run(&fx.daemon, fx.spec()).await.unwrap();
    fx.wait_until_gone(&id).await;

    let meta = fx.daemon.store().load(&id).unwrap();
    assert_eq!(meta.state, RunState::Exited);
    assert_eq!(meta.exit_code, Some(7));
    assert!(meta.started_at.is_some() && meta.exited_at.is_some() && meta.cleaned_at.is_some());
    let lines: Vec<_> = fx.logs(&id).into_iter().map(|r| (r.stream, r.line)).collect();
    assert_eq!(
        lines,
        vec![(Stream::Stdout, "out".to_string()), (Stream::Stderr, "err".to_string())]
    );
    assert!(fx.fake.containers().is_empty(), "{:?}", fx.fake.containers());
    assert!(fx.fake.networks().is_empty(), "{:?}", fx.fake.networks());
    assert_eq!(fx.fake.call_count(FakeOp::RemoveContainer), 1);
    assert_eq!(fx.fake.call_count(FakeOp::RemoveNetwork), 1);
}

#[tokio::test]
async fn the_run_is_persisted_as_creating_before_any_runtime_object_exists() {
    let fx = Fixture::new(|_| {});
    script(&fx.fake, 0, Duration::from_secs(60));
    fx.fake.delay(FakeOp::CreateNetwork, Duration::from_millis(300));
    let daemon = fx.daemon.clone();
    let spec = fx.spec();
    let creating = tokio::spawn(async move { supervisor::create_run(&daemon, spec).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let persisted = fx.daemon.registry().load_persisted().unwrap();
    assert_eq!(persisted.len(), 1);
    assert_eq!(persisted[0].meta.state, RunState::Creating);
    assert!(fx.fake.networks().is_empty());
    let id = creating.await.unwrap().unwrap();
    assert_eq!(fx.daemon.store().load(&id).unwrap().state, RunState::Running);
    supervisor::stop_run(&fx.daemon, &id, true).await.unwrap();
    fx.wait_until_gone(&id).await;
}

#[tokio::test]
async fn a_failed_creation_is_recorded_and_leaves_nothing() {
    let fx = Fixture::new(|_| {});
    fx.fake.fail_next(FakeOp::StartContainer, FakeErrorKind::Other, 1);
    let err = supervisor::create_run(&fx.daemon, fx.spec()).await.unwrap_err();
    assert!(err.to_string().contains("start_container"), "{err}");
    let runs = fx.daemon.store().list().unwrap();
    let moat_core::store::RunEntry::Readable(meta) = &runs[0] else {
        panic!("unreadable run")
    };
    assert_eq!(meta.state, RunState::Failed);
    assert!(meta.failure.as_deref().unwrap_or_default().contains("start_container"));
    assert!(fx.fake.containers().is_empty());
    assert!(fx.fake.networks().is_empty());
    assert!(fx.daemon.registry().is_empty());
}

#[tokio::test]
async fn an_unknown_image_is_a_clear_error_with_a_hint() {
    let fx = Fixture::new(|_| {});
    let mut spec = fx.spec();
    spec.image = "nope:latest".into();
    let err = supervisor::create_run(&fx.daemon, spec).await.unwrap_err();
    assert_eq!(err.to_string(), "image nope:latest is not available to fake");
    assert!(err.hint().is_some());
    assert!(fx.fake.networks().is_empty());
}

/// The daemon checks `dependencies:` itself (a client may skip the CLI's
/// check) and refuses a runtime that cannot build, before anything exists.
#[tokio::test]
async fn dependencies_the_daemon_cannot_build_fail_before_the_run_exists() {
    let fx = Fixture::new(|_| {});
    let mut spec = fx.spec();
    spec.dependencies = vec!["pyhton".into()];
    let err = supervisor::create_run(&fx.daemon, spec.clone()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"dependencies: unknown dependency "pyhton" (did you mean python?)"#
    );
    spec.dependencies = vec!["git".into()];
    let err = supervisor::create_run(&fx.daemon, spec).await.unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("building moat/run:"), "{text}");
    assert!(text.contains("cannot build images"), "{text}");
    assert!(err.hint().is_some());
    assert!(fx.fake.networks().is_empty());
    assert!(fx.daemon.store().list().unwrap().is_empty(), "a run was recorded");
}

/// On paused time: the default timeout (5 minutes) passes in an instant,
/// and the shutdown comes neither before the timeout nor much after it.
#[tokio::test(start_paused = true)]
async fn idle_shutdown_happens_after_the_idle_timeout() {
    let idle_timeout = Duration::from_secs(300);
    let fx = Fixture::new(|c| c.idle_timeout = idle_timeout);
    let started = tokio::time::Instant::now();
    tokio::time::timeout(
        idle_timeout * 2,
        moat_daemon::idle::watch(fx.daemon.clone(), || async {}),
    )
    .await
    .expect("the idle watcher never shut the daemon down");
    let waited = started.elapsed();
    assert!(waited >= idle_timeout, "shut down after {waited:?}");
    assert!(
        waited <= idle_timeout + Duration::from_secs(10),
        "shut down late: {waited:?}"
    );
    assert!(fx.daemon.shutdown_token().is_cancelled());
}

/// On paused time: a daemon that is not idle (a client is attached) never
/// shuts down, however long it waits.
#[tokio::test(start_paused = true)]
async fn an_attached_client_keeps_the_daemon_up() {
    let idle_timeout = Duration::from_secs(60);
    let fx = Fixture::new(|c| c.idle_timeout = idle_timeout);
    let _client = fx.daemon.client_attached();
    let watched = tokio::time::timeout(
        idle_timeout * 100,
        moat_daemon::idle::watch(fx.daemon.clone(), || async {}),
    )
    .await;
    assert!(watched.is_err(), "shut down with a client attached");
    assert!(!fx.daemon.shutdown_token().is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn a_run_registered_during_the_final_sweep_cancels_idle_shutdown() {
    let fx = Fixture::new(|c| c.idle_timeout = Duration::from_millis(100));
    script(&fx.fake, 0, Duration::from_secs(60));
    let daemon = fx.daemon.clone();
    let spec = fx.spec();
    let created = Arc::new(tokio::sync::Mutex::new(None));
    let slot = created.clone();
    let sweep = move || {
        let daemon = daemon.clone();
        let spec = spec.clone();
        let slot = slot.clone();
        async move {
            let mut slot = slot.lock().await;
            if slot.is_none() {
                *slot = Some(supervisor::create_run(&daemon, spec).await.unwrap());
            }
        }
    };
    let watcher = tokio::spawn(moat_daemon::idle::watch(fx.daemon.clone(), sweep));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!fx.daemon.shutdown_token().is_cancelled(), "shut down with a live run");
    let id = created.lock().await.clone().expect("the final sweep ran");
    supervisor::stop_run(&fx.daemon, &id, true).await.unwrap();
    fx.wait_until_gone(&id).await;
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("idle again, it shuts down")
        .unwrap();
}

#[tokio::test]
async fn a_restarted_daemon_readopts_a_running_container_and_records_its_exit() {
    let fx = Fixture::new(|_| {});
    let meta = running_record(&fx);
    let id = meta.id.clone();
    persist_as_previous_daemon(&fx, meta);

    assert_eq!(moat_daemon::reconcile::restore(&fx.daemon), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(fx.fake.push_output(id.as_str(), Stream::Stdout, "after restart\n"));
    assert!(fx.fake.exit_container(id.as_str(), 4));
    fx.wait_until_gone(&id).await;
    let meta = fx.daemon.store().load(&id).unwrap();
    assert_eq!((meta.state, meta.exit_code), (RunState::Exited, Some(4)));
    assert!(fx.fake.containers().is_empty());
    assert_eq!(
        fx.logs(&id).last().map(|r| r.line.clone()).as_deref(),
        Some("after restart")
    );
}

/// A run recorded as running, with its container running in the fake.
fn running_record(fx: &Fixture) -> moat_core::RunMetadata {
    let id = RunId::generate();
    let mut meta = moat_core::RunMetadata::new(id.clone(), fx.root.join("workspace"), "img".into(), "fake".into());
    meta.state = RunState::Running;
    meta.container_id = Some(id.to_string());
    meta.network = Some(id.network_name());
    fx.daemon.store().create(&meta).unwrap();
    fx.fake.insert_container(ContainerInfo {
        address: None,
        id: id.to_string(),
        name: id.to_string(),
        image: "img".into(),
        status: ContainerStatus::Running,
        exit_code: None,
        labels: BTreeMap::new(),
        networks: vec![id.network_name()],
        created_at: None,
    });
    meta
}

/// Leaves `runs.json` as a killed daemon would have: the run registered,
/// nothing in memory.
fn persist_as_previous_daemon(fx: &Fixture, meta: moat_core::RunMetadata) {
    let id = meta.id.clone();
    fx.daemon.registry().lock().insert(id, RunHandle::new(fx.spec(), meta));
    fx.daemon.registry().persist_now().unwrap();
    fx.daemon.registry().lock().clear();
}

#[tokio::test]
async fn a_run_stuck_in_creating_is_undone_on_restart() {
    let fx = Fixture::new(|_| {});
    let id = RunId::generate();
    let meta = moat_core::RunMetadata::new(id.clone(), fx.root.join("workspace"), "img".into(), "fake".into());
    fx.daemon.store().create(&meta).unwrap();
    persist_as_previous_daemon(&fx, meta);

    moat_daemon::reconcile::restore(&fx.daemon);
    fx.wait_until_gone(&id).await;
    let meta = fx.daemon.store().load(&id).unwrap();
    assert_eq!(meta.state, RunState::Failed);
    assert!(meta.failure.unwrap().contains("interrupted"));
}

#[tokio::test]
async fn the_api_creates_attaches_and_reports_the_exit_over_the_socket() {
    let fx = Fixture::new(|_| {});
    script(&fx.fake, 3, Duration::from_millis(300));
    let served = fx.serve().await;
    let client = served.client.clone();
    let mode = std::fs::metadata(fx.daemon.home().daemon_socket()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    let created = client.create_run(&fx.spec()).await.unwrap();
    let events: Vec<_> = client.attach(&created.run_id).await.unwrap().collect().await;
    let events: Vec<AttachEvent> = events.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        events.last(),
        Some(&AttachEvent::Exit {
            state: RunState::Exited,
            exit_code: Some(3),
            failure: None
        })
    );
    assert!(events.contains(&AttachEvent::Output {
        stream: Stream::Stdout,
        data: "out\n".into()
    }));

    let mut missing = fx.spec();
    missing.workspace = fx.root.join("nope");
    let err = client.create_run(&missing).await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");

    served.shutdown().await;
    assert!(!fx.daemon.home().daemon_socket().exists());
}

#[tokio::test]
async fn shutdown_waits_for_a_cleanup_in_progress() {
    let fx = Fixture::new(|_| {});
    script(&fx.fake, 0, Duration::from_millis(10));
    fx.fake.delay(FakeOp::RemoveNetwork, Duration::from_millis(400));
    let id = supervisor::create_run(&fx.daemon, fx.spec()).await.unwrap();
    // Wait until the cleanup has begun (the container is gone first).
    for _ in 0..200 {
        if fx.fake.containers().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!fx.fake.networks().is_empty(), "the network removal is still in flight");
    assert!(fx.daemon.drain_cleanups(Duration::from_secs(5)).await);
    assert!(fx.fake.networks().is_empty(), "drained: nothing of {id} is left");
}

/// The attack: `runs.json` is replaced by a file of another format version
/// while a run is live. The restarted daemon must not start from an empty
/// registry: it sets the file aside, recovers the run from its own
/// directory (`registration.json`), supervises it to its exit code, and
/// pauses the reaper.
#[tokio::test]
async fn a_wrong_version_registry_is_set_aside_and_runs_are_recovered_from_their_directories() {
    let fx = Fixture::new(|_| {});
    let meta = running_record(&fx);
    let id = meta.id.clone();
    let handle = RunHandle::new(fx.spec(), meta);
    moat_daemon::registry::Registration::write(fx.daemon.store(), &handle).unwrap();
    std::fs::write(fx.daemon.home().runs_json(), br#"{"version": 9, "runs": []}"#).unwrap();

    assert_eq!(moat_daemon::reconcile::restore(&fx.daemon), 1);
    let error = fx.daemon.registry_error().expect("the reaper must pause");
    assert!(error.contains("format version 9"), "{error}");
    let aside = std::fs::read_dir(fx.daemon.home().daemon_dir())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("runs.json.unreadable-"));
    assert!(aside, "the unreadable runs.json is kept");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(fx.fake.exit_container(id.as_str(), 7));
    fx.wait_until_gone(&id).await;
    let meta = fx.daemon.store().load(&id).unwrap();
    assert_eq!((meta.state, meta.exit_code), (RunState::Exited, Some(7)));
    assert!(meta.cleaned_at.is_some());
}

/// A daemon killed after writing a run's record but before registering it
/// leaves a `creating` record no `runs.json` names: the next daemon finds
/// it in its directory and undoes it, so it never stays live forever.
#[tokio::test]
async fn an_unregistered_creating_record_is_undone_on_restart() {
    let fx = Fixture::new(|_| {});
    let id = RunId::generate();
    let meta = moat_core::RunMetadata::new(id.clone(), fx.root.join("workspace"), "img".into(), "fake".into());
    fx.daemon.store().create(&meta).unwrap();

    assert_eq!(moat_daemon::reconcile::restore(&fx.daemon), 1);
    assert!(fx.daemon.registry_error().is_none());
    fx.wait_until_gone(&id).await;
    let meta = fx.daemon.store().load(&id).unwrap();
    assert_eq!(meta.state, RunState::Failed);
    assert!(meta.cleaned_at.is_some(), "{meta:?}");
}

/// The race a fast run plays against its own `moat run`: the run exits and
/// leaves the registry before the client attaches. Attaching must still
/// replay its output: exactly (from memory) right after, and from its log
/// once a later daemon has nothing in memory.
#[tokio::test]
async fn a_client_attaching_after_the_run_ended_still_gets_its_output() {
    let fx = Fixture::new(|_| {});
    script(&fx.fake, 5, Duration::from_millis(1));
    let served = fx.serve().await;
    let created = served.client.create_run(&fx.spec()).await.unwrap();
    for _ in 0..200 {
        let live = served.client.list_runs().await.unwrap();
        if !live.iter().any(|r| r.run_id == created.run_id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let exit = AttachEvent::Exit {
        state: RunState::Exited,
        exit_code: Some(5),
        failure: None,
    };
    let expected = vec![
        AttachEvent::Output {
            stream: Stream::Stdout,
            data: "out\n".into(),
        },
        AttachEvent::Output {
            stream: Stream::Stderr,
            data: "err\n".into(),
        },
        exit,
    ];
    let events: Vec<AttachEvent> = (served.client.attach(&created.run_id).await.unwrap())
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(events, expected, "right after the run left the registry");
    served.shutdown().await;

    let served = fx.serve().await;
    let events: Vec<AttachEvent> = (served.client.attach(&created.run_id).await.unwrap())
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(events, expected, "from the log, with a new daemon");
    served.shutdown().await;
}
