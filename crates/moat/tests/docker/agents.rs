//! Agents on the real engine, against a local fake of Anthropic's API
//! (`api.anthropic.com` resolved to it by the daemon's `resolve:`):
//!
//! * `moat claude -p` with Claude Code swapped, through the test-only
//!   registry overlay (`MOAT_REGISTRY_OVERLAY`, debug builds), for a
//!   stand-in `claude` that makes the request the real CLI makes with the
//!   OAuth token it finds in its staged credentials file;
//! * Anthropic's Python SDK streaming through the proxy with the
//!   `anthropic` grant, each server-sent event arriving without delay;
//! * `moat system prune --images`.

use std::path::PathBuf;
use std::process::{Command, Output};

use base64::Engine as _;

use super::fake_anthropic::{ANSWER, EVENT_SPACING, FakeAnthropic};
use super::images::{BuiltImages, HOST_CA_BUNDLE, ONE_BUILDER, OWNER, build_logs, tag_of};
use super::support::{Home, docker_exists, text, unique};

/// The credential granted on the host; the test looks for it wherever it
/// must not be.
const TOKEN: &str = "moat-test-anthropic-credential-7f3e91c2";
/// What `moat grant` is told to take the token from.
const GRANT_VARIABLES: [(&str, &str); 2] = [
    ("claude", "CLAUDE_CODE_OAUTH_TOKEN"),
    ("anthropic", "ANTHROPIC_API_KEY"),
];
/// The fake API listens on a loopback address: a run reaches it only
/// through a rule naming it exactly.
const ALLOW_FAKE: &str = "api.anthropic.com:443";

/// Stands in for Claude Code: reads the OAuth token from the credentials
/// file moat staged, sends the prompt the way the CLI does (Bearer token,
/// Claude Code's beta; the OAuth beta is the claude grant's to add), prints
/// what the container holds and the answer, and exits with `--exit-code`.
const STAND_IN_CLAUDE: &str = r#"#!/usr/bin/env python3
import json, os, sys, urllib.request
args, prompt, code = sys.argv[1:], None, 0
while args:
    arg = args.pop(0)
    if arg == "-p":
        prompt = args.pop(0)
    elif arg == "--exit-code":
        code = int(args.pop(0))
if prompt is None:
    sys.exit("stand-in claude: only -p is supported")
credentials = os.path.expanduser("~/.claude/.credentials.json")
token = json.load(open(credentials))["claudeAiOauth"]["accessToken"]
print("uid=%d" % os.getuid())
print("credentials-owner=%d" % os.stat(credentials).st_uid)
print("token-in-container=" + token)
print("env-in-container=" + os.environ.get("CLAUDE_CODE_OAUTH_TOKEN", ""))
body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 1024,
                   "messages": [{"role": "user", "content": prompt}]}).encode()
request = urllib.request.Request("https://api.anthropic.com/v1/messages?beta=true", data=body, headers={
    "Authorization": "Bearer " + token, "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219", "content-type": "application/json",
    "x-app": "cli", "user-agent": "claude-cli/stand-in"})
answer = json.load(urllib.request.urlopen(request, timeout=30))
print("answer=" + "".join(b["text"] for b in answer["content"] if b["type"] == "text"))
sys.exit(code)
"#;

/// A stand-in agent using Anthropic's SDK: streams a message twice (the
/// first warms the SDK's code paths, whose first use costs Python tens of
/// milliseconds), printing one JSON line per event of the second with its
/// arrival time.
const SDK_AGENT: &str = r#"import json, os, time
import anthropic
print("key-in-container=" + os.environ["ANTHROPIC_API_KEY"], flush=True)
client = anthropic.Anthropic()
for measured in (False, True):
    stream = client.messages.create(model="claude-sonnet-4-5", max_tokens=64, stream=True,
                                    messages=[{"role": "user", "content": "hi"}])
    for event in stream:
        if measured:
            print(json.dumps({"event": event.type, "at": time.time()}), flush=True)
"#;

/// The overlay that swaps Claude Code's install for the stand-in.
fn overlay_yaml() -> String {
    let script = base64::engine::general_purpose::STANDARD.encode(STAND_IN_CLAUDE);
    format!(
        "dependencies:\n  claude-code:\n    layer: tool\n    pass_version: true\n    \
         summary: a stand-in for Claude Code (tests only)\n    needs: [python]\n    run:\n      \
         - echo {script} | base64 -d > /usr/local/bin/claude && chmod 755 /usr/local/bin/claude\n"
    )
}

/// A home trusting the host's CA bundle for builds and the fake API's CA
/// upstream, with `api.anthropic.com` resolved to the fake; the workspace
/// belongs to [`OWNER`].
struct AgentHome {
    home: Home,
    fake: FakeAnthropic,
    overlay: PathBuf,
}

