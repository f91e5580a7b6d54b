//! The warm network pool against the in-memory fake runtime: it fills at
//! start, a run takes a ready network instead of creating one (or waits for
//! the one being made) and the pool refills, strict runs take internal ones, and the reaper keeps the live
//! daemon's pool, reclaims a dead daemon's, and judges a taken network by
//! the run that took it. With moat's base image there, each pool network
//! gets a holder whose namespace a run's container joins.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use common::Fixture;
use moat_core::logs::Stream;
use moat_core::{RunId, RunMetadata, RunState};
use moat_daemon::api::RunSpec;
use moat_daemon::pool::{self, NAME_PREFIX, PoolConfig};
use moat_daemon::reaper::SweepRequest;
use moat_daemon::registry::RunHandle;
use moat_daemon::supervisor;
use moat_proxy::PolicyMode;
use moat_runtime::base_image::DEFAULT_LOCAL_BASE_IMAGE;
use moat_runtime::fake::{FakeOp, ScriptedRun};
use moat_runtime::{NetworkInfo, labels};

fn pooled(size: usize) -> Fixture {
    Fixture::new(|c| {
        c.network_pool = PoolConfig {
            size,
            runtime: "fake".into(),
        }
    })
}

/// Waits until the pool holds `size` ready networks of both kinds.
async fn wait_full(fx: &Fixture, size: usize) {
    wait_until(fx, size, "ready", |pool, internal| pool.ready(internal)).await
}

/// Waits until `listed` gives `size` networks of both kinds (`what` they are).
async fn wait_until(fx: &Fixture, size: usize, what: &str, listed: impl Fn(&pool::NetworkPool, bool) -> Vec<String>) {
    for _ in 0..300 {
        let pool = fx.daemon.network_pool();
        if listed(pool, false).len() == size && listed(pool, true).len() == size {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the pool never had {size} {what} networks of each kind");
}

fn pool_networks(fx: &Fixture) -> Vec<NetworkInfo> {
    fx.fake
        .networks()
        .into_iter()
        .filter(|n| n.labels.get(labels::ROLE).map(String::as_str) == Some(labels::role::POOL))
        .collect()
}

fn created_networks(fx: &Fixture) -> Vec<String> {
    fx.fake
        .calls()
        .into_iter()
        .filter(|c| c.op == FakeOp::CreateNetwork)
        .map(|c| c.target)
        .collect()
}

fn forced() -> SweepRequest {
    SweepRequest {
        force: true,
        ..SweepRequest::default()
    }
}

/// A pool network as a daemon instance `owner` of this home made it.
fn pool_network(fx: &Fixture, name: &str, owner: &str) {
    fx.fake.insert_network(NetworkInfo {
        id: format!("id-{name}"),
        name: name.into(),
        labels: BTreeMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::HOME.to_string(), fx.daemon.home().label()),
            (labels::ROLE.to_string(), labels::role::POOL.to_string()),
            (labels::DAEMON.to_string(), owner.to_string()),
        ]),
        subnet: None,
        gateway: None,
        internal: false,
        containers: Vec::new(),
    });
}

fn network_names(fx: &Fixture) -> Vec<String> {
    fx.fake.networks().into_iter().map(|n| n.name).collect()
}

#[tokio::test]
async fn the_pool_fills_to_its_size_at_start_with_both_kinds() {
    let fx = pooled(2);
    let filling = tokio::spawn(pool::keep_filled(fx.daemon.clone()));
    wait_full(&fx, 2).await;
    let networks = pool_networks(&fx);
    assert_eq!(networks.len(), 4, "{networks:?}");
    assert_eq!(networks.iter().filter(|n| n.internal).count(), 2);
    for network in &networks {
        assert!(network.name.starts_with(NAME_PREFIX), "{}", network.name);
        assert_eq!(network.labels.get(labels::RUN_ID), None, "a pool network names no run");
        assert_eq!(network.labels[labels::DAEMON], fx.daemon.instance());
        assert_eq!(network.labels[labels::HOME], fx.daemon.home().label());
    }
    // Never above the cap.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(created_networks(&fx).len(), 4);
    fx.daemon.begin_shutdown();
    filling.await.unwrap();
    pool::release(&fx.daemon).await;
    assert!(pool_networks(&fx).is_empty(), "shutdown removes the untaken pool");
}

