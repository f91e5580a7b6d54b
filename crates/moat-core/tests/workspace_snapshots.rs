//! Workspace snapshots on real directories: deduplication and the stat
//! cache, exclusions, diff, restore, retention and garbage collection, and
//! the attacks a workspace can make on the store (symlinks to the host's
//! secrets, a directory swapped for a symlink before a restore, a tampered
//! manifest).

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use moat_core::snapshot::{self, ChangeKind, Retention, Rules, SnapshotMeta, SnapshotStore, TakeRequest, Trigger};
use moat_core::{MoatHome, RunId};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: SnapshotStore,
    workspace: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let workspace = root.join("ws");
        fs::create_dir_all(&workspace).unwrap();
        Fixture {
            store: SnapshotStore::new(&MoatHome::new(root.join("home"))),
            _dir: dir,
            root,
            workspace,
        }
    }

    fn write(&self, rel: &str, content: &str) {
        let path = self.workspace.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn take(&self, run: &RunId, rules: Rules) -> SnapshotMeta {
        let cancel = AtomicBool::new(false);
        snapshot::take(
            &self.store,
            &TakeRequest {
                workspace: &self.workspace,
                run_id: run,
                trigger: Trigger::PreRun,
                rules,
                cancel: &cancel,
            },
        )
        .unwrap()
    }

    fn paths(&self, meta: &SnapshotMeta) -> Vec<String> {
        self.store.entries(meta).unwrap().into_iter().map(|e| e.path).collect()
    }

    fn objects(&self) -> Vec<Vec<u8>> {
        let mut found = Vec::new();
        collect_files(&self.store.root().join("objects"), &mut found);
        found.into_iter().map(|p| fs::read(p).unwrap()).collect()
    }

    fn restore(&self, meta: &SnapshotMeta, target: &Path) -> snapshot::RestoreReport {
        let entries = self.store.entries(meta).unwrap();
        let now = if target.exists() {
            snapshot::scan_workspace(&self.store, target, &meta.rules).unwrap()
        } else {
            snapshot::Workspace::default()
        };
        let changes = snapshot::diff(&entries, &meta.skipped, &now);
        snapshot::restore(&self.store, &entries, &changes, target).unwrap()
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_type().unwrap().is_dir() {
            collect_files(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

fn gitignore() -> Rules {
    Rules {
        gitignore: true,
        additional: Vec::new(),
    }
}

#[test]
fn contents_are_stored_once_and_unchanged_files_are_not_read_again() {
    let f = Fixture::new();
    f.write("a.txt", "same");
    f.write("dir/b.txt", "same");
    f.write("dir/c.txt", "other");
    let run = RunId::generate();
    let first = f.take(&run, gitignore());
    assert_eq!((first.files, first.dirs), (3, 1));
    assert_eq!(f.objects().len(), 2, "equal contents are one object");
    assert_eq!((first.stored_bytes, first.read_files), (9, 3));
    // Files changed less than 2 s before a snapshot are read again: too
    // recent to trust their stamp.
    let second = f.take(&run, gitignore());
    assert_eq!((second.stored_bytes, second.read_files), (0, 3));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let settled = f.take(&run, gitignore());
    assert_eq!(settled.read_files, 3);
    let cached = f.take(&run, gitignore());
    assert_eq!(
        (cached.stored_bytes, cached.read_files),
        (0, 0),
        "unchanged files were read"
    );
    // Same size, same inode, mtime set back: only the ctime tells.
    let mtime = fs::metadata(f.workspace.join("dir/c.txt")).unwrap().modified().unwrap();
    f.write("dir/c.txt", "OTHER");
    fs::File::options()
        .write(true)
        .open(f.workspace.join("dir/c.txt"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let forged = f.take(&run, gitignore());
    assert_eq!((forged.stored_bytes, forged.read_files), (5, 1));
    f.write("dir/c.txt", "changed");
    let third = f.take(&run, gitignore());
    assert_eq!((third.stored_bytes, third.read_files), (7, 1));
    assert_eq!(f.objects().len(), 4);
}

#[test]
fn gitignore_and_additional_patterns_are_left_out_and_git_always() {
    let f = Fixture::new();
    f.write(".gitignore", "target/\n*.log\n!keep.log\n");
    f.write("src/main.rs", "fn main() {}");
    f.write("target/debug/bin", "binary");
    f.write("build.log", "log");
    f.write("keep.log", "kept");
    f.write("notes/secret.txt", "s");
    f.write(".git/config", "[core]");
    f.write(".git/info/exclude", "excluded-by-git-info\n");
    f.write("excluded-by-git-info", "x");
    let run = RunId::generate();
    let rules = Rules {
        gitignore: true,
        additional: vec!["notes/secret.txt".into()],
    };
    let meta = f.take(&run, rules);
    assert_eq!(
        f.paths(&meta),
        [".gitignore", "keep.log", "notes", "src", "src/main.rs"]
    );
    let all = f.take(
        &run,
        Rules {
            gitignore: false,
            additional: Vec::new(),
        },
    );
    assert!(f.paths(&all).contains(&"target/debug/bin".to_string()));
    assert!(!f.paths(&all).iter().any(|p| p.starts_with(".git/")));
}

/// The workspace is the agent's: a symlink to the host's secrets is kept
/// as a symlink and nothing it points at enters the store.
#[test]
fn a_symlink_to_host_secrets_is_stored_as_a_symlink_and_never_followed() {
    let f = Fixture::new();
    let secrets = f.root.join("dot-ssh");
    fs::create_dir_all(&secrets).unwrap();
    fs::write(secrets.join("id_ed25519"), "TOP-SECRET-KEY").unwrap();
    symlink(&secrets, f.workspace.join("ssh")).unwrap();
    symlink(secrets.join("id_ed25519"), f.workspace.join("key")).unwrap();
    f.write("ok.txt", "fine");
    let meta = f.take(&RunId::generate(), gitignore());
    let entries = f.store.entries(&meta).unwrap();
    let key = entries.iter().find(|e| e.path == "key").unwrap();
    assert_eq!(key.kind, snapshot::EntryKind::Symlink);
    assert_eq!(
        key.target.as_deref(),
        Some(secrets.join("id_ed25519").to_str().unwrap())
    );
    assert_eq!(f.paths(&meta), ["key", "ok.txt", "ssh"]);
    assert!(
        f.objects().iter().all(|o| o != b"TOP-SECRET-KEY"),
        "the secret entered the store"
    );
    // Restored elsewhere, the links are links again (not copies).
    let copy = f.root.join("copy");
    f.restore(&meta, &copy);
    assert_eq!(fs::read_link(copy.join("ssh")).unwrap(), secrets);
    assert!(fs::symlink_metadata(copy.join("key")).unwrap().file_type().is_symlink());
}

/// Restore writes nothing outside its target, even when the agent has
/// replaced a directory of the workspace with a symlink to a host directory.
#[test]
fn restore_never_writes_through_a_symlink_planted_in_the_workspace() {
    let f = Fixture::new();
    f.write("src/lib.rs", "original");
    f.write("README", "readme");
    let meta = f.take(&RunId::generate(), gitignore());
    let outside = f.root.join("host-dir");
    fs::create_dir_all(&outside).unwrap();
    fs::remove_dir_all(f.workspace.join("src")).unwrap();
    symlink(&outside, f.workspace.join("src")).unwrap();
    // And a file replaced by a symlink to a host file.
    let host_file = f.root.join("host-file");
    fs::write(&host_file, "host content").unwrap();
    fs::remove_file(f.workspace.join("README")).unwrap();
    symlink(&host_file, f.workspace.join("README")).unwrap();
    f.write("added.txt", "new");
    f.restore(&meta, &f.workspace);
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote into the host directory"
    );
    assert_eq!(fs::read_to_string(&host_file).unwrap(), "host content");
    assert!(fs::symlink_metadata(f.workspace.join("src")).unwrap().is_dir());
    assert_eq!(fs::read_to_string(f.workspace.join("src/lib.rs")).unwrap(), "original");
    assert!(fs::symlink_metadata(f.workspace.join("README")).unwrap().is_file());
    assert!(!f.workspace.join("added.txt").exists());
}

#[test]
fn a_manifest_naming_a_path_outside_the_workspace_is_refused() {
    let f = Fixture::new();
    f.write("a", "a");
    let run = RunId::generate();
    let meta = f.take(&run, gitignore());
    let manifest = f
        .store
        .root()
        .join("runs")
        .join(run.as_str())
        .join(meta.id.as_str())
        .join("manifest.json");
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(&manifest, text.replace("\"path\":\"a\"", "\"path\":\"../escape\"")).unwrap();
    let err = f.store.entries(&meta).unwrap_err().to_string();
    assert!(err.contains("not a path inside the workspace"), "{err}");
}

#[test]
fn diff_names_added_removed_and_modified_paths_and_restore_undoes_them() {
    let f = Fixture::new();
    f.write("keep.txt", "keep");
    f.write("edit.txt", "before");
    f.write("gone/deep.txt", "deep");
    fs::set_permissions(f.workspace.join("keep.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    let meta = f.take(&RunId::generate(), gitignore());
    f.write("edit.txt", "after");
    fs::remove_dir_all(f.workspace.join("gone")).unwrap();
    f.write("new.txt", "new");
    let entries = f.store.entries(&meta).unwrap();
    let now = snapshot::scan_workspace(&f.store, &f.workspace, &meta.rules).unwrap();
    let changes: Vec<(String, ChangeKind)> = snapshot::diff(&entries, &[], &now)
        .into_iter()
        .map(|c| (c.path, c.kind))
        .collect();
    assert_eq!(
        changes,
        [
            ("edit.txt".to_string(), ChangeKind::Modified),
            ("gone".to_string(), ChangeKind::Removed),
            ("gone/deep.txt".to_string(), ChangeKind::Removed),
            ("new.txt".to_string(), ChangeKind::Added),
        ]
    );
    let report = f.restore(&meta, &f.workspace);
    assert_eq!((report.written, report.removed), (3, 1));
    assert_eq!(fs::read_to_string(f.workspace.join("edit.txt")).unwrap(), "before");
    assert_eq!(fs::read_to_string(f.workspace.join("gone/deep.txt")).unwrap(), "deep");
    let again = snapshot::scan_workspace(&f.store, &f.workspace, &meta.rules).unwrap();
    assert!(snapshot::diff(&entries, &[], &again).is_empty());
    // Restored elsewhere: the same tree with the same modes.
    let copy = f.root.join("copy");
    f.restore(&meta, &copy);
    let mode = fs::metadata(copy.join("keep.txt")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

#[test]
fn a_damaged_object_is_never_restored() {
    let f = Fixture::new();
    f.write("a.txt", "good content");
    let meta = f.take(&RunId::generate(), gitignore());
    let mut objects = Vec::new();
    collect_files(&f.store.root().join("objects"), &mut objects);
    fs::write(&objects[0], "evil content").unwrap();
    let entries = f.store.entries(&meta).unwrap();
    let copy = f.root.join("copy");
    let now = snapshot::scan_workspace(&f.store, &copy, &meta.rules).unwrap_or_default();
    let changes = snapshot::diff(&entries, &[], &now);
    let err = snapshot::restore(&f.store, &entries, &changes, &copy).unwrap_err();
    assert!(err.to_string().contains("damaged"), "{err}");
    assert!(!copy.join("a.txt").exists());
}

#[test]
fn retention_keeps_the_newest_and_the_first_unless_delete_initial() {
    for delete_initial in [false, true] {
        let f = Fixture::new();
        let mut taken = Vec::new();
        for round in 0..4 {
            f.write("file.txt", &format!("round {round}"));
            taken.push(f.take(&RunId::generate(), gitignore()));
        }
        let retention = Retention {
            max_count: 2,
            delete_initial,
        };
        let report = f.store.prune(&f.workspace, retention).unwrap();
        assert_eq!(report.snapshots, 2);
        assert_eq!(
            report.objects, 2,
            "the contents only pruned snapshots held are collected"
        );
        let kept: Vec<_> = f
            .store
            .list_workspace(&f.workspace)
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        let expected = if delete_initial {
            vec![taken[2].id.clone(), taken[3].id.clone()]
        } else {
            vec![taken[0].id.clone(), taken[3].id.clone()]
        };
        assert_eq!(kept, expected);
    }
}

#[test]
fn deleting_a_run_collects_what_only_its_snapshots_held() {
    let f = Fixture::new();
    f.write("shared.txt", "shared");
    let first = RunId::generate();
    f.take(&first, gitignore());
    f.write("only-second.txt", "second");
    let second = RunId::generate();
    f.take(&second, gitignore());
    let report = f.store.delete_run(&second).unwrap();
    assert_eq!((report.snapshots, report.objects), (1, 1));
    assert_eq!(f.objects(), [b"shared".to_vec()]);
    assert!(
        f.store
            .list_workspace(&f.workspace)
            .unwrap()
            .iter()
            .all(|m| m.run_id == first)
    );
}