impl AgentHome {
    fn new() -> Option<AgentHome> {
        let home = Home::new()?;
        std::fs::create_dir_all(home.home()).unwrap();
        let fake = FakeAnthropic::start(&home.root);
        let config = format!("build_ca_file: {HOST_CA_BUNDLE}\n{}", fake.config());
        std::fs::write(home.home().join("config.yaml"), config).unwrap();
        std::os::unix::fs::chown(home.root.join("ws"), Some(OWNER), Some(OWNER)).unwrap();
        let overlay = home.root.join("overlay.yaml");
        std::fs::write(&overlay, overlay_yaml()).unwrap();
        Some(AgentHome { home, fake, overlay })
    }

    fn moat(&self, args: &[&str]) -> Output {
        self.home
            .moat()
            .env("MOAT_REGISTRY_OVERLAY", &self.overlay)
            .args(args)
            .output()
            .unwrap()
    }

    fn grant(&self, provider: &str) {
        let variable = GRANT_VARIABLES.iter().find(|(p, _)| *p == provider).unwrap().1;
        let out = self
            .home
            .moat()
            .env(variable, TOKEN)
            .args(["grant", provider])
            .output()
            .unwrap();
        assert!(out.status.success(), "grant {provider}: {}", text(&out.stderr));
    }
}

/// `name=value` printed by the stand-ins.
fn value_of<'a>(stdout: &'a str, name: &str) -> Option<&'a str> {
    stdout.lines().find_map(|l| l.strip_prefix(&format!("{name}=")))
}

#[test]
fn moat_claude_answers_with_the_granted_token_while_the_container_holds_only_placeholders() {
    let Some(agent) = AgentHome::new() else { return };
    let _one = ONE_BUILDER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);

    let refused = agent.moat(&["claude", "--trust", "-p", "hi"]);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("hint: run `moat grant claude` or `moat grant anthropic` first"),
        "{stderr}"
    );
    assert!(build_logs(&agent.home).is_empty(), "a build started without a grant");
    assert!(agent.home.runs().is_empty(), "a run was made without a grant");

    agent.grant("claude");
    let out = agent.moat(&["claude", "--trust", "--allow-host", ALLOW_FAKE, "-p", "hi"]);
    let _built = BuiltImages(build_logs(&agent.home).iter().map(|l| tag_of(l)).collect());
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert_eq!(value_of(&stdout, "answer"), Some(ANSWER), "{stdout}");

    let placeholder = value_of(&stdout, "token-in-container").unwrap();
    assert!(placeholder.starts_with("moat-placeholder-claude"), "{stdout}");
    assert_eq!(value_of(&stdout, "env-in-container"), Some(placeholder));
    assert!(!stdout.contains(TOKEN), "the container saw the credential: {stdout}");
    let uid = OWNER.to_string();
    assert_eq!(value_of(&stdout, "uid"), Some(uid.as_str()), "{stdout}");
    assert_eq!(value_of(&stdout, "credentials-owner"), Some(uid.as_str()), "{stdout}");

    let seen = agent.fake.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, "/v1/messages");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        seen[0].header("anthropic-beta"),
        Some("claude-code-20250219,oauth-2025-04-20"),
        "the claude grant adds the OAuth beta"
    );
    assert!(seen[0].header("x-api-key").is_none(), "{seen:?}");

    let failed = agent.moat(&[
        "claude",
        "--trust",
        "--allow-host",
        ALLOW_FAKE,
        "-p",
        "hi",
        "--",
        "--exit-code",
        "7",
    ]);
    assert_eq!(failed.status.code(), Some(7), "{}", text(&failed.stderr));
    assert_eq!(value_of(&text(&failed.stdout), "answer"), Some(ANSWER));

    // `agent: claude` in moat.yaml makes `moat run` the same run.
    std::fs::write(agent.home.root.join("ws/moat.yaml"), "agent: claude\n").unwrap();
    let from_file = agent.moat(&[
        "run",
        "--trust",
        "--allow-host",
        ALLOW_FAKE,
        "--",
        "claude",
        "-p",
        "again",
    ]);
    let stdout = text(&from_file.stdout);
    assert_eq!(from_file.status.code(), Some(0), "{}", text(&from_file.stderr));
    assert_eq!(value_of(&stdout, "token-in-container"), Some(placeholder), "{stdout}");
    assert_eq!(agent.fake.seen().len(), 3);
    assert_eq!(build_logs(&agent.home).len(), 1, "one image for every run of the agent");
}

