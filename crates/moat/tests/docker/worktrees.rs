//! `moat wt` on the real engine: a worktree of the current repository for
//! a branch, where git works inside the container and a commit made there
//! is on the branch in the host's repository; the agent cannot plant code
//! the host's git would run (hooks, `core.hooksPath`, a redirected `.git`
//! file or `commondir`); `moat wt list` and `moat wt rm` (refused while a
//! run works there, and with uncommitted changes unless `--force`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::support::{Home, text};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// The workspace as a repository on `main` with one commit.
fn repository(home: &Home) -> PathBuf {
    let repo = home.root.join("ws");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["config", "user.name", "host"]);
    git(&repo, &["config", "user.email", "host@example.com"]);
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    git(&repo, &["add", "README"]);
    git(&repo, &["commit", "-qm", "first"]);
    repo
}

fn wt_list(home: &Home) -> Vec<serde_json::Value> {
    let out = home.run(&["wt", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_commit_in_the_container_lands_on_the_branch_and_the_agent_cannot_plant_host_code() {
    let Some(home) = Home::new() else { return };
    let repo = repository(&home);
    let worktree = home.home().join("worktrees/ws/feature");

    let agent = "cd /workspace && git status --short --branch && echo change > file.txt && git add file.txt \
                 && git -c user.name=agent -c user.email=agent@example.com commit -qm 'from the agent' \
                 && git log --oneline -1";
    let out = home.run(&["wt", "feature", "--", "sh", "-c", agent]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.starts_with("## feature\n"), "git status works inside: {stdout}");
    assert!(text(&out.stderr).contains("made worktree"), "{}", text(&out.stderr));
    assert_eq!(git(&repo, &["log", "-1", "--format=%s", "feature"]), "from the agent\n");
    assert_eq!(git(&repo, &["show", "feature:file.txt"]), "change\n");
    assert_eq!(
        git(&repo, &["rev-parse", "--abbrev-ref", "HEAD"]),
        "main\n",
        "the main checkout is untouched"
    );
    assert_eq!(home.only_run()["workspace"].as_str(), Some(worktree.to_str().unwrap()));

    // The agent tries every way to make the host's git run its code.
    let git_dir = repo.join(".git");
    let attacks = format!(
        "cd /workspace; \
         printf '#!/bin/sh\\ntouch /workspace/pwned\\n' > {g}/hooks/post-commit; echo hooks=$?; \
         mkdir -p {g}/hooks/sub 2>/dev/null; echo hooks_dir=$?; \
         git config core.hooksPath /workspace/evil; echo hooks_path=$?; \
         echo '[core]' >> {g}/config; echo config=$?; \
         echo /workspace/evil > {g}/commondir; echo commondir=$?; \
         echo /workspace/evil > {g}/worktrees/feature/commondir; echo own_commondir=$?; \
         echo 'gitdir: /workspace/evil' > /workspace/.git; echo gitfile=$?; \
         git -c user.name=agent -c user.email=agent@example.com commit -q --allow-empty -m second; echo commit=$?",
        g = git_dir.display()
    );
    let out = home.run(&["wt", "feature", "--", "sh", "-c", &attacks]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("reusing worktree"), "{}", text(&out.stderr));
    for attack in [
        "hooks",
        "hooks_dir",
        "hooks_path",
        "config",
        "commondir",
        "own_commondir",
        "gitfile",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{attack}=")))
            .unwrap_or_else(|| panic!("{attack}: {stdout}"));
        assert_ne!(line, format!("{attack}=0"), "the agent could write it: {stdout}");
    }
    assert!(stdout.contains("commit=0"), "commits still work: {stdout}");
    assert!(!git_dir.join("hooks/post-commit").exists());
    assert!(!git_dir.join("commondir").exists());
    assert!(
        !std::fs::read_to_string(git_dir.join("config"))
            .unwrap()
            .contains("hooksPath")
    );
    assert!(
        std::fs::read_to_string(worktree.join(".git"))
            .unwrap()
            .contains("/.git/worktrees/feature")
    );
    assert_eq!(git(&repo, &["log", "-1", "--format=%s", "feature"]), "second\n");
    git(&worktree, &["status"]);
    assert!(!worktree.join("pwned").exists(), "a hook ran on the host");

    // list, and rm: refused while a run works there and with changes.
    let listed = wt_list(&home);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["branch"], "feature");
    assert_eq!(listed[0]["dirty"], false);
    assert_eq!(listed[0]["run"], serde_json::Value::Null);
    let detached = home.run(&["wt", "feature", "-d", "-n", "busy", "--", "sleep", "60"]);
    assert!(detached.status.success(), "{}", text(&detached.stderr));
    home.wait_for_run(Duration::from_secs(30));
    assert_eq!(wt_list(&home)[0]["run"], "busy");
    let refused = home.run(&["wt", "rm", "--force", "feature"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("run busy is working in"),
        "{}",
        text(&refused.stderr)
    );
    assert!(home.run(&["stop", "busy"]).status.success());
    std::fs::write(worktree.join("notes.txt"), "not committed\n").unwrap();
    assert_eq!(wt_list(&home)[0]["dirty"], true);
    let refused = home.run(&["wt", "rm", "feature"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("uncommitted changes"),
        "{}",
        text(&refused.stderr)
    );
    assert!(worktree.exists());
    let removed = home.run(&["wt", "rm", "--force", "feature"]);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    assert!(!worktree.exists());
    assert!(wt_list(&home).is_empty());
    assert_eq!(
        git(&repo, &["log", "-1", "--format=%s", "feature"]),
        "second\n",
        "the branch stays"
    );
}
