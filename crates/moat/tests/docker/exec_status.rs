//! `moat exec` and `moat status` end to end: an exec's exit code and
//! streams pass through, exec on a finished run is refused, and status
//! reports live runs, the daemon and stuck runs without starting a daemon.

use std::time::{Duration, Instant};

use super::support::{Home, text};

/// Starts `sleep 300` detached and waits until its record says running.
fn start_sleeping_run(home: &Home) -> String {
    let out = home.run(&["run", "-d", "--name", "sleeper", "--", "sleep", "300"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run_id = text(&out.stdout).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while home.metadata(&run_id)["state"] != "running" {
        assert!(
            Instant::now() < deadline,
            "{run_id} never ran: {}",
            home.metadata(&run_id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    run_id
}

fn status_json(home: &Home) -> serde_json::Value {
    let out = home.run(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn exec_passes_the_exit_code_and_both_streams_through() {
    let Some(home) = Home::new() else { return };
    let run_id = start_sleeping_run(&home);

    let out = home.run(&[
        "exec",
        "sleeper",
        "--",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "to-out\n");
    assert_eq!(text(&out.stderr), "to-err\n");

    // It ran inside the run's container, which sees the mounted workspace.
    std::fs::write(home.root.join("ws/marker.txt"), "from the host").unwrap();
    let out = home.run(&["exec", &run_id, "--", "cat", "/workspace/marker.txt"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from the host");

    let status = status_json(&home);
    assert_eq!(status["daemon"]["running"], true);
    let health = &status["daemon"]["health"];
    assert!(
        health["rss_bytes"].as_u64().is_some_and(|rss| rss > 1 << 20),
        "{status}"
    );
    assert!(
        health["open_files"].as_u64() < health["open_files_limit"].as_u64(),
        "{status}"
    );
    assert_eq!(status["runtimes"][0]["available"], true);
    let live = status["live_runs"].as_array().unwrap();
    assert_eq!(live.len(), 1, "{status}");
    assert_eq!(live[0]["id"], run_id.as_str());
    assert_eq!(live[0]["supervised"], true);
    assert!(status["disk"]["bytes"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["warnings"], serde_json::json!([]));

    let stop = home.run(&["stop", &run_id]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    home.wait_cleaned(&run_id, Duration::from_secs(30));

    let out = home.run(&["exec", &run_id, "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("error: run {run_id} already ")) && stderr.contains("exec needs a live run"),
        "{stderr}"
    );
    assert!(status_json(&home)["live_runs"].as_array().unwrap().is_empty());
}

#[test]
fn exec_with_a_tty_needs_a_terminal_on_stdin() {
    let Some(home) = Home::new() else { return };
    let run_id = start_sleeping_run(&home);
    let out = home.run(&["exec", "-it", &run_id, "--", "sh"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: -t needs a terminal on stdin"),
        "{}",
        text(&out.stderr)
    );
    // Without -t, stdin (here empty) is streamed and its EOF ends the command.
    let out = home.run(&["exec", "-i", &run_id, "--", "sh", "-c", "cat; echo after-eof"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "after-eof\n");
    assert!(home.run(&["stop", &run_id]).status.success());
}

#[test]
fn status_warns_about_a_live_run_without_a_daemon_and_does_not_start_one() {
    let Some(home) = Home::new() else { return };
    let run_id = start_sleeping_run(&home);
    let stop = home.run(&["daemon", "stop"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));

    let out = home.run(&["status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("daemon: not running"), "{report}");
    assert!(
        report.contains(&format!("warning: run {run_id} is running but no daemon is running")),
        "{report}"
    );
    let status = status_json(&home);
    assert_eq!(status["daemon"]["running"], false);
    assert_eq!(status["live_runs"][0]["id"], run_id.as_str());
    assert!(
        home.daemon_pid().is_none_or(|pid| !process_alive(pid)),
        "status started a daemon"
    );

    // Clean up: a new daemon adopts the run and stops it.
    let stop = home.run(&["stop", &run_id]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    home.wait_cleaned(&run_id, Duration::from_secs(30));
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
