//! The reaper against the in-memory fake runtime: what it removes, what it
//! never touches, the two-sweep rule, dry runs, failures and the report.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Fixture;
use moat_core::{RunId, RunMetadata, RunState};
use moat_daemon::api::RunSpec;
use moat_daemon::reaper::SweepRequest;
use moat_daemon::reaper::decide::ObjectKind;
use moat_daemon::registry::RunHandle;
use moat_runtime::fake::{FakeErrorKind, FakeOp};
use moat_runtime::{ContainerInfo, ContainerStatus, NetworkInfo, VolumeInfo, labels};

trait ReaperFixture {
    fn home_label(&self) -> String;
    fn objects_of(&self, run: &RunId, home: &str);
    fn container(&self, name: &str, network: String, labels: BTreeMap<String, String>);
    fn container_in(&self, status: ContainerStatus, name: &str, network: String, labels: BTreeMap<String, String>);
    fn live_run(&self) -> RunId;
    fn dead_run(&self) -> RunId;
    fn names(&self) -> (Vec<String>, Vec<String>);
}

impl ReaperFixture for Fixture {
    fn home_label(&self) -> String {
        self.daemon.home().label()
    }

    /// A network and a container of `run`, labelled with `home`.
    fn objects_of(&self, run: &RunId, home: &str) {
        self.fake.insert_network(NetworkInfo {
            id: format!("net-{run}"),
            name: run.network_name(),
            labels: labels::for_run(home, run.as_str(), labels::role::NETWORK),
            subnet: None,
            gateway: None,
            internal: false,
            containers: Vec::new(),
        });
        self.container(
            run.as_str(),
            run.network_name(),
            labels::for_run(home, run.as_str(), labels::role::MAIN),
        );
    }

    fn container(&self, name: &str, network: String, labels: BTreeMap<String, String>) {
        self.container_in(ContainerStatus::Running, name, network, labels);
    }

    fn container_in(&self, status: ContainerStatus, name: &str, network: String, labels: BTreeMap<String, String>) {
        self.fake.insert_container(ContainerInfo {
            address: None,
            id: format!("id-{name}"),
            name: name.to_string(),
            image: "img".into(),
            status,
            exit_code: None,
            labels,
            networks: vec![network],
            created_at: None,
        });
    }

    /// A run the daemon supervises.
    fn live_run(&self) -> RunId {
        let id = RunId::generate();
        let meta = RunMetadata::new(id.clone(), self.root.clone(), "img".into(), "fake".into());
        self.daemon.store().create(&meta).unwrap();
        self.daemon
            .registry()
            .lock()
            .insert(id.clone(), RunHandle::new(RunSpec::default(), meta));
        id
    }

    /// A finished, cleaned-up run whose record stays (terminal, lock free).
    fn dead_run(&self) -> RunId {
        let id = RunId::generate();
        let mut meta = RunMetadata::new(id.clone(), self.root.clone(), "img".into(), "fake".into());
        meta.state = RunState::Exited;
        meta.cleaned_at = Some(chrono::Utc::now());
        self.daemon.store().create(&meta).unwrap();
        id
    }

    fn names(&self) -> (Vec<String>, Vec<String>) {
        let mut containers: Vec<_> = self.fake.containers().into_iter().map(|c| c.name).collect();
        let mut networks: Vec<_> = self.fake.networks().into_iter().map(|n| n.name).collect();
        containers.sort();
        networks.sort();
        (containers, networks)
    }
}

