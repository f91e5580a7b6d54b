//! `moat run --dry-run`: configuration loading, merging and errors, with
//! nothing created.

use serde_json::Value;

use super::support::{TestHome, write_file};

fn dry_run(home: &TestHome, workspace: &str, extra: &[&str]) -> super::support::Outcome {
    let ws = home.path(workspace);
    let mut args = vec!["run", "--dry-run", "--json", ws.to_str().unwrap()];
    args.extend_from_slice(extra);
    home.moat(&args)
}

#[test]
fn prints_the_resolved_run_with_flags_over_the_file() {
    let home = TestHome::new();
    write_file(
        &home.path("ws/moat.yaml"),
        "name: web\ngrants: [github]\nenv: {MODE: dev}\nmounts: ['./data:/data:ro']\n\
         command: [npm, start]\nnetwork: {policy: strict, rules: [api.example.com]}\n\
         container: {memory: 512}\n",
    );
    std::fs::create_dir_all(home.path("ws/data")).unwrap();
    write_file(&home.home_path("config.yaml"), "base_image: from-global:1\n");
    let out = dry_run(&home, "ws", &["-n", "api", "-g", "npm", "-e", "MODE=prod", "--", "ls"]);
    out.success();
    assert_eq!(out.stderr, "dry run: nothing was created\n");
    let run: Value = serde_json::from_str(&out.stdout).unwrap();
    let ws = std::fs::canonicalize(home.path("ws")).unwrap();
    assert_eq!(run["workspace"], ws.to_str().unwrap());
    assert_eq!(run["config_file"], ws.join("moat.yaml").to_str().unwrap());
    assert_eq!(run["name"], "api");
    assert_eq!(run["image"], "from-global:1");
    assert_eq!(run["image_source"], "global_config");
    assert_eq!(run["runtime"], Value::Null);
    assert_eq!(run["runtime_source"], "auto");
    assert_eq!(run["command"], serde_json::json!(["ls"]));
    assert_eq!(run["grants"], serde_json::json!(["github", "npm"]));
    assert_eq!(run["env"]["MODE"], "prod");
    assert_eq!(run["mounts"][0]["target"], "/workspace");
    assert_eq!(run["mounts"][1]["source"], ws.join("data").to_str().unwrap());
    assert_eq!(run["mounts"][1]["read_only"], true);
    assert_eq!(run["network"]["policy"], "strict");
    assert_eq!(run["container"]["memory"], 512);
    assert!(!home.home_path("runs").exists(), "a dry run must create nothing");
}

#[test]
fn environment_defaults_sit_between_the_file_and_config_yaml() {
    let home = TestHome::new();
    std::fs::create_dir_all(home.path("ws")).unwrap();
    write_file(&home.home_path("config.yaml"), "base_image: g\nruntime: apple\n");
    let out = home
        .command(&["run", "--dry-run", "--json", home.path("ws").to_str().unwrap()])
        .env("MOAT_BASE_IMAGE", "e")
        .env("MOAT_RUNTIME", "docker")
        .output()
        .unwrap();
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&run["image"], &run["image_source"]),
        (&"e".into(), &"environment".into())
    );
    assert_eq!(
        (&run["runtime"], &run["runtime_source"]),
        (&"docker".into(), &"environment".into())
    );
}

#[test]
fn defaults_without_any_file() {
    let home = TestHome::new();
    std::fs::create_dir_all(home.path("empty")).unwrap();
    let out = dry_run(&home, "empty", &[]);
    let run: Value = serde_json::from_str(&out.success().stdout).unwrap();
    assert_eq!(run["image"], "debian:bookworm-slim");
    assert_eq!(run["image_source"], "default");
    assert_eq!(run["config_file"], Value::Null);
    assert_eq!(run["command"], serde_json::json!([]));
    assert_eq!(run["network"]["policy"], "permissive");
}

