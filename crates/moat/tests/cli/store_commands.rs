//! Commands that read or change the run store directly: list, logs, destroy,
//! and run addressing.

use std::time::Duration;

use moat_core::RunState;
use moat_core::logs::Stream;
use moat_core::paths::run_files;

use super::support::{TestHome, redact_ids};

#[test]
fn list_prints_runs_newest_first_including_failed_and_unreadable_ones() {
    let home = TestHome::new();
    let old = home.run(Some("old"), RunState::Exited, 3 * 86_400);
    let failed = home.run(None, RunState::Failed, 7200);
    let live = home.run(Some("web"), RunState::Running, 30);
    let broken = home.run(None, RunState::Exited, 10);
    std::fs::write(home.store.run_dir(&broken.id).join(run_files::METADATA), "{").unwrap();

    let out = home.moat(&["list"]);
    out.success();
    let table = redact_ids(&out.stdout, &[&live.id, &failed.id, &old.id, &broken.id]);
    assert_eq!(
        table,
        "\
NAME  RUN ID            RUNTIME  STATE       EXIT  AGE  WORKSPACE
web   run_000000000000  docker   running     -     30s  /srv/project
-     run_000000000001  docker   failed      -     2h   /srv/project
old   run_000000000002  docker   exited      3     3d   /srv/project
-     run_000000000003  -        unreadable  -     -    -
"
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn list_json_is_stable_snake_case() {
    let home = TestHome::new();
    let first = home.run(Some("a"), RunState::Exited, 60);
    let second = home.run(None, RunState::Failed, 5);
    let out = home.moat(&["list", "--json"]);
    out.success();
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], second.id.as_str());
    assert_eq!(rows[0]["state"], "failed");
    assert_eq!(rows[0]["failure"], "image not found");
    assert_eq!(rows[0]["name"], serde_json::Value::Null);
    assert_eq!(rows[1]["id"], first.id.as_str());
    assert_eq!(rows[1]["exit_code"], 3);
    let mut keys: Vec<&str> = rows[1].as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "endpoints",
            "error",
            "exit_code",
            "exited_at",
            "failure",
            "id",
            "image",
            "name",
            "runtime",
            "started_at",
            "state",
            "workspace"
        ]
    );
}

#[test]
fn list_shows_recent_and_live_runs_unless_all() {
    let home = TestHome::new();
    let live = home.run(Some("still-going"), RunState::Running, 100_000);
    for age in 0..25 {
        home.run(None, RunState::Exited, age);
    }
    let out = home.moat(&["list"]);
    out.success();
    assert_eq!(out.stdout.lines().count(), 1 + 20 + 1);
    assert!(out.stdout.contains(live.id.as_str()));
    assert_eq!(
        out.stderr,
        "5 older runs not shown; `moat list --all` shows every run\n"
    );
    let all = home.moat(&["list", "--all"]);
    assert_eq!(all.success().stdout.lines().count(), 1 + 26);
}

#[test]
fn list_of_an_empty_home_has_only_the_header() {
    let home = TestHome::new();
    let out = home.moat(&["list"]);
    assert_eq!(
        out.success().stdout,
        "NAME  RUN ID  RUNTIME  STATE  EXIT  AGE  WORKSPACE\n"
    );
    assert_eq!(home.moat(&["list", "--json"]).stdout, "[]\n");
}

#[test]
fn logs_splits_streams_and_n_is_the_last_lines() {
    let home = TestHome::new();
    let run = home.run(None, RunState::Exited, 5);
    home.append_logs(
        &run.id,
        &[
            (Stream::Stdout, "one"),
            (Stream::Stderr, "two"),
            (Stream::Stdout, "three"),
            (Stream::Stdout, "four"),
        ],
    );
    let all = home.moat(&["logs"]);
    all.success();
    assert_eq!(all.stdout, "one\nthree\nfour\n");
    assert_eq!(all.stderr, "two\n");

    let last = home.moat(&["logs", "-n", "2"]);
    assert_eq!(last.success().stdout, "three\nfour\n");
    assert_eq!(last.stderr, "");

    let json = home.moat(&["logs", "-n", "3", "--json"]);
    let lines: Vec<serde_json::Value> = json
        .success()
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        (&lines[0]["stream"], &lines[0]["line"]),
        (&"stderr".into(), &"two".into())
    );

    let stamped = home.moat(&["logs", "-n", "1", "--timestamps"]);
    let (ts, line) = stamped.success().stdout.trim_end().split_once(' ').unwrap();
    assert_eq!(line, "four");
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
}

