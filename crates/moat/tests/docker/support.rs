//! Shared by the Docker end-to-end tests: a temporary MOAT_HOME driving the
//! real `moat` binary, and Docker-side checks. In CI (`CI=true`) a missing
//! Docker engine fails the tests; elsewhere they are skipped. The engine is
//! the test binary's (`crate::engine`): Docker's, or a Podman service
//! answering the same API, which `moat` and the `docker` CLI both reach
//! through `DOCKER_HOST`.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const IMAGE: &str = "moat-base:bookworm";

/// A temporary MOAT_HOME and workspace, with the daemon stopped and every
/// runtime object of its runs checked gone on drop.
pub struct Home {
    pub root: PathBuf,
    /// Removes `root` when the home goes (after its runs and daemon).
    _scratch: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Option<Self> {
        if !docker_available() {
            return None;
        }
        let scratch = tempfile::Builder::new().prefix("moat-e2e-").tempdir().unwrap();
        let root = scratch.path().to_path_buf();
        std::fs::create_dir_all(root.join("ws")).unwrap();
        Some(Home {
            root,
            _scratch: scratch,
        })
    }

    pub fn moat(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_moat"));
        command
            .env("MOAT_HOME", self.root.join("home"))
            .env("MOAT_BASE_IMAGE", IMAGE)
            .env_remove("MOAT_FAULT")
            .env("NO_COLOR", "1")
            // Never touch the developer's real OS keyring.
            .env("MOAT_KEYRING_BACKEND", "file")
            .env("MOAT_DAEMON_EXECUTABLE", crate::moatd::moatd())
            .current_dir(self.root.join("ws"))
            .stdin(Stdio::null());
        if let Ok(Some(host)) = crate::engine::docker_host() {
            command.env("DOCKER_HOST", host);
        }
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.moat().args(args).output().unwrap()
    }

    /// `moat ARGS` with `input` on its standard input (a token for `moat
    /// grant`), asserted to succeed.
    pub fn run_with_input(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .moat()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "moat {args:?}: {}", text(&out.stderr));
        out
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.moat()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.home().join("daemon/daemon.json")).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["pid"].as_u64().map(|p| p as u32)
    }

    pub fn proxy_port(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.home().join("daemon/daemon.json")).ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok()?["proxy_port"].as_u64()
    }

    pub fn runs(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["list", "--json"]);
        assert!(
            out.status.success(),
            "moat list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn only_run(&self) -> serde_json::Value {
        let runs = self.runs();
        assert_eq!(runs.len(), 1, "{runs:?}");
        runs[0].clone()
    }

    pub fn metadata(&self, run_id: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(self.home().join("runs").join(run_id).join("metadata.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// [`objects_of`] the run, plus the network its record names (a warm
    /// pool network carries no run id) while it exists.
    pub fn objects_of_run(&self, run_id: &str) -> Vec<String> {
        let mut names = objects_of(run_id);
        let path = self.home().join("runs").join(run_id).join("metadata.json");
        let network = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|meta| meta["network"].as_str().map(String::from));
        if let Some(network) = network
            && !names.contains(&network)
            && docker_exists("network", &network)
        {
            names.push(network);
        }
        names
    }

    /// Waits until the run's metadata says it was cleaned up.
    pub fn wait_cleaned(&self, run_id: &str, within: Duration) -> serde_json::Value {
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

    pub fn wait_for_run(&self, within: Duration) -> String {
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
        // Nothing of this home may outlive it: no daemon of it runs again.
        let _ = self.moat().args(["system", "prune", "--force"]).output();
        let _ = self.moat().args(["daemon", "stop"]).output();
    }
}

/// Short reaper timings, so a misjudgement would strike within a test.
const FAST_REAPER: &str = "reap_interval: 2s\nreap_second_sighting: 1s\n";

/// A home whose daemon sweeps every 2 s and reaps on a second sighting 1 s
/// after the first.
pub fn fast_home() -> Option<Home> {
    let home = Home::new()?;
    std::fs::create_dir_all(home.home()).unwrap();
    std::fs::write(home.home().join("config.yaml"), FAST_REAPER).unwrap();
    Some(home)
}

/// Runs `docker ARGS`, which must succeed; returns its standard output.
pub fn docker(args: &[&str]) -> String {
    let out = docker_command().args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Whether the container `name` is running.
pub fn container_running(name: &str) -> bool {
    let out = docker_command()
        .args(["inspect", "-f", "{{.State.Running}}", name])
        .output()
        .unwrap();
    text(&out.stdout).trim() == "true"
}

/// Whether `docker KIND inspect NAME` finds the object.
pub fn docker_exists(kind: &str, name: &str) -> bool {
    docker_command()
        .args([kind, "inspect", name])
        .output()
        .unwrap()
        .status
        .success()
}

pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// The `docker` CLI, talking to the test binary's engine.
pub fn docker_command() -> Command {
    let mut command = Command::new("docker");
    if let Ok(Some(host)) = crate::engine::docker_host() {
        command.env("DOCKER_HOST", host);
    }
    command
}

pub fn docker_available() -> bool {
    if let Err(reason) = crate::engine::docker_host() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "the engine of these tests is required in CI: {reason}"
        );
        eprintln!("skipping: {reason}");
        return false;
    }
    let ok = docker_command()
        .args(["image", "inspect", IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "Docker (with the {IMAGE} image from scripts/setup.sh) is required in CI"
        );
        eprintln!("skipping: no Docker engine with {IMAGE} (run scripts/setup.sh)");
    }
    ok
}

/// Runtime objects (containers, networks) carrying this run's label.
pub fn objects_of(run_id: &str) -> Vec<String> {
    let filter = format!("label=dev.moat.run-id={run_id}");
    let mut names = Vec::new();
    for args in [
        vec!["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
        vec!["network", "ls", "--filter", &filter, "--format", "{{.Name}}"],
    ] {
        let out = docker_command().args(&args).output().unwrap();
        names.extend(String::from_utf8_lossy(&out.stdout).lines().map(String::from));
    }
    names
}

pub fn kill9(pid: u32) {
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Removes what a test created by hand, even when the test fails.
pub struct DockerLeftovers {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
}

impl Drop for DockerLeftovers {
    fn drop(&mut self) {
        for container in &self.containers {
            let _ = docker_command().args(["rm", "-f", container]).output();
        }
        for network in &self.networks {
            let _ = docker_command().args(["network", "rm", network]).output();
        }
    }
}

/// The host firewall rules `program` (`iptables`, `ip6tables`) holds for a
/// run (tagged `moat:<run id>`).
pub fn firewall_rules(program: &str, run_id: &str) -> Vec<String> {
    let out = Command::new(program).args(["-w", "5", "-S", "INPUT"]).output().unwrap();
    let tag = format!("moat:{run_id}");
    text(&out.stdout)
        .lines()
        .filter(|l| l.contains(&tag))
        .map(String::from)
        .collect()
}
