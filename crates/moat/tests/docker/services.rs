//! Services of `dependencies:` on the real engine: Redis and MariaDB
//! answer their clients; a PostgreSQL sidecar
//! built from Debian packages answers the run's `psql` through
//! `MOAT_POSTGRES_URL`, with a password no record of moat holds, and
//! nothing of it remains after the run; a persisted service keeps a row
//! from one run to the next, in a volume `moat system prune --volumes`
//! removes once the project no longer persists the service; in a strict
//! run the sidecar is on the run's internal network only and cannot reach
//! out; a service that cannot start fails the run
//! with its log lines and leaves nothing running; a daemon killed while
//! the sidecar starts leaks nothing once the next daemon has swept.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::support::{Home, IMAGE, objects_of, text};

/// The host's CA bundle, trusted by builds (as the image tests do).
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// A host outside reachable from a container on the default bridge.
const MIRROR: &str = "deb.debian.org";
/// Short reaper timings, so a missed orphan shows within a test.
const FAST_REAPER: &str = "reap_interval: 2s\nreap_second_sighting: 1s\n";

/// Held by each test: the first one builds the postgres image, the others
/// find it (concurrent daemons would each build it).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn services_home() -> Option<Home> {
    let home = Home::new()?;
    std::fs::create_dir_all(home.home()).unwrap();
    std::fs::write(
        home.home().join("config.yaml"),
        format!("build_ca_file: {HOST_CA_BUNDLE}\n{FAST_REAPER}"),
    )
    .unwrap();
    Some(home)
}

fn write_config(home: &Home, yaml: &str) {
    std::fs::write(home.root.join("ws/moat.yaml"), yaml).unwrap();
}

/// Runs `script` in the run's container; returns stdout, failing on error.
fn run_script(home: &Home, script: &str) -> String {
    let out = home.run(&["run", "--", "sh", "-c", script]);
    assert!(
        out.status.success(),
        "run failed:\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Volumes labelled with the run (none may outlive it).
fn volumes_of(run_id: &str) -> Vec<String> {
    let filter = format!("label=dev.moat.run-id={run_id}");
    let out = Command::new("docker")
        .args(["volume", "ls", "--filter", &filter, "--format", "{{.Name}}"])
        .output()
        .unwrap();
    text(&out.stdout).lines().map(String::from).collect()
}

fn run_ids(home: &Home) -> Vec<String> {
    home.runs()
        .iter()
        .filter_map(|run| run["id"].as_str().map(String::from))
        .collect()
}

fn assert_nothing_left(home: &Home, run_id: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut left = objects_of(run_id);
        left.extend(volumes_of(run_id));
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "objects of {run_id} remain: {left:?}");
        std::thread::sleep(Duration::from_millis(250));
        // Keeps a daemon up: it is what sweeps.
        let _ = home.run(&["doctor", "--json"]);
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn postgres_answers_the_run_and_nothing_of_it_remains() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(home) = services_home() else { return };
    write_config(&home, "dependencies: [postgres@15, psql]\n");
    let out = run_script(
        &home,
        "psql \"$MOAT_POSTGRES_URL\" -tAc 'select 1' && printf %s \"$MOAT_POSTGRES_PASSWORD\" > /workspace/pw \
         && echo \"$MOAT_POSTGRES_HOST $MOAT_POSTGRES_PORT $MOAT_POSTGRES_USER $MOAT_POSTGRES_DB\"",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["1", "postgres 5432 moat moat"], "{out}");
    let password = std::fs::read_to_string(home.root.join("ws/pw")).unwrap();
    assert_eq!(password.len(), 32, "{password:?}");
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
    let run_id = run_ids(&home).pop().unwrap();
    home.wait_cleaned(&run_id, Duration::from_secs(30));
    assert_nothing_left(&home, &run_id, Duration::from_secs(10));
    let leaked = files_containing(&home.home(), &password);
    assert!(leaked.is_empty(), "the run's password is in moat's files: {leaked:?}");
}

#[test]
fn redis_and_mariadb_answer_their_clients() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(home) = services_home() else { return };
    write_config(
        &home,
        "dependencies: [redis@7, redis-cli, mariadb@10.11, mariadb-client]\n",
    );
    let out = run_script(
        &home,
        "redis-cli --no-auth-warning -u \"$MOAT_REDIS_URL\" set k v >/dev/null && \
         redis-cli --no-auth-warning -u \"$MOAT_REDIS_URL\" get k && \
         mysql -h \"$MOAT_MARIADB_HOST\" -P \"$MOAT_MARIADB_PORT\" -u \"$MOAT_MARIADB_USER\" \
           -p\"$MOAT_MARIADB_PASSWORD\" -N -e 'select 41 + 1' \"$MOAT_MARIADB_DB\"",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["v", "42"], "{out}");
    let run_id = run_ids(&home).pop().unwrap();
    home.wait_cleaned(&run_id, Duration::from_secs(30));
    assert_nothing_left(&home, &run_id, Duration::from_secs(10));
}

