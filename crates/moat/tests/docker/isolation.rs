//! Strict runs and the host: the daemon closes the host off from a strict
//! run's bridge over IPv4 and IPv6 (the container keeps an IPv6
//! link-local address), and when it cannot, the user is told, and
//! `--require-isolation` refuses to start.

use super::support::{Home, firewall_rules, text};

#[test]
fn a_strict_run_is_closed_off_from_the_host_over_ipv4_and_ipv6() {
    let Some(home) = Home::new() else { return };
    let out = home.run(&[
        "run",
        "-d",
        "--policy",
        "strict",
        "--require-isolation",
        "--",
        "sleep",
        "30",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run_id = text(&out.stdout).trim().to_string();
    for program in ["iptables", "ip6tables"] {
        let rules = firewall_rules(program, &run_id);
        assert_eq!(rules.len(), 2, "{program}: {rules:?}");
        assert!(rules.iter().any(|r| r.contains("-j REJECT")), "{program}: {rules:?}");
    }
    assert!(home.run(&["stop", &run_id]).status.success());
    home.wait_cleaned(&run_id, std::time::Duration::from_secs(30));
    for program in ["iptables", "ip6tables"] {
        assert!(
            firewall_rules(program, &run_id).is_empty(),
            "{program} rules outlive the run"
        );
    }
}

/// The daemon started without iptables on its PATH stands for a daemon
/// without the privilege to use it.
#[test]
fn without_a_firewall_a_strict_run_warns_and_require_isolation_refuses() {
    let Some(home) = Home::new() else { return };
    let no_firewall = |args: &[&str]| home.moat().env("PATH", "/nonexistent").args(args).output().unwrap();
    let out = no_firewall(&["run", "--policy", "strict", "--require-isolation", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("strict run refused: its host cannot be closed off"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: the daemon needs iptables and root"), "{stderr}");
    let refused = home.only_run();
    assert_eq!(refused["state"], "failed", "{refused}");

    let out = no_firewall(&["run", "--policy", "strict", "--", "echo", "ran"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ran\n");
    assert!(
        text(&out.stderr).contains("strict run without host isolation"),
        "{}",
        text(&out.stderr)
    );

    let out = home.run(&["run", "--require-isolation", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--require-isolation needs the strict network policy"));
}

/// The attack: DNS as a way out of a strict run (queries carrying data to a
/// resolver outside). A strict run resolves nothing itself; the proxy's
/// name still works from its hosts file.
#[test]
fn a_strict_run_cannot_use_dns() {
    let Some(home) = Home::new() else { return };
    let script = "getent hosts moat-proxy >/dev/null && echo proxy-known; \
                  getent hosts deb.debian.org || echo no-dns; cat /etc/resolv.conf";
    let out = home.run(&["run", "--policy", "strict", "--", "sh", "-c", script]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("proxy-known\nno-dns\n"), "{stdout}");
    std::fs::write(
        home.root.join("ws/moat.yaml"),
        "container: {dns: [1.1.1.1]}\nnetwork: {policy: strict}\n",
    )
    .unwrap();
    let out = home.run(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("container.dns cannot be used with the strict network policy"));
}
