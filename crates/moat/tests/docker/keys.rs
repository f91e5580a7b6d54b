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
