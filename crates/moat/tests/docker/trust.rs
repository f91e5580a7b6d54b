//! The workspace is untrusted input: a run cannot widen the next run's
//! sandbox by rewriting moat.yaml, dangerous paths are never mounted
//! without a command-line flag, and `exclude` hides files from the
//! container. Each test plays the agent's move against the real engine.

use std::path::Path;

use super::support::{Home, text};

fn write_config(home: &Home, yaml: &str) {
    std::fs::write(home.root.join("ws/moat.yaml"), yaml).unwrap();
}

fn runs(home: &Home) -> usize {
    home.runs().len()
}

/// The attack: a run writes a moat.yaml that mounts the Docker socket and
/// pulls a host secret. The next `moat run` (no terminal) refuses, names
/// what it asks for and `moat trust`, and starts nothing; even with
/// `--trust`, the socket mount is refused; no secret is read.
#[test]
fn an_agent_written_config_is_refused_until_approved_and_the_socket_never_mounted() {
    let Some(home) = Home::new() else { return };
    let agent = "cat > /workspace/moat.yaml <<'EOF'\n\
                 mounts: ['/var/run/docker.sock:/var/run/docker.sock']\n\
                 secrets: {STOLEN: env://MOAT_TEST_HOST_SECRET}\n\
                 EOF";
    let out = home.run(&["run", "--", "sh", "-c", agent]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(runs(&home), 1);

    let out = home
        .moat()
        .env("MOAT_TEST_HOST_SECRET", "host-secret-value")
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("moat.yaml asks for more than moat's defaults"),
        "{stderr}"
    );
    assert!(
        stderr.contains("docker.sock at /var/run/docker.sock (read-write)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("secret STOLEN from env://MOAT_TEST_HOST_SECRET"),
        "{stderr}"
    );
    assert!(stderr.contains("moat trust"), "{stderr}");
    assert_eq!(runs(&home), 1, "nothing may start");

    let out = home.run(&["run", "--trust", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("docker.sock (mounted at /var/run/docker.sock)"),
        "{stderr}"
    );
    assert!(stderr.contains("the container runtime's socket"), "{stderr}");
    assert!(stderr.contains("--allow-dangerous-mount"), "{stderr}");
    assert_eq!(runs(&home), 1, "nothing may start");
}

/// Approval is per content: an approved config runs; the agent adding a
/// secret to it needs a new approval; a change that only narrows does not.
#[test]
fn approval_is_asked_again_only_when_the_config_widens() {
    let Some(home) = Home::new() else { return };
    let data = home.root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("note"), "shared").unwrap();
    let approved = format!("mounts: ['{}:/data:ro']\n", data.display());
    write_config(&home, &approved);
    assert_eq!(home.run(&["run", "--", "true"]).status.code(), Some(1));

    let out = home.run(&["trust"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("mount {} at /data (read-only)", data.display())),
        "{stdout}"
    );
    let out = home.run(&["run", "--", "cat", "/data/note"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "shared");

    // The agent widens it: asked again, and only the new part is shown.
    write_config(&home, &format!("{approved}secrets: {{X: env://HOME}}\n"));
    let out = home.run(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("asks for more than was last approved"), "{stderr}");
    assert!(
        stderr.contains("secret X from env://HOME") && !stderr.contains("/data"),
        "{stderr}"
    );

    // A symlink planted in the workspace, pointing out of it, is a mount
    // outside it too.
    std::os::unix::fs::symlink(&data, home.root.join("ws/link")).unwrap();
    write_config(&home, "mounts: ['./link:/more']\n");
    let out = home.run(&["run", "--", "true"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a link out of the workspace slipped through"
    );
    assert!(text(&out.stderr).contains(&format!("mount {} at /more", data.display())));
    std::fs::remove_file(home.root.join("ws/link")).unwrap();

    // Narrowing (dropping the mount, adding an exclusion) needs nothing.
    write_config(&home, "mounts: [{source: ., target: /workspace, exclude: [.env]}]\n");
    let out = home.run(&["run", "--", "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // …but then removing that exclusion is a widening.
    write_config(&home, "name: plain\n");
    let out = home.run(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no longer: exclude .env from /workspace"));
    let trust_file = home.home().join("trust.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&trust_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

/// The attack: mounting MOAT_HOME (or a directory containing it) gives the
/// agent the daemon's socket, the credential key and every live run's
/// proxy token; `moat run ~` would. Refused unless named on the command
/// line.
#[test]
fn moat_home_is_never_mounted_without_the_flag() {
    let Some(home) = Home::new() else { return };
    std::fs::create_dir_all(home.home()).unwrap();
    let out = home.run(&["run", home.root.to_str().unwrap(), "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("(the workspace): it contains MOAT_HOME"), "{stderr}");

    let mount = format!("{}:/m:ro", home.home().join("daemon").display());
    std::fs::create_dir_all(home.home().join("daemon")).unwrap();
    let out = home.run(&["run", "-m", &mount, "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is inside MOAT_HOME"),
        "{}",
        text(&out.stderr)
    );

    let allowed = home.home().join("daemon");
    std::fs::write(allowed.join("marker"), "named on the command line").unwrap();
    let out = home.run(&[
        "run",
        "-m",
        &mount,
        "--allow-dangerous-mount",
        allowed.to_str().unwrap(),
        "--",
        "cat",
        "/m/marker",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "named on the command line");
}

/// `exclude` hides a file and a directory from the container: the agent
/// reads nothing there and cannot write through the mask.
#[test]
fn excluded_paths_are_unreadable_in_the_container() {
    let Some(home) = Home::new() else { return };
    let ws = home.root.join("ws");
    std::fs::write(ws.join(".env"), "API_KEY=placeholder-that-must-stay-hidden\n").unwrap();
    std::fs::create_dir_all(ws.join("private")).unwrap();
    std::fs::write(ws.join("private/key.pem"), "-----hidden-----\n").unwrap();
    std::fs::write(ws.join("visible.txt"), "visible\n").unwrap();
    write_config(
        &home,
        "mounts: [{source: ., target: /workspace, exclude: [.env, private/]}]\n",
    );
    // Writes through the file mask go nowhere; the directory mask is read-only.
    let script = "cat /workspace/visible.txt; cat /workspace/.env; ls -A /workspace/private; \
                  echo x > /workspace/.env; cat /workspace/.env; \
                  touch /workspace/private/new 2>/dev/null && echo WROTE; true";
    let out = home.run(&["run", "--", "sh", "-c", script]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "visible\n");
    assert_eq!(
        std::fs::read_to_string(ws.join(".env")).unwrap(),
        "API_KEY=placeholder-that-must-stay-hidden\n",
        "the host file is untouched"
    );
    assert!(Path::new(&ws.join("private/key.pem")).exists());
}

/// On a terminal, the user is asked; "n" starts nothing, "y" approves
/// (recorded: the next run, without a terminal, needs no approval).
#[test]
fn on_a_terminal_the_user_is_asked() {
    let Some(home) = Home::new() else { return };
    let data = home.root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_config(&home, &format!("mounts: ['{}:/data:ro']\n", data.display()));
    let on_a_terminal = |answer: &str| {
        // `script` gives moat a pseudo-terminal; the answer is typed once
        // the prompt is up.
        let moat = env!("CARGO_BIN_EXE_moat");
        let line = format!("(sleep 2; echo {answer}) | script -qec '{moat} run -- true' /dev/null");
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .current_dir(home.root.join("ws"))
            .env("MOAT_HOME", home.home())
            .env("MOAT_BASE_IMAGE", super::support::IMAGE)
            .env("MOAT_DAEMON_EXECUTABLE", crate::moatd::moatd())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        (out.status.code(), text(&out.stdout))
    };
    let (code, screen) = on_a_terminal("n");
    assert!(screen.contains("asks for more than moat's defaults"), "{screen}");
    assert!(screen.contains("approve it? [y/N]"), "{screen}");
    assert!(screen.contains("was not approved; nothing was started"), "{screen}");
    assert_eq!(code, Some(1));
    assert_eq!(runs(&home), 0);

    let (code, screen) = on_a_terminal("y");
    assert_eq!(code, Some(0), "{screen}");
    assert_eq!(runs(&home), 1);
    let out = home.run(&["run", "--", "true"]);
    assert!(out.status.success(), "approved: {}", text(&out.stderr));
}
