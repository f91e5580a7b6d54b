//! `moat policy suggest`, `moat trace --blocked` and the shadow policy, on
//! fabricated traces: the suggestion is read back by `moat run --dry-run`
//! (moat's own loader), and `--blocked` lists exactly what was refused or
//! would have been.

use moat_core::RunState;
use moat_core::paths::run_files;
use serde_json::{Value, json};

use super::support::{TestHome, write_file};

fn record(method: &str, url: &str, decision: &str, would_block: Option<&str>) -> Value {
    let mut record = json!({
        "time": "2025-06-01T10:00:00.000000Z", "request_id": "00000001", "method": method, "url": url,
        "host": "api.example.com", "status": 200, "duration_ms": 1.0, "bytes_out": 0, "bytes_in": 10,
        "decision": decision, "rule": if decision == "deny" { "api.example.com: no allow rule matches" } else { "shadow" },
    });
    if let Some(rule) = would_block {
        record["would_block"] = json!(rule);
    }
    record
}

/// A shadow run that fetched 12 items, posted once, was refused once and
/// reached an unlisted host that strict would have refused.
fn traced_run(home: &TestHome) -> String {
    let meta = home.run(Some("traced"), RunState::Exited, 5);
    let mut lines: Vec<Value> = (0..12)
        .map(|i| {
            record(
                "GET",
                &format!("https://api.example.com/items/{}?page=1", 100 + i * 7),
                "allow",
                None,
            )
        })
        .collect();
    lines.push(record("POST", "https://api.example.com/items", "allow", None));
    lines.push(record("DELETE", "https://api.example.com/items/3", "deny", None));
    let strict_rule = "strict: no network.rules entry matches this host";
    lines.push(record(
        "GET",
        "https://cdn.example.net:8443/pkg/a.tgz",
        "allow",
        Some(strict_rule),
    ));
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    write_file(
        &home.home_path(&format!("runs/{}/{}", meta.id, run_files::NETWORK)),
        &text,
    );
    meta.id.to_string()
}

#[test]
fn the_suggestion_is_a_moat_yaml_that_moat_loads_as_strict_rules() {
    let home = TestHome::new();
    let id = traced_run(&home);
    let out = home.moat(&["policy", "suggest", &id]);
    out.success();
    let yaml = &out.stdout;
    assert!(yaml.contains("\"allow GET /items/*\"  # 12 requests"), "{yaml}");
    assert!(yaml.contains("\"allow POST /items\"  # 1 request"), "{yaml}");
    assert!(yaml.contains("\"cdn.example.net:8443\":"), "{yaml}");
    assert!(
        !yaml.contains("DELETE"),
        "a refused request is not allowed by the suggestion: {yaml}"
    );
    assert!(out.stderr.contains("left out: 1 refused"), "{}", out.stderr);

    write_file(&home.path("ws/moat.yaml"), yaml);
    let ws = home.path("ws");
    let run = home.moat(&[
        "run",
        "--dry-run",
        "--json",
        "--trust",
        ws.to_str().unwrap(),
        "--",
        "true",
    ]);
    run.success();
    let run: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(run["network"]["policy"], "strict");
    assert_eq!(
        run["network"]["rules"],
        json!([
            {"api.example.com": ["allow POST /items", "allow GET /items/*"]},
            {"cdn.example.net:8443": ["allow GET /pkg/a.tgz"]},
        ])
    );

    let out = home.moat(&["policy", "suggest", &id, "--json"]);
    out.success();
    let document: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(document["network"]["rules"], run["network"]["rules"]);
    assert_eq!(document["hosts"][0]["requests"], 13);
    assert_eq!(document["hosts"][0]["rules"][1]["requests"], 12);
    assert_eq!(document["skipped"]["refused"], 1);
}

#[test]
fn trace_blocked_lists_refusals_and_what_strict_would_have_refused() {
    let home = TestHome::new();
    let id = traced_run(&home);
    let out = home.moat(&["trace", &id, "--blocked", "--json"]);
    out.success();
    let urls: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["url"].clone())
        .collect();
    assert_eq!(
        urls,
        [
            json!("https://api.example.com/items/3"),
            json!("https://cdn.example.net:8443/pkg/a.tgz")
        ]
    );
    let table = home.moat(&["trace", &id, "--blocked"]);
    table.success();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", table.stdout);
    assert!(
        lines[1].contains(" deny ") && lines[1].ends_with("/items/3"),
        "{}",
        lines[1]
    );
    assert!(
        lines[3].contains(" would-deny ") && lines[3].ends_with("/pkg/a.tgz"),
        "{}",
        lines[3]
    );
    assert!(
        lines[4].contains("rule: strict: no network.rules entry"),
        "{}",
        lines[4]
    );
    let all = home.moat(&["trace", &id]);
    assert_eq!(all.success().stdout.lines().count(), 16);
}

#[test]
fn shadow_is_accepted_by_flag_and_file_and_other_policies_are_refused() {
    let home = TestHome::new();
    std::fs::create_dir_all(home.path("ws")).unwrap();
    let ws = home.path("ws");
    let ws = ws.to_str().unwrap();
    let out = home.moat(&["run", "--dry-run", "--json", "--policy", "shadow", ws]);
    let run: Value = serde_json::from_str(&out.success().stdout).unwrap();
    assert_eq!(run["network"]["policy"], "shadow");

    write_file(
        &home.path("ws/moat.yaml"),
        "network: {policy: shadow, rules: [api.example.com]}\n",
    );
    let out = home.moat(&["run", "--dry-run", "--json", "--trust", ws]);
    let run: Value = serde_json::from_str(&out.success().stdout).unwrap();
    assert_eq!(run["network"]["policy"], "shadow");

    // Shadow is not strict: what needs strict's isolation refuses it.
    let out = home.moat(&["run", "--dry-run", "--policy", "shadow", "--require-isolation", ws]);
    assert!(
        out.stderr
            .contains("--require-isolation needs the strict network policy"),
        "{}",
        out.stderr
    );

    write_file(&home.path("ws/moat.yaml"), "network: {policy: audit}\n");
    let out = home.moat(&["run", "--dry-run", "--trust", ws]);
    assert!(out.stderr.contains("shadow"), "{}", out.stderr);
    assert_ne!(out.code, Some(0));
}