#[test]
fn a_persisted_service_keeps_its_data_from_one_run_to_the_next() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(home) = services_home() else { return };
    write_config(
        &home,
        "dependencies: [postgres, psql]\nservices:\n  postgres:\n    persist: true\n    version: 15\n    memory: 256\n",
    );
    let volumes = ProjectVolumes(&home);
    run_script(
        &home,
        "psql \"$MOAT_POSTGRES_URL\" -q -v ON_ERROR_STOP=1 -c \"create table kept (v text); insert into kept values ('from run 1')\"",
    );
    // The second run stays up while the test looks at its sidecar.
    let out = home.run(&[
        "run",
        "-d",
        "--",
        "sh",
        "-c",
        "psql \"$MOAT_POSTGRES_URL\" -tAc 'select v from kept' > /workspace/row; \
         psql \"$MOAT_POSTGRES_URL\" -tAc 'show server_version' > /workspace/version; sleep 60",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let second = text(&out.stdout).trim().to_string();
    let row = wait_for_file(&home.root.join("ws/version"), Duration::from_secs(30));
    assert!(row.starts_with("15."), "version: 15 runs PostgreSQL 15: {row:?}");
    let row = std::fs::read_to_string(home.root.join("ws/row")).unwrap();
    assert_eq!(row.trim(), "from run 1");
    let memory = super::support::docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}}",
        &format!("{second}-postgres"),
    ]);
    assert_eq!(
        memory.trim(),
        (256 * 1024 * 1024).to_string(),
        "memory: 256 limits the sidecar"
    );
    let stopped = home.run(&["stop", &second]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    assert_eq!(volumes.list().len(), 1, "{:?}", volumes.list());
    for run_id in run_ids(&home) {
        home.wait_cleaned(&run_id, Duration::from_secs(30));
        assert_nothing_left(&home, &run_id, Duration::from_secs(10));
    }
    let pruned = home.run(&["system", "prune", "--volumes"]);
    assert!(pruned.status.success(), "{}", text(&pruned.stderr));
    assert_eq!(volumes.list().len(), 1, "the project still persists postgres: kept");
    write_config(&home, "dependencies: [postgres, psql]\n");
    let pruned = home.run(&["system", "prune", "--volumes"]);
    assert!(pruned.status.success(), "{}", text(&pruned.stderr));
    assert!(volumes.list().is_empty(), "no project uses it: removed");
}

/// The contents of `path` once it is written (non-empty).
fn wait_for_file(path: &Path, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(contents) = std::fs::read_to_string(path)
            && !contents.trim().is_empty()
        {
            return contents.trim().to_string();
        }
        assert!(Instant::now() < deadline, "{} was never written", path.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The persisted volumes of a home's project, removed when the test ends.
struct ProjectVolumes<'a>(&'a Home);

impl ProjectVolumes<'_> {
    fn list(&self) -> Vec<String> {
        let filter = format!("label=dev.moat.workspace={}", self.0.root.join("ws").display());
        let out = Command::new("docker")
            .args(["volume", "ls", "--filter", &filter, "--format", "{{.Name}}"])
            .output()
            .unwrap();
        text(&out.stdout).lines().map(String::from).collect()
    }
}

impl Drop for ProjectVolumes<'_> {
    fn drop(&mut self) {
        for volume in self.list() {
            let _ = Command::new("docker").args(["volume", "rm", "-f", &volume]).output();
        }
    }
}

#[test]
fn a_service_that_cannot_start_fails_the_run_with_its_log_lines() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(home) = services_home() else { return };
    // PostgreSQL reads its port from PGPORT and refuses this one.
    write_config(
        &home,
        "dependencies: [postgres@15]\nservices:\n  postgres:\n    env: {PGPORT: not-a-port}\n    ready_timeout: 20s\n",
    );
    let started = Instant::now();
    let out = home.run(&["run", "--", "true"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("service postgres did not become ready"),
        "the error names the service: {stderr}"
    );
    assert!(stderr.contains("port"), "the error shows the service's log: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "a service that exits fails the run without waiting out the bound"
    );
    let run_id = run_ids(&home).pop().unwrap();
    assert_nothing_left(&home, &run_id, Duration::from_secs(20));
}

