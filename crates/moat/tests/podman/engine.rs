//! The Podman service of this test binary: started once, on a socket in a
//! temporary directory, by a watchdog shell that stops it (and removes the
//! directory) once this process has exited; moat's base image loaded into
//! it from Docker's. Rootful: these tests run as root. Skipped (with a
//! message) only where `podman` is not installed; under `CI=true` that
//! fails (`support::docker_available`).
//!
//! The service gets a `containers.conf` whose default resource limits are
//! this process's own: Podman, unlike Docker, sets `nofile` and `nproc`
//! on every container (to 1048576 and more when root), which a host whose
//! hard limits are lower — a sandboxed CI machine — refuses with "error
//! setting rlimit … operation not permitted" before any moat code runs.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::docker::support::IMAGE;

/// How long the service may take to answer after its start.
const SERVICE_START: Duration = Duration::from_secs(30);

/// The process limit of the tests' containers: enough for any test, and
/// below what a host allows a root service to grant.
const CONTAINER_NPROC: u64 = 4096;

/// `unix://…/podman.sock` of the running service, or why there is none.
pub fn docker_host() -> Result<Option<String>, String> {
    static SERVICE: OnceLock<Result<String, String>> = OnceLock::new();
    SERVICE.get_or_init(start).clone().map(Some)
}

fn start() -> Result<String, String> {
    if !Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Err("podman is not installed (scripts/setup.sh installs Debian's)".into());
    }
    if !nix_is_root() {
        return Err("the Podman suite runs rootful Podman and needs root".into());
    }
    let dir = tempfile::Builder::new()
        .prefix("moat-podman-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dir = dir.keep();
    let socket = dir.join("podman.sock");
    let conf = dir.join("containers.conf");
    std::fs::write(&conf, containers_conf()).map_err(|e| e.to_string())?;
    spawn_watched_service(&dir, &socket, &conf)?;
    let host = format!("unix://{}", socket.display());
    wait_until_answering(&host)?;
    load_base_image()?;
    Ok(host)
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Default limits the host lets the service grant: this process's hard
/// `nofile`, and [`CONTAINER_NPROC`] processes.
fn containers_conf() -> String {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let nofile = (limits.lines())
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|hard| hard.parse::<u64>().ok())
        .unwrap_or(1024);
    format!(
        "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={CONTAINER_NPROC}:{CONTAINER_NPROC}\"]\n"
    )
}

/// Starts `podman system service` on `socket` with `conf`.
fn spawn_watched_service(dir: &Path, socket: &Path, conf: &Path) -> Result<(), String> {
    let conf = format!("CONTAINERS_CONF={}", conf.display());
    let service = format!("unix://{}", socket.display());
    spawn_watched(
        dir,
        &["env", &conf, "podman", "system", "service", "--time=0", &service],
    )
}

/// Runs `command` under a shell that waits for this process to exit,
/// then stops the command and removes `dir`.
fn spawn_watched(dir: &Path, command: &[&str]) -> Result<(), String> {
    let script = r#"dir=$1; watched=$2; shift 2
"$@" >"$dir/service.log" 2>&1 &
service=$!
while kill -0 "$watched" 2>/dev/null; do sleep 1; done
kill "$service"; wait "$service"; rm -rf "$dir""#;
    Command::new("sh")
        .args(["-c", script, "podman-service"])
        .arg(dir)
        .arg(std::process::id().to_string())
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("starting the Podman service: {e}"))
}

/// The unprivileged user the rootless service runs as (created if missing;
/// Debian's `useradd` gives it subordinate ids for `uidmap`).
pub const ROOTLESS_USER: &str = "moat-rootless";

/// A rootless Podman service of [`ROOTLESS_USER`] on a socket in a
/// temporary directory (stopped when this process exits), once.
pub fn rootless_docker_host() -> Result<String, String> {
    static SERVICE: OnceLock<Result<String, String>> = OnceLock::new();
    SERVICE.get_or_init(start_rootless).clone()
}

fn start_rootless() -> Result<String, String> {
    docker_host()?;
    let exists = Command::new("id")
        .arg(ROOTLESS_USER)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        let made = Command::new("useradd").args(["-m", ROOTLESS_USER]).status();
        if !made.is_ok_and(|s| s.success()) {
            return Err(format!("cannot create the user {ROOTLESS_USER} for rootless Podman"));
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("moat-podman-rootless-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dir = dir.keep();
    let runtime_dir = dir.join("run");
    std::fs::create_dir_all(&runtime_dir).map_err(|e| e.to_string())?;
    let owned = Command::new("chown").args(["-R", ROOTLESS_USER]).arg(&dir).status();
    if !owned.is_ok_and(|s| s.success()) {
        return Err(format!("cannot hand {} to {ROOTLESS_USER}", dir.display()));
    }
    let host = format!("unix://{}", dir.join("podman.sock").display());
    let service = format!(
        "XDG_RUNTIME_DIR={} exec podman system service --time=0 {host}",
        runtime_dir.display()
    );
    spawn_watched(&dir, &["su", ROOTLESS_USER, "-s", "/bin/sh", "-c", &service])?;
    wait_until_answering(&host)?;
    Ok(host)
}

fn wait_until_answering(host: &str) -> Result<(), String> {
    let deadline = Instant::now() + SERVICE_START;
    loop {
        let answered = Command::new("docker")
            .env("DOCKER_HOST", host)
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .is_ok_and(|o| o.status.success());
        if answered {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the Podman service at {host} did not answer within {SERVICE_START:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Loads moat's base image from Docker's store, once (Podman keeps it).
fn load_base_image() -> Result<(), String> {
    let present = Command::new("podman").args(["image", "exists", IMAGE]).status();
    if present.is_ok_and(|s| s.success()) {
        return Ok(());
    }
    let loaded = Command::new("sh")
        .args(["-c", "docker save \"$1\" | podman load", "load", IMAGE])
        .output()
        .map_err(|e| e.to_string())?;
    if !loaded.status.success() {
        return Err(format!(
            "loading {IMAGE} into Podman: {}",
            String::from_utf8_lossy(&loaded.stderr)
        ));
    }
    Ok(())
}
