//! Images from `dependencies:` on the real engine: built once through the
//! daemon with the host's CA bundle trusted (this network intercepts TLS
//! to PyPI), not rebuilt when nothing changed, earlier layers reused when a
//! package is added; the command runs as the workspace's owner, not root;
//! a failing step reports its last lines and tags nothing; build hooks
//! (`hooks.post_build_root`, `hooks.post_build`) are layers of the image,
//! part of its tag, and a failing one is named with its exit code.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::support::{Home, docker_exists, text};

/// The host's CA bundle: what reaches PyPI from a container here.
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The workspace owner a run must drop to (the tests run as root).
const OWNER: u32 = 4242;

/// Held by each test while it builds: concurrent builds sharing their first
/// steps each make their own copy of those layers, and a later build may
/// then continue from the copy that lacks the layers a test expects reused.
static ONE_BUILDER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Images a test built, removed even when it fails.
struct BuiltImages(Vec<String>);

impl Drop for BuiltImages {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
        }
    }
}

fn home_with_build_ca() -> Option<Home> {
    let home = Home::new()?;
    assert!(
        Path::new(HOST_CA_BUNDLE).exists(),
        "{HOST_CA_BUNDLE} is needed to build images on this network"
    );
    std::fs::create_dir_all(home.home()).unwrap();
    std::fs::write(
        home.home().join("config.yaml"),
        format!("build_ca_file: {HOST_CA_BUNDLE}\n"),
    )
    .unwrap();
    Some(home)
}

/// The tag moat gives `deps` with the host's CA bundle, removed first so
/// the test sees a build; removed again when the test ends.
fn fresh_tag(deps: &[&str], built: &mut BuiltImages) -> String {
    let deps: Vec<String> = deps.iter().map(|d| d.to_string()).collect();
    let ca = std::fs::read(HOST_CA_BUNDLE).unwrap();
    let tag = moat_core::deps::plan_image(super::support::IMAGE, &deps, Some(&ca))
        .unwrap()
        .tag;
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    built.0.push(tag.clone());
    tag
}

fn write_dependencies(home: &Home, deps: &str) {
    std::fs::write(home.root.join("ws/moat.yaml"), format!("dependencies: [{deps}]\n")).unwrap();
}

/// The build logs under MOAT_HOME/builds, by name.
fn build_logs(home: &Home) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(home.home().join("builds"))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    logs.sort();
    logs
}

fn tag_of(log: &Path) -> String {
    format!("moat/run:{}", log.file_stem().unwrap().to_string_lossy())
}

/// Whether the build step whose instruction starts with `instruction` came
/// from the cache, read from the classic builder's output.
fn step_cached(log: &str, instruction: &str) -> bool {
    let lines: Vec<&str> = log.lines().collect();
    let step = lines
        .iter()
        .position(|l| l.starts_with("Step ") && l.contains(&format!(" : {instruction}")))
        .unwrap_or_else(|| panic!("no step {instruction:?} in the log:\n{log}"));
    lines.get(step + 1).is_some_and(|l| l.contains("Using cache"))
}

/// The daemon's time to decide about the image, from `--timings`.
fn image_check_ms(stderr: &str) -> f64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("daemon: image check"))
        .unwrap_or_else(|| panic!("no image check timing in:\n{stderr}"));
    line.split_whitespace()
        .rev()
        .nth(1)
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("unreadable timing {line:?}"))
}

