//! What is Podman's own: `moat doctor` names it, a run's network is held
//! up by the run's gateway holder (the bridge, and the gateway the proxy
//! listens on, exist only once a container has joined), strict runs are
//! closed off on Podman's bridge (`podman<n>`, not Docker's `br-<id>`),
//! and the holder goes with its run, also when the daemon was killed.
//! Rootless Podman is refused with its reason: its networks live in the
//! user's own network namespace, where the host has no address, so moat
//! could neither put the proxy where only the run reaches it nor close
//! the host off with firewall rules (README, "Podman").

use std::process::Command;
use std::time::{Duration, Instant};

use super::docker::support::{Home, docker, fast_home, kill9, objects_of, text};

fn rules_of(run_id: &str) -> Vec<String> {
    let out = Command::new("iptables")
        .args(["-w", "5", "-S", "INPUT"])
        .output()
        .unwrap();
    let tag = format!("moat:{run_id}");
    (text(&out.stdout).lines())
        .filter(|l| l.contains(&tag))
        .map(String::from)
        .collect()
}

fn holder_of(run_id: &str) -> String {
    format!("{run_id}-gateway-holder")
}

fn wait_until_gone(run_id: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !objects_of(run_id).is_empty() {
        assert!(Instant::now() < deadline, "left behind: {:?}", objects_of(run_id));
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn doctor_names_podman_rootful_and_its_socket() {
    let Some(home) = Home::new() else { return };
    let out = home.run(&["doctor"]);
    let stdout = text(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("runtime: ")).unwrap_or_default();
    assert!(
        line.starts_with("runtime: podman 4.") || line.starts_with("runtime: podman 5."),
        "{stdout}"
    );
    assert!(
        line.contains("(rootful) at unix://") && line.contains("podman.sock"),
        "{line}"
    );
}

#[test]
fn a_strict_run_is_held_up_and_closed_off_on_podmans_bridge_and_leaves_nothing() {
    let Some(home) = Home::new() else { return };
    let out = home.run(&[
        "run",
        "-d",
        "--policy",
        "strict",
        "--require-isolation",
        "--",
        "sleep",
        "60",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run_id = text(&out.stdout).trim().to_string();
    let running = docker(&[
        "ps",
        "--filter",
        &format!("label=dev.moat.run-id={run_id}"),
        "--format",
        "{{.Names}}",
    ]);
    assert!(
        running.lines().any(|n| n == holder_of(&run_id)),
        "no holder among {running}"
    );
    let rules = rules_of(&run_id);
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(
        rules.iter().all(|r| r.contains("-i podman")),
        "not on Podman's bridge: {rules:?}"
    );

    // The attack: a host service on the gateway, beside the proxy. The
    // run's network is its own or one the warm pool had ready.
    let network = home.metadata(&run_id)["network"].as_str().unwrap().to_string();
    let gateway = docker(&[
        "network",
        "inspect",
        &network,
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
    ]);
    let gateway = gateway.trim();
    let listener = std::net::TcpListener::bind((gateway, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = format!("exec 3<>/dev/tcp/{gateway}/{port} && echo reached || echo refused");
    let out = home.run(&["exec", &run_id, "--", "bash", "-c", &probe]);
    assert_eq!(text(&out.stdout).trim(), "refused", "{}", text(&out.stderr));

    assert!(home.run(&["stop", &run_id]).status.success());
    home.wait_cleaned(&run_id, Duration::from_secs(30));
    assert!(rules_of(&run_id).is_empty(), "rules outlive the run");
    wait_until_gone(&run_id, Duration::from_secs(10));
}

#[test]
fn a_killed_daemons_run_whose_container_vanished_leaves_no_holder() {
    let Some(home) = fast_home() else { return };
    let out = home.run(&["run", "-d", "--", "sleep", "300"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run_id = text(&out.stdout).trim().to_string();
    kill9(home.daemon_pid().unwrap());
    docker(&["rm", "-f", &run_id]);
    // The next daemon finds the run dead and removes what is left of it.
    let swept = home.run(&["system", "prune", "--force"]);
    assert!(swept.status.success(), "{}", text(&swept.stderr));
    wait_until_gone(&run_id, Duration::from_secs(30));
}

#[test]
fn rootless_podman_is_named_and_refused_with_what_it_cannot_enforce() {
    let Some(home) = Home::new() else { return };
    let host = match crate::engine::rootless_docker_host() {
        Ok(host) => host,
        Err(reason) => {
            assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "{reason}");
            eprintln!("skipping: {reason}");
            return;
        }
    };
    let rootless = |args: &[&str]| home.moat().env("DOCKER_HOST", &host).args(args).output().unwrap();
    let doctor = rootless(&["doctor"]);
    let stdout = text(&doctor.stdout);
    assert!(
        stdout.contains("runtime: podman ") && stdout.contains("(rootless) at unix://"),
        "{stdout}"
    );
    assert!(stdout.contains("rootless Podman is not supported"), "{stdout}");

    let out = rootless(&["run", "--", "echo", "ran"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("rootless Podman is not supported") && stderr.contains("strict egress"),
        "{stderr}"
    );
    assert!(!text(&out.stdout).contains("ran"));
}