#[tokio::test]
async fn a_run_takes_a_pool_network_without_creating_one_and_the_pool_refills() {
    let fx = pooled(2);
    fx.fake.script_container(
        "img",
        ScriptedRun {
            output: vec![(Stream::Stdout, "hi\n".into())],
            exit_code: 0,
            run_for: Duration::from_millis(200),
        },
    );
    tokio::spawn(pool::keep_filled(fx.daemon.clone()));
    wait_full(&fx, 2).await;
    let ready = fx.daemon.network_pool().ready(false);
    let created_before = created_networks(&fx);

    let created = supervisor::create_run_reporting(&fx.daemon, fx.spec(), &moat_daemon::progress::Progress::none())
        .await
        .unwrap();
    let id = created.run_id;
    let network = fx.daemon.store().load(&id).unwrap().network.unwrap();
    assert!(ready.contains(&network), "{network} is not one of {ready:?}");
    let created_after = created_networks(&fx);
    assert!(
        !created_after.contains(&id.network_name()),
        "no network was created for the run: {created_after:?}"
    );
    assert!(
        created_after[..created_before.len()] == created_before[..],
        "only refills follow"
    );
    let steps: Vec<&str> = created.timings.iter().map(|t| t.step.as_str()).collect();
    assert!(steps.contains(&"network take (warm pool)"), "{steps:?}");
    assert!(steps.contains(&"container start"), "{steps:?}");

    wait_full(&fx, 2).await;
    assert!(!fx.daemon.network_pool().ready(false).contains(&network));
    fx.wait_until_gone(&id).await;
    assert!(
        !network_names(&fx).contains(&network),
        "cleanup removed the taken network"
    );
    assert!(fx.daemon.store().load(&id).unwrap().cleaned_at.is_some());
}

#[tokio::test]
async fn a_strict_run_takes_an_internal_network() {
    let fx = pooled(1);
    tokio::spawn(pool::keep_filled(fx.daemon.clone()));
    wait_full(&fx, 1).await;
    let internal = fx.daemon.network_pool().ready(true);
    let mut spec: RunSpec = fx.spec();
    spec.policy.mode = PolicyMode::Strict;
    let id = supervisor::create_run(&fx.daemon, spec).await.unwrap();
    let network = fx.daemon.store().load(&id).unwrap().network.unwrap();
    assert_eq!(vec![network.clone()], internal);
    let info = fx.fake.networks().into_iter().find(|n| n.name == network).unwrap();
    assert!(info.internal);
    assert_eq!(fx.daemon.network_pool().ready(false).len(), 1, "the ordinary one stays");
}

#[tokio::test]
async fn a_run_arriving_while_the_pool_creates_a_network_of_its_kind_takes_it() {
    let fx = pooled(1);
    fx.fake.delay(FakeOp::CreateNetwork, Duration::from_millis(300));
    tokio::spawn(pool::keep_filled(fx.daemon.clone()));
    // The pool is creating its first (ordinary) network, as at a daemon's start.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(fx.daemon.network_pool().ready(false).is_empty());
    let id = supervisor::create_run(&fx.daemon, fx.spec()).await.unwrap();
    let network = fx.daemon.store().load(&id).unwrap().network.unwrap();
    assert!(network.starts_with(NAME_PREFIX), "{network}");
    let created = created_networks(&fx);
    assert!(
        !created.contains(&id.network_name()),
        "no second network was created beside the pool's: {created:?}"
    );
}

#[tokio::test]
async fn the_run_creates_its_network_when_the_pool_is_empty() {
    let fx = pooled(0);
    let id = supervisor::create_run(&fx.daemon, fx.spec()).await.unwrap();
    assert_eq!(fx.daemon.store().load(&id).unwrap().network, Some(id.network_name()));
}

#[tokio::test]
async fn the_live_daemons_pool_stays_and_a_dead_daemons_goes() {
    let fx = pooled(0);
    let ours = format!("{NAME_PREFIX}000000000001");
    let dead = format!("{NAME_PREFIX}000000000002");
    pool_network(&fx, &ours, fx.daemon.instance());
    pool_network(&fx, &dead, "1-ffffffffffff");
    let report = fx.daemon.reaper().sweep(&fx.daemon, &forced(), "test").await;
    assert_eq!(report.error, None);
    assert_eq!(network_names(&fx), vec![ours.clone()], "{report:?}");
    assert_eq!(report.runtimes[0].removed.len(), 1);
    assert_eq!(report.runtimes[0].removed[0].name, dead);
}

