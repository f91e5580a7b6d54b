//! The git side of `moat wt`: the repository the current directory belongs
//! to, its worktrees under `MOAT_HOME/worktrees/<repo>/<branch>` (created
//! from HEAD, reused, listed, removed through `git worktree`), and the
//! mounts that let git work inside the container.
//!
//! A linked worktree's `.git` file names a directory of the main
//! repository (`<repo>/.git/worktrees/<name>`), a host path: the main `.git`
//! is mounted at the same path, **read-only**, with only what a commit
//! writes made writable on top: `objects/`, `refs/`, `logs/` and the
//! worktree's own directory. Everything that makes the host run code stays
//! read-only: `config` (`core.hooksPath`, `core.fsmonitor`, filters),
//! `hooks/`, a `commondir` file the agent could add, and the worktree's
//! `.git`, `commondir` and `gitdir` files (which could point the host's git
//! at a directory the agent made). See docs/worktrees.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use moat_core::MoatHome;
use moat_core::config::{Mount, MountMode};
use moat_core::subprocess::Subprocess;

use crate::live;
use crate::report::CliError;

/// Bound on one git command.
const GIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a worktree cannot be made, used or removed.
#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    #[error("`git {command}` failed: {message}")]
    Git { command: String, message: String },
    #[error("{} is not in a git repository", .0.display())]
    NotARepository(PathBuf),
    #[error("{0:?} is not a valid branch name")]
    BadBranch(String),
    #[error("{} exists and is not a worktree of {}", path.display(), repo.display())]
    Foreign { path: PathBuf, repo: PathBuf },
    #[error("the worktree {} is on {actual}, not {wanted}", path.display())]
    OtherBranch {
        path: PathBuf,
        wanted: String,
        actual: String,
    },
    #[error(
        "{} has extensions.worktreeConfig on: the agent could write a per-worktree config the host's git \
         reads (core.hooksPath, core.fsmonitor)",
        .0.display()
    )]
    WorktreeConfig(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is not valid UTF-8, which moat passes to git", .0.display())]
    NotUtf8(PathBuf),
}

impl WorktreeError {
    /// A hint for the user, where there is a useful one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            WorktreeError::NotARepository(_) => Some("run `moat wt` inside the repository the agent works on"),
            WorktreeError::Foreign { .. } => {
                Some("another repository of the same name uses that directory; remove it or rename a repository")
            }
            WorktreeError::WorktreeConfig(_) => {
                Some("turn it off (`git config --unset extensions.worktreeConfig`) or use `moat run`")
            }
            _ => None,
        }
    }
}

impl From<WorktreeError> for CliError {
    fn from(e: WorktreeError) -> Self {
        let hint = e.hint();
        let error = CliError::new(e.to_string());
        match hint {
            Some(hint) => error.with_hint(hint),
            None => error,
        }
    }
}

/// The repository `moat wt` works on: the one holding the current directory.
#[derive(Clone, Debug)]
pub struct Repository {
    /// The common git directory (the main repository's `.git`).
    pub git_dir: PathBuf,
    /// `<repo>` of `MOAT_HOME/worktrees/<repo>/`: the main worktree's
    /// directory name.
    pub name: String,
}

/// One worktree `moat wt` made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Worktree {
    pub branch: String,
    pub path: PathBuf,
}

/// Runs git with `args`; its trimmed stdout, or the error naming the call.
fn git(args: &[&str]) -> Result<String, WorktreeError> {
    let command = args.join(" ");
    let output = live::block_on(async {
        Ok(Subprocess::new("git", GIT_TIMEOUT)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            // Messages are matched (e.g. "not a git repository").
            .env("LC_ALL", "C")
            .run()
            .await?)
    })
    .map_err(|e| WorktreeError::Git {
        command: command.clone(),
        message: e.to_string(),
    })?;
    if !output.success() {
        return Err(WorktreeError::Git {
            command,
            message: output.stderr.trim().to_string(),
        });
    }
    Ok(output.stdout.trim_end_matches('\n').to_string())
}

/// `path` as a git argument; git is given UTF-8 paths only.
fn path_arg(path: &Path) -> Result<&str, WorktreeError> {
    path.to_str().ok_or_else(|| WorktreeError::NotUtf8(path.to_path_buf()))
}

