//! Many runs at once on the real engine: twenty detached runs started
//! concurrently all start (subnets, the warm pool and the daemon's file
//! descriptors hold), `moat list` and `moat status` show the twenty live,
//! their logs are theirs, and once stopped every one is cleaned and nothing
//! of the home is left in Docker. No timing is asserted: the deadlines are
//! generous so that a loaded machine only makes it slower.

use std::process::{Child, Output};
use std::time::{Duration, Instant};

use moat_core::MoatHome;

use super::support::{Home, docker, text};

const RUNS: usize = 20;

/// Waits for every child, killing those still running at the deadline.
fn wait_all(children: Vec<Child>, within: Duration) -> Vec<Output> {
    let deadline = Instant::now() + within;
    children
        .into_iter()
        .map(|mut child| {
            while child.try_wait().unwrap().is_none() {
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            child.wait_with_output().unwrap()
        })
        .collect()
}

/// Waits until `moat list --json` shows `count` runs, all in `state`.
fn wait_listed(home: &Home, count: usize, state: &str, within: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let runs = home.runs();
        if runs.len() == count && runs.iter().all(|r| r["state"] == state) {
            return runs;
        }
        let states: Vec<&str> = runs.iter().filter_map(|r| r["state"].as_str()).collect();
        assert!(Instant::now() < deadline, "runs never all {state}: {states:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Docker objects (containers and networks) labelled as this home's.
fn objects_of_home(home: &Home) -> Vec<String> {
    let filter = format!("label=dev.moat.home={}", MoatHome::new(home.home()).label());
    let containers = docker(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]);
    let networks = docker(&["network", "ls", "--filter", &filter, "--format", "{{.Name}}"]);
    containers.lines().chain(networks.lines()).map(String::from).collect()
}

#[test]
fn twenty_concurrent_runs_all_start_list_and_stop_leaving_nothing() {
    let Some(home) = Home::new() else { return };
    // The first run starts the daemon, so that the rest race each other on
    // one daemon rather than on spawning it.
    let names: Vec<String> = (0..RUNS).map(|i| format!("scale-{i}")).collect();
    // The shell ends on SIGTERM, so that stopping does not wait out the grace period.
    let script = |name: &str| format!("trap 'exit 0' TERM; echo hello from {name}; sleep 600 & wait");
    let first = home.run(&["run", "-d", "--name", &names[0], "--", "sh", "-c", &script(&names[0])]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let children = names[1..]
        .iter()
        .map(|name| home.spawn(&["run", "-d", "--name", name, "--", "sh", "-c", &script(name)]))
        .collect();
    for (name, out) in names[1..].iter().zip(wait_all(children, Duration::from_secs(300))) {
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    }

    let runs = wait_listed(&home, RUNS, "running", Duration::from_secs(180));
    let mut listed: Vec<&str> = runs.iter().filter_map(|r| r["name"].as_str()).collect();
    listed.sort_unstable();
    let mut expected: Vec<&str> = names.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected);

    let status = home.run(&["status", "--json"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["daemon"]["health"]["live_runs"], RUNS, "{status}");
    assert_eq!(status["live_runs"].as_array().map(Vec::len), Some(RUNS), "{status}");
    assert_eq!(status["warnings"], serde_json::json!([]), "{status}");

    for name in [&names[0], &names[RUNS / 2], &names[RUNS - 1]] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let logs = home.run(&["logs", name]);
            assert!(logs.status.success(), "{}", text(&logs.stderr));
            if text(&logs.stdout) == format!("hello from {name}\n") {
                break;
            }
            assert!(Instant::now() < deadline, "{name}'s logs: {}", text(&logs.stdout));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    let ids: Vec<String> = runs.iter().filter_map(|r| r["id"].as_str().map(String::from)).collect();
    let stops = ids.iter().map(|id| home.spawn(&["stop", id])).collect();
    for (id, out) in ids.iter().zip(wait_all(stops, Duration::from_secs(300))) {
        assert!(out.status.success(), "stopping {id}: {}", text(&out.stderr));
    }
    for id in &ids {
        home.wait_cleaned(id, Duration::from_secs(180));
        assert_eq!(home.objects_of_run(id), Vec::<String>::new(), "{id}");
    }
    assert!(home.runs().iter().all(|r| r["state"] == "exited"));

    let stopped = home.run(&["daemon", "stop"]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = objects_of_home(&home);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left in Docker: {left:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