#[test]
fn dependencies_build_once_reuse_layers_and_run_as_the_workspace_owner() {
    let Some(home) = home_with_build_ca() else { return };
    let _one = ONE_BUILDER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut built = BuiltImages(Vec::new());
    let tag = fresh_tag(&["python@3", "pip:anthropic", "git"], &mut built);
    let bigger_tag = fresh_tag(&["python@3", "pip:anthropic", "pip:httpx", "git"], &mut built);
    let ws = home.root.join("ws");
    std::os::unix::fs::chown(&ws, Some(OWNER), Some(OWNER)).unwrap();
    write_dependencies(&home, "python@3, 'pip:anthropic', git");
    let agent = "id -u; python -c 'import anthropic, sys; print(anthropic.__name__)'; git --version >/dev/null; \
                 echo written > /workspace/by-agent";

    let first = home.run(&["run", "--trust", "--", "sh", "-c", agent]);
    let logs = build_logs(&home);
    assert!(first.status.success(), "stderr: {}", text(&first.stderr));
    assert_eq!(text(&first.stdout), format!("{OWNER}\nanthropic\n"));
    let written = std::fs::metadata(ws.join("by-agent")).unwrap();
    assert_eq!(
        (written.uid(), written.gid()),
        (OWNER, OWNER),
        "files the agent writes belong to the workspace owner"
    );
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(tag_of(&logs[0]), tag, "the daemon and moat-core agree on the tag");
    assert!(docker_exists("image", &tag), "{tag} was not built");
    assert!(
        text(&first.stderr).contains("Step "),
        "progress reaches the CLI: {}",
        text(&first.stderr)
    );

    let before = std::fs::metadata(&logs[0]).unwrap().modified().unwrap();
    // The init put moat's CA into the system store and pointed the
    // language stores at it.
    let trusts_moat = "test \"$SSL_CERT_FILE\" = /etc/ssl/certs/ca-certificates.crt \
                       && test \"$REQUESTS_CA_BUNDLE\" = \"$SSL_CERT_FILE\" \
                       && grep -qF \"$(sed -n 2p /etc/moat/ca/ca.crt)\" \"$SSL_CERT_FILE\"";
    let second = home.run(&["run", "--trust", "--timings", "--", "sh", "-c", trusts_moat]);
    assert!(second.status.success(), "stderr: {}", text(&second.stderr));
    assert!(
        !text(&second.stderr).contains("Step "),
        "rebuilt: {}",
        text(&second.stderr)
    );
    assert_eq!(std::fs::metadata(&logs[0]).unwrap().modified().unwrap(), before);
    let decided = image_check_ms(&text(&second.stderr));
    eprintln!("measured: deciding that {tag} is up to date took {decided:.1} ms");
    assert!(decided <= 1000.0, "{decided} ms");

    // One more package, and `container.user` instead of the owner.
    std::fs::write(
        ws.join("moat.yaml"),
        "dependencies: [python@3, 'pip:anthropic', 'pip:httpx', git]\ncontainer: {user: '4343:4343'}\n",
    )
    .unwrap();
    let third = home.run(&[
        "run",
        "--trust",
        "--",
        "sh",
        "-c",
        "python -c 'import httpx, anthropic' && id -u",
    ]);
    let logs = build_logs(&home);
    assert!(third.status.success(), "stderr: {}", text(&third.stderr));
    assert_eq!(
        text(&third.stdout),
        "4343\n",
        "container.user overrides the workspace owner"
    );
    assert_eq!(logs.len(), 2, "{logs:?}");
    let log = logs.iter().find(|l| tag_of(l) == bigger_tag).unwrap();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        step_cached(&log, "RUN apt-get update"),
        "the OS packages were rebuilt:\n{log}"
    );
    assert!(
        step_cached(&log, "RUN python3 -m venv"),
        "the python runtime was rebuilt:\n{log}"
    );
    assert!(
        !step_cached(&log, "RUN /opt/moat/python/bin/pip install"),
        "the new package is installed:\n{log}"
    );
}

