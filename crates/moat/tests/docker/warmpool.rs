//! The warm network pool on the real engine: a run takes a ready network
//! of the daemon's pool and joins its holder's namespace, cleanup removes
//! both and the pool is refilled; a
//! dead daemon's pool is reclaimed by the next daemon's forced prune, and
//! a stopped daemon leaves nothing of its pool behind.

use std::time::{Duration, Instant};

use super::support::{Home, docker, docker_exists, firewall_rules, kill9};

/// A home whose daemon keeps one ready network of each kind.
fn pooled_home() -> Option<Home> {
    let home = Home::new()?;
    std::fs::create_dir_all(home.home()).unwrap();
    std::fs::write(home.home().join("config.yaml"), "network_pool_size: 1\n").unwrap();
    Some(home)
}

/// The pool networks the daemon `pid` made (`dev.moat.daemon=<pid>-…`).
fn pool_of(pid: u32) -> Vec<String> {
    pool_objects(pid, &["network", "ls"], "{{.Name}}")
}

/// The running pool holders the daemon `pid` made.
fn holders_of(pid: u32) -> Vec<String> {
    pool_objects(pid, &["ps"], "{{.Names}}")
}

/// The names (`name_field`) of the objects `listing` lists that the
/// daemon `pid` made for its pool.
fn pool_objects(pid: u32, listing: &[&str], name_field: &str) -> Vec<String> {
    let format = format!("{name_field} {{{{.Label \"dev.moat.daemon\"}}}}");
    let mut args = listing.to_vec();
    args.extend(["--filter", "label=dev.moat.role=pool", "--format", &format]);
    let listing = docker(&args);
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

/// Waits until the daemon `pid` has `count` pool networks, each with its
/// running holder (named like it); returns them.
fn wait_pool(pid: u32, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pool = pool_of(pid);
        let holders = holders_of(pid);
        if pool.len() == count && holders == pool {
            return pool;
        }
        assert!(
            Instant::now() < deadline,
            "daemon {pid}'s pool is {pool:?} with holders {holders:?}, not {count} armed networks"
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

    let out = home.run(&["run", "-d", "--timings", "--", "sleep", "60"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("network take (warm pool)"), "{stderr}");
    let run_id = other_run(&home, &first);
    let network = home.metadata(&run_id)["network"].as_str().unwrap().to_string();
    assert!(ready.contains(&network), "{network} is not one of the pool's {ready:?}");
    assert_joined_its_holder(&run_id, &network);
    let out = home.run(&["stop", &run_id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    home.wait_cleaned(&run_id, Duration::from_secs(20));
    assert!(
        !docker_exists("container", &network),
        "cleanup left the holder {network}"
    );
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
            !docker_exists("network", name) && !docker_exists("container", name),
            "the dead daemon's {name} (or its holder) survived the prune"
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
        assert!(
            !docker_exists("container", name),
            "the stopped daemon's holder {name} remains"
        );
    }
}

/// The attack on the shortcut: a strict run that joins its holder's
/// namespace must be as closed as one attached to its network. It resolves
/// nothing, knows only the proxy, cannot reach a service of the host (on
/// all interfaces) nor an address outside that the host reaches.
#[test]
fn a_strict_run_joined_to_its_holder_is_as_closed_as_any_strict_run() {
    let Some(home) = pooled_home() else { return };
    let out = home.run(&["run", "--", "true"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pid = home.daemon_pid().unwrap();
    wait_pool(pid, 2);
    // A service of the host on all interfaces, and an address outside
    // that the host itself reaches.
    let host_service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    let outside = std::net::ToSocketAddrs::to_socket_addrs(&("deb.debian.org", 80))
        .unwrap()
        .find(std::net::SocketAddr::is_ipv4)
        .unwrap()
        .ip();
    let script = format!(
        "getent hosts moat-proxy >/dev/null && echo proxy-known; \
         getent hosts deb.debian.org || echo no-dns; \
         gateway=$(getent hosts moat-proxy | cut -d' ' -f1); \
         timeout 5 bash -c \"echo > /dev/tcp/$gateway/{host_port}\" 2>/dev/null || echo host-closed; \
         timeout 5 bash -c 'echo > /dev/tcp/{outside}/80' 2>/dev/null || echo no-route; \
         sleep 60"
    );
    let out = home.run(&[
        "run",
        "-d",
        "--policy",
        "strict",
        "--require-isolation",
        "--",
        "bash",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let network = home.metadata(&run_id)["network"].as_str().unwrap().to_string();
    assert_joined_its_holder(&run_id, &network);
    let internal = docker(&["network", "inspect", "--format", "{{.Internal}}", &network]);
    assert_eq!(
        internal.trim(),
        "true",
        "a strict run's holder is on an internal network"
    );
    let rules = firewall_rules("iptables", &run_id);
    assert!(rules.iter().any(|r| r.contains("-j REJECT")), "{rules:?}");
    // A lookup fails only once the engine's resolver gives up (20 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let logs = loop {
        let logs = home.run(&["logs", &run_id]);
        let stdout = String::from_utf8_lossy(&logs.stdout).to_string();
        if stdout.contains("no-route") || Instant::now() > deadline {
            break stdout;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(logs, "proxy-known\nno-dns\nhost-closed\nno-route\n");
    assert!(home.run(&["stop", &run_id]).status.success());
    home.wait_cleaned(&run_id, Duration::from_secs(30));
    assert!(!docker_exists("container", &network), "cleanup left the holder");
    assert!(
        firewall_rules("iptables", &run_id).is_empty(),
        "the run's firewall rules outlive it"
    );
}

/// The run's container shares the network namespace of the holder of its
/// pool network (named like it).
fn assert_joined_its_holder(run_id: &str, network: &str) {
    let mode = docker(&[
        "container",
        "inspect",
        "--format",
        "{{.HostConfig.NetworkMode}}",
        run_id,
    ]);
    let holder = docker(&["container", "inspect", "--format", "{{.Id}}", network]);
    assert_eq!(
        mode.trim(),
        format!("container:{}", holder.trim()),
        "{run_id} did not join its holder"
    );
}
