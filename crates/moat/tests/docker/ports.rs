//! `ports:` through the daemon's routing endpoint: a page served in the
//! container, loaded by headless Chromium trusting moat's CA (its script
//! round-trips a WebSocket), HTTP/2 and plain HTTP, the page listing live
//! endpoints for unknown names, `moat open`, `list` and `status`, run
//! names unique among live runs, a strict run's firewall letting its
//! answers back, and the port and routes surviving a daemon restart.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::support::{Home, text};

const DEV_SERVER: &str = include_str!("fixtures/devserver.pl");
const PAGE_TEXT: &str = "Hello from the container";

fn tool_available(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is missing (scripts/setup.sh installs it)"
        );
        eprintln!("skipping: {name} is missing (scripts/setup.sh installs it)");
    }
    found
}

/// `curl` against the routing endpoint trusting moat's CA; returns
/// "<http version> <status>" and the body.
fn curl(ca: &Path, url: &str, extra: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(extra)
        .args(["-w", "\n%{http_version} %{http_code}", url])
        .output()
        .unwrap();
    let all = text(&out.stdout);
    let (body, status) = all.rsplit_once('\n').unwrap_or(("", &all));
    (status.to_string(), body.to_string())
}

fn wait_until_served(ca: &Path, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = curl(ca, url, &[]);
        if status.ends_with(" 200") {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never answered 200 (last: {status})");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Headless Chromium with its own profile; `ca` trusted when given.
fn chromium(profile: &Path, ca: Option<&Path>, args: &[&str], url: &str) -> String {
    let nssdb = profile.join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let db = format!("sql:{}", nssdb.display());
    if let Some(ca) = ca {
        let made = Command::new("certutil")
            .args(["-N", "--empty-password", "-d", &db])
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", text(&made.stderr));
        let added = Command::new("certutil")
            .args(["-A", "-t", "C,,", "-n", "moat", "-d", &db, "-i"])
            .arg(ca)
            .output()
            .unwrap();
        assert!(added.status.success(), "{}", text(&added.stderr));
    }
    // Headless Chromium on a loaded machine sometimes exits 0 having
    // printed no DOM at all; such an attempt says nothing about the page.
    for _ in 0..3 {
        let out = Command::new("timeout")
            .args([
                "60",
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.join("chrome").display()))
            .args(["--virtual-time-budget=5000", "--window-size=900,400"])
            .args(args)
            .arg(url)
            .env("HOME", profile)
            .output()
            .unwrap();
        if !out.stdout.is_empty() || !args.contains(&"--dump-dom") {
            return text(&out.stdout);
        }
        eprintln!(
            "chromium ({:?}) printed nothing; retrying; stderr:\n{}",
            out.status,
            text(&out.stderr)
        );
    }
    String::new()
}

#[test]
fn a_page_served_in_the_container_loads_in_a_browser_through_the_routing_endpoint() {
    if !tool_available("chromium") || !tool_available("certutil") || !tool_available("curl") {
        return;
    }
    let Some(home) = Home::new() else { return };
    let ws = home.root.join("ws");
    std::fs::write(ws.join("devserver.pl"), DEV_SERVER).unwrap();
    // Strict: the container reaches nothing, yet answers the routing endpoint.
    std::fs::write(
        ws.join("moat.yaml"),
        "name: demo\nports: {web: 3000}\nnetwork: {policy: strict}\n",
    )
    .unwrap();
    let out = home.run(&["run", "-d", "--", "perl", "/workspace/devserver.pl", "3000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _stop = StopOnDrop(&home, "demo");

    let open = home.run(&["open", "demo"]);
    assert!(open.status.success(), "{}", text(&open.stderr));
    let url = text(&open.stdout).trim().to_string();
    let port = url
        .strip_prefix("https://web.demo.localhost:")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("unexpected URL {url:?}"));
    let ca = home.home().join("ca/public/ca.crt");
    wait_until_served(&ca, &url);

    // HTTP/2 over TLS, plain HTTP, the bare run name, and unknown names.
    let (status, body) = curl(&ca, &url, &["--http2"]);
    assert_eq!(status, "2 200");
    assert!(body.contains(PAGE_TEXT), "{body}");
    let (status, _) = curl(&ca, &format!("http://web.demo.localhost:{port}/"), &[]);
    assert_eq!(status, "1.1 200");
    let (status, _) = curl(&ca, &format!("https://demo.localhost:{port}/"), &[]);
    assert_eq!(status, "2 200");
    let (status, listing) = curl(&ca, &format!("https://api.demo.localhost:{port}/"), &[]);
    assert_eq!(status, "2 404");
    assert!(listing.contains("web.demo.localhost"), "{listing}");

    // A browser that does not trust moat's CA gets no page.
    let untrusting = home.root.join("untrusting");
    let dom = chromium(&untrusting, None, &["--dump-dom"], &url);
    assert!(!dom.contains(PAGE_TEXT), "a browser without moat's CA loaded the page");

    let profile = home.root.join("browser");
    let dom = chromium(&profile, Some(&ca), &["--dump-dom"], &url);
    assert!(dom.contains(PAGE_TEXT), "page not loaded: {dom}");
    assert!(dom.contains("echo: ping-42"), "the WebSocket did not echo: {dom}");
    let shot = home.root.join("page.png");
    // As with the DOM, an attempt may end without a screenshot under load.
    let mut png = Vec::new();
    for _ in 0..3 {
        chromium(&profile, None, &[&format!("--screenshot={}", shot.display())], &url);
        png = std::fs::read(&shot).unwrap_or_default();
        if png.starts_with(b"\x89PNG") && png.len() > 2000 {
            break;
        }
    }
    assert!(png.starts_with(b"\x89PNG") && png.len() > 2000, "no screenshot");
    if let Ok(dir) = std::env::var("MOAT_TEST_SCREENSHOT_DIR") {
        let _ = std::fs::copy(&shot, Path::new(&dir).join("routing-endpoint.png"));
    }

    // `list` and `status` show the endpoint; a second live `demo` is refused.
    let list = home.run(&["list", "--json"]);
    assert!(text(&list.stdout).contains(&url), "{}", text(&list.stdout));
    let status = home.run(&["status"]);
    assert!(
        text(&status.stdout).contains(&format!("web: {url}")),
        "{}",
        text(&status.stdout)
    );
    let second = home.run(&["run", "-d", "--", "true"]);
    assert_eq!(second.status.code(), Some(1));
    let stderr = text(&second.stderr);
    assert!(stderr.contains("already named \"demo\""), "{stderr}");

    // A new daemon keeps the port and routes the re-adopted run.
    let stopped = home.run(&["daemon", "stop"]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    let exec = home.run(&["exec", "demo", "--", "true"]);
    assert!(exec.status.success(), "{}", text(&exec.stderr));
    wait_until_served(&ca, &url);
}

/// Stops a detached run however the test ends (a home's cleanup spares
/// live runs).
struct StopOnDrop<'a>(&'a Home, &'static str);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let stop = self.0.run(&["stop", self.1]);
        assert!(
            std::thread::panicking() || stop.status.success(),
            "{}",
            text(&stop.stderr)
        );
    }
}
