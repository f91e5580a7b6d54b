//! The warm network pool on the real engine: a run takes a ready network
//! of the daemon's pool, cleanup removes it and the pool is refilled; a
//! dead daemon's pool is reclaimed by the next daemon's forced prune, and
//! a stopped daemon leaves nothing of its pool behind.

use std::time::{Duration, Instant};

use super::support::{Home, docker, docker_exists, kill9};

/// A home whose daemon keeps one ready network of each kind.
fn pooled_home() -> Option<Home> {
    let home = Home::new()?;
    std::fs::create_dir_all(home.home()).unwrap();
    std::fs::write(home.home().join("config.yaml"), "network_pool_size: 1\n").unwrap();
    Some(home)
}

/// The pool networks the daemon `pid` made (`dev.moat.daemon=<pid>-…`).
fn pool_of(pid: u32) -> Vec<String> {
    let listing = docker(&[
        "network",
        "ls",
        "--filter",
        "label=dev.moat.role=pool",
        "--format",
        "{{.Name}} {{.Label \"dev.moat.daemon\"}}",
    ]);
    let owner = format!("{pid}-");
    let mut names: Vec<String> = listing
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, daemon)| daemon.starts_with(&owner))
        .map(|(name, _)| name.to_string())
        .collect();
    names.sort();
    names
}

/// Waits until the daemon `pid` has `count` pool networks; returns them.
fn wait_pool(pid: u32, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pool = pool_of(pid);
        if pool.len() == count {
            return pool;
        }
        assert!(
            Instant::now() < deadline,
            "daemon {pid}'s pool is {pool:?}, not {count} networks"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The id of the one run other than `first`.
fn other_run(home: &Home, first: &str) -> String {
    let ids: Vec<String> = (home.runs().iter())
        .filter_map(|r| r["id"].as_str().map(String::from))
        .filter(|id| id != first)
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0].clone()
}

#[test]
fn a_run_takes_a_pool_network_which_is_removed_after_it_and_a_dead_daemons_pool_is_reclaimed() {
    let Some(home) = pooled_home() else { return };
    // The first run starts the daemon, which fills its pool meanwhile.
    let out = home.run(&["run", "--", "true"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = home.only_run()["id"].as_str().unwrap().to_string();
    let pid = home.daemon_pid().unwrap();
    let ready = wait_pool(pid, 2);

    let out = home.run(&["run", "--timings", "--", "true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("network take (warm pool)"), "{stderr}");
    let run_id = other_run(&home, &first);
    let network = home.metadata(&run_id)["network"].as_str().unwrap().to_string();
    assert!(ready.contains(&network), "{network} is not one of the pool's {ready:?}");
    home.wait_cleaned(&run_id, Duration::from_secs(20));
    assert!(!docker_exists("network", &network), "cleanup left {network}");
    let refilled = wait_pool(pid, 2);
    assert!(!refilled.contains(&network), "{refilled:?}");

    // A daemon that dies leaves its pool; the next one's forced prune
    // reclaims it, while its own pool stays.
    kill9(pid);
    let out = home.run(&["system", "prune", "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for name in &refilled {
        assert!(
            !docker_exists("network", name),
            "the dead daemon's {name} survived the prune"
        );
    }
    let next = home.daemon_pid().unwrap();
    assert_ne!(next, pid);
    let pool = wait_pool(next, 2);
    let out = home.run(&["system", "prune", "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(pool_of(next), pool, "the live daemon's pool was reaped");

    // A stopped daemon leaves nothing of its pool, also not after a forced
    // prune from a new daemon.
    let out = home.run(&["daemon", "stop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = home.run(&["system", "prune", "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for name in &pool {
        assert!(!docker_exists("network", name), "the stopped daemon's {name} remains");
    }
}
