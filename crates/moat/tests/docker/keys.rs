//! Every `moat.yaml` key that is accepted shows its effect inside a real
//! container: limits read back from inside, the pre-run hook, and the
//! file's plain keys (env, secrets, mounts, command, image, runtime, DNS,
//! interactive). The honesty test (tests/cli/honesty.rs) names these tests.

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

/// The file's plain keys reach the container: `env`, `secrets`, `mounts`
/// (read-only, with `exclude`), `command`, `base_image`, `runtime`,
/// `container.dns`; `snapshots.disabled` leaves no snapshot behind.
#[test]
fn file_keys_reach_the_container() {
    let Some(home) = Home::new() else { return };
    // The container's DNS server: one on the host answering every name.
    let dns = super::upstream::docker_bridge_address();
    let answered = answer_every_name(&dns, [203, 0, 113, 7]);
    let data = home.root.join("data");
    std::fs::create_dir_all(data.join("hidden")).unwrap();
    std::fs::write(data.join("file.txt"), "from-the-mount\n").unwrap();
    std::fs::write(data.join("hidden/secret.txt"), "must-not-show\n").unwrap();
    std::fs::write(
        home.root.join("ws/moat.yaml"),
        format!(
            "env: {{GREETING: hello-env}}\nsecrets: {{FROM_HOST: env://MOAT_TEST_KEYS_SECRET}}\n\
             mounts:\n  - {{source: {}, target: /data, mode: ro, exclude: [hidden]}}\n\
             command: echo env=$GREETING secret=$FROM_HOST; cat /data/file.txt; \
             cat /data/hidden/secret.txt 2>/dev/null; touch /data/x 2>/dev/null || echo read-only; \
             getent hosts anything.moat-test; grep -c ^VERSION_CODENAME=bookworm /etc/os-release\n\
             base_image: moat-base:bookworm\nruntime: docker\ncontainer: {{dns: [{dns}]}}\n\
             snapshots: {{disabled: true}}\n",
            data.display()
        ),
    )
    .unwrap();
    let out = home
        .moat()
        .args(["run", "--trust"])
        .env_remove("MOAT_BASE_IMAGE")
        .env("MOAT_TEST_KEYS_SECRET", "s3cret-value")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "env=hello-env secret=s3cret-value\nfrom-the-mount\nread-only\n\
         203.0.113.7     anything.moat-test\n1\n"
    );
    assert!(answered.load(std::sync::atomic::Ordering::Relaxed) > 0);
    let run = home.only_run();
    assert_eq!(run["image"], "moat-base:bookworm");
    assert_eq!(run["runtime"], "docker");
    assert!(!home.home().join("snapshots").exists());
}

/// `interactive: true` keeps the container's stdin open for the program.
#[test]
fn interactive_in_the_file_gives_the_program_its_stdin() {
    use std::io::Write;
    let Some(home) = Home::new() else { return };
    std::fs::write(home.root.join("ws/moat.yaml"), "interactive: true\ncommand: [cat]\n").unwrap();
    let mut child = home
        .moat()
        .arg("run")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"typed-in\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "typed-in\n");
}

/// A DNS server on `address`:53 (UDP) answering every A query with `ip`;
/// counts the answers.
fn answer_every_name(address: &str, ip: [u8; 4]) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let socket = std::net::UdpSocket::bind((address, 53)).expect("binding a DNS server on port 53 (needs root)");
    let answered = std::sync::Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let Some(reply) = a_record_reply(&buf[..n], ip) else {
                continue;
            };
            if socket.send_to(&reply, peer).is_ok() {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    answered
}

/// The answer to a one-question query: the question echoed, then `ip`
/// for an A question (no answer for any other type).
fn a_record_reply(query: &[u8], ip: [u8; 4]) -> Option<Vec<u8>> {
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += usize::from(query[end]) + 1;
    }
    let question_end = end + 5;
    let qtype = query.get(end + 1..end + 3)?;
    let is_a = qtype == [0, 1];
    let mut reply = query.get(..question_end)?.to_vec();
    reply[2] = 0x81;
    reply[3] = 0x80;
    reply[6..8].copy_from_slice(&[0, u8::from(is_a)]);
    reply[8..12].fill(0);
    if is_a {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&ip);
    }
    Some(reply)
}
