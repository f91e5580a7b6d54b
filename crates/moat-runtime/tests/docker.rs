//! The Docker backend against the real engine: labelled networks from moat's
//! pool (also more than Docker's default pools allow), containers (logs
//! order and stream tags, exit codes, exec, stop), volumes, idempotent
//! removals, and timeouts against an engine that never answers.
//!
//! Without a reachable engine these tests are skipped with a message, except
//! under `CI=true`, where that is a failure. Every object carries a
//! test-specific `dev.moat.home` label and is removed at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt, TryStreamExt};
use moat_runtime::base_image::{
    BaseImageError, BaseImageOutcome, BaseImageProgress, BaseImageRecipe, BaseImageReporter, DEFAULT_LOCAL_BASE_IMAGE,
    SilentReporter, ensure_base_image,
};
use moat_runtime::docker::{DockerOptions, DockerRuntime};
use moat_runtime::select::Probe;
use moat_runtime::subnet::{Ipv4Subnet, SubnetPool};
use moat_runtime::{
    ContainerSpec, ContainerStatus, NetworkSpec, OutputStreamKind, Runtime, RuntimeError, Timeouts, VolumeSpec, labels,
};
use tokio::sync::OnceCell;

// === Harness ===

/// The engine, or `None` (test skipped) when it is unreachable outside CI.
async fn engine() -> Option<DockerRuntime> {
    engine_with(Timeouts::default()).await
}

#[allow(clippy::print_stderr)]
async fn engine_with(timeouts: Timeouts) -> Option<DockerRuntime> {
    let options = DockerOptions {
        timeouts,
        ..DockerOptions::default()
    };
    let reachable = match DockerRuntime::new(options) {
        Ok(runtime) => runtime.ping().await.map(|()| runtime),
        Err(err) => Err(err),
    };
    match reachable {
        Ok(runtime) => Some(runtime),
        Err(err) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but the Docker engine is unreachable: {err}")
        }
        Err(err) => {
            eprintln!("skipping Docker test: the Docker engine is unreachable ({err})");
            None
        }
    }
}

/// A `dev.moat.home` value unique to one test of this process.
fn test_home(test: &str) -> String {
    format!("moat-test-{}-{test}", std::process::id())
}

fn name(home: &str, what: &str) -> String {
    format!("{home}-{what}")
}

fn run_labels(home: &str, role: &str) -> std::collections::BTreeMap<String, String> {
    labels::for_run(home, "run_0123456789ab", role)
}

/// Runs `body`, then removes every object labelled with `home`, even when
/// `body` panicked.
async fn with_cleanup(runtime: &DockerRuntime, home: &str, body: impl Future<Output = ()>) {
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    remove_labelled(runtime, home).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn remove_labelled(runtime: &DockerRuntime, home: &str) {
    let ours = |labels: &std::collections::BTreeMap<String, String>| {
        labels.get(labels::HOME).map(String::as_str) == Some(home)
    };
    for container in runtime.list_containers().await.unwrap() {
        if ours(&container.labels) {
            runtime.remove_container(&container.id).await.unwrap();
        }
    }
    for network in runtime.list_networks().await.unwrap() {
        if ours(&network.labels) {
            runtime.remove_network(&network.name).await.unwrap();
        }
    }
    for volume in runtime.list_volumes().await.unwrap() {
        if ours(&volume.labels) {
            runtime.remove_volume(&volume.name).await.unwrap();
        }
    }
}

static BASE_IMAGE: OnceCell<()> = OnceCell::const_new();

/// Builds the local base image once (a no-op when it exists).
async fn base_image(runtime: &DockerRuntime) -> &'static str {
    BASE_IMAGE
        .get_or_init(|| async {
            let recipe = BaseImageRecipe::bookworm(DEFAULT_LOCAL_BASE_IMAGE);
            ensure_base_image(runtime, &recipe, &SilentReporter).await.unwrap();
        })
        .await;
    DEFAULT_LOCAL_BASE_IMAGE
}

