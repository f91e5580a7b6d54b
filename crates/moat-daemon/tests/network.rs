//! Creating a run's network against the in-memory fake runtime: a full
//! pool or a timeout leads to a sweep of orphans and one retry; what stays
//! broken fails with the cause and the fix; the whole creation stays
//! within the daemon's deadline, which ends before the client gives up;
//! the client hears the sweep while it happens.

mod common;

use std::time::Duration;

use common::Fixture;
use moat_core::{RunId, RunState};
use moat_daemon::api::CreateEvent;
use moat_daemon::client::CREATE_TIMEOUT;
use moat_daemon::deadline::{CREATE_DEADLINE, UNDO_WAIT};
use moat_daemon::network::{NetworkError, SWEEPING};
use moat_daemon::progress::Progress;
use moat_daemon::supervisor::{self, RunError};
use moat_runtime::fake::{FakeErrorKind, FakeOp, FakeRuntime};
use moat_runtime::{NetworkInfo, Timeouts, labels};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Networks of runs of this home whose records are gone: orphans.
fn orphan_networks(fx: &Fixture, count: usize) -> Vec<String> {
    let home = fx.daemon.home().label();
    (0..count)
        .map(|_| {
            let run = RunId::generate();
            fx.fake.insert_network(NetworkInfo {
                id: format!("net-{run}"),
                name: run.network_name(),
                labels: labels::for_run(&home, run.as_str(), labels::role::NETWORK),
                subnet: None,
                gateway: None,
                internal: false,
                containers: Vec::new(),
            });
            run.network_name()
        })
        .collect()
}

fn network_names(fx: &Fixture) -> Vec<String> {
    fx.fake.networks().into_iter().map(|n| n.name).collect()
}

/// Every event a creation reported, in order.
fn drain(rx: &mut tokio::sync::mpsc::Receiver<CreateEvent>) -> Vec<CreateEvent> {
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    events
}

/// A failed creation is recorded, undone and out of the registry.
fn assert_undone(fx: &Fixture) {
    let runs = fx.daemon.store().list().unwrap();
    assert_eq!(runs.len(), 1);
    let moat_core::store::RunEntry::Readable(meta) = &runs[0] else {
        panic!("unreadable run record")
    };
    assert_eq!(meta.state, RunState::Failed);
    assert!(meta.cleaned_at.is_some(), "{meta:?}");
    assert!(fx.daemon.registry().all().is_empty());
    assert!(fx.fake.containers().is_empty(), "{:?}", fx.fake.containers());
    assert!(fx.fake.networks().is_empty(), "{:?}", fx.fake.networks());
}

#[tokio::test]
async fn a_full_pool_is_swept_of_orphans_and_the_retry_succeeds() {
    let fx = Fixture::new(|_| {});
    let orphans = orphan_networks(&fx, 2);
    fx.fake
        .fail_next(FakeOp::CreateNetwork, FakeErrorKind::AddressSpaceExhausted, 1);
    let (progress, mut rx) = Progress::channel();

    let created = supervisor::create_run_reporting(&fx.daemon, fx.spec(), &progress)
        .await
        .unwrap();

    assert_eq!(created.notices, ["reclaimed 2 orphaned network(s) to make room"]);
    assert_eq!(
        drain(&mut rx),
        [CreateEvent::Progress {
            message: SWEEPING.into()
        }]
    );
    assert_eq!(fx.fake.call_count(FakeOp::CreateNetwork), 2);
    let left = network_names(&fx);
    assert!(orphans.iter().all(|o| !left.contains(o)), "orphans remain: {left:?}");
    assert_eq!(left, [created.run_id.network_name()]);
    let meta = fx.daemon.store().load(&created.run_id).unwrap();
    assert_eq!(meta.state, RunState::Running);
    supervisor::stop_run(&fx.daemon, &created.run_id, true).await.unwrap();
    fx.wait_until_gone(&created.run_id).await;
}

#[tokio::test]
async fn a_live_runs_network_is_not_reclaimed_to_make_room() {
    let fx = Fixture::new(|_| {});
    let live = supervisor::create_run(&fx.daemon, fx.spec()).await.unwrap();
    fx.fake
        .fail_next(FakeOp::CreateNetwork, FakeErrorKind::AddressSpaceExhausted, 2);

    let err = supervisor::create_run(&fx.daemon, fx.spec()).await.unwrap_err();

    assert!(
        matches!(err, RunError::Network(NetworkError::Exhausted { .. })),
        "{err}"
    );
    assert!(network_names(&fx).contains(&live.network_name()));
    supervisor::stop_run(&fx.daemon, &live, true).await.unwrap();
    fx.wait_until_gone(&live).await;
}