fn forced() -> SweepRequest {
    SweepRequest {
        force: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn orphans_go_while_live_runs_foreign_homes_and_foreign_attachments_stay() {
    let fx = Fixture::new(|c| c.second_sighting_after = Duration::from_secs(60));
    let home = fx.home_label();
    let live = fx.live_run();
    fx.objects_of(&live, &home);
    let dead = fx.dead_run();
    fx.objects_of(&dead, &home);
    // A run whose directory was deleted: its stopped container and its
    // network go; a running container without a record is kept (it may
    // be a run whose record cannot be read).
    let vanished_record = RunId::generate();
    fx.objects_of(&vanished_record, &home);
    fx.container_in(
        ContainerStatus::Exited,
        vanished_record.as_str(),
        vanished_record.network_name(),
        labels::for_run(&home, vanished_record.as_str(), labels::role::MAIN),
    );
    let running_unrecorded = RunId::generate();
    fx.objects_of(&running_unrecorded, &home);
    let other_home = RunId::generate();
    fx.objects_of(&other_home, "ffffffffffff");
    // A network of a dead run with somebody else's container attached.
    let shared = fx.dead_run();
    fx.objects_of(&shared, &home);
    fx.container("postgres", shared.network_name(), BTreeMap::new());

    let report = fx.daemon.reaper().sweep(&fx.daemon, &forced(), "test").await;

    let (containers, networks) = fx.names();
    let mut expect_containers = vec![
        live.to_string(),
        other_home.to_string(),
        "postgres".to_string(),
        running_unrecorded.to_string(),
    ];
    expect_containers.sort();
    let mut expect_networks = vec![
        live.network_name(),
        other_home.network_name(),
        shared.network_name(),
        running_unrecorded.network_name(),
    ];
    expect_networks.sort();
    assert_eq!(containers, expect_containers);
    assert_eq!(networks, expect_networks);
    let sweep = &report.runtimes[0];
    // dead, vanished_record and shared's own container + 2 networks.
    assert_eq!(sweep.removed.len(), 5, "{:?}", sweep.removed);
    assert_eq!(sweep.live, 4);
    assert!(sweep.failed.is_empty());
    // The dead run's running container was stopped before it was removed.
    assert_eq!(fx.fake.call_count(FakeOp::StopContainer), 2);
}

#[tokio::test]
async fn an_orphan_is_removed_only_on_a_second_sighting() {
    let fx = Fixture::new(|c| c.second_sighting_after = Duration::from_millis(200));
    let dead = fx.dead_run();
    fx.objects_of(&dead, &fx.home_label());
    let first = fx
        .daemon
        .reaper()
        .sweep(&fx.daemon, &SweepRequest::default(), "test")
        .await;
    assert!(first.runtimes[0].removed.is_empty());
    assert_eq!(first.runtimes[0].awaiting_second_sighting, 2);
    let early = fx
        .daemon
        .reaper()
        .sweep(&fx.daemon, &SweepRequest::default(), "test")
        .await;
    assert!(
        early.runtimes[0].removed.is_empty(),
        "removed before the second-sighting delay"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let second = fx
        .daemon
        .reaper()
        .sweep(&fx.daemon, &SweepRequest::default(), "test")
        .await;
    assert_eq!(second.runtimes[0].removed.len(), 2);
    assert_eq!(fx.names(), (vec![], vec![]));
}

#[tokio::test]
async fn a_dry_run_counts_but_removes_nothing_and_kinds_filter() {
    let fx = Fixture::new(|c| c.second_sighting_after = Duration::from_secs(60));
    let dead = fx.dead_run();
    fx.objects_of(&dead, &fx.home_label());
    let dry = SweepRequest {
        dry_run: true,
        force: true,
        ..Default::default()
    };
    let report = fx.daemon.reaper().sweep(&fx.daemon, &dry, "test").await;
    assert_eq!(report.runtimes[0].removed.len(), 2);
    assert_eq!(fx.names().1.len(), 1);
    assert_eq!(fx.fake.call_count(FakeOp::RemoveNetwork), 0);

    let containers_only = SweepRequest {
        kinds: vec![ObjectKind::Container],
        force: true,
        ..Default::default()
    };
    fx.daemon.reaper().sweep(&fx.daemon, &containers_only, "test").await;
    assert_eq!(fx.names(), (vec![], vec![dead.network_name()]));
}

#[tokio::test]
async fn failed_removals_are_reported_backed_off_and_persisted() {
    let fx = Fixture::new(|c| c.second_sighting_after = Duration::from_secs(60));
    let dead = fx.dead_run();
    fx.objects_of(&dead, &fx.home_label());
    fx.fake.fail_next(FakeOp::RemoveNetwork, FakeErrorKind::Other, 1);
    let report = fx.daemon.reaper().sweep(&fx.daemon, &forced(), "test").await;
    let sweep = &report.runtimes[0];
    assert_eq!(sweep.failed.len(), 1);
    assert_eq!(sweep.failed[0].object.name, dead.network_name());
    assert_eq!(sweep.failed[0].failures, 1);
    // Backing off: the next sweep does not retry at once.
    let again = fx.daemon.reaper().sweep(&fx.daemon, &forced(), "test").await;
    assert!(again.runtimes[0].removed.is_empty() && again.runtimes[0].failed.is_empty());
    assert_eq!(fx.fake.call_count(FakeOp::RemoveNetwork), 1);

    let persisted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.daemon.home().reaper_json()).unwrap()).unwrap();
    assert_eq!(persisted["sweeps"].as_array().unwrap().len(), 2);
    assert_eq!(fx.daemon.reaper().last_report(), Some(again));
}

#[tokio::test]
async fn a_slow_listing_never_blocks_forever() {
    let fx = Fixture::new(|c| c.second_sighting_after = Duration::from_secs(60));
    fx.fake.delay(FakeOp::ListNetworks, Duration::from_secs(3600));
    tokio::time::pause();
    let report = fx.daemon.reaper().sweep(&fx.daemon, &forced(), "test").await;
    let errors = &report.runtimes[0].errors;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("timed out"), "{errors:?}");
}