impl Repository {
    /// The repository holding `dir` (from a linked worktree: its main one).
    pub fn containing(dir: &Path) -> Result<Repository, WorktreeError> {
        let common = git(&[
            "-C",
            path_arg(dir)?,
            "rev-parse",
            "--path-format=absolute",
            "--git-common-dir",
        ])
        .map_err(|e| match e {
            WorktreeError::Git { message, .. } if message.contains("not a git repository") => {
                WorktreeError::NotARepository(dir.to_path_buf())
            }
            other => other,
        })?;
        let git_dir = std::fs::canonicalize(&common).map_err(|source| WorktreeError::Io {
            path: PathBuf::from(&common),
            source,
        })?;
        let top = if git_dir.file_name().is_some_and(|n| n == ".git") {
            git_dir.parent().unwrap_or(&git_dir)
        } else {
            &git_dir
        };
        let name = top
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".git").to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "repository".to_string());
        Ok(Repository { git_dir, name })
    }

    fn git_in_repo(&self, args: &[&str]) -> Result<String, WorktreeError> {
        let mut all = vec!["--git-dir", path_arg(&self.git_dir)?];
        all.extend_from_slice(args);
        git(&all)
    }

    /// `MOAT_HOME/worktrees/<repo>`.
    pub fn worktrees_dir(&self, home: &MoatHome) -> PathBuf {
        home.root().join("worktrees").join(&self.name)
    }

    /// Refuses a repository whose per-worktree config the agent could write.
    pub fn check_safe_to_mount(&self) -> Result<(), WorktreeError> {
        let enabled = self
            .git_in_repo(&["config", "--bool", "--get", "extensions.worktreeConfig"])
            .unwrap_or_default();
        if enabled == "true" {
            return Err(WorktreeError::WorktreeConfig(self.git_dir.clone()));
        }
        Ok(())
    }

    /// The worktree of `branch` under `MOAT_HOME/worktrees/<repo>/`, made
    /// (with the branch, from HEAD, when it does not exist) or reused.
    /// Returns it and whether it was made now.
    pub fn ensure_worktree(&self, home: &MoatHome, branch: &str) -> Result<(Worktree, bool), WorktreeError> {
        check_branch(branch)?;
        let path = self.worktrees_dir(home).join(branch);
        if let Some(existing) = self.find(home, &path)? {
            if existing.branch != branch {
                return Err(WorktreeError::OtherBranch {
                    path,
                    wanted: branch.to_string(),
                    actual: existing.branch,
                });
            }
            return Ok((existing, false));
        }
        if path.exists() {
            return Err(WorktreeError::Foreign {
                path,
                repo: self.git_dir.clone(),
            });
        }
        let exists = self
            .git_in_repo(&["show-ref", "--verify", "--quiet", &format!("refs/heads/{branch}")])
            .is_ok();
        let target = path_arg(&path)?.to_string();
        if exists {
            self.git_in_repo(&["worktree", "add", &target, branch])?;
        } else {
            self.git_in_repo(&["worktree", "add", "-b", branch, &target, "HEAD"])?;
        }
        let made = self.find(home, &path)?.ok_or_else(|| WorktreeError::Git {
            command: "worktree list".into(),
            message: format!("{} is not listed after `git worktree add`", path.display()),
        })?;
        Ok((made, true))
    }

    /// The worktree of this repository at `path`, if there is one.
    fn find(&self, home: &MoatHome, path: &Path) -> Result<Option<Worktree>, WorktreeError> {
        let wanted = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(self.list(home)?.into_iter().find(|w| w.path == wanted))
    }

    /// The worktrees of this repository under `MOAT_HOME/worktrees/<repo>/`.
    pub fn list(&self, home: &MoatHome) -> Result<Vec<Worktree>, WorktreeError> {
        let porcelain = self.git_in_repo(&["worktree", "list", "--porcelain"])?;
        let root = self.worktrees_dir(home);
        let root = std::fs::canonicalize(&root).unwrap_or(root);
        Ok(parse_worktree_list(&porcelain)
            .into_iter()
            .filter(|w| w.path.starts_with(&root))
            .collect())
    }

    /// Removes a worktree (the branch and its commits stay).
    pub fn remove(&self, worktree: &Worktree, force: bool) -> Result<(), WorktreeError> {
        let target = path_arg(&worktree.path)?.to_string();
        let mut args = vec!["worktree", "remove"];
        if force {
            args.push("--force");
        }
        args.push(&target);
        self.git_in_repo(&args).map(drop)
    }
}