#[tokio::test]
async fn a_pool_that_stays_full_fails_with_the_cause_and_the_fix() {
    let fx = Fixture::new(|_| {});
    fx.fake
        .fail_next(FakeOp::CreateNetwork, FakeErrorKind::AddressSpaceExhausted, 2);

    let err = supervisor::create_run(&fx.daemon, fx.spec()).await.unwrap_err();

    let message = err.to_string();
    assert!(
        message.starts_with("creating network moat-run_")
            && message.contains(": no free subnet in moat's pool fake pool")
            && message.ends_with("even after a sweep of orphans (none to reclaim)"),
        "{message}"
    );
    let hint = err.hint().unwrap();
    let config = fx.daemon.home().config_file();
    assert!(hint.contains("`moat system prune --networks`"), "{hint}");
    assert!(
        hint.contains(&format!("widen `subnet_pool` in {}", config.display())),
        "{hint}"
    );
    assert_eq!(fx.fake.call_count(FakeOp::CreateNetwork), 2);
    assert_undone(&fx);
}

#[tokio::test(start_paused = true)]
async fn a_network_that_times_out_twice_names_the_operation_and_how_to_look() {
    let fx = Fixture::new(|_| {});
    fx.fake.delay(FakeOp::CreateNetwork, Duration::from_secs(3600));
    let started = tokio::time::Instant::now();

    let err = supervisor::create_run(&fx.daemon, fx.spec()).await.unwrap_err();

    let RunError::Network(NetworkError::TimedOut { after, .. }) = &err else {
        panic!("not a network timeout: {err}")
    };
    assert_eq!(*after, Timeouts::default().network_create);
    let message = err.to_string();
    assert!(
        message.contains("fake's `create_network moat-run_") && message.contains("timed out after 30s"),
        "{message}"
    );
    let hint = err.hint().unwrap();
    assert!(
        hint.contains("`docker network ls --filter label=dev.moat.managed=true`"),
        "{hint}"
    );
    assert!(hint.contains("`network_create_timeout`"), "{hint}");
    assert!(started.elapsed() < CREATE_DEADLINE, "{:?}", started.elapsed());
    assert_undone(&fx);
}

#[tokio::test(start_paused = true)]
async fn a_creation_past_the_deadline_is_undone_and_answered_before_the_client_gives_up() {
    // A runtime configured to wait longer than the daemon allows in all.
    let fake = FakeRuntime::with_timeouts(Timeouts {
        network_create: Duration::from_secs(600),
        ..Timeouts::default()
    });
    let fx = Fixture::with_fake(fake, |_| {});
    fx.fake.delay(FakeOp::CreateNetwork, Duration::from_secs(3600));
    let started = tokio::time::Instant::now();

    let err = supervisor::create_run(&fx.daemon, fx.spec()).await.unwrap_err();

    let RunError::Deadline(exceeded) = &err else {
        panic!("not a deadline: {err}")
    };
    assert!(exceeded.step.starts_with("creating network moat-run_"), "{err}");
    assert_eq!(exceeded.limit, CREATE_DEADLINE);
    assert!(err.to_string().contains("it was undone"), "{err}");
    let answered = started.elapsed();
    assert!(answered <= CREATE_DEADLINE + UNDO_WAIT, "{answered:?}");
    assert!(answered < CREATE_TIMEOUT, "{answered:?}");
    assert_undone(&fx);
}

#[tokio::test]
async fn the_client_hears_the_sweep_and_what_it_reclaimed() {
    let fx = Fixture::new(|_| {});
    orphan_networks(&fx, 3);
    let served = fx.serve().await;
    fx.fake
        .fail_next(FakeOp::CreateNetwork, FakeErrorKind::AddressSpaceExhausted, 1);

    let mut heard = Vec::new();
    let created = served
        .client
        .create_run_with_progress(&fx.spec(), |line| heard.push(line.to_string()))
        .await
        .unwrap();

    assert_eq!(heard, [SWEEPING]);
    assert_eq!(created.notices, ["reclaimed 3 orphaned network(s) to make room"]);
    served.client.stop_run(&created.run_id, true).await.unwrap();

    fx.fake
        .fail_next(FakeOp::CreateNetwork, FakeErrorKind::AddressSpaceExhausted, 2);
    let err = served.client.create_run(&fx.spec()).await.unwrap_err();
    assert_eq!(err.status(), Some(hyper::StatusCode::SERVICE_UNAVAILABLE));
    assert!(err.to_string().contains("no free subnet"), "{err}");
    assert!(
        err.hint().is_some_and(|h| h.contains("moat system prune --networks")),
        "{:?}",
        err.hint()
    );
    served.shutdown().await;
}

#[tokio::test]
async fn a_client_that_does_not_stream_gets_one_answer_with_the_hint() {
    let fx = Fixture::new(|_| {});
    let served = fx.serve().await;
    fx.fake
        .fail_next(FakeOp::CreateNetwork, FakeErrorKind::AddressSpaceExhausted, 2);

    let body = serde_json::to_vec(&fx.spec()).unwrap();
    let mut stream = tokio::net::UnixStream::connect(fx.daemon.home().daemon_socket())
        .await
        .unwrap();
    let head = format!(
        "POST /v1/runs HTTP/1.1\r\nhost: moat-daemon\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();

    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("content-type: application/json"), "{answer}");
    let json: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert!(json["error"].as_str().unwrap().contains("no free subnet"), "{json}");
    assert!(json["hint"].as_str().unwrap().contains("`subnet_pool`"), "{json}");
    served.shutdown().await;
}
