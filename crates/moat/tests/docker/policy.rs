//! Policies learned from traces, on the real engine (issue 16): a permissive
//! run's requests to a local HTTPS fake become rules with `moat policy
//! suggest`; a strict run with exactly those rules repeats them all and is
//! refused a new path; a shadow run lets through, and records in the trace
//! and the audit log, what strict would have refused.

use std::time::{Duration, Instant};

use super::proxy::API_HOST;
use super::support::{Home, text};
use super::upstream::Upstream;

/// A second name for the fake, which no rule lists.
const UNLISTED_HOST: &str = "unlisted.moat-test.example";

/// A home whose daemon trusts the fake's CA and resolves both names to
/// loopback, which runs reach only through a rule naming `host:port` or a
/// `network.host` port.
fn home_with_loopback_upstream() -> Option<(Home, Upstream)> {
    let home = Home::new()?;
    std::fs::create_dir_all(home.home()).unwrap();
    let upstream = Upstream::start_for(&[API_HOST, UNLISTED_HOST], &home.root);
    let config = format!(
        "extra_ca_file: {}\nresolve:\n  {API_HOST}: 127.0.0.1\n  {UNLISTED_HOST}: 127.0.0.1\n",
        upstream.ca_file.display()
    );
    std::fs::write(home.home().join("config.yaml"), config).unwrap();
    Some((home, upstream))
}

/// Ten items by number and ten blobs by digest.
fn varied_paths() -> Vec<String> {
    let items = (0..10).map(|i| format!("/items/{}", 1000 + i * 37));
    let blobs = (0..10).map(|i| format!("/blobs/{:040x}", 0x5eed_0000_u64 + i * 7919));
    items.chain(blobs).collect()
}

/// A script fetching each `https://host:port/path`, printing `CODE URL`.
fn fetch_script(urls: &[String]) -> String {
    let urls = urls.join(" ");
    format!("for u in {urls}; do curl -sS --max-time 10 -o /dev/null -w \"%{{http_code}} $u\\n\" \"$u\"; done")
}

/// The HTTP status the script printed for `url`.
fn status_of(stdout: &str, url: &str) -> Option<String> {
    stdout.lines().find_map(|l| {
        let (code, rest) = l.split_once(' ')?;
        (rest == url).then(|| code.to_string())
    })
}

