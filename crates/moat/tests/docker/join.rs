//! `moat join RUN AGENT` on the real engine, against the local fake of
//! Anthropic's API: a strict run started with no grant (its image built
//! with a stand-in `claude`, through the test-only registry overlay) gets
//! the claude grant only once `--yes` approves it; the joined agent, which
//! runs as the run's user next to the run's own command, reaches the API
//! with the real credential injected by the proxy while the container,
//! `docker inspect`, the trace and the audit log hold placeholders only; the
//! grant is in the run's record and audit log and survives a daemon
//! restart. The refusals (no grant stored, no agent command in the image,
//! no approval, a finished run) change nothing.

use std::path::PathBuf;
use std::process::Output;

use base64::Engine as _;

use super::fake_anthropic::{ANSWER, FakeAnthropic};
use super::images::{BuiltImages, HOST_CA_BUNDLE, ONE_BUILDER, OWNER, build_logs, tag_of};
use super::support::{Home, container_running, docker, text};

/// The credential granted on the host; looked for wherever it must not be.
const TOKEN: &str = "moat-test-join-credential-5b8e02d7c4";
/// The fake API listens on a loopback address: a strict run reaches it only
/// through a rule naming it as `host:port`.
const ALLOW_FAKE: &str = "api.anthropic.com:443";

/// Stands in for Claude Code with curl (the base image has no Python):
/// reads the OAuth token from the credentials file moat staged, prints
/// what it holds, sends the prompt as the real CLI would and prints the
/// answer; exits with `--exit-code`.
const STAND_IN_CLAUDE: &str = r#"#!/bin/sh
prompt="" code=0
while [ $# -gt 0 ]; do
    case "$1" in
        -p) prompt="$2"; shift 2 ;;
        --exit-code) code="$2"; shift 2 ;;
        *) shift ;;
    esac
done
token=$(sed -n 's/.*"accessToken":"\([^"]*\)".*/\1/p' "$HOME/.claude/.credentials.json")
echo "uid=$(id -u)"
echo "token-in-container=$token"
echo "env-in-container=${CLAUDE_CODE_OAUTH_TOKEN:-}"
echo "autoupdater=${DISABLE_AUTOUPDATER:-}"
echo "first-agent-file=$(cat "$HOME/.claude.json" 2>/dev/null)"
env | sed 's/^/env:/'
body="{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"$prompt\"}]}"
answer=$(curl -sS --max-time 20 "https://api.anthropic.com/v1/messages?beta=true" \
    -H "Authorization: Bearer $token" -H "anthropic-version: 2023-06-01" \
    -H "anthropic-beta: claude-code-20250219" -H "content-type: application/json" -d "$body" 2>&1)
echo "answer=$answer"
exit "$code"
"#;

/// What the run's own command leaves in the run user's home before the
/// agent joins: the joined agent's staged `.claude.json` must not replace it.
const FIRST_AGENT_FILE: &str = "{\"first\":true}";

fn overlay_yaml() -> String {
    let script = base64::engine::general_purpose::STANDARD.encode(STAND_IN_CLAUDE);
    format!(
        "dependencies:\n  claude-code:\n    layer: tool\n    pass_version: true\n    \
         summary: a stand-in for Claude Code (tests only)\n    run:\n      \
         - echo {script} | base64 -d > /usr/local/bin/claude && chmod 755 /usr/local/bin/claude\n"
    )
}

struct JoinHome {
    home: Home,
    fake: FakeAnthropic,
    overlay: PathBuf,
}

impl JoinHome {
    fn new() -> Option<JoinHome> {
        let home = Home::new()?;
        std::fs::create_dir_all(home.home()).unwrap();
        let fake = FakeAnthropic::start(&home.root);
        let config = format!("build_ca_file: {HOST_CA_BUNDLE}\n{}", fake.config());
        std::fs::write(home.home().join("config.yaml"), config).unwrap();
        std::os::unix::fs::chown(home.root.join("ws"), Some(OWNER), Some(OWNER)).unwrap();
        let overlay = home.root.join("overlay.yaml");
        std::fs::write(&overlay, overlay_yaml()).unwrap();
        Some(JoinHome { home, fake, overlay })
    }

    fn moat(&self, args: &[&str]) -> Output {
        self.home
            .moat()
            .env("MOAT_REGISTRY_OVERLAY", &self.overlay)
            .args(args)
            .output()
            .unwrap()
    }

