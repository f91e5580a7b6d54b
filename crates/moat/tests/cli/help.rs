//! Help, version, completions and usage errors.

use super::support::TestHome;

#[test]
fn every_command_has_help() {
    let home = TestHome::new();
    let top = home.moat(&["--help"]);
    top.success();
    for cmd in [
        "run",
        "wt",
        "attach",
        "list",
        "status",
        "logs",
        "stop",
        "destroy",
        "exec",
        "join",
        "trace",
        "audit",
        "policy",
        "grant",
        "revoke",
        "clean",
        "system",
        "doctor",
        "daemon",
        "completions",
        "version",
    ] {
        assert!(top.stdout.contains(&format!("\n  {cmd} ")), "{cmd} missing from --help");
        let help = home.moat(&[cmd, "--help"]);
        help.success();
        assert!(help.stdout.contains(&format!("Usage: moat {cmd}")), "{}", help.stdout);
    }
    let daemon = home.moat(&["daemon", "--help"]);
    assert!(!daemon.stdout.contains("run "), "daemon run must be hidden");
}

#[test]
fn usage_errors_exit_2() {
    let home = TestHome::new();
    for args in [
        &["frobnicate"][..],
        &["run", "--json"],
        &["run", "--runtime", "podman"],
        &["run", "-m", "relative"],
        &["run", "-e", "1BAD=x"],
        &["logs", "-n", "many"],
    ] {
        let out = home.moat(args);
        out.failure(2);
        assert!(out.stderr.starts_with("error: "), "{args:?}: {}", out.stderr);
    }
    let mount = home.moat(&["run", "-m", "a:b"]);
    assert!(
        mount
            .stderr
            .contains("invalid mount \"a:b\": target must be absolute, got \"b\""),
        "{}",
        mount.stderr
    );
}

#[test]
fn version_and_completions() {
    let home = TestHome::new();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(home.moat(&["version"]).success().stdout, format!("moat {version}\n"));
    let json = home.moat(&["version", "--json"]);
    assert_eq!(json.success().stdout, format!("{{\"version\":\"{version}\"}}\n"));
    let bash = home.moat(&["completions", "bash"]);
    assert!(bash.success().stdout.contains("_moat()"));
}