/// Whether a worktree has changes not committed (untracked files count).
pub fn is_dirty(worktree: &Worktree) -> Result<bool, WorktreeError> {
    let status = git(&["-C", path_arg(&worktree.path)?, "status", "--porcelain"])?;
    Ok(!status.trim().is_empty())
}

fn check_branch(branch: &str) -> Result<(), WorktreeError> {
    if branch.starts_with('-') || git(&["check-ref-format", "--branch", branch]).is_err() {
        return Err(WorktreeError::BadBranch(branch.to_string()));
    }
    Ok(())
}

/// `git worktree list --porcelain`: worktrees on a branch (detached ones
/// and the main one's bare entry are skipped).
fn parse_worktree_list(porcelain: &str) -> Vec<Worktree> {
    porcelain
        .split("\n\n")
        .filter_map(|block| {
            let mut path = None;
            let mut branch = None;
            for line in block.lines() {
                if let Some(p) = line.strip_prefix("worktree ") {
                    path = Some(PathBuf::from(p));
                } else if let Some(b) = line.strip_prefix("branch refs/heads/") {
                    branch = Some(b.to_string());
                }
            }
            Some(Worktree {
                path: path?,
                branch: branch?,
            })
        })
        .collect()
}

/// The directory of the main repository a linked worktree's `.git` file
/// names (`gitdir: <repo>/.git/worktrees/<name>`), exactly as written.
fn worktree_git_dir(worktree: &Path) -> Result<PathBuf, WorktreeError> {
    let file = worktree.join(".git");
    let text = std::fs::read_to_string(&file).map_err(|source| WorktreeError::Io {
        path: file.clone(),
        source,
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("gitdir: "))
        .map(|p| PathBuf::from(p.trim()))
        .filter(|p| p.is_absolute())
        .ok_or_else(|| WorktreeError::Git {
            command: "worktree".into(),
            message: format!("{} does not name an absolute gitdir", file.display()),
        })
}

/// The mounts that make the worktree a working repository in the container
/// and keep what the host's git executes out of the agent's reach.
pub fn git_mounts(repo: &Repository, worktree: &Worktree) -> Result<Vec<Mount>, WorktreeError> {
    let own = worktree_git_dir(&worktree.path)?;
    // `<common>/worktrees/<name>`, at the path the `.git` file names.
    let common = own
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| WorktreeError::NotARepository(worktree.path.clone()))?;
    let logs = repo.git_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|source| WorktreeError::Io { path: logs, source })?;
    let mount = |source: PathBuf, target: PathBuf, mode: MountMode| Mount {
        source: source.display().to_string(),
        target: target.display().to_string(),
        mode,
        exclude: Vec::new(),
    };
    let mut mounts = vec![mount(repo.git_dir.clone(), common.clone(), MountMode::Ro)];
    for writable in ["objects", "refs", "logs"] {
        mounts.push(mount(repo.git_dir.join(writable), common.join(writable), MountMode::Rw));
    }
    let own_source = std::fs::canonicalize(&own).map_err(|source| WorktreeError::Io {
        path: own.clone(),
        source,
    })?;
    mounts.push(mount(own_source.clone(), own.clone(), MountMode::Rw));
    for pointer in ["commondir", "gitdir"] {
        if own_source.join(pointer).is_file() {
            mounts.push(mount(own_source.join(pointer), own.join(pointer), MountMode::Ro));
        }
    }
    mounts.push(mount(
        worktree.path.join(".git"),
        PathBuf::from(crate::resolve::WORKSPACE_TARGET).join(".git"),
        MountMode::Ro,
    ));
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_porcelain_list_keeps_worktrees_on_a_branch() {
        let text = "worktree /r\nHEAD 1\nbranch refs/heads/main\n\n\
                    worktree /h/wt/r/feature/x\nHEAD 2\nbranch refs/heads/feature/x\n\n\
                    worktree /h/wt/r/detached\nHEAD 3\ndetached\n";
        assert_eq!(
            parse_worktree_list(text),
            [
                Worktree {
                    branch: "main".into(),
                    path: "/r".into()
                },
                Worktree {
                    branch: "feature/x".into(),
                    path: "/h/wt/r/feature/x".into()
                }
            ]
        );
    }
}