#[test]
fn in_strict_policy_the_sidecar_is_on_the_run_network_only_and_has_no_route_out() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(home) = services_home() else { return };
    write_config(&home, "dependencies: [postgres@15, psql]\nnetwork: {policy: strict}\n");
    let out = home.run(&[
        "run",
        "-d",
        "--",
        "sh",
        "-c",
        "psql \"$MOAT_POSTGRES_URL\" -tAc 'select 1' > /workspace/answer 2>&1; sleep 60",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run_id = text(&out.stdout).trim().to_string();
    let answer = wait_for_file(&home.root.join("ws/answer"), Duration::from_secs(30));
    assert_eq!(answer, "1", "the run reaches its sidecar without DNS of its own");
    let sidecar = format!("{run_id}-postgres");
    let networks = super::support::docker(&[
        "inspect",
        "--format",
        "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
        &sidecar,
    ]);
    let network = home.metadata(&run_id)["network"].as_str().unwrap().to_string();
    assert_eq!(networks.trim(), network, "the sidecar is on the run's network only");
    let internal = super::support::docker(&["network", "inspect", "--format", "{{.Internal}}", &network]);
    assert_eq!(internal.trim(), "true");
    // Debian's mirror answers a container of the same image on the
    // default bridge (so the attempt can succeed), but not the sidecar.
    let mirror = super::support::docker(&["run", "--rm", "--entrypoint", "getent", IMAGE, "ahostsv4", MIRROR]);
    let address = mirror
        .split_whitespace()
        .next()
        .expect("the mirror's address")
        .to_string();
    let image = super::support::docker(&["inspect", "--format", "{{.Config.Image}}", &sidecar]);
    let connect = format!("exit(IO::Socket::INET->new(PeerAddr => '{address}:80', Timeout => 5) ? 0 : 1)");
    let control = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "perl",
            image.trim(),
            "-MIO::Socket::INET",
            "-e",
            &connect,
        ])
        .output()
        .unwrap();
    assert!(
        control.status.success(),
        "the mirror is unreachable even from the default bridge"
    );
    let attempt = Command::new("docker")
        .args(["exec", &sidecar, "perl", "-MIO::Socket::INET", "-e", &connect])
        .output()
        .unwrap();
    assert!(
        !attempt.status.success(),
        "the strict run's sidecar reached {address}:80"
    );
    let stopped = home.run(&["stop", &run_id]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    home.wait_cleaned(&run_id, Duration::from_secs(30));
    assert_nothing_left(&home, &run_id, Duration::from_secs(10));
}

#[test]
fn a_service_never_ready_fails_the_run_at_its_bound() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(home) = services_home() else { return };
    // The server runs, but the readiness client insists on TLS it lacks.
    write_config(
        &home,
        "dependencies: [postgres@15]\nservices:\n  postgres:\n    env: {PGSSLMODE: require}\n    ready_timeout: 3s\n",
    );
    let started = Instant::now();
    let out = home.run(&["run", "--", "true"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("service postgres did not become ready: it was not ready within 3s"),
        "{stderr}"
    );
    assert!(started.elapsed() >= Duration::from_secs(3));
    let run_id = run_ids(&home).pop().unwrap();
    assert_nothing_left(&home, &run_id, Duration::from_secs(20));
}

#[test]
fn a_daemon_killed_while_the_sidecar_starts_leaks_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(home) = services_home() else { return };
    write_config(&home, "dependencies: [postgres@15]\n");
    let faulted = home
        .moat()
        .env("MOAT_FAULT", format!("{}:kill", moat_api::fault::AFTER_SERVICE_CREATE))
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert_ne!(faulted.status.code(), Some(0), "{}", text(&faulted.stderr));
    let run_id = run_ids(&home).pop().unwrap();
    assert!(
        objects_of(&run_id).iter().any(|name| name.ends_with("-postgres")),
        "the sidecar was created before the kill: {:?}",
        objects_of(&run_id)
    );
    // The next command that needs the daemon starts one, which reconciles
    // and sweeps.
    let _ = home.run(&["doctor", "--json"]);
    assert_nothing_left(&home, &run_id, Duration::from_secs(30));
    let meta = home.wait_cleaned(&run_id, Duration::from_secs(20));
    assert_eq!(meta["state"], "failed", "{meta}");
}
