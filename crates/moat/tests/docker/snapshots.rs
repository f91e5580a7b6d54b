//! Workspace snapshots around real runs: the snapshot is complete before
//! the agent starts, so `moat snapshot diff` shows exactly what the agent
//! deleted, modified and added, and `restore` (refused without `--force`
//! over changes no snapshot holds) brings the workspace back; the
//! `snapshots:` keys (exclusions, `.gitignore`, retention, the pre-run
//! trigger) act as documented; an agent's symlinks to host secrets never
//! pull them into the store nor redirect a restore.

use std::path::Path;
use std::time::{Duration, Instant};

use super::support::{Home, text};

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ok(home: &Home, args: &[&str]) -> String {
    let out = home.run(args);
    assert!(out.status.success(), "moat {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn snapshot_list(home: &Home, run: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(home, &["snapshot", "list", run, "--json"])).unwrap()
}

fn newest_run(home: &Home) -> String {
    home.runs()[0]["id"].as_str().unwrap().to_string()
}

/// Every file under `dir` whose content contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            found.extend(files_containing(&path, needle));
        } else if std::fs::read(&path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            found.push(path.display().to_string());
        }
    }
    found
}

/// The agent deletes, modifies and adds files (and touches paths the
/// snapshot leaves out); diff shows exactly its changes; restore refuses
/// without --force, then undoes them and leaves excluded paths alone.
/// Then `retention.max_count`/`delete_initial` prune older runs'
/// snapshots, `ignore_gitignore: true` records ignored paths,
/// `triggers.disable_pre_run: true` takes none, and `moat destroy`
/// collects what only the destroyed run's snapshot held.
#[test]
fn an_agents_changes_are_shown_by_diff_and_undone_by_restore() {
    let Some(home) = Home::new() else { return };
    let ws = home.root.join("ws");
    write(&ws.join("delete-me.txt"), "precious\n");
    write(&ws.join("edit.txt"), "original\n");
    write(&ws.join("src/lib.rs"), "pub fn f() {}\n");
    write(&ws.join(".gitignore"), "build/\n");
    write(&ws.join("build/out.txt"), "ignored-build-output\n");
    write(&ws.join("scratch/notes.txt"), "scratch\n");
    let config = |extra: &str| {
        format!(
            "snapshots:\n  exclude: {{additional: [scratch/]}}\n  retention: {{max_count: 2, delete_initial: true}}\n{extra}"
        )
    };
    write(&ws.join("moat.yaml"), &config(""));
    let agent = "rm delete-me.txt && echo rewritten > edit.txt && echo new > added.txt && \
                 echo rebuilt > build/out.txt && echo more > scratch/notes.txt && echo agent-done";
    let out = home.run(&["run", "--trust", "--", "sh", "-c", agent]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "agent-done\n");
    let first = newest_run(&home);
    let snapshot = home.metadata(&first)["snapshot"].as_str().unwrap().to_string();
    let listed = snapshot_list(&home, &first);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], snapshot.as_str());
    assert_eq!(listed[0]["trigger"], "pre_run");
    assert_eq!(listed[0]["files"], 5, "{listed:?}");

    // Exactly the agent's changes, nothing of build/ (.gitignore) or scratch/.
    let diff = ok(&home, &["snapshot", "diff", &first]);
    assert_eq!(diff, "A added.txt\nD delete-me.txt\nM edit.txt\n");

    let refused = home.run(&["snapshot", "restore", &first]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("differ from its newest snapshot"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(
        read(&ws.join("edit.txt")),
        "rewritten\n",
        "a refused restore changed the workspace"
    );

    let restored = home.run(&["snapshot", "restore", &first, "--force"]);
    assert!(restored.status.success(), "{}", text(&restored.stderr));
    assert_eq!(read(&ws.join("delete-me.txt")), "precious\n");
    assert_eq!(read(&ws.join("edit.txt")), "original\n");
    assert!(!ws.join("added.txt").exists());
    assert_eq!(
        read(&ws.join("build/out.txt")),
        "rebuilt\n",
        "an ignored path was restored"
    );
    assert_eq!(
        read(&ws.join("scratch/notes.txt")),
        "more\n",
        "an excluded path was restored"
    );
    assert_eq!(ok(&home, &["snapshot", "diff", &first]), "");
    // The restore snapshotted the workspace first: the agent's work can come back.
    let listed = snapshot_list(&home, &first);
    assert_eq!(listed[0]["trigger"], "pre_restore");

    // Into another directory: the snapshot's tree only.
    let copy = home.root.join("copy");
    ok(&home, &["snapshot", "restore", &first, "--to", copy.to_str().unwrap()]);
    assert_eq!(read(&copy.join("edit.txt")), "original\n");
    assert_eq!(read(&copy.join("src/lib.rs")), "pub fn f() {}\n");
    assert!(!copy.join("build").exists() && !copy.join("scratch").exists());

    // Retention: two more runs, and the first run's pre-run snapshot goes
    // (delete_initial: true), after the run that pruned it started.
    for _ in 0..2 {
        ok(&home, &["run", "--trust", "--", "true"]);
    }
    let pre_run = |home: &Home| -> Vec<String> {
        snapshot_list(home, &first)
            .into_iter()
            .filter(|s| s["trigger"] == "pre_run")
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while pre_run(&home).len() > 2 {
        assert!(Instant::now() < deadline, "not pruned: {:?}", pre_run(&home));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !pre_run(&home).contains(&snapshot),
        "the oldest was kept despite delete_initial"
    );
    let gone = home.run(&["snapshot", "diff", &first]);
    assert!(text(&gone.stderr).contains("pruned"), "{}", text(&gone.stderr));

    // delete_initial: false keeps the oldest (now the second run's) when pruning.
    let kept = pre_run(&home)[1].clone();
    write(
        &ws.join("moat.yaml"),
        "snapshots:\n  exclude: {additional: [scratch/]}\n  retention: {max_count: 2}\n",
    );
    ok(&home, &["run", "--trust", "--", "true"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while pre_run(&home).len() > 2 {
        assert!(Instant::now() < deadline, "not pruned: {:?}", pre_run(&home));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(pre_run(&home).last(), Some(&kept), "the initial snapshot was pruned");

    // ignore_gitignore: true records build/.
    write(&ws.join("build/out.txt"), "unique-build-output\n");
    write(
        &ws.join("moat.yaml"),
        "snapshots:\n  exclude: {ignore_gitignore: true}\n  retention: {max_count: 10}\n",
    );
    ok(&home, &["run", "--trust", "--", "true"]);
    let with_build = newest_run(&home);
    let copy = home.root.join("copy-with-build");
    ok(
        &home,
        &["snapshot", "restore", &with_build, "--to", copy.to_str().unwrap()],
    );
    assert_eq!(read(&copy.join("build/out.txt")), "unique-build-output\n");
    assert_eq!(read(&copy.join("scratch/notes.txt")), "more\n");

    // triggers.disable_pre_run: true takes none.
    write(
        &ws.join("moat.yaml"),
        "snapshots:\n  triggers: {disable_pre_run: true}\n",
    );
    let before = snapshot_list(&home, &first).len();
    ok(&home, &["run", "--trust", "--", "true"]);
    let unsnapshotted = newest_run(&home);
    assert!(home.metadata(&unsnapshotted).get("snapshot").is_none());
    assert_eq!(snapshot_list(&home, &first).len(), before);

    // Destroying a run removes its snapshot and the contents only it held.
    let store = home.home().join("snapshots");
    assert!(!files_containing(&store.join("objects"), "unique-build-output").is_empty());
    write(&ws.join("build/out.txt"), "changed again\n");
    ok(&home, &["destroy", &with_build]);
    assert!(files_containing(&store.join("objects"), "unique-build-output").is_empty());
    assert!(!store.join("runs").join(&with_build).exists());
}

/// The agent plants symlinks to the host's secrets: the next snapshot
/// keeps them as symlinks (the secret never enters the store), and a
/// directory it swapped for a symlink to a host directory does not
/// redirect a restore there.
#[test]
fn an_agents_symlinks_never_pull_host_files_into_the_store_or_redirect_a_restore() {
    let Some(home) = Home::new() else { return };
    let ws = home.root.join("ws");
    let secrets = home.root.join("host-secrets");
    write(&secrets.join("id_ed25519"), "HOST-PRIVATE-KEY\n");
    let host_dir = home.root.join("host-dir");
    std::fs::create_dir_all(&host_dir).unwrap();
    write(&ws.join("src/main.rs"), "fn main() {}\n");
    let plant = format!(
        "ln -s {secrets}/id_ed25519 key && ln -s {secrets} ssh && rm -r src && ln -s {host} src",
        secrets = secrets.display(),
        host = host_dir.display()
    );
    ok(&home, &["run", "--trust", "--", "sh", "-c", &plant]);
    let first = newest_run(&home);
    // The next run's snapshot sees the planted links.
    ok(&home, &["run", "--trust", "--", "true"]);
    let second = newest_run(&home);
    let store = home.home().join("snapshots");
    assert!(
        files_containing(&store, "HOST-PRIVATE-KEY").is_empty(),
        "a host secret entered the snapshot store"
    );
    let copy = home.root.join("copy");
    ok(&home, &["snapshot", "restore", &second, "--to", copy.to_str().unwrap()]);
    assert_eq!(std::fs::read_link(copy.join("ssh")).unwrap(), secrets);
    assert!(
        std::fs::symlink_metadata(copy.join("key"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // Restoring the first run's snapshot puts src/ back as a directory and
    // writes nothing into the host directory the symlink pointed at.
    ok(&home, &["snapshot", "restore", &first, "--force"]);
    assert!(std::fs::symlink_metadata(ws.join("src")).unwrap().is_dir());
    assert_eq!(read(&ws.join("src/main.rs")), "fn main() {}\n");
    assert_eq!(
        std::fs::read_dir(&host_dir).unwrap().count(),
        0,
        "the restore wrote into the host"
    );
    assert!(!ws.join("key").exists() && !ws.join("ssh").exists());
}

/// A snapshot that cannot be taken (here the store's directory is a file)
/// fails the run with an error naming the snapshot: the command never
/// runs, and nothing of the run is left in the engine.
#[test]
fn a_failed_snapshot_fails_the_run_before_its_container_starts() {
    let Some(home) = Home::new() else { return };
    std::fs::create_dir_all(home.home()).unwrap();
    std::fs::write(home.home().join("snapshots"), "not a directory").unwrap();
    let out = home.run(&["run", "--", "touch", "command-ran"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("the pre-run snapshot failed"), "{stderr}");
    assert!(stderr.contains("snapshots.disabled"), "no hint: {stderr}");
    assert!(!home.root.join("ws/command-ran").exists(), "the command ran");
    let run = newest_run(&home);
    assert_eq!(home.metadata(&run)["state"], "failed");
    home.wait_cleaned(&run, Duration::from_secs(30));
    assert_eq!(home.objects_of_run(&run), Vec::<String>::new(), "objects left behind");
}
