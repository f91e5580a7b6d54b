//! Snapshots of the CLI's human output (`list`, `status`, `doctor`,
//! `trace`, and errors with their hints) on fabricated runs, reviewed with
//! `cargo insta review`. Run ids, timestamps, the temporary home's path,
//! pids, local ports and sizes on disk are filtered out so that a snapshot changes only
//! when the output's shape or wording does. No runtime is reachable
//! (`DOCKER_HOST` names a missing socket), so no Docker is needed.

use moat_core::RunState;
use moat_core::paths::run_files;
use serde_json::{Value, json};

use super::support::{Outcome, TestHome, write_file};

const NO_DOCKER: &str = "unix:///nonexistent/docker.sock";

/// `moat ARGS` against `home` with no runtime reachable.
fn moat(home: &TestHome, args: &[&str]) -> Outcome {
    let mut command = home.command(args);
    command.env("DOCKER_HOST", NO_DOCKER);
    Outcome::from(command.output().unwrap())
}

/// Exit code, stdout and stderr as one text to snapshot.
fn shown(out: &Outcome) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.code.map_or_else(|| "signal".to_string(), |c| c.to_string()),
        out.stdout,
        out.stderr
    )
}

/// Filters for what differs from one run of the tests to the next.
fn filters(home: &TestHome) -> Vec<(String, String)> {
    let root = home.root.display().to_string().replace('.', r"\.");
    vec![
        (root, "[ROOT]".into()),
        (r"run_[0-9a-f]{12}".into(), "run_XXXXXXXXXXXX".into()),
        (
            r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?".into(),
            "[TIME]".into(),
        ),
        // A trace's clock time, in whatever zone it is shown (same width).
        (r"(?m)^\d{2}:\d{2}:\d{2}\b".into(), "HH:MM:SS".into()),
        (r"(127\.0\.0\.1|localhost|\[::1\]):\d+".into(), "$1:[PORT]".into()),
        (r"\b\d+(\.\d+)? (B|KiB|MiB|GiB)\b".into(), "[SIZE]".into()),
        (r"\bpid \d+".into(), "pid [PID]".into()),
    ]
}

macro_rules! snapshot {
    ($home:expr, $name:expr, $out:expr) => {{
        let filters = filters($home);
        let filters: Vec<(&str, &str)> = filters.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        insta::with_settings!({ filters => filters, prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!($name, shown(&$out));
        });
    }};
}

/// A live run, one that failed, one that exited and one whose record is
/// unreadable; ages chosen so that they read the same for a while.
fn fabricated_runs(home: &TestHome) {
    home.run(Some("old"), RunState::Exited, 3 * 86_400);
    home.run(None, RunState::Failed, 2 * 3600 + 60);
    home.run(Some("web"), RunState::Running, 5 * 60 + 10);
    let broken = home.run(None, RunState::Exited, 10);
    std::fs::write(home.store.run_dir(&broken.id).join(run_files::METADATA), "{").unwrap();
}

#[test]
fn list() {
    let home = TestHome::new();
    fabricated_runs(&home);
    snapshot!(&home, "list", moat(&home, &["list"]));
}

#[test]
fn list_of_an_empty_home() {
    let home = TestHome::new();
    snapshot!(&home, "list_empty", moat(&home, &["list"]));
}

#[test]
fn status_without_a_runtime() {
    let home = TestHome::new();
    fabricated_runs(&home);
    snapshot!(&home, "status_without_a_runtime", moat(&home, &["status"]));
}

#[test]
fn doctor_without_a_runtime() {
    let home = TestHome::new();
    snapshot!(&home, "doctor_without_a_runtime", moat(&home, &["doctor"]));
}

fn record(method: &str, url: &str, status: u16, decision: &str, rule: &str) -> Value {
    json!({
        "time": "2025-06-01T10:00:00.000000Z", "request_id": "00000001", "method": method, "url": url,
        "host": "api.example.com", "status": status, "duration_ms": 12.5, "bytes_out": 0, "bytes_in": 2048,
        "decision": decision, "rule": rule,
    })
}

#[test]
fn trace() {
    let home = TestHome::new();
    let meta = home.run(Some("traced"), RunState::Exited, 60);
    let lines = [
        record("GET", "https://api.example.com/user", 200, "allow", "api.example.com"),
        record("POST", "https://api.example.com/items", 201, "allow", "api.example.com"),
        record(
            "DELETE",
            "https://api.example.com/items/3",
            403,
            "deny",
            "api.example.com: no allow rule matches",
        ),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    write_file(
        &home.home_path(&format!("runs/{}/{}", meta.id, run_files::NETWORK)),
        &text,
    );
    snapshot!(&home, "trace", moat(&home, &["trace", "traced"]));
    snapshot!(&home, "trace_blocked", moat(&home, &["trace", "traced", "--blocked"]));
}

#[test]
fn errors_carry_hints() {
    let home = TestHome::new();
    snapshot!(&home, "error_no_runs_yet", moat(&home, &["logs"]));
    home.run(Some("done"), RunState::Exited, 60);
    snapshot!(&home, "error_no_such_run", moat(&home, &["logs", "run_abcdef123456"]));
    snapshot!(&home, "error_stop_an_exited_run", moat(&home, &["stop", "done"]));
    snapshot!(&home, "error_invalid_policy", moat(&home, &["run", "--policy", "lax"]));
    snapshot!(&home, "error_grant_without_provider", moat(&home, &["grant"]));
}