/// The attack: a run directory whose record cannot be read (here a
/// directory where `metadata.json` should be, which fails to read even as
/// root, like EACCES or EMFILE would) must abort the sweep, not make a
/// live run look dead.
#[tokio::test]
async fn an_unreadable_run_record_aborts_the_sweep_and_removes_nothing() {
    let fx = Fixture::new(|c| c.second_sighting_after = Duration::from_secs(60));
    let home = fx.home_label();
    let dead = fx.dead_run();
    fx.objects_of(&dead, &home);
    let unreadable = RunId::generate();
    fx.objects_of(&unreadable, &home);
    let dir = fx.daemon.store().run_dir(&unreadable);
    std::fs::create_dir_all(dir.join("metadata.json")).unwrap();

    let report = fx.daemon.reaper().sweep(&fx.daemon, &forced(), "test").await;

    let error = report.error.expect("the sweep must report why it stopped");
    assert!(error.contains("sweep aborted, nothing removed"), "{error}");
    assert!(report.runtimes.is_empty());
    assert_eq!(fx.names().0.len(), 2, "no container may be removed");
    assert_eq!(fx.names().1.len(), 2, "no network may be removed");
    assert_eq!(fx.fake.call_count(FakeOp::StopContainer), 0);
}

/// The attack: the registry could not be restored at start-up (corrupt or
/// wrong-version `runs.json`); the reaper pauses instead of sweeping
/// beside runs it may not know.
#[tokio::test]
async fn an_unreadable_registry_pauses_the_reaper() {
    let fx = Fixture::new(|c| c.second_sighting_after = Duration::from_secs(60));
    let dead = fx.dead_run();
    fx.objects_of(&dead, &fx.home_label());
    fx.daemon
        .set_registry_error("runs.json: format version 9 is not 1".into());

    let report = fx.daemon.reaper().sweep(&fx.daemon, &forced(), "test").await;

    let error = report.error.expect("aborted");
    assert!(error.contains("format version 9"), "{error}");
    assert_eq!(fx.names().0.len(), 1);
    assert_eq!(fx.names().1.len(), 1);
}

