//! The reaper fails closed, end to end on the real engine: it removes what
//! only it can find, never a live run's objects, whatever goes wrong around
//! it (a corrupt registry, an unreachable or stopped daemon, a second
//! daemon), and run records are deleted only through the daemon once their
//! cleanup has finished.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use moat_core::MoatHome;

use super::support::{DockerLeftovers, Home, IMAGE, container_running, docker, fast_home, objects_of, text, unique};

fn start_detached(home: &Home, name: &str, script: &str) -> String {
    let out = home.run(&["run", "-d", "--name", name, "--", "sh", "-c", script]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// A run id no run of any home has.
fn unused_run_id() -> String {
    let tag = format!("{:x}{:x}", std::process::id(), unique() + 0xa000);
    format!("run_{:0>12}", &tag[tag.len().saturating_sub(12)..])
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The test that fails if the reaper is switched off: a network and a
/// stopped container labelled for a run whose directory was deleted are
/// invisible to the supervisor and to start-up reconciliation; only a sweep
/// finds them. A live run beside them keeps running.
#[test]
fn a_forced_sweep_removes_orphans_only_the_reaper_can_find_and_spares_a_live_run() {
    let Some(home) = fast_home() else { return };
    let live = start_detached(&home, "live", "sleep 120");
    let orphan = unused_run_id();
    let network = format!("moat-{orphan}");
    let label = MoatHome::new(home.home()).label();
    let labels = [
        "--label".to_string(),
        "dev.moat.managed=true".to_string(),
        "--label".to_string(),
        format!("dev.moat.run-id={orphan}"),
        "--label".to_string(),
        format!("dev.moat.home={label}"),
    ];
    let _leftovers = DockerLeftovers {
        containers: vec![orphan.clone()],
        networks: vec![network.clone()],
    };
    let mut create_network = vec!["network", "create"];
    create_network.extend(labels.iter().map(String::as_str));
    create_network.push(&network);
    docker(&create_network);
    let mut create_container = vec!["create", "--name", &orphan, "--network", &network];
    create_container.extend(labels.iter().map(String::as_str));
    create_container.extend([IMAGE, "true"]);
    docker(&create_container);

    let out = home.run(&["system", "prune", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains(&format!("removed container {orphan}")), "{report}");
    assert!(report.contains(&format!("removed network {network}")), "{report}");
    assert!(objects_of(&orphan).is_empty(), "{:?}", objects_of(&orphan));
    assert!(container_running(&live), "the live run was disturbed");
    home.run(&["stop", &live]);
}

/// The attack: `runs.json` is corrupted while three runs are live and the
/// daemon is killed. The next daemon cannot read its registry; it must
/// recover the runs from their directories, let them finish with their own
/// exit codes, and reap nothing meanwhile.
#[test]
fn a_corrupt_registry_loses_no_live_run_and_reaps_nothing() {
    let Some(home) = fast_home() else { return };
    let runs: Vec<(String, i64)> = (0..3)
        .map(|i| {
            let code = 3 + i;
            let id = start_detached(&home, &format!("r{i}"), &format!("sleep 8; exit {code}"));
            (id, code)
        })
        .collect();
    let pid = home.daemon_pid().expect("a daemon runs the runs");
    super::support::kill9(pid);
    std::fs::write(home.home().join("daemon/runs.json"), b"{\"version\": 1, \"runs\": [{").unwrap();

    let status = home.run(&["doctor", "--json"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    for (id, _) in &runs {
        assert!(container_running(id), "{id} was disturbed by the restart");
    }
    for (id, code) in &runs {
        let meta = home.wait_cleaned(id, Duration::from_secs(40));
        assert_eq!(meta["state"], "exited", "{meta}");
        assert_eq!(meta["exit_code"], *code, "{meta}");
    }
    let doctor = home.run(&["doctor", "--json"]);
    let doctor = text(&doctor.stdout);
    assert!(doctor.contains("sweep aborted, nothing removed"), "{doctor}");
    let aside = std::fs::read_dir(home.home().join("daemon"))
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("runs.json.unreadable-"));
    assert!(aside, "the unreadable runs.json is kept as evidence");
    // A restarted daemon trusts its registry again: its sweep (on drop)
    // reclaims the killed daemon's warm pool, which the paused reaper kept.
    let restart = home.run(&["daemon", "restart"]);
    assert!(restart.status.success(), "{}", text(&restart.stderr));
}

/// The attack: the daemon becomes unreachable (stopped with SIGSTOP, or
/// its socket removed) while a run is live, and the user cleans up. Every
/// path (replacing the daemon, or sweeping in-process when no daemon can
/// start) must spare the live run; with an unreadable registry the
/// in-process sweep refuses to act.
#[test]
fn clean_and_prune_with_an_unreachable_daemon_spare_a_live_run() {
    let Some(home) = fast_home() else { return };
    let live = start_detached(&home, "live", "sleep 120");

    let pid = home.daemon_pid().unwrap();
    Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap();
    let out = home.run(&["system", "prune", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        container_running(&live),
        "prune beside a stopped daemon removed the live run"
    );

    std::fs::remove_file(home.home().join("daemon/daemon.sock")).unwrap();
    let out = home.run(&["clean", "-f"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        container_running(&live),
        "clean without the daemon's socket removed the live run"
    );

    // No daemon can be started: `moatd sweep` runs on its own, with the
    // registry restored, under the daemon's lifetime lock.
    let pid = home.daemon_pid().unwrap();
    super::support::kill9(pid);
    wait_until("the killed daemon is gone", Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
    });
    // A daemon executable that cannot serve (`run` fails at once) but can
    // still sweep (`moatd sweep`).
    let cannot_serve = home.root.join("moatd-cannot-serve");
    std::fs::write(
        &cannot_serve,
        format!(
            "#!/bin/sh\n[ \"$1\" = run ] && exit 1\nexec {} \"$@\"\n",
            crate::moatd::moatd().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cannot_serve, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let no_daemon = |args: &[&str]| {
        home.moat()
            .env("MOAT_DAEMON_EXECUTABLE", &cannot_serve)
            .args(args)
            .output()
            .unwrap()
    };
    let out = no_daemon(&["system", "prune", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("sweeping in a process of its own"),
        "{}",
        text(&out.stderr)
    );
    assert!(container_running(&live), "the in-process sweep removed the live run");

    std::fs::write(home.home().join("daemon/runs.json"), b"not json").unwrap();
    let out = no_daemon(&["system", "prune", "--force"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not sweeping: the run registry cannot be read"),
        "{}",
        text(&out.stderr)
    );
    assert!(container_running(&live));

    // A working daemon again: it recovers the run from its directory.
    std::fs::remove_file(home.home().join("daemon/runs.json")).unwrap();
    let out = home.run(&["stop", &live]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    home.wait_cleaned(&live, Duration::from_secs(30));
}

/// Two daemons started at once for one MOAT_HOME, bypassing the spawn
/// lock: the second exits at once, saying why.
#[test]
fn a_second_daemon_for_the_same_home_exits_at_once() {
    let Some(home) = Home::new() else { return };
    let spawn = || {
        home.moat()
            .args(["daemon", "run"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = spawn();
    wait_until("the first daemon is up", Duration::from_secs(10), || {
        home.daemon_pid().is_some_and(|pid| pid == first.id())
    });
    let started = Instant::now();
    let second = spawn().wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "the second daemon lingered");
    assert_eq!(second.status.code(), Some(1), "{}", text(&second.stderr));
    let stderr = text(&second.stderr);
    assert!(
        stderr.contains(&format!(
            "another moat daemon (pid {}) holds this MOAT_HOME",
            first.id()
        )),
        "{stderr}"
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first daemon must keep running"
    );
    home.run(&["daemon", "stop"]);
    let _ = first.wait();
}

/// `moat destroy` right after `moat run` exits: refused while the run's
/// cleanup is pending (held open by a fault pause), then it succeeds and
/// nothing is left on the engine. A live run is refused; a record nobody
/// is creating and that cannot be read is deleted.
#[test]
fn destroy_waits_for_the_daemon_to_finish_cleanup() {
    let Some(home) = Home::new() else { return };
    let live = start_detached(&home, "live", "sleep 120");
    let refused = home.run(&["destroy", "live"]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        text(&refused.stderr),
        format!(
            "error: cannot destroy run {live}: it is running and supervised by the daemon\n\
             hint: stop it with `moat stop {live}` and retry once it has exited and been cleaned up\n"
        )
    );

    let out = home
        .moat()
        .env("MOAT_FAULT", "before-cleanup:pause")
        .args(["run", "--name", "quick", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let quick = home.runs().into_iter().find(|r| r["name"] == "quick").unwrap();
    let quick = quick["id"].as_str().unwrap().to_string();
    let early = home.run(&["destroy", &quick]);
    assert_eq!(early.status.code(), Some(1), "destroyed before its cleanup finished");
    assert!(
        text(&early.stderr).contains("cannot destroy run"),
        "{}",
        text(&early.stderr)
    );
    assert!(home.home().join("runs").join(&quick).exists());
    home.wait_cleaned(&quick, Duration::from_secs(20));
    let done = home.run(&["destroy", &quick]);
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert!(!home.home().join("runs").join(&quick).exists());
    assert!(objects_of(&quick).is_empty(), "{:?}", objects_of(&quick));

    let broken = unused_run_id();
    std::fs::create_dir_all(home.home().join("runs").join(&broken)).unwrap();
    let out = home.run(&["destroy", &broken]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!home.home().join("runs").join(&broken).exists());

    home.run(&["stop", &live]);
    home.wait_cleaned(&live, Duration::from_secs(30));
    let newest = home.run(&["destroy"]);
    assert!(newest.status.success(), "{}", text(&newest.stderr));
    assert_eq!(text(&newest.stdout).trim(), live, "no RUN means the most recent run");
}
