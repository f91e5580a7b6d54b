//! End to end through the real `moat` binary, its daemon and the real
//! Docker engine: output streams and exit codes, a CLI or daemon killed
//! mid-run, concurrent spawns, idle shutdown, bad input. In CI (`CI=true`)
//! a missing Docker engine fails these tests; elsewhere they are skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "moat-base:bookworm";

/// A temporary MOAT_HOME and workspace, with the daemon stopped and every
/// runtime object of its runs checked gone on drop.
struct Home {
    root: PathBuf,
}

impl Home {
    fn new() -> Option<Self> {
        if !docker_available() {
            return None;
        }
        let root = std::env::temp_dir().join(format!("moat-e2e-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(root.join("ws")).unwrap();
        Some(Home { root })
    }

    fn moat(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_moat"));
        command
            .env("MOAT_HOME", self.root.join("home"))
            .env("MOAT_BASE_IMAGE", IMAGE)
            .env_remove("MOAT_FAULT")
            .env("NO_COLOR", "1")
            .current_dir(self.root.join("ws"))
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.moat().args(args).output().unwrap()
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.moat()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    fn daemon_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.home().join("daemon/daemon.json")).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["pid"].as_u64().map(|p| p as u32)
    }

    fn proxy_port(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.home().join("daemon/daemon.json")).ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok()?["proxy_port"].as_u64()
    }

    fn runs(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["list", "--json"]);
        assert!(
            out.status.success(),
            "moat list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn only_run(&self) -> serde_json::Value {
        let runs = self.runs();
        assert_eq!(runs.len(), 1, "{runs:?}");
        runs[0].clone()
    }