/// The attack on the second-sighting rule: objects of a live run are seen
/// many times; when the run is then (wrongly, or briefly) judged dead,
/// they must still wait a full period, because live objects are never
/// sighted as orphans.
#[tokio::test]
async fn objects_seen_live_wait_a_full_period_once_orphaned() {
    let fx = Fixture::new(|c| c.second_sighting_after = Duration::from_millis(300));
    let live = fx.live_run();
    fx.objects_of(&live, &fx.home_label());
    let sweep = SweepRequest::default();
    fx.daemon.reaper().sweep(&fx.daemon, &sweep, "test").await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    fx.daemon.reaper().sweep(&fx.daemon, &sweep, "test").await;
    // The run's registration vanishes (its record is gone too).
    fx.daemon.registry().lock().remove(&live);
    fx.daemon.store().destroy(&live).unwrap();
    fx.fake.exit_container(live.as_str(), 0);
    let orphaned = fx.daemon.reaper().sweep(&fx.daemon, &sweep, "test").await;
    assert!(
        orphaned.runtimes[0].removed.is_empty(),
        "{:?}",
        orphaned.runtimes[0].removed
    );
    assert_eq!(orphaned.runtimes[0].awaiting_second_sighting, 2);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let later = fx.daemon.reaper().sweep(&fx.daemon, &sweep, "test").await;
    assert_eq!(later.runtimes[0].removed.len(), 2);
}

/// A Go-era network with a running Go-era container on it, and a volume.
fn go_era_objects(fx: &Fixture) {
    let go_label = BTreeMap::from([(labels::LEGACY_MANAGED.to_string(), "true".to_string())]);
    fx.fake.insert_network(NetworkInfo {
        id: "go-net".into(),
        name: "moat-legacy".into(),
        labels: go_label.clone(),
        subnet: None,
        gateway: None,
        internal: false,
        containers: Vec::new(),
    });
    fx.container("moat-agent", "moat-legacy".into(), go_label);
    fx.fake.insert_volume(VolumeInfo {
        name: "moat-cache".into(),
        labels: BTreeMap::new(),
    });
}

#[tokio::test]
async fn go_era_objects_survive_every_sweep_and_go_only_with_legacy() {
    let fx = Fixture::new(|c| c.second_sighting_after = Duration::from_millis(1));
    go_era_objects(&fx);
    let dead = fx.dead_run();
    fx.objects_of(&dead, &fx.home_label());
    let go_keys = |sweep: &moat_daemon::reaper::RuntimeSweep| -> Vec<(ObjectKind, String)> {
        sweep.legacy.iter().map(|k| (k.kind, k.name.clone())).collect()
    };
    let expect_legacy = vec![
        (ObjectKind::Container, "moat-agent".to_string()),
        (ObjectKind::Network, "moat-legacy".to_string()),
        (ObjectKind::Volume, "moat-cache".to_string()),
    ];

    // Forced, periodic-like and repeated sweeps list them but never touch them.
    let forced_report = fx.daemon.reaper().sweep(&fx.daemon, &forced(), "test").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..2 {
        let report = fx
            .daemon
            .reaper()
            .sweep(&fx.daemon, &SweepRequest::default(), "periodic")
            .await;
        assert_eq!(go_keys(&report.runtimes[0]), expect_legacy);
        assert!(
            report.runtimes[0].removed.is_empty(),
            "{:?}",
            report.runtimes[0].removed
        );
    }
    let sweep = &forced_report.runtimes[0];
    assert_eq!(go_keys(sweep), expect_legacy);
    assert_eq!(
        sweep.removed.len(),
        2,
        "only the dead run's objects: {:?}",
        sweep.removed
    );
    assert_eq!(
        fx.names(),
        (vec!["moat-agent".to_string()], vec!["moat-legacy".to_string()])
    );
    assert_eq!(fx.fake.volumes().len(), 1);
    let stopped: Vec<String> = (fx.fake.calls().into_iter())
        .filter(|c| c.op == FakeOp::StopContainer)
        .map(|c| c.target)
        .collect();
    assert_eq!(
        stopped,
        [dead.to_string()],
        "only the dead run's running container is stopped"
    );

    // A dry run with `legacy` says what it would remove, and removes nothing.
    let dry = SweepRequest {
        dry_run: true,
        legacy: true,
        ..Default::default()
    };
    let report = fx.daemon.reaper().sweep(&fx.daemon, &dry, "test").await;
    let would: Vec<_> = report.runtimes[0]
        .removed
        .iter()
        .map(|k| (k.kind, k.name.clone()))
        .collect();
    assert_eq!(would, expect_legacy);
    assert_eq!(fx.names().1, vec!["moat-legacy".to_string()]);

    // Only `legacy` removes them: the running container is stopped first.
    let legacy = SweepRequest {
        legacy: true,
        ..Default::default()
    };
    let report = fx.daemon.reaper().sweep(&fx.daemon, &legacy, "test").await;
    let sweep = &report.runtimes[0];
    assert!(sweep.failed.is_empty(), "{:?}", sweep.failed);
    assert_eq!(sweep.removed.len(), 3, "{:?}", sweep.removed);
    assert_eq!(fx.names(), (vec![], vec![]));
    assert!(fx.fake.volumes().is_empty());
    let ops: Vec<FakeOp> = fx
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.target == "moat-agent")
        .map(|c| c.op)
        .collect();
    assert_eq!(ops, [FakeOp::StopContainer, FakeOp::RemoveContainer]);
}

