//! `moat wt BRANCH [-- CMD]`: run in a git worktree of the current
//! repository for BRANCH (made from HEAD, with the branch, when missing;
//! reused otherwise), exactly like `moat run` in that directory plus the
//! mounts that make git work inside the container (see `worktree`).
//! `moat wt list` shows this repository's worktrees (branch, live run,
//! dirty or clean, path); `moat wt rm BRANCH` removes one, refusing while a
//! live run uses it, and refusing uncommitted changes without `--force`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use moat_core::MoatHome;
use moat_core::store::RunEntry;
use serde::Serialize;

use crate::cli::{WtAction, WtArgs};
use crate::context::{Context, ExitStatus};
use crate::report::CliError;
use crate::worktree::{self, Repository, Worktree};

pub fn wt(ctx: &Context, args: WtArgs) -> Result<ExitStatus> {
    let cwd = std::env::current_dir()?;
    let repo = Repository::containing(&cwd).map_err(CliError::from)?;
    let home = ctx.home()?;
    match (args.action, args.branch) {
        (Some(WtAction::List { json }), _) => list(ctx, &home, &repo, json),
        (Some(WtAction::Rm { branch, force }), _) => remove(ctx, &home, &repo, &branch, force),
        (None, Some(branch)) => run_in(ctx, &home, &repo, &branch, args.run),
        (None, None) => Err(CliError::new("name a branch: `moat wt feature-x -- CMD`").into()),
    }
}

fn run_in(
    ctx: &Context,
    home: &MoatHome,
    repo: &Repository,
    branch: &str,
    mut run: crate::cli::RunArgs,
) -> Result<ExitStatus> {
    if run.path != Path::new(".") {
        return Err(CliError::new(format!(
            "moat wt runs in the worktree of {branch}; a workspace path ({}) is not accepted",
            run.path.display()
        ))
        .with_hint("use `moat run PATH` for another directory")
        .into());
    }
    repo.check_safe_to_mount().map_err(CliError::from)?;
    let worktree = if run.settings.dry_run {
        repo.list(home)
            .map_err(CliError::from)?
            .into_iter()
            .find(|w| w.branch == branch)
            .ok_or_else(|| {
                CliError::new(format!("no worktree for {branch} yet; --dry-run creates nothing"))
                    .with_hint(format!("`moat wt {branch}` makes it"))
            })?
    } else {
        let (worktree, made) = repo.ensure_worktree(home, branch).map_err(CliError::from)?;
        ctx.printer.status(format!(
            "moat: {} worktree {} on {branch}",
            if made { "made" } else { "reusing" },
            worktree.path.display()
        ));
        worktree
    };
    run.settings
        .mounts
        .extend(worktree::git_mounts(repo, &worktree).map_err(CliError::from)?);
    run.path = worktree.path;
    super::run::run(ctx, run)
}

/// One worktree in `moat wt list`.
#[derive(Debug, Serialize)]
struct Row {
    branch: String,
    path: PathBuf,
    /// The live run working in it (name, else id).
    run: Option<String>,
    dirty: bool,
}

fn list(ctx: &Context, home: &MoatHome, repo: &Repository, json: bool) -> Result<ExitStatus> {
    let runs = live_runs(ctx)?;
    let mut rows = Vec::new();
    for worktree in repo.list(home).map_err(CliError::from)? {
        rows.push(Row {
            run: live_run_in(&runs, &worktree.path),
            dirty: worktree::is_dirty(&worktree).map_err(CliError::from)?,
            branch: worktree.branch,
            path: worktree.path,
        });
    }
    let mut out = ctx.printer.stdout();
    if json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        let width = rows.iter().map(|r| r.branch.len()).max().unwrap_or(0).max(6);
        let run_width = rows
            .iter()
            .map(|r| r.run.as_deref().map_or(1, str::len))
            .max()
            .unwrap_or(0)
            .max(3);
        writeln!(out, "{:<width$}  {:<run_width$}  {:<5}  PATH", "BRANCH", "RUN", "STATE")?;
        for row in &rows {
            writeln!(
                out,
                "{:<width$}  {:<run_width$}  {:<5}  {}",
                row.branch,
                row.run.as_deref().unwrap_or("-"),
                if row.dirty { "dirty" } else { "clean" },
                row.path.display()
            )?;
        }
    }
    out.flush()?;
    if rows.is_empty() && !json {
        ctx.printer
            .status(format!("no worktrees of {} yet; `moat wt BRANCH` makes one", repo.name));
    }
    Ok(ExitStatus::Success)
}

fn remove(ctx: &Context, home: &MoatHome, repo: &Repository, branch: &str, force: bool) -> Result<ExitStatus> {
    let Some(worktree) = repo
        .list(home)
        .map_err(CliError::from)?
        .into_iter()
        .find(|w| w.branch == branch)
    else {
        return Err(CliError::new(format!("no worktree of {} for {branch}", repo.name))
            .with_hint("`moat wt list` shows them")
            .into());
    };
    if let Some(run) = live_run_in(&live_runs(ctx)?, &worktree.path) {
        return Err(CliError::new(format!(
            "run {run} is working in {}; nothing was removed",
            worktree.path.display()
        ))
        .with_hint(format!("stop it first: `moat stop {run}`"))
        .into());
    }
    if !force && worktree::is_dirty(&worktree).map_err(CliError::from)? {
        return Err(CliError::new(format!(
            "{} has uncommitted changes; nothing was removed",
            worktree.path.display()
        ))
        .with_hint(format!(
            "commit them, or discard them with `moat wt rm --force {branch}`"
        ))
        .into());
    }
    repo.remove(&worktree, force).map_err(CliError::from)?;
    remove_empty_parents(&worktree, &repo.worktrees_dir(home));
    ctx.printer.status(format!(
        "removed {}; the branch {branch} keeps its commits",
        worktree.path.display()
    ));
    Ok(ExitStatus::Success)
}

/// Directories a branch with `/` left behind, up to the repository's.
fn remove_empty_parents(worktree: &Worktree, root: &Path) {
    let mut dir = worktree.path.parent();
    while let Some(parent) = dir {
        if !parent.starts_with(root) || parent == root || std::fs::remove_dir(parent).is_err() {
            break;
        }
        dir = parent.parent();
    }
}

/// Runs not yet finished: (workspace, name or id).
fn live_runs(ctx: &Context) -> Result<Vec<(PathBuf, String)>> {
    Ok(ctx
        .store()?
        .list()?
        .into_iter()
        .filter_map(|entry| match entry {
            RunEntry::Readable(meta) if !meta.state.is_terminal() => {
                Some((meta.workspace, meta.name.unwrap_or_else(|| meta.id.to_string())))
            }
            _ => None,
        })
        .collect())
}

fn live_run_in(runs: &[(PathBuf, String)], path: &Path) -> Option<String> {
    runs.iter()
        .find(|(workspace, _)| workspace == path)
        .map(|(_, run)| run.clone())
}
