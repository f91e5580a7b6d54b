//! Every `moat.yaml` key that is accepted shows its effect inside a real
//! container: limits read back from inside.

use super::support::{Home, text};

/// `container.ulimits`, `pids_limit`, `memory` and `cpus` are what the
/// workload sees: its shell's limits and its cgroup's files.
#[test]
fn container_limits_are_seen_inside_the_container() {
    let Some(home) = Home::new() else { return };
    std::fs::write(
        home.root.join("ws/moat.yaml"),
        "container:\n  memory: 256\n  cpus: 0.5\n  pids_limit: 77\n  ulimits:\n    \
         nofile: {soft: 1234, hard: 2345}\n    nproc: {soft: 300, hard: 400}\n",
    )
    .unwrap();
    // cgroup v2 files, or v1's where the engine still uses v1.
    let script = "cg() { cat /sys/fs/cgroup/$1 2>/dev/null || cat /sys/fs/cgroup/$2; }; \
                  echo nofile=$(ulimit -Sn)/$(ulimit -Hn); echo nproc=$(ulimit -Su)/$(ulimit -Hu); \
                  echo pids=$(cg pids.max pids/pids.max); \
                  echo memory=$(cg memory.max memory/memory.limit_in_bytes); \
                  echo cpu=$(cg cpu.max cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us 2>/dev/null)";
    let out = home.run(&["run", "--", "bash", "-c", script]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for expected in [
        "nofile=1234/2345",
        "nproc=300/400",
        "pids=77",
        &format!("memory={}", 256 << 20),
        "cpu=50000 100000",
    ] {
        assert!(
            stdout.lines().any(|l| l == expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

/// `hooks.pre_run` runs in /workspace as the run user before the command,
/// its output in the run's logs; a failing hook ends the run with its code
/// and says it was the hook, and the command never runs.
#[test]
fn the_pre_run_hook_runs_before_the_command_and_its_failure_is_named() {
    use std::os::unix::fs::MetadataExt;
    let Some(home) = Home::new() else { return };
    let ws = home.root.join("ws");
    let owner = std::fs::metadata(&ws).unwrap().uid();
    std::fs::write(
        ws.join("moat.yaml"),
        "hooks:\n  pre_run: echo hook-as-$(id -u)-in-$(pwd); touch hook-marker\n",
    )
    .unwrap();
    let out = home.run(&[
        "run",
        "--",
        "sh",
        "-c",
        "test -f hook-marker && echo command-after-hook",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout, format!("hook-as-{owner}-in-/workspace\ncommand-after-hook\n"));
    let run_id = home.only_run()["id"].as_str().unwrap().to_string();
    let logs = home.run(&["logs", &run_id]);
    assert!(
        text(&logs.stdout).contains(&format!("hook-as-{owner}")),
        "{}",
        text(&logs.stdout)
    );

    std::fs::write(ws.join("moat.yaml"), "hooks:\n  pre_run: echo broken-setup; exit 3\n").unwrap();
    let out = home.run(&["run", "--", "echo", "command-ran"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "broken-setup\n");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("hooks.pre_run failed with exit code 3"), "{stderr}");
}
