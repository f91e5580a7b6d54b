//! `moat grant oauth` end to end: the browser flow against a fake issuer on
//! loopback (a scripted browser follows the redirect to the CLI's
//! callback), then a run whose requests to a fake HTTPS upstream carry
//! `Authorization: Bearer <access token>`; the issuer's tokens live 3 s, the
//! daemon refreshes them, and the run's next request carries the new one.
//! No access or refresh token is ever in the container or moat's records.

use std::time::{Duration, Instant};

use super::proxy::{API_HOST, home_with_upstream};
use super::support::{Home, docker_command, text};
use crate::fake_issuer::{CLIENT_ID, FakeIssuer};

/// Seconds an access token lives at the fake issuer.
const TOKEN_LIFETIME: u64 = 3;

fn grant_corp(home: &Home, issuer: &FakeIssuer, host: &str) {
    let browser = home.root.join("browser.sh");
    std::fs::write(
        &browser,
        "#!/bin/sh\nexec curl -fsS -L --max-time 10 -o /dev/null \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&browser, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = home
        .moat()
        .args([
            "grant",
            "oauth",
            "corp",
            "--issuer",
            &issuer.url,
            "--client-id",
            CLIENT_ID,
        ])
        .args(["--scopes", "api.read", "--host", host])
        .env("BROWSER", &browser)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn bearer_of(upstream: &super::upstream::Upstream, path: &str) -> Option<String> {
    let seen = upstream.seen();
    let request = seen.iter().find(|s| s.path == path)?;
    Some(
        request
            .header("authorization")
            .unwrap_or_default()
            .trim_start_matches("Bearer ")
            .to_owned(),
    )
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_live_run_gets_the_refreshed_token_and_never_holds_one() {
    let Some((home, upstream)) = home_with_upstream() else {
        return;
    };
    let issuer = FakeIssuer::start(TOKEN_LIFETIME);
    let host = format!("{API_HOST}:{}", upstream.port);
    grant_corp(&home, &issuer, &host);
    let listed = text(&home.run(&["grant", "list"]).stdout);
    assert!(listed.contains("EXPIRES") && listed.contains("corp"), "{listed}");

    let base = format!("https://{host}");
    let script = format!(
        "curl -sS --max-time 10 {base}/first; echo; \
         for i in $(seq 1 300); do [ -e /workspace/refreshed ] && break; sleep 0.1; done; \
         curl -sS --max-time 10 {base}/second; echo; env; \
         echo files:; grep -rls fake-oauth /etc /tmp /root /home /run /workspace /var 2>/dev/null; echo end-files"
    );
    let mut run = home.spawn(&[
        "run",
        "--keep",
        "--policy",
        "strict",
        "-g",
        "corp",
        "--allow-host",
        &host,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    wait_until("the first request", Duration::from_secs(60), || {
        bearer_of(&upstream, "/first").is_some()
    });
    let first = bearer_of(&upstream, "/first").unwrap();
    let issued = issuer.access_tokens();
    let first_index = issued
        .iter()
        .position(|t| *t == first)
        .unwrap_or_else(|| panic!("the first request carried {first:?}, not an issued token"));
    // Short-lived tokens: the daemon refreshes after 2 of their 3 seconds.
    let refreshed_at = Instant::now();
    wait_until("a refresh after the first request", Duration::from_secs(15), || {
        issuer.access_tokens().len() > first_index + 1
    });
    let refresh_wait = refreshed_at.elapsed();
    std::fs::write(home.root.join("ws/refreshed"), b"").unwrap();
    wait_until("the run's end", Duration::from_secs(60), || {
        run.try_wait().unwrap().is_some()
    });
    let out = run.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));

    let second = bearer_of(&upstream, "/second").expect("the second request arrived");
    let issued = issuer.access_tokens();
    let second_index = issued.iter().position(|t| *t == second);
    assert!(
        second_index.is_some_and(|i| i > first_index),
        "the second request carries a newer token: first {first_index}, second {second_index:?} of {}",
        issued.len()
    );
    assert!(issuer.refreshes() >= 1);
    let listed = text(&home.run(&["grant", "list", "--json"]).stdout);
    assert!(listed.contains("\"expires_at\""), "{listed}");

    // No token, access or refresh, in the container or moat's records.
    let tokens = issuer.all_tokens();
    let files = stdout.split("files:").nth(1).unwrap_or_default();
    assert!(
        files.trim() == "end-files",
        "files in the container mention a token: {files}"
    );
    let run_id = home.only_run()["id"].as_str().unwrap().to_string();
    let inspect = text(&docker_command().args(["inspect", &run_id]).output().unwrap().stdout);
    let mut audited_refresh = false;
    for file in walk(&home.home().join("runs"))
        .into_iter()
        .chain(walk(&home.home().join("daemon")))
    {
        let contents = String::from_utf8_lossy(&std::fs::read(&file).unwrap_or_default()).into_owned();
        if file.ends_with("audit.jsonl") && contents.contains("\"grant_refreshed\"") {
            audited_refresh = true;
        }
        for token in &tokens {
            assert!(!contents.contains(token.as_str()), "{} holds a token", file.display());
        }
    }
    for token in &tokens {
        assert!(!stdout.contains(token.as_str()), "the container saw a token: {stdout}");
        assert!(!inspect.contains(token.as_str()), "docker inspect shows a token");
    }
    assert!(audited_refresh, "the run's audit log records the refresh");
    assert!(
        walk(&home.home().join("runs"))
            .iter()
            .any(|f| f.ends_with("network.jsonl")),
        "the run has a network trace to search"
    );
    eprintln!("oauth: a refreshed token {refresh_wait:?} after the first request");
    let destroyed = (0..50).any(|_| {
        let ok = home.run(&["destroy", &run_id]).status.success();
        if !ok {
            std::thread::sleep(Duration::from_millis(200));
        }
        ok
    });
    assert!(destroyed, "the kept run could not be destroyed");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() { walk(&path) } else { vec![path] }
        })
        .collect()
}