#[test]
fn human_output_is_yaml() {
    let home = TestHome::new();
    std::fs::create_dir_all(home.path("ws")).unwrap();
    let out = home.moat(&["run", "--dry-run", home.path("ws").to_str().unwrap()]);
    out.success();
    assert!(out.stdout.contains("image: debian:bookworm-slim\n"), "{}", out.stdout);
}

#[test]
fn config_errors_name_the_file_field_and_line() {
    let home = TestHome::new();
    let file = home.path("ws/moat.yaml");
    write_file(&file, "mounts:\n  - ./a:/a\n  - source: b\n    target: rel\n");
    let out = dry_run(&home, "ws", &[]);
    out.failure(1);
    let file = std::fs::canonicalize(&file).unwrap();
    assert_eq!(
        out.stderr,
        format!(
            "error: {}: mounts[1].target: must be absolute, got \"rel\" (line 4)\n",
            file.display()
        )
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn every_cross_field_problem_gets_its_own_error_line() {
    let home = TestHome::new();
    let file = home.path("ws/moat.yaml");
    write_file(&file, "env: {A: x}\nsecrets: {A: env://A}\nservices: {redis: {}}\n");
    let out = dry_run(&home, "ws", &[]);
    out.failure(1);
    let file = std::fs::canonicalize(&file).unwrap();
    let f = file.display();
    assert_eq!(
        out.stderr,
        format!(
            "error: {f}: secrets.A: also set in env; use one or the other\n\
             error: {f}: services.redis: \"redis\" is not declared in dependencies\n"
        )
    );
}

#[test]
fn unknown_keys_warn_and_the_run_still_resolves() {
    let home = TestHome::new();
    write_file(&home.path("ws/moat.yaml"), "netwrok: {policy: strict}\n");
    let out = dry_run(&home, "ws", &[]);
    out.success();
    let file = std::fs::canonicalize(home.path("ws/moat.yaml")).unwrap();
    assert!(
        out.stderr
            .starts_with(&format!("warning: {}: netwrok: unknown key; ignored\n", file.display())),
        "{}",
        out.stderr
    );
}

#[test]
fn a_malformed_global_config_is_an_error() {
    let home = TestHome::new();
    std::fs::create_dir_all(home.path("ws")).unwrap();
    write_file(&home.home_path("config.yaml"), "idle_timeout: soon\n");
    let out = dry_run(&home, "ws", &[]);
    out.failure(1);
    assert!(
        out.stderr.ends_with(
            "config.yaml: idle_timeout: invalid duration \"soon\": expected a number and a unit (ms, s, m, h), like \"30s\" (line 1)\n"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn a_missing_workspace_is_an_error() {
    let home = TestHome::new();
    let out = dry_run(&home, "nope", &[]);
    out.failure(1);
    assert!(out.stderr.starts_with("error: workspace "), "{}", out.stderr);
    assert!(out.stderr.contains("No such file or directory"), "{}", out.stderr);
}

/// Keys this version cannot act on are never silently dropped: `moat run`
/// refuses (before anything is created) and `--dry-run` says it would.
#[test]
fn keys_not_supported_yet_are_refused_not_ignored() {
    let home = TestHome::new();
    write_file(&home.path("ws/moat.yaml"), "agent: claude\n");
    let ws = home.path("ws");
    let out = home.moat(&["run", ws.to_str().unwrap(), "--", "true"]);
    out.failure(1);
    assert!(
        out.stderr
            .starts_with("error: this version of moat cannot act on agent yet; refusing to run without it\n"),
        "{}",
        out.stderr
    );
    assert!(!home.home_path("runs").exists(), "nothing may be created");
    let out = home.moat(&["run", "--rebuild", ws.to_str().unwrap(), "--dry-run"]);
    out.success();
    assert!(out.stderr.contains("agent: not supported yet"), "{}", out.stderr);
}

/// `dependencies:` that cannot become an image fail before the daemon is
/// asked for anything: unknown names with their close matches, versions
/// moat cannot install, shell metacharacters; `--rebuild` with nothing to
/// rebuild is refused.
#[test]
fn bad_dependencies_fail_before_anything_is_made() {
    let home = TestHome::new();
    let ws = home.path("ws");
    let cases = [
        (
            "[pyhton@3]",
            r#"error: dependencies: unknown dependency "pyhton" (did you mean python?)"#,
        ),
        (
            "[python@3.12]",
            "error: dependencies: python@3.12 cannot be satisfied: moat installs python 3.11.2",
        ),
        (
            "[gemini-cli]",
            "error: dependencies: node@20 cannot be satisfied: moat installs node 18.19.0 (needed by gemini-cli)",
        ),
        (
            "['pip:x;id']",
            r#"error: dependencies: dependency "pip:x;id": "x;id" is not a pip package name"#,
        ),
    ];
    for (deps, expected) in cases {
        write_file(&home.path("ws/moat.yaml"), &format!("dependencies: {deps}\n"));
        let out = home.moat(&["run", "--trust", ws.to_str().unwrap(), "--", "true"]);
        out.failure(1);
        assert!(out.stderr.starts_with(expected), "{deps}: {}", out.stderr);
        assert!(out.stderr.contains("docs/dependencies.md"), "{}", out.stderr);
    }
    std::fs::remove_file(home.path("ws/moat.yaml")).unwrap();
    let out = home.moat(&["run", "--rebuild", ws.to_str().unwrap(), "--", "true"]);
    out.failure(1);
    assert!(
        out.stderr.starts_with(
            "error: --rebuild rebuilds the image of `dependencies:` and build hooks, and this run has neither"
        ),
        "{}",
        out.stderr
    );
    assert!(!home.home_path("runs").exists(), "nothing may be created");
    assert!(!home.home_path("daemon").exists(), "no daemon may be started");
}

#[test]
fn terminal_flags_that_cannot_work_are_refused_before_anything_is_made() {
    let home = TestHome::new();
    std::fs::create_dir_all(home.path("ws")).unwrap();
    let ws = home.path("ws");
    let out = home.moat(&["run", "--footer", "-it", ws.to_str().unwrap(), "--", "bash"]);
    out.failure(1);
    assert!(
        out.stderr.starts_with("error: --footer is not available"),
        "{}",
        out.stderr
    );
    // The tests' stdin is not a terminal: -t cannot give the program one.
    let out = home.moat(&["run", "-t", ws.to_str().unwrap(), "--", "bash"]);
    out.failure(1);
    assert!(
        out.stderr.starts_with("error: -t needs a terminal on stdin"),
        "{}",
        out.stderr
    );
    assert!(!home.home_path("runs").exists(), "nothing may be created");
    write_file(&home.home_path("config.yaml"), "escape_key: alt-x\n");
    let out = home.moat(&["run", "-i", ws.to_str().unwrap(), "--dry-run"]);
    out.failure(1);
    assert!(out.stderr.contains("escape_key"), "{}", out.stderr);
}

#[test]
fn issue_18_a_host_pattern_the_proxy_would_refuse_is_refused_by_the_cli() {
    // `a.*.example.com` once passed `--allow-host` and failed the run later,
    // at the daemon; both now parse with the same `HostPattern`.
    let home = TestHome::new();
    std::fs::create_dir_all(home.path("ws")).unwrap();
    let out = dry_run(&home, "ws", &["--allow-host", "a.*.example.com"]);
    out.failure(2);
    assert!(
        out.stderr.contains("invalid host pattern \"a.*.example.com\""),
        "{}",
        out.stderr
    );
    write_file(
        &home.path("ws/moat.yaml"),
        "network:\n  rules:\n    - a.*.example.com\n",
    );
    let out = dry_run(&home, "ws", &[]);
    out.failure(1);
    assert!(
        out.stderr.contains("network.rules[0]: invalid host pattern"),
        "{}",
        out.stderr
    );
    std::fs::remove_file(home.path("ws/moat.yaml")).unwrap();
    dry_run(&home, "ws", &["--allow-host", "*.example.com:8443"]).success();
}