fn shell(home: &str, what: &str, image: &str, script: &str) -> ContainerSpec {
    ContainerSpec {
        name: name(home, what),
        image: image.to_string(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        labels: run_labels(home, labels::role::MAIN),
        ..Default::default()
    }
}

// === Networks ===

#[tokio::test]
async fn networks_are_created_from_the_pool_listed_and_removed() {
    let Some(docker) = engine().await else { return };
    let home = test_home("networks");
    with_cleanup(&docker, &home, async {
        let spec = NetworkSpec {
            name: name(&home, "net"),
            labels: run_labels(&home, labels::role::NETWORK),
            internal: true,
        };
        let created = docker.create_network(&spec).await.unwrap();
        let subnet: Ipv4Subnet = created.subnet.as_deref().unwrap().parse().unwrap();
        assert!(docker.subnet_pool().base().overlaps(&subnet));
        assert_eq!(subnet.prefix(), docker.subnet_pool().block_prefix());

        let listed = docker.list_networks().await.unwrap();
        let found = listed.iter().find(|n| n.name == spec.name).unwrap();
        assert_eq!(found.labels.get(labels::HOME), Some(&home));
        assert_eq!(found.subnet, created.subnet);
        assert_eq!(found.gateway, created.gateway);
        assert!(found.internal);
        assert!(found.containers.is_empty());

        docker.remove_network(&spec.name).await.unwrap();
        let after = docker.list_networks().await.unwrap();
        assert!(after.iter().all(|n| n.name != spec.name));
        assert!(docker.inspect_network(&spec.name).await.unwrap_err().is_not_found());
    })
    .await;
}

#[tokio::test]
#[allow(clippy::print_stderr)]
async fn forty_networks_at_once_fit_in_moats_pool() {
    // Removals queue up in the engine (≈200 ms each, longer when other
    // tests keep it busy): allow more than the default 5 s per removal.
    let timeouts = Timeouts {
        remove: Duration::from_secs(30),
        ..Timeouts::default()
    };
    let Some(docker) = engine_with(timeouts).await else {
        return;
    };
    let home = test_home("forty");
    with_cleanup(&docker, &home, async {
        let specs: Vec<NetworkSpec> = (0..40)
            .map(|i| NetworkSpec {
                name: name(&home, &format!("net{i:02}")),
                labels: run_labels(&home, labels::role::NETWORK),
                internal: false,
            })
            .collect();
        let started = Instant::now();
        let created = futures_util::future::join_all(specs.iter().map(|s| docker.create_network(s))).await;
        let create_time = started.elapsed();
        let subnets: BTreeSet<String> = created
            .into_iter()
            .map(|network| network.unwrap().subnet.unwrap())
            .collect();
        assert_eq!(subnets.len(), 40, "every network got its own subnet");

        let ours = docker
            .list_networks()
            .await
            .unwrap()
            .into_iter()
            .filter(|n| n.labels.get(labels::HOME) == Some(&home))
            .count();
        assert_eq!(ours, 40);

        // Docker serialises removals (≈190 ms each): remove a few at a
        // time, as the reaper does, so none waits past its own bound.
        let started = Instant::now();
        let removed: Vec<_> = futures_util::stream::iter(&specs)
            .map(|s| docker.remove_network(&s.name))
            .buffer_unordered(4)
            .collect()
            .await;
        assert!(removed.iter().all(Result::is_ok), "{removed:?}");
        eprintln!(
            "40 networks: created in {create_time:?}, removed in {:?}",
            started.elapsed()
        );
    })
    .await;
}

/// A runtime whose pool is the two /28 blocks of `base` (a /27).
async fn engine_with_pool(base: &str) -> Option<DockerRuntime> {
    engine().await?;
    let options = DockerOptions {
        subnet_pool: SubnetPool::parse(base, 28).unwrap(),
        ..DockerOptions::default()
    };
    Some(DockerRuntime::new(options).unwrap())
}

fn network_spec(home: &str, what: &str) -> NetworkSpec {
    NetworkSpec {
        name: name(home, what),
        labels: run_labels(home, labels::role::NETWORK),
        internal: false,
    }
}

#[tokio::test]
async fn used_blocks_are_skipped_and_a_full_pool_is_reported() {
    let Some(docker) = engine_with_pool("10.214.7.0/27").await else {
        return;
    };
    let home = test_home("fullpool");
    with_cleanup(&docker, &home, async {
        let first = docker.create_network(&network_spec(&home, "a")).await.unwrap();
        let second = docker.create_network(&network_spec(&home, "b")).await.unwrap();
        // Each search starts at a block derived from the network's name;
        // together the two take both blocks.
        let mut taken = [first.subnet.unwrap(), second.subnet.unwrap()];
        taken.sort();
        assert_eq!(taken, ["10.214.7.0/28", "10.214.7.16/28"]);
        let err = docker.create_network(&network_spec(&home, "c")).await.unwrap_err();
        assert!(matches!(err, RuntimeError::AddressSpaceExhausted { .. }), "{err}");
        assert!(err.to_string().contains("10.214.7.0/27"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn two_runtimes_racing_for_one_block_both_get_a_subnet() {
    let Some(left) = engine_with_pool("10.214.8.0/27").await else {
        return;
    };
    let Some(right) = engine_with_pool("10.214.8.0/27").await else {
        return;
    };
    let home = test_home("race");
    with_cleanup(&left, &home, async {
        // Both list an empty pool and pick the same block; the loser is
        // told the subnet overlaps and moves on to the next block.
        let (left_spec, right_spec) = (network_spec(&home, "left"), network_spec(&home, "right"));
        let (a, b) = tokio::join!(left.create_network(&left_spec), right.create_network(&right_spec));
        let subnets: BTreeSet<String> = [a.unwrap().subnet.unwrap(), b.unwrap().subnet.unwrap()].into();
        assert_eq!(
            subnets,
            BTreeSet::from(["10.214.8.0/28".to_string(), "10.214.8.16/28".to_string()])
        );
    })
    .await;
}

#[tokio::test]
async fn removing_a_network_with_a_running_container_is_in_use() {
    let Some(docker) = engine().await else { return };
    let image = base_image(&docker).await;
    let home = test_home("inuse");
    with_cleanup(&docker, &home, async {
        let network = NetworkSpec {
            name: name(&home, "net"),
            labels: run_labels(&home, labels::role::NETWORK),
            internal: true,
        };
        docker.create_network(&network).await.unwrap();
        let mut spec = shell(&home, "sleeper", image, "sleep 30");
        spec.network = Some(network.name.clone());
        let id = docker.create_container(&spec).await.unwrap();
        docker.start_container(&id).await.unwrap();

        let err = docker.remove_network(&network.name).await.unwrap_err();
        assert!(matches!(err, RuntimeError::InUse { .. }), "{err}");
        let inspected = docker.inspect_network(&network.name).await.unwrap();
        assert_eq!(inspected.containers, std::slice::from_ref(&spec.name));
        let info = docker.inspect_container(&id).await.unwrap();
        assert_eq!(info.networks, std::slice::from_ref(&network.name));

        docker.remove_container(&id).await.unwrap();
        docker.remove_network(&network.name).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn go_era_objects_are_listed_apart_from_moats_own() {
    let Some(docker) = engine().await else { return };
    let image = base_image(&docker).await;
    let home = test_home("legacy");
    let go = format!("moat-legacy-{}", std::process::id());
    let go_label = std::collections::BTreeMap::from([(labels::LEGACY_MANAGED.to_string(), "true".to_string())]);
    let go_net = format!("{go}-net");
    let go_vol = format!("{go}-vol");
    let go_agent = format!("legacy-{}-agent", std::process::id());
    let lookalike = format!("x{go}-net");
    let body = async {
        // Go-era: by label, by name, and both.
        let networks = [
            (go_net.clone(), go_label.clone()),
            (lookalike.clone(), BTreeMap::default()),
            (name(&home, "own"), run_labels(&home, labels::role::NETWORK)),
        ];
        for (net, labels) in networks {
            let spec = NetworkSpec {
                name: net,
                labels,
                internal: true,
            };
            docker.create_network(&spec).await.unwrap();
        }
        let volume = VolumeSpec {
            name: go_vol.clone(),
            labels: BTreeMap::default(),
        };
        docker.create_volume(&volume).await.unwrap();
        let agent = ContainerSpec {
            name: go_agent.clone(),
            image: image.to_string(),
            command: vec!["true".into()],
            network: Some(go_net.clone()),
            labels: go_label.clone(),
            ..Default::default()
        };
        docker.create_container(&agent).await.unwrap();

        let legacy = docker.list_legacy().await.unwrap();
        let network_names: Vec<&str> = legacy.networks.iter().map(|n| n.name.as_str()).collect();
        assert!(network_names.contains(&go_net.as_str()), "{network_names:?}");
        assert!(!network_names.contains(&lookalike.as_str()), "{network_names:?}");
        assert!(!network_names.iter().any(|n| n.starts_with(&home)), "{network_names:?}");
        assert!(
            legacy.containers.iter().any(|c| c.name == go_agent),
            "{:?}",
            legacy.containers
        );
        assert!(legacy.volumes.iter().any(|v| v.name == go_vol), "{:?}", legacy.volumes);
        // moat's own listings never see them.
        assert!(docker.list_networks().await.unwrap().iter().all(|n| n.name != go_net));
        assert!(
            docker
                .list_containers()
                .await
                .unwrap()
                .iter()
                .all(|c| c.name != go_agent)
        );
    };
    with_cleanup(&docker, &home, async {
        let outcome = AssertUnwindSafe(body).catch_unwind().await;
        docker.remove_container(&go_agent).await.unwrap();
        docker.remove_volume(&go_vol).await.unwrap();
        docker.remove_network(&go_net).await.unwrap();
        docker.remove_network(&lookalike).await.unwrap();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    })
    .await;
}

// === Containers ===

#[tokio::test]
async fn logs_keep_stream_order_and_tags_and_wait_returns_the_exit_code() {
    let Some(docker) = engine().await else { return };
    let image = base_image(&docker).await;
    let home = test_home("logs");
    with_cleanup(&docker, &home, async {
        let script = "echo o1; sleep 0.2; echo e1 >&2; sleep 0.2; echo o2; sleep 0.2; \
                      echo e2 >&2; sleep 0.2; echo o3; exit 3";
        let id = docker
            .create_container(&shell(&home, "talker", image, script))
            .await
            .unwrap();
        docker.start_container(&id).await.unwrap();
        let followed: Vec<_> = docker.logs(&id, true, None).await.unwrap().try_collect().await.unwrap();
        assert_eq!(docker.wait_container(&id).await.unwrap(), Some(3));

        let expected = [
            (OutputStreamKind::Stdout, "o1\n"),
            (OutputStreamKind::Stderr, "e1\n"),
            (OutputStreamKind::Stdout, "o2\n"),
            (OutputStreamKind::Stderr, "e2\n"),
            (OutputStreamKind::Stdout, "o3\n"),
        ];
        let as_pairs = |chunks: &[moat_runtime::OutputChunk]| -> Vec<(OutputStreamKind, String)> {
            chunks
                .iter()
                .map(|c| (c.stream, String::from_utf8_lossy(&c.data).into_owned()))
                .collect()
        };
        let expected: Vec<_> = expected.iter().map(|(s, t)| (*s, t.to_string())).collect();
        assert_eq!(as_pairs(&followed), expected, "followed logs");
        let stored: Vec<_> = docker
            .logs(&id, false, None)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(as_pairs(&stored), expected, "logs after exit");

        let info = docker.inspect_container(&id).await.unwrap();
        assert_eq!(info.status, ContainerStatus::Exited);
        assert_eq!(info.exit_code, Some(3));
        assert_eq!(info.name, name(&home, "talker"));
        let listed = docker.list_containers().await.unwrap();
        let summary = listed.iter().find(|c| c.id == id).unwrap();
        assert_eq!(summary.exit_code, Some(3));
        assert_eq!(summary.labels.get(labels::HOME), Some(&home));
    })
    .await;
}

#[tokio::test]
async fn exec_returns_exit_code_and_output_and_stop_kills_after_grace() {
    let Some(docker) = engine().await else { return };
    let image = base_image(&docker).await;
    let home = test_home("exec");
    with_cleanup(&docker, &home, async {
        let mut spec = shell(&home, "sleeper", image, "sleep 60");
        spec.env = vec![("GREETING".into(), "hello from env".into())];
        spec.working_dir = Some("/tmp".into());
        let id = docker.create_container(&spec).await.unwrap();
        docker.start_container(&id).await.unwrap();

        let command = ["sh", "-c", "echo \"$GREETING\"; pwd; echo oops >&2; exit 7"].map(String::from);
        let output = docker.exec(&id, &command).await.unwrap();
        assert_eq!(output.exit_code, Some(7));
        assert_eq!(String::from_utf8_lossy(&output.stdout), "hello from env\n/tmp\n");
        assert_eq!(String::from_utf8_lossy(&output.stderr), "oops\n");
        let tools = ["sh", "-c", "curl --version && git --version"].map(String::from);
        assert_eq!(docker.exec(&id, &tools).await.unwrap().exit_code, Some(0));

        // `sleep` as PID 1 ignores SIGTERM: stop kills it after the grace.
        let started = Instant::now();
        docker.stop_container(&id, Duration::from_secs(1)).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(docker.wait_container(&id).await.unwrap(), Some(137));
    })
    .await;
}

#[tokio::test]
async fn mounts_user_limits_and_extra_hosts_are_applied() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    let Some(docker) = engine().await else { return };
    let image = base_image(&docker).await;
    let home = test_home("spec");
    let scratch = tempfile::tempdir().unwrap();
    let workspace = scratch.path().join(&home);
    std::fs::create_dir_all(&workspace).unwrap();
    std::fs::set_permissions(&workspace, std::fs::Permissions::from_mode(0o777)).unwrap();
    with_cleanup(&docker, &home, async {
        let script = "id -u; id -g; pwd; touch made-here; getent hosts moat-proxy; \
                      cat /sys/fs/cgroup/memory.max 2>/dev/null \
                      || cat /sys/fs/cgroup/memory/memory.limit_in_bytes";
        let mut spec = shell(&home, "shaped", image, script);
        spec.mounts = vec![moat_core::BindMount {
            source: workspace.display().to_string(),
            target: "/workspace".into(),
            read_only: false,
        }];
        spec.working_dir = Some("/workspace".into());
        spec.user = Some("1234:2345".into());
        spec.extra_hosts = vec![("moat-proxy".into(), "10.213.0.1".into())];
        spec.memory_bytes = Some(256 << 20);
        spec.cpus = Some(0.5);
        let id = docker.create_container(&spec).await.unwrap();
        docker.start_container(&id).await.unwrap();
        assert_eq!(docker.wait_container(&id).await.unwrap(), Some(0));

        let output: Vec<_> = docker
            .logs(&id, false, None)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let stdout: String = output
            .iter()
            .filter(|c| c.stream == OutputStreamKind::Stdout)
            .map(|c| String::from_utf8_lossy(&c.data).into_owned())
            .collect();
        let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
        assert_eq!(lines[..3], ["1234", "2345", "/workspace"], "{stdout}");
        assert!(
            lines[3].starts_with("10.213.0.1") && lines[3].ends_with("moat-proxy"),
            "{stdout}"
        );
        assert_eq!(lines[4], (256u64 << 20).to_string(), "{stdout}");
        let made = std::fs::metadata(workspace.join("made-here")).unwrap();
        assert_eq!((made.uid(), made.gid()), (1234, 2345));
    })
    .await;
    std::fs::remove_dir_all(&workspace).unwrap();
}

#[tokio::test]
async fn tty_output_is_its_own_stream_and_since_skips_earlier_output() {
    let Some(docker) = engine().await else { return };
    let image = base_image(&docker).await;
    let home = test_home("tty");
    with_cleanup(&docker, &home, async {
        let mut spec = shell(&home, "tty", image, "echo early; sleep 2.5; echo late");
        spec.tty = true;
        let id = docker.create_container(&spec).await.unwrap();
        docker.start_container(&id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let between = chrono::Utc::now();
        assert_eq!(docker.wait_container(&id).await.unwrap(), Some(0));

        let all: Vec<_> = docker
            .logs(&id, false, None)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(all.iter().all(|c| c.stream == OutputStreamKind::Tty));
        let text: String = all
            .iter()
            .map(|c| String::from_utf8_lossy(&c.data).into_owned())
            .collect();
        assert_eq!(text, "early\r\nlate\r\n", "a TTY turns \\n into \\r\\n");
        let later: Vec<_> = docker
            .logs(&id, false, Some(between))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let text: String = later
            .iter()
            .map(|c| String::from_utf8_lossy(&c.data).into_owned())
            .collect();
        assert_eq!(text, "late\r\n");
    })
    .await;
}

// === Volumes and idempotent removals ===

#[tokio::test]
async fn volumes_are_created_listed_and_removed() {
    let Some(docker) = engine().await else { return };
    let home = test_home("volumes");
    with_cleanup(&docker, &home, async {
        let spec = VolumeSpec {
            name: name(&home, "vol"),
            labels: run_labels(&home, labels::role::VOLUME),
        };
        docker.create_volume(&spec).await.unwrap();
        let listed = docker.list_volumes().await.unwrap();
        let found = listed.iter().find(|v| v.name == spec.name).unwrap();
        assert_eq!(found.labels, spec.labels);
        docker.remove_volume(&spec.name).await.unwrap();
        assert!(docker.list_volumes().await.unwrap().iter().all(|v| v.name != spec.name));
    })
    .await;
}

#[tokio::test]
async fn removing_missing_objects_succeeds() {
    let Some(docker) = engine().await else { return };
    let missing = test_home("missing");
    docker.remove_container(&missing).await.unwrap();
    docker.remove_network(&missing).await.unwrap();
    docker.remove_volume(&missing).await.unwrap();
    docker.remove_image(&format!("{missing}:none")).await.unwrap();
    assert!(docker.inspect_container(&missing).await.unwrap_err().is_not_found());
    assert!(!docker.image_exists(&format!("{missing}:none")).await.unwrap());
}

#[tokio::test]
async fn the_base_image_is_present_afterwards_and_reported_as_such() {
    let Some(docker) = engine().await else { return };
    let image = base_image(&docker).await;
    assert!(docker.image_exists(image).await.unwrap());
    let recipe = BaseImageRecipe::bookworm(image);
    let outcome = ensure_base_image(&docker, &recipe, &SilentReporter).await.unwrap();
    assert_eq!(outcome, BaseImageOutcome::AlreadyPresent);
    let listed = docker.list_images().await.unwrap();
    assert!(listed.iter().any(|i| i.tags.iter().any(|t| t == image)));
    assert!(docker.endpoint().contains("API 1."), "{}", docker.endpoint());
    assert_eq!(DockerRuntime::probe(DockerOptions::default()).await, Probe::Available);
}

// === Engines that are missing or wedged (no Docker needed) ===

#[tokio::test]
async fn network_create_against_an_unresponsive_engine_times_out() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("moat-test-wedged");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("docker.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    // Accepts connections and never answers.
    let silent_engine = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });

    let docker = DockerRuntime::new(DockerOptions {
        timeouts: Timeouts {
            network_create: Duration::from_secs(1),
            ..Timeouts::default()
        },
        subnet_pool: SubnetPool::default(),
        endpoint: Some(format!("unix://{}", socket.display())),
    })
    .unwrap();
    let spec = NetworkSpec {
        name: "moat-run_0123456789ab".into(),
        ..Default::default()
    };
    let started = Instant::now();
    let err = docker.create_network(&spec).await.unwrap_err();
    let elapsed = started.elapsed();

    silent_engine.abort();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(err.is_timeout(), "{err}");
    assert!(
        err.to_string().contains("create network moat-run_0123456789ab"),
        "{err}"
    );
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_missing_socket_is_unavailable() {
    let err = DockerRuntime::new(DockerOptions {
        endpoint: Some("/nonexistent/moat-test/docker.sock".into()),
        ..DockerOptions::default()
    })
    .err()
    .unwrap();
    assert!(matches!(err, RuntimeError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/moat-test/docker.sock"), "{err}");
}

#[tokio::test]
async fn logs_of_a_missing_container_are_not_found() {
    let Some(docker) = engine().await else { return };
    let missing = test_home("nologs");
    let err = docker.logs(&missing, false, None).await.err().unwrap();
    assert!(err.is_not_found(), "{err}");
    let mut none = docker.list_containers().await.unwrap().into_iter();
    assert!(none.all(|c| c.name != missing));
}

#[tokio::test]
async fn a_socket_nobody_listens_on_is_unavailable() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("moat-test-stale");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("docker.sock");
    let _ = std::fs::remove_file(&socket);
    // Binding then dropping the listener leaves a socket file that refuses.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());

    let docker = DockerRuntime::new(DockerOptions {
        endpoint: Some(socket.display().to_string()),
        ..DockerOptions::default()
    })
    .unwrap();
    let err = docker.ping().await.unwrap_err();
    let probe = DockerRuntime::probe(DockerOptions {
        endpoint: Some(socket.display().to_string()),
        ..DockerOptions::default()
    })
    .await;
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        matches!(probe, Probe::Unavailable(ref reason) if reason.contains("unavailable")),
        "{probe:?}"
    );
    assert!(matches!(err, RuntimeError::Unavailable { .. }), "{err}");
    assert!(docker.endpoint().starts_with("unix:///"), "{}", docker.endpoint());
}

// === Base image builds that cannot succeed ===

/// Records progress events.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<BaseImageProgress>>);

impl BaseImageReporter for Recorder {
    fn on_progress(&self, progress: BaseImageProgress) {
        self.0.lock().unwrap().push(progress);
    }
}

fn doomed_recipe(tag: &str, mirror: String, timeout: Duration) -> BaseImageRecipe {
    BaseImageRecipe {
        mirror,
        timeout,
        ..BaseImageRecipe::bookworm(tag)
    }
}

fn mmdebstrap_installed() -> bool {
    std::process::Command::new("mmdebstrap")
        .arg("--version")
        .output()
        .is_ok()
}

#[tokio::test]
async fn a_base_image_from_an_unreachable_mirror_fails_with_mmdebstrap_output() {
    let Some(docker) = engine().await else { return };
    let tag = format!("{}:never", test_home("unreachable-mirror"));
    // Port 9 (discard) on loopback: nothing listens, connections are refused.
    let recipe = doomed_recipe(&tag, "http://127.0.0.1:9/debian".into(), Duration::from_secs(120));
    let recorder = Recorder::default();
    let err = ensure_base_image(&docker, &recipe, &recorder).await.unwrap_err();
    if mmdebstrap_installed() {
        assert!(matches!(err, BaseImageError::Bootstrap { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("127.0.0.1:9"), "{message}");
        assert!(
            message.contains("E: "),
            "the error carries mmdebstrap's output: {message}"
        );
        let events = recorder.0.lock().unwrap();
        assert!(
            matches!(events.first(), Some(BaseImageProgress::Bootstrapping { .. })),
            "{events:?}"
        );
    } else {
        assert!(err.to_string().contains("apt-get install mmdebstrap"), "{err}");
    }
    assert!(!docker.image_exists(&tag).await.unwrap());
}

#[tokio::test]
#[allow(clippy::print_stderr)]
async fn a_base_image_build_that_hangs_times_out_and_stops_mmdebstrap() {
    let Some(docker) = engine().await else { return };
    if !mmdebstrap_installed() {
        eprintln!("skipping: mmdebstrap is not installed");
        return;
    }
    // A mirror that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mirror = format!("http://{}/debian", listener.local_addr().unwrap());
    let silent_mirror = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let tag = format!("{}:never", test_home("silent-mirror"));
    let recipe = doomed_recipe(&tag, mirror, Duration::from_secs(3));
    let started = Instant::now();
    let err = ensure_base_image(&docker, &recipe, &SilentReporter).await.unwrap_err();
    let elapsed = started.elapsed();
    silent_mirror.abort();

    assert!(matches!(err, BaseImageError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("timed out after 3s"), "{err}");
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    assert!(!docker.image_exists(&tag).await.unwrap());
}
