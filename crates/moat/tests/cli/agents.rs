//! `moat agents` and `moat <agent>` without a runtime: what an agent's run
//! resolves to (its dependency, grant, hosts and staged files, which hold
//! the placeholder and never the credential), and the refusals that come
//! before anything is built or started.

use super::support::{TestHome, write_file};

/// The credential granted on the host.
const TOKEN: &str = "fake-openai-credential-for-tests-3b9d";

fn grant_openai(home: &TestHome) {
    let out = home
        .command(&["grant", "openai"])
        .env("OPENAI_API_KEY", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn workspace(home: &TestHome) -> String {
    let ws = home.path("ws");
    std::fs::create_dir_all(&ws).unwrap();
    ws.to_str().unwrap().to_string()
}

#[test]
fn agents_lists_every_agent_and_the_grant_a_run_would_use() {
    let home = TestHome::new();
    let out = home.moat(&["agents"]);
    out.success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("AGENT"), "{}", out.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("claude   claude   claude-code  claude, anthropic  no "))
    );
    grant_openai(&home);
    let json: serde_json::Value = serde_json::from_str(&home.moat(&["agents", "--json"]).stdout).unwrap();
    let codex = json.as_array().unwrap().iter().find(|a| a["name"] == "codex").unwrap();
    assert_eq!(codex["stored_grant"], "openai");
    assert_eq!(codex["dependency"], "codex");
}

#[test]
fn an_agent_run_adds_its_dependency_grant_hosts_and_placeholder_files() {
    let home = TestHome::new();
    let ws = workspace(&home);
    grant_openai(&home);
    let out = home.moat(&[
        "codex",
        &ws,
        "-p",
        "fix the tests",
        "--policy",
        "strict",
        "--dry-run",
        "--json",
    ]);
    out.success();
    let run: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(run["agent"], "codex");
    assert_eq!(run["dependencies"], serde_json::json!(["codex"]));
    assert_eq!(run["grants"], serde_json::json!(["openai"]));
    assert_eq!(
        run["command"],
        serde_json::json!(["codex", "exec", "--skip-git-repo-check", "fix the tests"])
    );
    assert_eq!(run["interactive"], false, "-p answers and exits");
    assert!(run["network"]["rules"].to_string().contains("api.openai.com"), "{run}");
    let files = run["home_files"].as_array().unwrap();
    assert_eq!(files[0]["path"], ".codex/auth.json");
    let auth: serde_json::Value = serde_json::from_str(files[0]["contents"].as_str().unwrap()).unwrap();
    assert!(
        auth["OPENAI_API_KEY"]
            .as_str()
            .unwrap()
            .starts_with("moat-placeholder-openai")
    );
    assert!(
        !out.stdout.contains(TOKEN),
        "the credential reached the run: {}",
        out.stdout
    );

    let interactive = home.moat(&["codex", &ws, "--dry-run", "--json", "--", "--model", "o4-mini"]);
    let run: serde_json::Value = serde_json::from_str(&interactive.success().stdout).unwrap();
    assert_eq!(run["command"], serde_json::json!(["codex", "--model", "o4-mini"]));
    assert_eq!(run["interactive"], true);
}

#[test]
fn a_missing_grant_or_an_uninstallable_agent_is_refused_before_anything_starts() {
    let home = TestHome::new();
    let ws = workspace(&home);
    let out = home.moat(&["claude", &ws, "-p", "hi"]);
    out.failure(1);
    assert_eq!(
        out.stderr,
        "error: claude needs a credential: none of its grants (claude, anthropic) is stored; nothing was started\n\
         hint: run `moat grant claude` or `moat grant anthropic` first\n"
    );
    // Gemini's CLI needs Node.js 20: refused before the grant is even looked for.
    let out = home.moat(&["gemini", &ws, "-p", "hi"]);
    out.failure(1);
    assert!(
        out.stderr.starts_with(
            "error: dependencies: node@20 cannot be satisfied: moat installs node 18.19.0 (needed by gemini-cli)"
        ),
        "{}",
        out.stderr
    );
    write_file(&home.path("ws/moat.yaml"), "agent: clade\n");
    let out = home.moat(&["run", "--trust", &ws]);
    out.failure(1);
    assert!(
        out.stderr.contains("error: unknown agent \"clade\"\nhint:"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: moat runs claude, codex, gemini"),
        "{}",
        out.stderr
    );
    assert!(!home.home_path("runs").exists(), "nothing may be created");
    assert!(!home.home_path("daemon").exists(), "no daemon may be started");
}

/// `moat join` refuses before it reaches any daemon: an unknown agent, a
/// run that ended, and an agent none of whose grants is stored.
#[test]
fn join_refuses_an_unknown_agent_a_finished_run_and_a_missing_grant_first() {
    use moat_core::RunState;
    let home = TestHome::new();
    let done = home.run(Some("done"), RunState::Exited, 60);
    let live = home.run(Some("live"), RunState::Running, 30);

    let unknown = home.moat(&["join", "live", "gpt-9", "--yes"]);
    unknown.failure(1);
    assert!(unknown.stderr.contains("unknown agent \"gpt-9\""), "{}", unknown.stderr);

    let ended = home.moat(&["join", "done", "codex", "--yes"]);
    ended.failure(1);
    assert!(
        ended
            .stderr
            .contains(&format!("run {} already exited; join needs a live run", done.id)),
        "{}",
        ended.stderr
    );

    let no_grant = home.moat(&["join", "live", "codex", "--yes"]);
    no_grant.failure(1);
    assert!(
        no_grant.stderr.contains("none of its grants (openai) is stored"),
        "{}",
        no_grant.stderr
    );
    assert!(no_grant.stderr.contains("`moat grant openai`"), "{}", no_grant.stderr);
    assert!(
        !home.path("home/daemon/daemon.sock").exists(),
        "a refused join started a daemon for {}",
        live.id
    );
}