#[test]
fn a_failing_step_shows_its_last_lines_and_tags_nothing() {
    let Some(home) = home_with_build_ca() else { return };
    let _one = ONE_BUILDER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let package = "moat-test-no-such-package";
    write_dependencies(&home, &format!("git, 'apt:{package}'"));
    let out = home.run(&["run", "--trust", "--", "true"]);
    let logs = build_logs(&home);
    let _built = BuiltImages(logs.iter().map(|l| tag_of(l)).collect());
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(
        stderr.contains(&format!("Unable to locate package {package}")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("full log: {}", logs[0].display())), "{stderr}");
    let tail = stderr.split("last lines of the build:").nth(1).unwrap_or_default();
    assert!(tail.lines().count() >= 3, "{stderr}");
    assert!(
        !docker_exists("image", &tag_of(&logs[0])),
        "a failed build left its tag"
    );
    assert!(home.runs().is_empty(), "a run was registered: {:?}", home.runs());
    let containers = Command::new("docker")
        .args(["ps", "-a", "--no-trunc", "--format", "{{.Command}}"])
        .output()
        .unwrap();
    assert!(
        !text(&containers.stdout).contains(package),
        "the failed step's container was left behind"
    );
}

/// The tag moat gives build hooks alone (no `dependencies:`), `post_build`
/// running as `user`, with the host's CA bundle; removed when the test ends.
fn hooks_tag(root: &str, user_hook: &str, user: &str, built: &mut BuiltImages) -> String {
    let ca = std::fs::read(HOST_CA_BUNDLE).unwrap();
    let hooks = moat_core::deps::BuildHooks {
        post_build_root: Some(root.to_string()),
        post_build: Some(user_hook.to_string()),
        user: user.to_string(),
    };
    let tag = moat_core::deps::plan_build(super::support::IMAGE, &[], &hooks, Some(&ca))
        .unwrap()
        .tag;
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    built.0.push(tag.clone());
    tag
}

fn write_hooks(ws: &Path, root: &str, user_hook: &str) {
    let yaml = serde_json::json!({ "hooks": { "post_build_root": root, "post_build": user_hook } });
    std::fs::write(ws.join("moat.yaml"), yaml.to_string()).unwrap();
}

#[test]
fn build_hooks_are_part_of_the_image_and_a_failing_one_is_named() {
    let Some(home) = home_with_build_ca() else { return };
    let _one = ONE_BUILDER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut built = BuiltImages(Vec::new());
    let ws = home.root.join("ws");
    std::os::unix::fs::chown(&ws, Some(OWNER), Some(OWNER)).unwrap();
    let root_hook = "id -u > /usr/local/share/moat-root-hook";
    let user_hook = "echo \"$(id -u) $HOME $(pwd)\" > \"$HOME/by-hook\"";
    let user = format!("{OWNER}:{OWNER}");
    let tag = hooks_tag(root_hook, user_hook, &user, &mut built);
    write_hooks(&ws, root_hook, user_hook);

    let show = "cat /usr/local/share/moat-root-hook \"$HOME/by-hook\"; id -u";
    let out = home.run(&["run", "--trust", "--", "sh", "-c", show]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("0\n{OWNER} /home/moat /home/moat\n{OWNER}\n"),
        "post_build_root ran as root, post_build as the run's user in its home, and the command sees both"
    );
    let logs = build_logs(&home);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(tag_of(&logs[0]), tag, "the daemon and moat-core agree on the tag");
    assert!(docker_exists("image", &tag), "{tag} was not built");

    // A changed hook is another image; this one fails, and says so.
    let failing = "echo preparing the tools; echo the last words of the hook >&2; exit 7";
    let failing_tag = hooks_tag(root_hook, failing, &user, &mut built);
    assert_ne!(failing_tag, tag, "the hook is part of the tag");
    write_hooks(&ws, root_hook, failing);
    let out = home.run(&["run", "--trust", "--", "true"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "error: hooks.post_build exited 7 while building {failing_tag}"
        )),
        "{stderr}"
    );
    let tail = stderr.split("last lines of the build:").nth(1).unwrap_or_default();
    assert!(tail.contains("the last words of the hook"), "{stderr}");
    assert!(stderr.contains("fix hooks.post_build in moat.yaml"), "{stderr}");
    assert!(!docker_exists("image", &failing_tag), "a failed build left its tag");
    assert_eq!(
        home.runs().len(),
        1,
        "the failed build registered a run: {:?}",
        home.runs()
    );
}
