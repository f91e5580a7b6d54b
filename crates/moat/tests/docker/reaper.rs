//! The reaper end to end: runs whose creation is cut short by a SIGKILL of
//! the daemon or of the CLI at each step leave nothing behind after a sweep,
//! while a live run beside them is untouched; another home's objects and a
//! network with a foreign container survive; 100 orphans are swept; objects
//! of moat's Go implementation survive every sweep, are reported, and go only
//! with `moat system prune --legacy`.

use std::time::{Duration, Instant};

use moat_api::fault::POINTS;

use super::support::{
    DockerLeftovers, Home, container_running, docker, docker_exists, fast_home, kill9, objects_of, text,
};

fn start_live_run(home: &Home) -> String {
    let out = home.run(&["run", "-d", "--name", "live", "--", "sleep", "120"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// The id of the run that is not `live_id`.
fn other_run(home: &Home, live_id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(run) = home.runs().into_iter().find(|r| r["id"] != live_id) {
            return run["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the faulted run was never recorded");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Objects of `run_id` are all gone within `within`; a daemon is kept up
/// (it is what sweeps) by asking it for its status.
fn assert_all_gone(home: &Home, run_id: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = objects_of(run_id);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "objects of {run_id} remain: {left:?}");
        std::thread::sleep(Duration::from_millis(250));
        let _ = home.run(&["doctor", "--json"]);
    }
}

fn stop_live(home: &Home, live: &str) {
    let out = home.run(&["stop", live]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_daemon_killed_at_any_step_of_creation_leaks_nothing_and_spares_live_runs() {
    let Some(home) = fast_home() else { return };
    let live = start_live_run(&home);
    for point in POINTS {
        let faulted = home
            .moat()
            .env("MOAT_FAULT", format!("{point}:kill"))
            .args(["run", "--", "sleep", "1"])
            .output()
            .unwrap();
        assert_ne!(
            faulted.status.code(),
            Some(0),
            "{point}: the CLI cannot succeed when its daemon dies"
        );
        let run_id = other_run(&home, &live);
        // The next command that needs the daemon starts a new one, which
        // reconciles and sweeps.
        let _ = home.run(&["doctor", "--json"]);
        assert_all_gone(&home, &run_id, Duration::from_secs(20));
        let meta = home.wait_cleaned(&run_id, Duration::from_secs(20));
        assert!(
            meta["state"] == "failed" || meta["state"] == "exited",
            "{point}: {meta}"
        );
        assert!(container_running(&live), "{point}: the live run was disturbed");
        let destroyed = home.run(&["destroy", &run_id]);
        assert!(destroyed.status.success(), "{point}: {}", text(&destroyed.stderr));
    }
    stop_live(&home, &live);
}

#[test]
fn a_cli_killed_at_any_step_of_creation_leaks_nothing_and_spares_live_runs() {
    let Some(home) = fast_home() else { return };
    let live = start_live_run(&home);
    for point in POINTS {
        let mut cli = home
            .moat()
            .env("MOAT_FAULT", format!("{point}:pause"))
            .args(["run", "--", "sleep", "1"])
            .spawn()
            .unwrap();
        let run_id = other_run(&home, &live);
        std::thread::sleep(Duration::from_millis(500));
        kill9(cli.id());
        let _ = cli.wait();
        assert_all_gone(&home, &run_id, Duration::from_secs(20));
        let meta = home.wait_cleaned(&run_id, Duration::from_secs(20));
        assert_eq!(
            meta["exit_code"], 0,
            "{point}: the run finishes under the daemon: {meta}"
        );
        assert!(container_running(&live), "{point}: the live run was disturbed");
        home.run(&["destroy", &run_id]);
    }
    stop_live(&home, &live);
}

#[test]
fn another_homes_objects_and_networks_with_foreign_containers_survive_sweeps() {
    let Some(home) = fast_home() else { return };
    let tag = format!("{}{}", std::process::id(), super::support::unique());
    let foreign_run = format!("run_{:0>12}", &tag[tag.len().saturating_sub(12)..]);
    let foreign_net = format!("moat-{foreign_run}");
    let bystander = format!("bystander-{tag}");
    let _leftovers = DockerLeftovers {
        containers: vec![bystander.clone()],
        networks: vec![foreign_net.clone()],
    };
    docker(&[
        "network",
        "create",
        "--subnet",
        "10.254.255.0/28",
        "--label",
        "dev.moat.managed=true",
        "--label",
        &format!("dev.moat.run-id={foreign_run}"),
        "--label",
        "dev.moat.home=0123456789ab",
        &foreign_net,
    ]);

    // A network of a dead run of this home with somebody else's container.
    let dead = home.run(&["run", "--keep", "--", "true"]);
    assert!(dead.status.success(), "{}", text(&dead.stderr));
    let dead_id = home.only_run()["id"].as_str().unwrap().to_string();
    // The run's network: its own, or one it took from the warm pool.
    let record = std::fs::read(home.home().join("runs").join(&dead_id).join("metadata.json")).unwrap();
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    let dead_net = record["network"].as_str().unwrap().to_string();
    docker(&[
        "run",
        "-d",
        "--name",
        &bystander,
        "--network",
        &dead_net,
        super::support::IMAGE,
        "sleep",
        "120",
    ]);
    // Destroying the record makes the kept container and the network orphans.
    assert!(home.run(&["destroy", &dead_id]).status.success());

    for _ in 0..3 {
        let out = home.run(&["system", "prune", "--force"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let exists = docker_exists;
    assert!(exists("network", &foreign_net), "another home's network was removed");
    assert!(
        exists("network", &dead_net),
        "a network with a foreign container was removed"
    );
    assert!(container_running(&bystander), "the foreign container was disturbed");
    assert!(
        !exists("container", &dead_id),
        "the dead run's own container is reclaimable"
    );

    docker(&["rm", "-f", &bystander]);
    docker(&["network", "rm", &foreign_net]);
    if dead_net.starts_with("moat-pool-") {
        // A network the run took from the warm pool stays its daemon's
        // until that daemon is gone; the next daemon reclaims it.
        assert!(home.run(&["daemon", "stop"]).status.success());
    }
    let out = home.run(&["system", "prune", "--force"]);
    assert!(out.status.success());
    assert!(
        !exists("network", &dead_net),
        "once alone, the dead run's network is reclaimed"
    );
}

#[test]
fn a_sweep_removes_a_hundred_orphaned_networks() {
    let Some(home) = fast_home() else { return };
    let label = home_label(&home.home());
    let names: Vec<String> = (0..100)
        .map(|i| format!("moat-run_{:06x}{:06x}", std::process::id() & 0x00ff_ffff, i))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let run_id = name.trim_start_matches("moat-");
        // Explicit subnets: Docker's default pools hold only ~30 networks.
        // Eight /24s chosen by pid, so two suites on one engine do not
        // collide (10.254.255.0/24 stays for the other-home test).
        let base = (std::process::id() % 31) * 8;
        let subnet = format!("10.254.{}.{}/28", base as usize + i / 16, (i % 16) * 16);
        let out = super::support::docker_command()
            .args([
                "network",
                "create",
                "--subnet",
                &subnet,
                "--label",
                "dev.moat.managed=true",
                "--label",
                &format!("dev.moat.run-id={run_id}"),
                "--label",
                &format!("dev.moat.home={label}"),
                name,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let started = Instant::now();
    let out = home.run(&["system", "prune", "--force", "--networks"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("100 removed"), "{report}");
    // Run networks only: the live daemon's warm pool stays.
    let left = super::support::docker_command()
        .args([
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=dev.moat.home={label}"),
            "--filter",
            "label=dev.moat.run-id",
        ])
        .output()
        .unwrap();
    assert!(text(&left.stdout).trim().is_empty());
    eprintln!("swept 100 orphaned networks in {took:?}");
}

/// Periodic sweeps recorded in `reaper.json` that listed `name` as Go-era.
fn periodic_sweeps_listing(home: &Home, name: &str) -> usize {
    let Ok(bytes) = std::fs::read(home.home().join("daemon/reaper.json")) else {
        return 0;
    };
    let Ok(file) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return 0;
    };
    let sweeps = file["sweeps"].as_array().cloned().unwrap_or_default();
    sweeps
        .iter()
        .filter(|sweep| sweep["trigger"] == "periodic")
        .filter(|sweep| {
            let runtimes = sweep["runtimes"].as_array().cloned().unwrap_or_default();
            runtimes.iter().any(|runtime| {
                let legacy = runtime["legacy"].as_array().cloned().unwrap_or_default();
                legacy.iter().any(|key| key["name"] == name)
            })
        })
        .count()
}

#[test]
fn go_era_objects_survive_sweeps_are_reported_and_go_only_with_prune_legacy() {
    let Some(home) = fast_home() else { return };
    let tag = format!("{}-{}", std::process::id(), super::support::unique());
    let network = format!("moat-legacy-{tag}");
    let agent = format!("moat-legacy-{tag}-agent");
    let _leftovers = DockerLeftovers {
        containers: vec![agent.clone()],
        networks: vec![network.clone()],
    };
    // What the Go implementation left: a labelled network with a running
    // agent container on it (which exits promptly when asked to stop).
    docker(&["network", "create", "--label", "moat.managed=true", &network]);
    docker(&[
        "run",
        "-d",
        "--name",
        &agent,
        "--label",
        "moat.managed=true",
        "--network",
        &network,
        super::support::IMAGE,
        "sh",
        "-c",
        "trap 'exit 0' TERM; sleep 300 & wait",
    ]);

    // At least two periodic sweeps (every 2 s) and two forced ones pass.
    // `doctor` starts the daemon, which then sweeps on its own.
    let _ = home.run(&["doctor", "--json"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while periodic_sweeps_listing(&home, &network) < 2 {
        assert!(
            Instant::now() < deadline,
            "no two periodic sweeps listed {network} as Go-era"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for _ in 0..2 {
        let out = home.run(&["system", "prune", "--force"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            !text(&out.stdout).contains(&format!("removed network {network}")),
            "{}",
            text(&out.stdout)
        );
    }
    assert!(docker_exists("network", &network), "a sweep removed the Go-era network");
    assert!(container_running(&agent), "a sweep disturbed the Go-era container");

    let dry = home.run(&["system", "prune", "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let dry = text(&dry.stdout);
    assert!(dry.contains(&format!("network {network}")), "{dry}");
    assert!(dry.contains(&format!("container {agent}")), "{dry}");
    assert!(dry.contains("moat system prune --legacy"), "{dry}");

    let doctor = home.run(&["doctor"]);
    let doctor = text(&doctor.stdout);
    assert!(doctor.contains(&format!("network {network}")), "{doctor}");
    assert!(doctor.contains("moat system prune --legacy"), "{doctor}");
    let json = home.run(&["doctor", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let legacy = json["legacy"].as_array().cloned().unwrap_or_default();
    assert!(
        legacy
            .iter()
            .any(|k| k["kind"] == "network" && k["name"] == network.as_str()),
        "{json}"
    );
    assert_eq!(json["legacy_hint"], "moat system prune --legacy", "{json}");

    let would = home.run(&["system", "prune", "--dry-run", "--legacy"]);
    assert!(would.status.success(), "{}", text(&would.stderr));
    let would = text(&would.stdout);
    assert!(would.contains(&format!("would remove network {network}")), "{would}");
    assert!(would.contains(&format!("would remove container {agent}")), "{would}");
    assert!(docker_exists("network", &network), "a dry run removed the network");

    let out = home.run(&["system", "prune", "--legacy"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let removed = text(&out.stdout);
    assert!(removed.contains(&format!("removed network {network}")), "{removed}");
    assert!(!docker_exists("container", &agent), "the Go-era container remains");
    assert!(!docker_exists("network", &network), "the Go-era network remains");
}

/// The `dev.moat.home` label of a MOAT_HOME, as `moat doctor --json` does not
/// expose it: the same short hash moat computes.
fn home_label(path: &std::path::Path) -> String {
    moat_core::MoatHome::new(path).label()
}