#[tokio::test]
async fn a_taken_pool_network_is_judged_by_its_run() {
    let fx = pooled(0);
    let dead_daemon = "1-ffffffffffff";
    let of_live = format!("{NAME_PREFIX}00000000000a");
    let of_cleaned = format!("{NAME_PREFIX}00000000000b");
    let of_cleaned_ours = format!("{NAME_PREFIX}00000000000c");
    pool_network(&fx, &of_live, dead_daemon);
    pool_network(&fx, &of_cleaned, dead_daemon);
    pool_network(&fx, &of_cleaned_ours, fx.daemon.instance());

    // A live run (supervised) took one.
    let live = supervised_run_on(&fx, &of_live);
    // Finished, cleaned-up runs took the others (their removal failed).
    for network in [&of_cleaned, &of_cleaned_ours] {
        let mut meta = RunMetadata::new(RunId::generate(), fx.root.clone(), "img".into(), "fake".into());
        meta.network = Some(network.clone());
        meta.state = RunState::Exited;
        meta.exited_at = Some(Utc::now());
        meta.cleaned_at = Some(Utc::now());
        fx.daemon.store().create(&meta).unwrap();
    }

    let report = fx.daemon.reaper().sweep(&fx.daemon, &forced(), "test").await;
    assert_eq!(report.error, None);
    assert_eq!(network_names(&fx), vec![of_live.clone()], "{report:?}");
    assert_eq!(report.runtimes[0].live, 1);

    // Once its run is cleaned up too, the last one goes.
    let handle = fx.daemon.registry().get(&live).unwrap();
    handle
        .update(fx.daemon.store(), |m| {
            m.state = RunState::Exited;
            m.cleaned_at = Some(Utc::now());
        })
        .unwrap();
    fx.daemon.registry().remove(&live);
    fx.daemon.reaper().sweep(&fx.daemon, &forced(), "test").await;
    assert!(network_names(&fx).is_empty(), "{:?}", network_names(&fx));
}

/// A pooled fixture whose runtime has moat's base image, so its pool arms
/// each network with a holder.
fn armed(size: usize) -> Fixture {
    let fx = pooled(size);
    fx.fake.add_image(DEFAULT_LOCAL_BASE_IMAGE);
    fx
}

/// Waits until every ready network of both kinds has its holder.
async fn wait_armed(fx: &Fixture, size: usize) {
    wait_until(fx, size, "armed", |pool, internal| pool.armed(internal)).await
}

fn container_names(fx: &Fixture) -> Vec<String> {
    let mut names: Vec<String> = fx.fake.containers().into_iter().map(|c| c.name).collect();
    names.sort();
    names
}

#[tokio::test]
async fn each_pool_network_gets_a_running_holder_of_its_name_and_a_run_joins_it() {
    let fx = armed(1);
    tokio::spawn(pool::keep_filled(fx.daemon.clone()));
    wait_armed(&fx, 1).await;
    let mut networks: Vec<String> = pool_networks(&fx).into_iter().map(|n| n.name).collect();
    networks.sort();
    assert_eq!(
        container_names(&fx),
        networks,
        "one holder per pool network, named like it"
    );
    for holder in fx.fake.containers() {
        assert!(holder.status.is_running(), "{holder:?}");
        assert_eq!(holder.labels[labels::ROLE], labels::role::POOL);
        assert_eq!(holder.labels[labels::DAEMON], fx.daemon.instance());
        assert_eq!(holder.networks, vec![holder.name.clone()]);
    }
    let ready = fx.daemon.network_pool().ready(false);

    let id = supervisor::create_run(&fx.daemon, fx.spec()).await.unwrap();
    let network = fx.daemon.store().load(&id).unwrap().network.unwrap();
    assert_eq!(vec![network.clone()], ready);
    let main = fx.fake.container(id.as_str()).unwrap();
    assert!(
        main.networks.is_empty(),
        "the run's container shares its holder's namespace instead of attaching: {main:?}"
    );

    fx.fake.exit_container(id.as_str(), 0);
    fx.wait_until_gone(&id).await;
    assert!(fx.fake.container(&network).is_none(), "cleanup removed the holder");
    assert!(!network_names(&fx).contains(&network), "and then the network");
    assert!(fx.daemon.store().load(&id).unwrap().cleaned_at.is_some());
}