fn run_script(home: &Home, extra: &[&str], script: &str) -> String {
    let mut args = vec!["run", "--trust"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let out = home.run(&args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    stdout
}

fn newest_run(home: &Home) -> String {
    home.runs()[0]["id"].as_str().unwrap().to_string()
}

#[test]
fn suggested_rules_allow_exactly_what_the_run_did_and_shadow_records_what_strict_would_refuse() {
    let Some((home, upstream)) = home_with_loopback_upstream() else {
        return;
    };
    let port = upstream.port;
    let api = |path: &str| format!("https://{API_HOST}:{port}{path}");
    let urls: Vec<String> = varied_paths().iter().map(|p| api(p)).collect();

    // 1. Permissive: the fake is reachable through its network.host port.
    std::fs::write(home.root.join("ws/moat.yaml"), format!("network:\n  host: [{port}]\n")).unwrap();
    let stdout = run_script(&home, &["--policy", "permissive"], &fetch_script(&urls));
    for url in &urls {
        assert_eq!(status_of(&stdout, url).as_deref(), Some("200"), "{url}: {stdout}");
    }
    assert_eq!(upstream.seen().len(), 20);
    let learned = newest_run(&home);

    // 2. Suggest: one rule per path shape, the varying ids as `*`.
    let out = home.run(&["policy", "suggest", &learned]);
    let snippet = text(&out.stdout);
    assert!(out.status.success(), "{snippet}{}", text(&out.stderr));
    let host_line = format!("    - \"{API_HOST}:{port}\":");
    assert!(snippet.contains(&host_line), "{snippet}");
    assert!(snippet.contains("\"allow GET /items/*\"  # 10 requests"), "{snippet}");
    assert!(snippet.contains("\"allow GET /blobs/*\"  # 10 requests"), "{snippet}");
    assert_eq!(snippet.matches("\"allow ").count(), 2, "{snippet}");

    // 3. Strict with exactly those rules: the same requests pass, a new path does not.
    std::fs::write(home.root.join("ws/moat.yaml"), &snippet).unwrap();
    let new_path = api("/admin/1");
    let mut again = urls.clone();
    again.push(new_path.clone());
    let stdout = run_script(&home, &[], &fetch_script(&again));
    for url in &urls {
        assert_eq!(status_of(&stdout, url).as_deref(), Some("200"), "{url}: {stdout}");
    }
    assert_eq!(status_of(&stdout, &new_path).as_deref(), Some("403"), "{stdout}");
    assert_eq!(upstream.seen().len(), 40, "the new path never reached the fake");
    let strict_run = newest_run(&home);
    let trace = trace_of(&home, &strict_run);
    let refused: Vec<&serde_json::Value> = trace.iter().filter(|r| r["decision"] == "deny").collect();
    assert_eq!(refused.len(), 1, "{trace:?}");
    assert_eq!(refused[0]["url"], new_path.as_str());

    // 4. Shadow with the same rules: an unlisted host goes through, and the
    // trace, `trace --blocked` and the audit log say strict would refuse it;
    // the rules' own refusal still holds.
    let shadow_yaml = snippet.replace("policy: strict", &format!("policy: shadow\n  host: [{port}]"));
    std::fs::write(home.root.join("ws/moat.yaml"), &shadow_yaml).unwrap();
    let unlisted = format!("https://{UNLISTED_HOST}:{port}/new/1");
    let item = api("/items/5");
    let script = fetch_script(&[item.clone(), unlisted.clone(), new_path.clone()]);
    let stdout = run_script(&home, &[], &script);
    assert_eq!(status_of(&stdout, &item).as_deref(), Some("200"), "{stdout}");
    assert_eq!(status_of(&stdout, &unlisted).as_deref(), Some("200"), "{stdout}");
    assert_eq!(status_of(&stdout, &new_path).as_deref(), Some("403"), "{stdout}");
    let shadow_run = newest_run(&home);
    let out = home.run(&["trace", &shadow_run, "--blocked", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let blocked: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let urls_blocked: Vec<&str> = blocked.iter().map(|r| r["url"].as_str().unwrap()).collect();
    assert_eq!(urls_blocked, [unlisted.as_str(), new_path.as_str()], "{blocked:?}");
    assert_eq!(blocked[0]["decision"], "allow");
    assert!(
        blocked[0]["would_block"]
            .as_str()
            .is_some_and(|r| r.starts_with("strict:")),
        "{blocked:?}"
    );
    let audit = wait_for_audit_kind(&home, &shadow_run, "policy_shadow_denied");
    assert_eq!(audit["data"]["host"], UNLISTED_HOST);
    assert_eq!(audit["data"]["path"], "/new/1");
    let verdict = home.run(&["audit", &shadow_run]);
    assert!(verdict.status.success(), "{}", text(&verdict.stdout));

    // 5. And the shadow run's suggestion takes the unlisted host in.
    let out = home.run(&["policy", "suggest", &shadow_run]);
    let snippet = text(&out.stdout);
    assert!(snippet.contains(&format!("\"{UNLISTED_HOST}:{port}\":")), "{snippet}");
}

fn trace_of(home: &Home, run_id: &str) -> Vec<serde_json::Value> {
    let path = home.home().join("runs").join(run_id).join("network.jsonl");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The first entry of `kind` in the run's audit log, waiting for the
/// daemon's writer (it writes within a second).
fn wait_for_audit_kind(home: &Home, run_id: &str, kind: &str) -> serde_json::Value {
    let path = home.home().join("runs").join(run_id).join("audit.jsonl");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        let entry = log
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|e| e["kind"] == kind);
        if let Some(entry) = entry {
            return entry;
        }
        assert!(Instant::now() < deadline, "no {kind} entry within 15 s: {log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
