//! `moat grant ssh`: a run clones over ssh from a local sshd through the
//! daemon's agent, which lists and signs with the granted key only; the
//! private keys appear nowhere in the container; a crafted request for the
//! other key the host agent holds is refused; revoke stops the signing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::support::{Home, docker, docker_exists, text, unique};

/// The sshd and git the test needs, on moat's base image (Debian packages).
fn dockerfile() -> String {
    let base = "FROM moat-base:bookworm\nRUN apt-get update && apt-get install -y --no-install-recommends \
                openssh-server openssh-client git && rm -rf /var/lib/apt/lists/*\n";
    // ssh needs a passwd entry for the run's user (the workspace's owner).
    match nix_uid() {
        0 => base.to_string(),
        uid => format!("{base}RUN useradd -o -m -u {uid} runner\n"),
    }
}

/// This process's uid (the owner of `/proc/self`).
fn nix_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// The test image, built once per Dockerfile content (tagged by its hash).
fn sshd_image() -> String {
    use std::hash::{Hash, Hasher};
    let dockerfile = dockerfile();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dockerfile.hash(&mut hasher);
    let tag = format!("moat-test-sshd:{:016x}", hasher.finish());
    if docker_exists("image", &tag) {
        return tag;
    }
    let mut build = Command::new("docker")
        .args(["build", "-q", "-t", &tag, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    build.stdin.take().unwrap().write_all(dockerfile.as_bytes()).unwrap();
    let built = build.wait_with_output().unwrap();
    assert!(built.status.success(), "building {tag}: {}", text(&built.stderr));
    tag
}

/// A host ssh-agent of the test's own, killed on drop.
struct HostAgent {
    child: Child,
    socket: PathBuf,
}

impl HostAgent {
    fn start(dir: &Path) -> Self {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        HostAgent { child, socket }
    }

    /// A new ed25519 key at `dir/name`, added to this agent.
    fn add_new_key(&self, dir: &Path, name: &str) -> PathBuf {
        let key = dir.join(name);
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", text(&made.stderr));
        let added = Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .output()
            .unwrap();
        assert!(added.status.success(), "{}", text(&added.stderr));
        key
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sshd container, removed on drop.
struct Sshd(String);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// An sshd serving `git@…:/home/git/repo.git` to both keys.
fn start_sshd(image: &str, authorized: &str) -> Sshd {
    let name = format!("moat-test-sshd-{}", unique());
    let setup = "set -e; mkdir -p /run/sshd; ssh-keygen -A -q; useradd -m -s /bin/sh git; usermod -p '*' git; \
                 mkdir -p /home/git/.ssh; printf '%s\\n' \"$AUTHORIZED\" > /home/git/.ssh/authorized_keys; \
                 chmod 700 /home/git/.ssh; chmod 600 /home/git/.ssh/authorized_keys; \
                 git init -q --bare -b main /home/git/repo.git; git init -q -b main /tmp/w; cd /tmp/w; \
                 echo granted-content > README; git add README; \
                 git -c user.email=t@example.com -c user.name=t commit -qm init; \
                 git push -q /home/git/repo.git main; chown -R git:git /home/git; \
                 echo sshd-ready; exec /usr/sbin/sshd -D -e";
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "-e",
        &format!("AUTHORIZED={authorized}"),
        image,
        "sh",
        "-c",
        setup,
    ]);
    let sshd = Sshd(name);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = Command::new("docker").args(["logs", &sshd.0]).output().unwrap();
        if text(&logs.stderr).contains("Server listening") {
            break;
        }
        assert!(Instant::now() < deadline, "sshd did not start: {}", text(&logs.stderr));
        std::thread::sleep(Duration::from_millis(100));
    }
    sshd
}

/// An agent sign request for the key in `public_key_file`.
fn sign_request_hex(public_key_file: &Path) -> String {
    let line = std::fs::read_to_string(public_key_file).unwrap();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(line.split_whitespace().nth(1).unwrap())
        .unwrap();
    let mut payload = vec![13u8];
    for field in [&blob[..], b"data to sign"] {
        payload.extend_from_slice(&(field.len() as u32).to_be_bytes());
        payload.extend_from_slice(field);
    }
    payload.extend_from_slice(&0u32.to_be_bytes());
    let mut framed = (payload.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&payload);
    framed.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends the hex-encoded message to `$SSH_AUTH_SOCK`, prints the answer in hex.
const RAW_AGENT_CLIENT: &str = r#"use IO::Socket::UNIX; my $s = IO::Socket::UNIX->new(Peer => $ENV{SSH_AUTH_SOCK}) or die "connect: $!"; print $s pack("H*", $ARGV[0]); read($s, my $n, 4) == 4 or die "no answer"; read($s, my $b, unpack("N", $n)); print unpack("H*", $b), "\n";"#;

fn exec(home: &Home, run: &str, script: &str) -> std::process::Output {
    home.run(&["exec", run, "--", "sh", "-c", script])
}

#[test]
fn a_run_clones_over_ssh_through_the_granted_key_only_and_never_holds_a_private_key() {
    let Some(home) = Home::new() else { return };
    let image = sshd_image();
    let keys = home.root.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let agent = HostAgent::start(&keys);
    let granted = agent.add_new_key(&keys, "granted");
    let other = agent.add_new_key(&keys, "other");
    let public = |key: &Path| std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let authorized = format!("{}{}", public(&granted), public(&other));
    let sshd = start_sshd(&image, &authorized);
    let host_key = docker(&["exec", &sshd.0, "cat", "/etc/ssh/ssh_host_ed25519_key.pub"]);
    let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    let known_hosts = format!("git.test {}", host_key.join(" "));

    let grant = home
        .moat()
        .args(["grant", "ssh", "--host", "git.test", "--key"])
        .arg(granted.with_extension("pub"))
        .args(["--known-hosts", &known_hosts])
        .env("SSH_AUTH_SOCK", &agent.socket)
        .output()
        .unwrap();
    assert!(grant.status.success(), "{}", text(&grant.stderr));
    let fingerprint = |key: &Path| {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(key.with_extension("pub"))
            .output()
            .unwrap();
        text(&out.stdout).split_whitespace().nth(1).unwrap().to_string()
    };
    let (granted_fp, other_fp) = (fingerprint(&granted), fingerprint(&other));

    // Strict runs cannot carry ssh: refused, not silently broken.
    let strict = home.run(&[
        "run", "--image", &image, "--policy", "strict", "--grant", "ssh", "--", "true",
    ]);
    assert!(!strict.status.success());
    assert!(text(&strict.stderr).contains("permissive"), "{}", text(&strict.stderr));

    let out = home.run(&[
        "run",
        "-d",
        "--image",
        &image,
        "--policy",
        "permissive",
        "--grant",
        "ssh",
        "--",
        "sleep",
        "300",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = home.wait_for_run(Duration::from_secs(30));
    let network = home.metadata(&run)["network"].as_str().unwrap().to_string();
    docker(&["network", "connect", "--alias", "git.test", &network, &sshd.0]);

    let listed = exec(&home, &run, "ssh-add -l");
    let listed_text = text(&listed.stdout);
    assert!(listed.status.success(), "{listed_text}{}", text(&listed.stderr));
    assert_eq!(listed_text.lines().count(), 1, "{listed_text}");
    assert!(
        listed_text.contains(&granted_fp) && !listed_text.contains(&other_fp),
        "{listed_text}"
    );

    let clone = exec(
        &home,
        &run,
        "git clone -q ssh://git@git.test/home/git/repo.git /tmp/clone && cat /tmp/clone/README",
    );
    assert!(clone.status.success(), "{}{}", text(&clone.stdout), text(&clone.stderr));
    assert_eq!(text(&clone.stdout).trim(), "granted-content");

    // The container crafts a sign request for the other key the host
    // agent holds (its public half is public): refused.
    let crafted = exec(
        &home,
        &run,
        &format!(
            "perl -e '{RAW_AGENT_CLIENT}' {}",
            sign_request_hex(&other.with_extension("pub"))
        ),
    );
    assert!(crafted.status.success(), "{}", text(&crafted.stderr));
    assert_eq!(text(&crafted.stdout).trim(), "05", "SSH_AGENT_FAILURE expected");
    // So is adding a key, or removing the host agent's keys.
    let remove_all = exec(&home, &run, &format!("perl -e '{RAW_AGENT_CLIENT}' 0000000113"));
    assert_eq!(text(&remove_all.stdout).trim(), "05");
    let still_there = Command::new("ssh-add")
        .arg("-l")
        .env("SSH_AUTH_SOCK", &agent.socket)
        .output()
        .unwrap();
    assert_eq!(text(&still_there.stdout).lines().count(), 2, "the host agent lost keys");

    // The private keys appear nowhere: files, environment, inspect.
    for key in [&granted, &other] {
        let private = std::fs::read_to_string(key).unwrap();
        let needle = private.lines().nth(2).unwrap().to_string();
        let scan = docker(&[
            "exec",
            "-u",
            "0",
            &run,
            "sh",
            "-c",
            &format!("grep -rlF '{needle}' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null; true"),
        ]);
        assert!(scan.trim().is_empty(), "private key bytes found in {scan}");
        let env = docker(&["exec", &run, "env"]);
        assert!(!env.contains(&needle), "{env}");
        let inspect = docker(&["inspect", &run]);
        assert!(!inspect.contains(&needle));
    }
    let env = docker(&["exec", &run, "env"]);
    assert!(env.contains("SSH_AUTH_SOCK=/etc/moat/ssh-agent/agent.sock"), "{env}");

    // The audit log has the signature, by fingerprint, and the refusal.
    let audit_log = home.home().join("runs").join(&run).join("audit.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&audit_log).unwrap_or_default();
        if log.contains("ssh_sign_refused") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let signed: Vec<&str> = log.lines().filter(|l| l.contains("\"ssh_signed\"")).collect();
    assert!(
        !signed.is_empty() && signed.iter().all(|l| l.contains(&granted_fp)),
        "{log}"
    );
    assert!(log.contains("ssh_sign_refused") && log.contains(&other_fp), "{log}");
    for key in [&granted, &other] {
        let private = std::fs::read_to_string(key).unwrap();
        assert!(!log.contains(private.lines().nth(1).unwrap()));
    }

    // Revoke reaches the live run: nothing listed, nothing signed.
    let revoked = home.run(&["revoke", "ssh"]);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let listed = exec(&home, &run, "ssh-add -l");
    assert!(!text(&listed.stdout).contains(&granted_fp), "{}", text(&listed.stdout));
    let clone = exec(
        &home,
        &run,
        "GIT_SSH_COMMAND='ssh -o BatchMode=yes' git clone -q ssh://git@git.test/home/git/repo.git /tmp/again",
    );
    assert!(!clone.status.success(), "cloned after revoke");
    drop(sshd);
}