    /// `moat ARGS`, which must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.moat(args);
        assert!(
            out.status.success(),
            "moat {args:?}: {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn run_file(&self, run: &str, name: &str) -> String {
        std::fs::read_to_string(self.home.home().join("runs").join(run).join(name)).unwrap_or_default()
    }
}

/// `name=value` printed by the stand-in.
fn value_of<'a>(stdout: &'a str, name: &str) -> Option<&'a str> {
    stdout.lines().find_map(|l| l.strip_prefix(&format!("{name}=")))
}

/// Waits until the run's own command (after moat's init) has written its
/// file into the run user's home.
fn wait_for_first_agent(container: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let written = docker(&[
            "exec",
            container,
            "sh",
            "-c",
            "test -s /home/moat/.claude.json && echo yes; true",
        ]);
        if written.trim() == "yes" {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the run's command never started");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Waits until the run's proxy answers for it again: a host its strict
/// policy does not allow is refused (403) rather than the token unknown
/// (407) or the port closed.
fn wait_for_proxy(container: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let probe = "curl -s -o /dev/null -w '%{http_connect}' --max-time 5 https://refused.example/; true";
        if docker(&["exec", container, "sh", "-c", probe]).trim() == "403" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the re-adopted run never reached the proxy"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// `moat join` refused with exit code 1 and `expected` in its message.
fn assert_refused(out: &Output, expected: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}{}", text(&out.stdout));
    assert!(stderr.contains(expected), "{stderr}");
}

#[test]
fn a_joined_agent_gets_the_approved_grant_injected_and_the_container_holds_only_placeholders() {
    let Some(join) = JoinHome::new() else { return };
    let _one = ONE_BUILDER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);

    // A run whose image has no claude, and no grant stored yet.
    let plain = join.ok(&["run", "-d", "-n", "plain", "--", "sleep", "300"]);
    let plain = plain.trim();
    let no_grant = join.moat(&["join", "plain", "claude", "--yes"]);
    assert_refused(&no_grant, "none of its grants (claude, anthropic) is stored");
    assert!(text(&no_grant.stderr).contains("`moat grant claude`"));
    assert_refused(
        &join.moat(&["join", "plain", "gpt-9", "--yes"]),
        "unknown agent \"gpt-9\"",
    );
    join.home.run_with_input(&["grant", "claude"], &format!("{TOKEN}\n"));
    let no_command = join.moat(&["join", "plain", "claude", "--yes"]);
    assert_refused(&no_command, "image has no claude command");
    assert!(text(&no_command.stderr).contains("dependencies: [claude-code]"));
    assert!(
        join.home.metadata(plain).get("grants").is_none(),
        "a refused join added a grant"
    );
    join.ok(&["stop", plain]);
    join.home.wait_cleaned(plain, std::time::Duration::from_secs(30));
    assert_refused(
        &join.moat(&["join", "plain", "claude", "--yes"]),
        "join needs a live run",
    );

    // The coder: strict, with the agent's dependency, and no grant.
    std::fs::write(join.home.root.join("ws/moat.yaml"), "dependencies: [claude-code]\n").unwrap();
    let script =
        format!("mkdir -p \"$HOME\" && printf '%s' '{FIRST_AGENT_FILE}' > \"$HOME/.claude.json\" && exec sleep 600");
    let coder = join.ok(&[
        "run",
        "-d",
        "--trust",
        "-n",
        "coder",
        "--policy",
        "strict",
        "--allow-host",
        ALLOW_FAKE,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let _built = BuiltImages(build_logs(&join.home).iter().map(|l| tag_of(l)).collect());
    let coder = coder.trim().to_string();
    assert!(container_running(&coder), "{coder} is not running");
    wait_for_first_agent(&coder);

    // No terminal and no --yes: refused, nothing added, nothing sent.
    let unapproved = join.moat(&["join", "coder", "claude", "-p", "hi"]);
    assert_refused(&unapproved, "pass --yes");
    assert!(text(&unapproved.stderr).contains("nothing was added"));
    assert!(join.home.metadata(&coder).get("grants").is_none());
    assert!(!join.run_file(&coder, "audit.jsonl").contains("grants_added"));
    assert!(join.fake.seen().is_empty());

    let joined = join.moat(&["join", "coder", "claude", "--yes", "-p", "hi"]);
    let stdout = text(&joined.stdout);
    assert_eq!(joined.status.code(), Some(0), "{stdout}\n{}", text(&joined.stderr));
    assert!(
        value_of(&stdout, "answer").unwrap_or_default().contains(ANSWER),
        "{stdout}"
    );
    let placeholder = value_of(&stdout, "token-in-container").unwrap();
    assert!(placeholder.starts_with("moat-placeholder-claude"), "{stdout}");
    assert_eq!(value_of(&stdout, "env-in-container"), Some(placeholder), "{stdout}");
    assert_eq!(value_of(&stdout, "autoupdater"), Some("1"), "{stdout}");
    assert_eq!(value_of(&stdout, "uid"), Some(OWNER.to_string().as_str()), "{stdout}");
    assert_eq!(
        value_of(&stdout, "first-agent-file"),
        Some(FIRST_AGENT_FILE),
        "the joined agent's staging replaced the first agent's file"
    );
    assert!(
        text(&joined.stderr).contains("grant claude"),
        "{}",
        text(&joined.stderr)
    );
    let seen = join.fake.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // Recorded: the run's metadata and its audit log (names, no value).
    let meta = join.home.metadata(&coder);
    assert_eq!(meta["grants"], serde_json::json!(["claude"]), "{meta}");
    assert_eq!(meta["added_hosts"], serde_json::json!(["api.anthropic.com"]), "{meta}");
    let audit = join.run_file(&coder, "audit.jsonl");
    let added = audit
        .lines()
        .find(|l| l.contains("\"grants_added\""))
        .unwrap_or_else(|| panic!("{audit}"));
    assert!(
        added.contains("\"claude\"") && added.contains("api.anthropic.com"),
        "{added}"
    );
    let verified = join.moat(&["audit", &coder]);
    assert!(verified.status.success(), "{}", text(&verified.stderr));

    // A second join needs no approval (the run has the grant) and exits
    // with the agent's code; the run's own command goes on.
    let failed = join.moat(&["join", "coder", "claude", "-p", "again", "--", "--exit-code", "7"]);
    assert_eq!(failed.status.code(), Some(7), "{}", text(&failed.stderr));
    assert!(container_running(&coder), "the first agent stopped");

    // A daemon that died re-adopts the run with the added grant. (Killed:
    // `moat daemon restart` removes daemon.json, and with it the proxy
    // port the run's container was given.)
    super::support::kill9(join.home.daemon_pid().unwrap());
    join.ok(&["exec", "coder", "--", "true"]);
    wait_for_proxy(&coder);
    let readopted = join.moat(&["join", "coder", "claude", "-p", "after restart"]);
    let after = text(&readopted.stdout);
    assert_eq!(readopted.status.code(), Some(0), "{}", text(&readopted.stderr));
    assert!(
        value_of(&after, "answer").unwrap_or_default().contains(ANSWER),
        "{after}"
    );
    let seen = join.fake.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| s.header("authorization") == Some(format!("Bearer {TOKEN}").as_str())),
        "{seen:?}"
    );

    // The credential is nowhere the container or its records can show.
    let scan = docker(&[
        "exec",
        "-u",
        "0",
        &coder,
        "sh",
        "-c",
        &format!("grep -rlF '{TOKEN}' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null; true"),
    ]);
    assert!(scan.trim().is_empty(), "the credential is in {scan}");
    let environ = docker(&[
        "exec",
        "-u",
        "0",
        &coder,
        "sh",
        "-c",
        "(cat /proc/[0-9]*/environ 2>/dev/null; true) | tr '\\0' '\\n'",
    ]);
    assert!(
        environ.contains("HTTPS_PROXY="),
        "no process environment was read: {environ}"
    );
    assert!(!environ.contains(TOKEN), "a process's environment holds the credential");
    assert!(
        stdout
            .lines()
            .any(|l| l == format!("env:CLAUDE_CODE_OAUTH_TOKEN={placeholder}")),
        "the joined agent's environment: {stdout}"
    );
    assert!(!docker(&["inspect", &coder]).contains(TOKEN));
    for file in ["network.jsonl", "audit.jsonl", "metadata.json", "logs.jsonl"] {
        assert!(
            !join.run_file(&coder, file).contains(TOKEN),
            "{file} holds the credential"
        );
    }
    // The joined agent printed its whole environment: no credential there.
    for out in [&joined, &failed, &readopted] {
        assert!(!text(&out.stdout).contains(TOKEN) && !text(&out.stderr).contains(TOKEN));
    }
    join.ok(&["stop", &coder]);
}