#[tokio::test]
async fn a_run_that_needs_its_own_dns_attaches_to_the_network_beside_the_holder() {
    let fx = armed(1);
    tokio::spawn(pool::keep_filled(fx.daemon.clone()));
    wait_armed(&fx, 1).await;
    let mut spec = fx.spec();
    spec.dns = vec!["192.0.2.53".into()];
    let id = supervisor::create_run(&fx.daemon, spec).await.unwrap();
    let network = fx.daemon.store().load(&id).unwrap().network.unwrap();
    assert!(network.starts_with(NAME_PREFIX), "{network}");
    assert_eq!(fx.fake.container(id.as_str()).unwrap().networks, vec![network.clone()]);
    fx.fake.exit_container(id.as_str(), 0);
    fx.wait_until_gone(&id).await;
    assert!(
        fx.fake.container(&network).is_none(),
        "cleanup removed the unused holder"
    );
    assert!(!network_names(&fx).contains(&network));
}

#[tokio::test]
async fn a_holder_that_stopped_is_not_joined() {
    let fx = armed(1);
    tokio::spawn(pool::keep_filled(fx.daemon.clone()));
    wait_armed(&fx, 1).await;
    let network = fx.daemon.network_pool().ready(false).remove(0);
    assert!(fx.fake.exit_container(&network, 137));
    let id = supervisor::create_run(&fx.daemon, fx.spec()).await.unwrap();
    assert_eq!(fx.daemon.store().load(&id).unwrap().network, Some(network.clone()));
    assert_eq!(fx.fake.container(id.as_str()).unwrap().networks, vec![network]);
}

#[tokio::test]
async fn a_dead_daemons_holders_go_with_their_networks_and_a_live_runs_holder_stays() {
    let fx = pooled(0);
    fx.fake.add_image(DEFAULT_LOCAL_BASE_IMAGE);
    let dead_daemon = "1-ffffffffffff";
    let untaken = format!("{NAME_PREFIX}00000000000d");
    let of_live = format!("{NAME_PREFIX}00000000000e");
    for name in [&untaken, &of_live] {
        pool_network(&fx, name, dead_daemon);
        let mut labels = fx.fake.networks().into_iter().find(|n| n.name == *name).unwrap().labels;
        labels.insert(labels::DAEMON.to_string(), dead_daemon.to_string());
        fx.fake.insert_container(moat_runtime::ContainerInfo {
            id: format!("id-{name}"),
            name: name.clone(),
            image: DEFAULT_LOCAL_BASE_IMAGE.into(),
            status: moat_runtime::ContainerStatus::Running,
            exit_code: None,
            labels,
            networks: vec![name.clone()],
            address: None,
            created_at: Some(Utc::now()),
        });
    }
    supervised_run_on(&fx, &of_live);

    let report = fx.daemon.reaper().sweep(&fx.daemon, &forced(), "test").await;
    assert_eq!(report.error, None);
    assert_eq!(network_names(&fx), vec![of_live.clone()], "{report:?}");
    assert_eq!(container_names(&fx), vec![of_live], "{report:?}");
}

#[tokio::test]
async fn the_pool_makes_nothing_while_a_run_is_starting_and_fills_once_it_has() {
    let fx = pooled(1);
    let starting = fx.daemon.network_pool().starting();
    tokio::spawn(pool::keep_filled(fx.daemon.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        created_networks(&fx),
        Vec::<String>::new(),
        "the pool waits for the starting run"
    );
    drop(starting);
    wait_full(&fx, 1).await;
}

/// A live run, supervised, whose record names `network` as its network.
fn supervised_run_on(fx: &Fixture, network: &str) -> RunId {
    let live = RunId::generate();
    let mut meta = RunMetadata::new(live.clone(), fx.root.clone(), "img".into(), "fake".into());
    meta.network = Some(network.to_string());
    meta.state = RunState::Running;
    fx.daemon.store().create(&meta).unwrap();
    fx.daemon
        .registry()
        .lock()
        .insert(live.clone(), RunHandle::new(RunSpec::default(), meta));
    live
}
