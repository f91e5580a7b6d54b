//! The proxy end to end with a real container: strict egress (allowed host
//! through the proxy with a trusted certificate, another host refused with
//! the rule to add, direct/IPv6/raw-IP egress failing at the network layer)
//! and a granted credential injected, never visible, and revocable live.

use std::time::{Duration, Instant};

use super::support::{Home, text};
use super::upstream::{Upstream, docker_bridge_address};

pub(super) const API_HOST: &str = "api.moat-test.example";
/// Obviously fake; the test searches for it everywhere it must not be.
pub(super) const TOKEN: &str = "moat-test-credential-5f3a9c1e77";

/// A home whose daemon trusts the upstream's CA and resolves the test host
/// to it.
pub(super) fn home_with_upstream() -> Option<(Home, Upstream)> {
    let home = Home::new()?;
    std::fs::create_dir_all(home.home()).unwrap();
    let upstream = Upstream::start(API_HOST, &home.root);
    let config = format!(
        "extra_ca_file: {}\nresolve:\n  {API_HOST}: {}\n",
        upstream.ca_file.display(),
        docker_bridge_address()
    );
    std::fs::write(home.home().join("config.yaml"), config).unwrap();
    Some((home, upstream))
}

fn trace_of(home: &Home, run_id: &str) -> Vec<serde_json::Value> {
    let path = home.home().join("runs").join(run_id).join("network.jsonl");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `name=<curl exit code>` lines printed by the container script.
fn exit_of(output: &str, name: &str) -> Option<i32> {
    output
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")).and_then(|v| v.trim().parse().ok()))
}

/// Defines a provider `echo` for the upstream and stores [`TOKEN`] for it.
pub(super) fn store_echo_grant(home: &Home, port: u16) {
    std::fs::create_dir_all(home.home().join("providers")).unwrap();
    std::fs::write(
        home.home().join("providers/echo.yaml"),
        format!(
            "name: echo\nhosts: [\"{API_HOST}:{port}\"]\nheader: Authorization\nprefix: \"Bearer \"\n\
             placeholder: moat-echo-placeholder-0000000000\nenv: ECHO_TOKEN\n\
             validate:\n  url: https://127.0.0.1:{port}/user\n  expect_status: 200\n"
        ),
    )
    .unwrap();
    let granted = home
        .moat()
        .args(["grant", "echo"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut granted = granted;
    granted
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{TOKEN}\n").as_bytes())
        .unwrap();
    let granted = granted.wait_with_output().unwrap();
    assert!(
        granted.status.success(),
        "{}{}",
        text(&granted.stdout),
        text(&granted.stderr)
    );
}

#[test]
fn strict_policy_allows_the_named_host_and_blocks_everything_else() {
    let Some((home, upstream)) = home_with_upstream() else {
        return;
    };
    let port = upstream.port;
    let bridge = docker_bridge_address();
    let script = format!(
        "curl -sS --max-time 10 https://{API_HOST}:{port}/allowed; echo allowed=$?; \
         curl -sS --max-time 10 https://other.moat-test.example:{port}/; echo other=$?; \
         curl -sS --max-time 10 http://other.moat-test.example:{port}/plain; echo plain=$?; \
         curl -sS --noproxy '*' --connect-timeout 3 --max-time 5 https://{bridge}:{port}/; echo direct=$?; \
         curl -sS --noproxy '*' --connect-timeout 3 --max-time 5 -6 'http://[2001:db8::1]/'; echo ipv6=$?; \
         curl -sS --noproxy '*' --connect-timeout 3 --max-time 5 http://192.0.2.10/; echo rawip=$?; \
         gw=$(getent hosts moat-proxy | cut -d' ' -f1); \
         curl -sSk --noproxy '*' --connect-timeout 3 --max-time 5 https://$gw:{port}/; echo gateway=$?"
    );
    let allow = format!("{API_HOST}:{port}");
    let out = home.run(&[
        "run",
        "--policy",
        "strict",
        "--allow-host",
        &allow,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(
        exit_of(&stdout, "allowed"),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("\"path\":\"/allowed\""), "{stdout}");
    assert_ne!(exit_of(&stdout, "other"), Some(0), "{stdout}");
    assert!(
        stdout.contains("--allow-host") || stdout.contains("network.rules"),
        "the refusal names the rule to add: {stdout}"
    );
    // `gateway`: a host service listening on all interfaces, reached through
    // the run network's gateway (closed by moat's host firewall rule).
    for direct in ["direct", "ipv6", "rawip", "gateway"] {
        let code = exit_of(&stdout, direct).unwrap_or_else(|| panic!("no {direct}= line: {stdout}"));
        assert!(code != 0, "{direct} egress bypassing the proxy succeeded: {stdout}");
    }
    assert_eq!(
        upstream.seen().len(),
        1,
        "only the allowed request reached the upstream"
    );

    let run_id = home.only_run()["id"].as_str().unwrap().to_string();
    let trace = trace_of(&home, &run_id);
    let decisions: Vec<(String, String)> = trace
        .iter()
        .map(|r| {
            (
                r["host"].as_str().unwrap_or("").to_string(),
                r["decision"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        decisions.iter().any(|(h, d)| h == API_HOST && d == "allow"),
        "{decisions:?}"
    );
    assert!(
        decisions
            .iter()
            .any(|(h, d)| h == "other.moat-test.example" && d == "deny"),
        "{decisions:?}"
    );

    // `moat trace` shows the same requests: table, JSON lines, HAR.
    let table = home.run(&["trace", &run_id]);
    assert!(table.status.success(), "{}", text(&table.stderr));
    let table = text(&table.stdout);
    assert!(
        table.contains(&format!("https://{API_HOST}:{port}/allowed")) && table.contains("deny"),
        "{table}"
    );
    let lines = text(&home.run(&["trace", &run_id, "--json"]).stdout).lines().count();
    assert_eq!(lines, trace.len());
    let har_path = home.root.join("trace.har");
    assert!(
        home.run(&["trace", &run_id, "--har", har_path.to_str().unwrap()])
            .status
            .success()
    );
    let har: serde_json::Value = serde_json::from_slice(&std::fs::read(&har_path).unwrap()).unwrap();
    assert_eq!(har["log"]["entries"].as_array().map(Vec::len), Some(trace.len()));
}

#[test]
fn a_granted_credential_is_injected_never_visible_and_revocable_during_a_run() {
    let Some((home, upstream)) = home_with_upstream() else {
        return;
    };
    let port = upstream.port;
    store_echo_grant(&home, port);

    let script = format!(
        "curl -sS --max-time 10 https://{API_HOST}:{port}/first; echo; env; \
         for i in $(seq 1 100); do [ -e /workspace/revoked ] && break; sleep 0.1; done; \
         curl -sS --max-time 10 https://{API_HOST}:{port}/second; echo"
    );
    // The upstream listens on the host's docker0 address, one the proxy
    // refuses unless the rules name it exactly as host:port.
    let allow = format!("{API_HOST}:{port}");
    // The grant comes from moat.yaml's `grants:` (approved with --trust).
    std::fs::write(home.root.join("ws/moat.yaml"), "grants: [echo]\n").unwrap();
    let mut run = home.spawn(&[
        "run",
        "--keep",
        "--trust",
        "--allow-host",
        &allow,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !upstream.seen().iter().any(|s| s.path == "/first") {
        assert!(Instant::now() < deadline, "the first request never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    let revoked = home.run(&["revoke", "echo"]);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    std::fs::write(home.root.join("ws/revoked"), b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the run did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));

    let seen = upstream.seen();
    let first = seen.iter().find(|s| s.path == "/first").unwrap();
    assert_eq!(first.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    let second = seen
        .iter()
        .find(|s| s.path == "/second")
        .expect("the second request arrived");
    assert_eq!(
        second.header("authorization"),
        None,
        "revoked, the next request goes out without it"
    );
    assert!(
        stdout.contains("ECHO_TOKEN=moat-echo-placeholder"),
        "the container sees the placeholder: {stdout}"
    );

    // The token appears nowhere in the container or in moat's records.
    assert!(!stdout.contains(TOKEN), "the container saw the token: {stdout}");
    let run_id = home.only_run()["id"].as_str().unwrap().to_string();
    let inspect = super::support::docker_command()
        .args(["inspect", &run_id])
        .output()
        .unwrap();
    assert!(inspect.status.success());
    assert!(
        !text(&inspect.stdout).contains(TOKEN),
        "the container's config holds the token"
    );
    for file in walk(&home.home().join("runs"))
        .into_iter()
        .chain(walk(&home.home().join("daemon")))
    {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(TOKEN),
            "{} holds the token",
            file.display()
        );
    }
    let trace = trace_of(&home, &run_id);
    let injected: Vec<&serde_json::Value> = trace
        .iter()
        .filter(|r| r["grants"] == serde_json::json!(["echo"]))
        .collect();
    assert_eq!(
        injected.len(),
        1,
        "the trace says which request got which grant: {trace:?}"
    );
    assert_eq!(
        injected[0]["url"].as_str().map(|u| u.ends_with("/first")),
        Some(true),
        "{trace:?}"
    );
    // A kept run's objects stay until its record goes; then a sweep takes them.
    // Its cleanup (the run's proxy, rules, holder) may still be under way:
    // destroy refuses until it is done, and says to retry.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let destroyed = home.run(&["destroy", &run_id]);
        if destroyed.status.success() {
            break;
        }
        let stderr = text(&destroyed.stderr);
        assert!(
            stderr.contains("supervised by the daemon") && Instant::now() < deadline,
            "{stderr}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(home.run(&["system", "prune", "--force"]).status.success());
    assert!(
        super::support::objects_of(&run_id).is_empty(),
        "{:?}",
        super::support::objects_of(&run_id)
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