#[test]
fn logs_skips_and_reports_malformed_lines() {
    let home = TestHome::new();
    let run = home.run(None, RunState::Exited, 5);
    home.append_logs(&run.id, &[(Stream::Stdout, "good")]);
    let mut text = std::fs::read_to_string(home.logs_path(&run.id)).unwrap();
    text.push_str("not a record\n");
    std::fs::write(home.logs_path(&run.id), text).unwrap();
    let out = home.moat(&["logs"]);
    assert_eq!(out.success().stdout, "good\n");
    assert!(
        out.stderr.starts_with("warning: skipped 1 malformed lines in "),
        "{}",
        out.stderr
    );
}

#[test]
fn logs_follow_prints_appended_lines_and_exits_when_the_run_ends() {
    let home = TestHome::new();
    let run = home.run(None, RunState::Running, 1);
    home.append_logs(&run.id, &[(Stream::Stdout, "before")]);
    let child = home
        .command(&["logs", "-f", run.id.as_str()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(150));
        home.append_logs(&run.id, &[(Stream::Stdout, &format!("during {i}"))]);
    }
    home.append_logs(&run.id, &[(Stream::Stderr, "last words")]);
    home.set_state(&run.id, RunState::Exited);
    let started = std::time::Instant::now();
    let out = super::support::Outcome::from(child.wait_with_output().unwrap());
    assert!(started.elapsed() < Duration::from_secs(5));
    out.success();
    assert_eq!(out.stdout, "before\nduring 0\nduring 1\nduring 2\n");
    assert_eq!(out.stderr, "last words\n");
}

#[test]
fn logs_follow_with_n_starts_from_the_last_lines() {
    let home = TestHome::new();
    let run = home.run(None, RunState::Exited, 1);
    home.append_logs(&run.id, &[(Stream::Stdout, "a"), (Stream::Stdout, "b")]);
    let out = home.moat(&["logs", "-f", "-n", "1"]);
    assert_eq!(out.success().stdout, "b\n");
}

#[test]
fn runs_are_addressed_by_id_prefix_and_name() {
    let home = TestHome::new();
    let older = home.run(Some("twin"), RunState::Exited, 60);
    let newer = home.run(Some("twin"), RunState::Exited, 1);
    home.append_logs(&older.id, &[(Stream::Stdout, "from older")]);
    home.append_logs(&newer.id, &[(Stream::Stdout, "from newer")]);

    let by_prefix = home.moat(&["logs", &older.id.as_str()[..10]]);
    assert_eq!(by_prefix.success().stdout, "from older\n");
    let by_id = home.moat(&["logs", older.id.as_str()]);
    assert_eq!(by_id.success().stdout, "from older\n");
    // Reading picks the newest of an ambiguous name…
    assert_eq!(home.moat(&["logs", "twin"]).success().stdout, "from newer\n");
    // …changing something refuses and lists the matches.
    let out = home.moat(&["destroy", "twin"]);
    out.failure(1);
    assert_eq!(
        out.stderr,
        format!(
            "error: \"twin\" is ambiguous; it matches: {}, {}\nhint: use the run id (or a longer prefix)\n",
            newer.id, older.id
        )
    );
    let missing = home.moat(&["logs", "nope"]);
    missing.failure(1);
    assert_eq!(
        missing.stderr,
        "error: no run matches \"nope\"\nhint: `moat list --all` shows every run\n"
    );
}

#[test]
fn commands_on_an_empty_home_say_so() {
    let home = TestHome::new();
    let out = home.moat(&["logs"]);
    out.failure(1);
    assert_eq!(out.stderr, "error: no runs yet\nhint: start one with `moat run`\n");
}

#[test]
fn a_closed_stdout_pipe_is_not_an_error() {
    let home = TestHome::new();
    let run = home.run(None, RunState::Exited, 1);
    let lines: Vec<String> = (0..20_000).map(|i| format!("line {i}")).collect();
    let records: Vec<(Stream, &str)> = lines.iter().map(|l| (Stream::Stdout, l.as_str())).collect();
    home.append_logs(&run.id, &records);
    let mut child = home
        .command(&["logs"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = super::support::Outcome::from(child.wait_with_output().unwrap());
    out.success();
    assert_eq!(out.stderr, "");
}