    fn metadata(&self, run_id: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(self.home().join("runs").join(run_id).join("metadata.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Waits until the run's metadata says it was cleaned up.
    fn wait_cleaned(&self, run_id: &str, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let meta = self.metadata(run_id);
            if meta.get("cleaned_at").is_some() {
                return meta;
            }
            assert!(Instant::now() < deadline, "run {run_id} was not cleaned up: {meta}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for_run(&self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(run) = self.runs().first()
                && run["state"] == "running"
            {
                return run["id"].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "no run became running");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = self.moat().args(["daemon", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

fn docker_available() -> bool {
    let ok = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("Docker (with the {IMAGE} image from scripts/setup.sh) is required in CI");
        }
        eprintln!("skipping: no Docker engine with {IMAGE} (run scripts/setup.sh)");
    }
    ok
}

/// Runtime objects (containers, networks) carrying this run's label.
fn objects_of(run_id: &str) -> Vec<String> {
    let filter = format!("label=dev.moat.run-id={run_id}");
    let mut names = Vec::new();
    for args in [
        vec!["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
        vec!["network", "ls", "--filter", &filter, "--format", "{{.Name}}"],
    ] {
        let out = Command::new("docker").args(&args).output().unwrap();
        names.extend(String::from_utf8_lossy(&out.stdout).lines().map(String::from));
    }
    names
}

fn kill9(pid: u32) {
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_streams_output_to_the_right_streams_and_exits_with_the_containers_code() {
    let Some(home) = Home::new() else { return };
    let out = home.run(&["run", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(
        text(&out.stderr).lines().any(|l| l == "err"),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stdout).contains("run_"),
        "moat's own messages must not reach stdout"
    );

    let run = home.only_run();
    let run_id = run["id"].as_str().unwrap();
    let meta = home.wait_cleaned(run_id, Duration::from_secs(20));
    assert_eq!(meta["exit_code"], 7);
    let logs = std::fs::read_to_string(home.home().join("runs").join(run_id).join("logs.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = logs.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let tagged: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r["stream"].as_str().unwrap(), r["line"].as_str().unwrap()))
        .collect();
    assert!(
        tagged.contains(&("stdout", "out")) && tagged.contains(&("stderr", "err")),
        "{tagged:?}"
    );
    assert_eq!(objects_of(run_id), Vec::<String>::new());
}

#[test]
fn a_killed_cli_leaves_the_run_to_the_daemon_and_attach_shows_its_output() {
    let Some(home) = Home::new() else { return };
    let mut cli = home.spawn(&["run", "--", "sh", "-c", "echo started; sleep 5; echo finishing; exit 4"]);
    let run_id = home.wait_for_run(Duration::from_secs(30));
    kill9(cli.id());
    let _ = cli.wait();

    let attach = home.run(&["attach", &run_id]);
    assert_eq!(attach.status.code(), Some(4), "attach stderr: {}", text(&attach.stderr));
    let shown = text(&attach.stdout);
    assert!(
        shown.contains("started") && shown.contains("finishing"),
        "attach showed: {shown}"
    );

    let meta = home.wait_cleaned(&run_id, Duration::from_secs(20));
    assert_eq!(meta["exit_code"], 4);
    assert_eq!(meta["state"], "exited");
    assert_eq!(objects_of(&run_id), Vec::<String>::new());
}

#[test]
fn a_killed_daemon_is_replaced_and_the_new_one_readopts_the_run() {
    let Some(home) = Home::new() else { return };
    let detached = home.run(&["run", "-d", "--", "sh", "-c", "sleep 4; echo done; exit 5"]);
    assert!(detached.status.success(), "{}", text(&detached.stderr));
    let run_id = text(&detached.stdout).trim().to_string();
    assert!(run_id.starts_with("run_"), "-d prints the run id: {run_id:?}");
    let first_pid = home.daemon_pid().unwrap();
    let port = home.proxy_port();
    kill9(first_pid);

    // The next command that needs the daemon brings a new one up, which
    // re-adopts the run: attaching shows its end and exit code.
    let attach = home.run(&["attach", &run_id]);
    assert_eq!(attach.status.code(), Some(5), "{}", text(&attach.stderr));
    let second_pid = home.daemon_pid().unwrap();
    assert_ne!(first_pid, second_pid);
    assert_eq!(home.proxy_port(), port, "the proxy port must survive a daemon restart");

    let meta = home.wait_cleaned(&run_id, Duration::from_secs(30));
    assert_eq!(meta["exit_code"], 5);
    let logs = std::fs::read_to_string(home.home().join("runs").join(&run_id).join("logs.jsonl")).unwrap();
    assert!(logs.contains("\"done\""), "{logs}");
    assert_eq!(objects_of(&run_id), Vec::<String>::new());
}

#[test]
fn two_runs_started_together_spawn_exactly_one_daemon() {
    let Some(home) = Home::new() else { return };
    let a = home.spawn(&["run", "--", "true"]);
    let b = home.spawn(&["run", "--", "true"]);
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let log = std::fs::read_to_string(home.home().join("daemon/daemon.log")).unwrap();
    assert_eq!(log.matches("daemon listening").count(), 1, "{log}");
}

#[test]
fn the_daemon_exits_after_the_idle_timeout() {
    let Some(home) = Home::new() else { return };
    std::fs::create_dir_all(home.home()).unwrap();
    std::fs::write(home.home().join("config.yaml"), "idle_timeout: 2s\n").unwrap();
    let out = home.run(&["run", "--", "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pid = home.daemon_pid().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "the daemon did not exit when idle");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!home.home().join("daemon/daemon.sock").exists());
    assert!(!home.home().join("daemon/daemon.json").exists());
}

#[test]
fn bad_input_is_one_clear_line_with_a_hint_and_leaves_nothing() {
    let Some(home) = Home::new() else { return };
    let missing = home.run(&["run", "/nonexistent/workspace", "--", "true"]);
    assert_eq!(missing.status.code(), Some(1));
    let err = text(&missing.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("/nonexistent/workspace"),
        "{err}"
    );

    let unknown = home.run(&["run", "--image", "no-such-image:1", "--", "true"]);
    assert_eq!(unknown.status.code(), Some(1));
    let err = text(&unknown.stderr);
    assert!(err.contains("no-such-image:1") && err.contains("hint:"), "{err}");
    let run = home.only_run();
    assert_eq!(run["state"], "failed");
    assert_eq!(objects_of(run["id"].as_str().unwrap()), Vec::<String>::new());
    home.run(&["daemon", "stop"]);

    let down = home
        .moat()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
    let err = text(&down.stderr);
    assert!(err.contains("docker") && err.contains("hint:"), "{err}");
    home.run(&["daemon", "stop"]);

    // A daemon directory that cannot be used (here: a file in its place).
    let broken = Home::new().unwrap();
    std::fs::create_dir_all(broken.home()).unwrap();
    std::fs::write(broken.home().join("daemon"), b"not a directory").unwrap();
    let out = broken.run(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("daemon") && err.contains("hint:"), "{err}");
    assert!(broken.runs().is_empty() || broken.only_run()["state"] == "failed");
}