#[test]
fn the_anthropic_sdk_streams_through_the_proxy_with_the_granted_key_and_no_added_delay() {
    let Some(agent) = AgentHome::new() else { return };
    let _one = ONE_BUILDER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    agent.grant("anthropic");
    let ws = agent.home.root.join("ws");
    std::fs::write(ws.join("agent.py"), SDK_AGENT).unwrap();
    std::fs::write(ws.join("moat.yaml"), "dependencies: [python@3, 'pip:anthropic']\n").unwrap();
    let out = agent.moat(&[
        "run",
        "--trust",
        "--grant",
        "anthropic",
        "--allow-host",
        ALLOW_FAKE,
        "--",
        "python",
        "/workspace/agent.py",
    ]);
    let _built = BuiltImages(build_logs(&agent.home).iter().map(|l| tag_of(l)).collect());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    let key = value_of(&stdout, "key-in-container").unwrap();
    assert!(key.starts_with("moat-placeholder-anthropic"), "{stdout}");
    assert!(!stdout.contains(TOKEN), "the container saw the credential: {stdout}");
    let seen = agent.fake.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|s| s.header("x-api-key") == Some(TOKEN)), "{seen:?}");

    let arrived: Vec<(String, f64)> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let event: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                event["event"].as_str().unwrap().to_string(),
                event["at"].as_f64().unwrap(),
            )
        })
        .collect();
    let sent = agent.fake.last_stream();
    let kinds = |events: Vec<&String>| events.into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(
        kinds(arrived.iter().map(|(k, _)| k).collect()),
        kinds(sent.iter().map(|e| &e.kind).collect()),
        "the events arrive in the order they were sent"
    );
    let delays: Vec<f64> = arrived.iter().zip(&sent).map(|((_, at), sent)| at - sent.at).collect();
    let worst = delays.iter().copied().fold(f64::MIN, f64::max);
    eprintln!(
        "measured: {} events {} ms apart; arrival after send: worst {:.1} ms, each {:?}",
        sent.len(),
        EVENT_SPACING.as_millis(),
        worst * 1000.0,
        delays.iter().map(|d| format!("{:.1}", d * 1000.0)).collect::<Vec<_>>()
    );
    assert!(sent.len() >= 8, "{sent:?}");
    for delay in &delays {
        assert!(
            (-0.005..0.020).contains(delay),
            "an event arrived {:.1} ms after it was sent",
            delay * 1000.0
        );
    }
}

/// An image of `/bin/sleep` and the libraries it needs, created on
/// 2020-01-01 (long unused), under each of `tags`.
fn load_old_image(tags: &[&str], dir: &std::path::Path) {
    let repo_tags: Vec<String> = tags.iter().map(|t| format!("\"{t}\"")).collect();
    let script = format!(
        "set -e; cd '{}'; \
         tar -chf layer.tar -C / bin/sleep lib/x86_64-linux-gnu/libc.so.6 lib64/ld-linux-x86-64.so.2; \
         diff=$(sha256sum layer.tar | cut -d' ' -f1); \
         printf '{{\"architecture\":\"amd64\",\"os\":\"linux\",\"created\":\"2020-01-01T00:00:00Z\",\"config\":{{}},\
         \"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"sha256:%s\"]}}}}' \"$diff\" > config.json; \
         printf '[{{\"Config\":\"config.json\",\"RepoTags\":[{}],\"Layers\":[\"layer.tar\"]}}]' > manifest.json; \
         tar -cf image.tar manifest.json config.json layer.tar; docker load -i image.tar",
        dir.display(),
        repo_tags.join(",")
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn prune_images_removes_an_old_unused_image_and_keeps_the_ones_runs_use() {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("skipping: the old image is made of this host's x86_64 binaries");
        return;
    }
    let Some(home) = Home::new() else { return };
    let id = format!("{:08x}{:08x}", std::process::id(), unique());
    let (unused, used) = (format!("moat/run:old{id}"), format!("moat/run:{id}"));
    let _images = BuiltImages(vec![unused.clone(), used.clone()]);
    load_old_image(&[&unused, &used], &home.root);

    let run = home.run(&["run", "-d", "--image", &used, "--", "/bin/sleep", "60"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let run_id = text(&run.stdout).trim().to_string();
    let dry = home.run(&["system", "prune", "--images", "--dry-run"]);
    assert!(
        text(&dry.stdout).contains(&format!("would remove {unused}")),
        "{}",
        text(&dry.stdout)
    );
    assert!(docker_exists("image", &unused), "a dry run removed {unused}");

    let pruned = home.run(&["system", "prune", "--images"]);
    let stdout = text(&pruned.stdout);
    assert!(pruned.status.success(), "{stdout}{}", text(&pruned.stderr));
    assert!(stdout.contains(&format!("removed {unused}")), "{stdout}");
    assert!(
        stdout.contains(&format!("kept {used} (a live run uses it)")),
        "{stdout}"
    );
    assert!(!docker_exists("image", &unused), "{unused} is still there");
    assert!(docker_exists("image", &used));

    // Once the run is over, its record still counts as a recent use.
    let stop = home.run(&["stop", &run_id]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    home.wait_cleaned(&run_id, std::time::Duration::from_secs(30));
    let again = home.run(&["system", "prune", "--images"]);
    let stdout = text(&again.stdout);
    assert!(stdout.contains(&format!("kept {used} (used ")), "{stdout}");
    assert!(docker_exists("image", &used));
}