#[test]
fn reports_written_before_go_era_listing_still_parse() {
    let old = r#"{"started_at":"2025-01-01T00:00:00Z","duration_ms":3,"trigger":"periodic",
        "dry_run":false,"force":false,"runtimes":[{"runtime":"docker","candidates":0,"live":0,
        "removed":[],"awaiting_second_sighting":0,"protected":0,"failed":[],"errors":[]}]}"#;
    let report: moat_daemon::reaper::SweepReport = serde_json::from_str(old).unwrap();
    assert!(!report.legacy && report.runtimes[0].legacy.is_empty());
    let request: SweepRequest = serde_json::from_str(r#"{"force":true}"#).unwrap();
    assert!(!request.legacy);
}

/// Sweeps recorded in `reaper.json`, by trigger.
fn recorded_triggers(fx: &Fixture) -> Vec<String> {
    let Ok(bytes) = std::fs::read(fx.daemon.home().reaper_json()) else {
        return Vec::new();
    };
    let file: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    file["sweeps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["trigger"].as_str().unwrap().to_string())
        .collect()
}

/// Lets spawned tasks run without moving the paused clock.
async fn let_tasks_run(fx: &Fixture, until: impl Fn(&[String]) -> bool) -> Vec<String> {
    for _ in 0..10_000 {
        let triggers = recorded_triggers(fx);
        if until(&triggers) {
            return triggers;
        }
        tokio::task::yield_now().await;
    }
    recorded_triggers(fx)
}

#[tokio::test(start_paused = true)]
async fn the_reaper_sweeps_at_start_up_and_then_every_interval() {
    let fx = Fixture::new(|c| c.reap_interval = Duration::from_secs(600));
    let periodic = tokio::spawn(moat_daemon::reaper::periodic(fx.daemon.clone()));

    let triggers = let_tasks_run(&fx, |t| !t.is_empty()).await;
    assert_eq!(triggers, ["startup"]);
    tokio::time::advance(Duration::from_secs(599)).await;
    assert_eq!(
        let_tasks_run(&fx, |t| t.len() > 1).await,
        ["startup"],
        "swept before the interval"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(let_tasks_run(&fx, |t| t.len() > 1).await, ["startup", "periodic"]);
    tokio::time::advance(Duration::from_secs(600)).await;
    let triggers = let_tasks_run(&fx, |t| t.len() > 2).await;
    assert_eq!(triggers, ["startup", "periodic", "periodic"]);

    fx.daemon.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(1), periodic)
        .await
        .expect("the periodic reaper stops with the daemon")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn sweeps_are_single_flight() {
    let fx = Fixture::new(|c| c.second_sighting_after = Duration::from_secs(60));
    fx.fake.delay(FakeOp::ListNetworks, Duration::from_secs(5));
    let request = forced();
    let started = tokio::time::Instant::now();
    let (a, b) = tokio::join!(
        fx.daemon.reaper().sweep(&fx.daemon, &request, "a"),
        fx.daemon.reaper().sweep(&fx.daemon, &request, "b"),
    );
    assert!(a.error.is_none() && b.error.is_none(), "{a:?} {b:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "two sweeps overlapped: both finished after {:?}",
        started.elapsed()
    );
    assert_eq!(fx.fake.call_count(FakeOp::ListNetworks), 2);
}
