//! `moat grant oauth` against a fake issuer on loopback: the browser flow
//! (a scripted browser follows the redirect to the CLI's loopback
//! callback), the device flow (the test approves the code), the daemon's
//! refresh with backoff on a failing issuer, and flags that are refused.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::fake_issuer::{CLIENT_ID, FakeIssuer};

use super::support::{TestHome, write_file};

const HOST: &str = "api.corp.test";

/// A "browser" that GETs the URL and follows redirects, like a user who
/// is logged in and approves at once.
fn scripted_browser(home: &TestHome) -> std::path::PathBuf {
    let path = home.path("browser.sh");
    write_file(
        &path,
        "#!/bin/sh\nexec curl -fsS -L --max-time 10 -o /dev/null \"$1\"\n",
    );
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

fn grant_args(issuer: &FakeIssuer) -> Vec<&str> {
    vec![
        "grant",
        "oauth",
        "corp",
        "--issuer",
        &issuer.url,
        "--client-id",
        CLIENT_ID,
        "--scopes",
        "api.read",
        "--host",
        HOST,
    ]
}

fn grant_list(home: &TestHome) -> serde_json::Value {
    let out = home.moat(&["grant", "list", "--json"]);
    out.success();
    serde_json::from_str(&out.stdout).unwrap()
}

fn corp_expiry(home: &TestHome) -> Option<String> {
    grant_list(home)
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["provider"] == "corp")
        .and_then(|g| g["expires_at"].as_str().map(str::to_owned))
}

/// No issued token is in `path` (an encrypted store, listings).
fn assert_no_token_in(path: &Path, issuer: &FakeIssuer) {
    for entry in walk(path) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        for token in issuer.all_tokens() {
            assert!(!text.contains(&token), "{} holds a token in clear", entry.display());
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![dir.to_path_buf()];
    };
    entries.flatten().flat_map(|e| walk(&e.path())).collect()
}

#[test]
fn the_browser_flow_stores_the_tokens_and_list_shows_the_expiry() {
    let home = TestHome::new();
    let issuer = FakeIssuer::start(3600);
    let out = Outcome(
        home.command(&grant_args(&issuer))
            .env("BROWSER", scripted_browser(&home))
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    );
    assert!(out.0.status.success(), "{}", out.stderr());
    assert!(
        out.stderr()
            .contains(&format!("{}/authorize?response_type=code", issuer.url)),
        "the URL is printed: {}",
        out.stderr()
    );
    assert_eq!(issuer.access_tokens().len(), 1, "one code exchange");
    let expiry = corp_expiry(&home).expect("grant list shows the expiry");
    let expires: chrono::DateTime<chrono::Utc> = expiry.parse().unwrap();
    let left = expires - chrono::Utc::now();
    assert!(
        left > chrono::Duration::minutes(55) && left <= chrono::Duration::minutes(60),
        "{expiry}"
    );
    let table = home.moat(&["grant", "list"]);
    assert!(table.stdout.contains("EXPIRES"), "{}", table.stdout);
    assert!(
        table.stdout.contains(&expires.format("%Y-%m-%d %H:%M").to_string()),
        "{}",
        table.stdout
    );
    let provider = std::fs::read_to_string(home.home_path("providers/corp.yaml")).unwrap();
    assert!(provider.contains(HOST), "{provider}");
    assert!(!out.stderr().contains(&issuer.access_tokens()[0]));
    assert_no_token_in(&home.root.join("home"), &issuer);
    assert!(!table.stdout.contains("fake-oauth"), "{}", table.stdout);
}

#[test]
fn the_device_flow_waits_for_the_user_to_approve() {
    let home = TestHome::new();
    let issuer = FakeIssuer::start(600);
    let mut args = grant_args(&issuer);
    args.push("--device");
    let mut child = home
        .command(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut shown = String::new();
    let complete = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no device URL: {shown}");
        shown.push_str(&line);
        if let Some(url) = line.trim().strip_prefix("or open ") {
            break url.to_owned();
        }
    };
    assert!(shown.contains("enter the code USER-"), "{shown}");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(issuer.access_tokens().is_empty(), "nothing before the approval");
    let approved = std::process::Command::new("curl")
        .args(["-fsS", "--max-time", "10", "-o", "/dev/null", &complete])
        .status()
        .unwrap();
    assert!(approved.success());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "{shown}{rest}");
    assert_eq!(issuer.access_tokens().len(), 1);
    assert!(corp_expiry(&home).is_some());
    assert_no_token_in(&home.root.join("home"), &issuer);
}

/// The daemon refreshes a 3-second token about a second before it
/// expires; while the issuer fails it backs off and tries again.
#[test]
fn the_daemon_refreshes_before_expiry_and_retries_a_failing_issuer() {
    let home = TestHome::new();
    let issuer = FakeIssuer::start(3);
    let granted = home
        .command(&grant_args(&issuer))
        .env("BROWSER", scripted_browser(&home))
        .output()
        .unwrap();
    assert!(granted.status.success(), "{}", String::from_utf8_lossy(&granted.stderr));
    let first_expiry = corp_expiry(&home).unwrap();
    issuer.set_failing(true);
    home.moat(&["daemon", "restart"]).success();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(issuer.refreshes(), 0);
    assert_eq!(
        corp_expiry(&home).unwrap(),
        first_expiry,
        "a failed refresh changes nothing"
    );
    let log = std::fs::read_to_string(home.home_path("daemon/daemon.log")).unwrap_or_default();
    assert!(
        log.contains("refreshing the grant failed"),
        "the failure is logged: {log}"
    );
    assert!(!log.contains("fake-oauth"), "{log}");
    issuer.set_failing(false);
    let started = Instant::now();
    while issuer.refreshes() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no refresh after the issuer recovered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_ne!(corp_expiry(&home).unwrap(), first_expiry);
    assert_no_token_in(&home.root.join("home"), &issuer);
}

#[test]
fn insecure_issuers_and_missing_endpoints_are_refused() {
    let home = TestHome::new();
    let out = home.moat(&[
        "grant",
        "oauth",
        "corp",
        "--issuer",
        "http://auth.example.com",
        "--client-id",
        "x",
        "--host",
        HOST,
    ]);
    out.failure(1);
    assert!(out.stderr.contains("only https://"), "{}", out.stderr);
    // Explicit endpoints skip discovery; the device flow needs its own.
    let issuer = FakeIssuer::start(60);
    let auth = format!("{}/authorize", issuer.url);
    let token = format!("{}/token", issuer.url);
    let mut args = grant_args(&issuer);
    args.extend(["--auth-url", &auth, "--token-url", &token, "--device"]);
    let out = home.moat(&args);
    out.failure(1);
    assert!(
        out.stderr.contains("no device authorization endpoint"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--device-url"), "{}", out.stderr);
    let out = home.moat(&["grant", "oauth", "corp", "--issuer", &issuer.url, "--client-id", "x"]);
    out.failure(2);
    assert!(out.stderr.contains("--host"), "{}", out.stderr);
}

struct Outcome(std::process::Output);

impl Outcome {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
}
