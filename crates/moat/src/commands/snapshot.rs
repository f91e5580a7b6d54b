//! `moat snapshot list|diff|restore`: the workspace snapshots taken before
//! runs, read and restored straight from `MOAT_HOME/snapshots/` (no daemon;
//! like `moat list` reading run records). A run's own snapshot is the
//! default; any snapshot of the same workspace can be named. Restoring into
//! the workspace is refused where it differs from its newest snapshot
//! unless `--force`, which first snapshots the workspace as it is.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::{Context as _, Result};
use moat_core::RunMetadata;
use moat_core::snapshot::{self, ChangeKind, SnapshotMeta, SnapshotStore, TakeRequest, Trigger, Workspace};

use crate::cli::{SnapshotArgs, SnapshotCommand, SnapshotDiffArgs, SnapshotListArgs, SnapshotRestoreArgs};
use crate::commands::status::human_bytes;
use crate::context::{Context, ExitStatus};
use crate::printer::Style;
use crate::report::CliError;

pub fn snapshot(ctx: &Context, args: &SnapshotArgs) -> Result<ExitStatus> {
    match &args.command {
        SnapshotCommand::List(args) => list(ctx, args),
        SnapshotCommand::Diff(args) => diff(ctx, args),
        SnapshotCommand::Restore(args) => restore(ctx, args),
    }
}

/// The run named by `query` and the snapshot store.
fn run_and_store(ctx: &Context, query: Option<&str>) -> Result<(RunMetadata, SnapshotStore)> {
    let store = ctx.store()?;
    let id = store.resolve(query, false)?;
    let meta = store.load(&id).with_context(|| format!("reading the record of {id}"))?;
    Ok((meta, SnapshotStore::new(&ctx.home()?)))
}

fn list(ctx: &Context, args: &SnapshotListArgs) -> Result<ExitStatus> {
    let (run, store) = run_and_store(ctx, args.run.as_deref())?;
    let mut snapshots = store.list_workspace(&run.workspace)?;
    snapshots.reverse();
    let mut out = ctx.printer.stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &snapshots)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(ExitStatus::Success);
    }
    if snapshots.is_empty() {
        ctx.printer.status(format!(
            "no snapshots of {} (snapshots.disabled, or every run there started before snapshots were taken)",
            run.workspace.display()
        ));
        return Ok(ExitStatus::Success);
    }
    let header = format!(
        "{:<18}  {:<20}  {:<11}  {:<18}  {:>7}  {:>9}",
        "SNAPSHOT", "TAKEN", "TRIGGER", "RUN", "FILES", "SIZE"
    );
    writeln!(out, "{}", ctx.printer.paint_stdout(Style::Bold, header.trim_end()))?;
    for meta in &snapshots {
        let mine = if meta.run_id == run.id { "*" } else { "" };
        writeln!(
            out,
            "{:<18}  {:<20}  {:<11}  {:<18}  {:>7}  {:>9}",
            format!("{}{mine}", meta.id),
            meta.created_at.format("%Y-%m-%d %H:%M:%S"),
            meta.trigger.as_str(),
            meta.run_id,
            meta.files,
            human_bytes(meta.bytes)
        )?;
    }
    out.flush()?;
    ctx.printer.status(format!(
        "snapshots of {}; * marks those {} took",
        run.workspace.display(),
        run.display_name()
    ));
    Ok(ExitStatus::Success)
}

/// The snapshot `id` of the run's workspace, or the one the run took.
fn chosen(store: &SnapshotStore, run: &RunMetadata, id: Option<&str>) -> Result<SnapshotMeta> {
    let list_hint = format!("`moat snapshot list {}` lists the snapshots of its workspace", run.id);
    let id = match (id, &run.snapshot) {
        (Some(id), _) => id.to_string(),
        (None, Some(own)) => own.clone(),
        (None, None) => {
            return Err(CliError::new(format!("run {} took no snapshot", run.display_name()))
                .with_hint(list_hint)
                .into());
        }
    };
    let meta = store.find(&id).map_err(|e| match e {
        snapshot::SnapshotError::NotFound(_) => CliError::new(format!(
            "no snapshot {id} (snapshots beyond snapshots.retention.max_count are pruned)"
        ))
        .with_hint(list_hint.clone()),
        other => CliError::new(other.to_string()),
    })?;
    if meta.workspace != run.workspace {
        return Err(CliError::new(format!(
            "snapshot {id} is of {}, not of {}'s workspace {}",
            meta.workspace.display(),
            run.display_name(),
            run.workspace.display()
        ))
        .with_hint(list_hint)
        .into());
    }
    Ok(meta)
}

fn diff(ctx: &Context, args: &SnapshotDiffArgs) -> Result<ExitStatus> {
    let (run, store) = run_and_store(ctx, Some(&args.run))?;
    let meta = chosen(&store, &run, args.id.as_deref())?;
    let entries = store.entries(&meta)?;
    let now = snapshot::scan_workspace(&store, &meta.workspace, &meta.rules)?;
    let changes = snapshot::diff(&entries, &meta.skipped, &now);
    let mut out = ctx.printer.stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &changes)?;
        writeln!(out)?;
    } else {
        for change in &changes {
            let (mark, style) = match change.kind {
                ChangeKind::Added => ("A", Style::Green),
                ChangeKind::Removed => ("D", Style::Red),
                ChangeKind::Modified => ("M", Style::Yellow),
            };
            let slash = if change.dir { "/" } else { "" };
            writeln!(out, "{} {}{slash}", ctx.printer.paint_stdout(style, mark), change.path)?;
        }
    }
    out.flush()?;
    ctx.printer.status(format!(
        "{} {} in {} since snapshot {} ({})",
        changes.len(),
        if changes.len() == 1 { "change" } else { "changes" },
        meta.workspace.display(),
        meta.id,
        meta.created_at.format("%Y-%m-%d %H:%M:%S")
    ));
    Ok(ExitStatus::Success)
}

fn restore(ctx: &Context, args: &SnapshotRestoreArgs) -> Result<ExitStatus> {
    let (run, store) = run_and_store(ctx, Some(&args.run))?;
    let meta = chosen(&store, &run, args.id.as_deref())?;
    let entries = store.entries(&meta)?;
    let (target, now) = match &args.to {
        Some(dir) => (std::path::absolute(dir)?, empty_target(dir)?),
        None => {
            check_workspace(ctx, &store, &run, args.force)?;
            let now = snapshot::scan_workspace(&store, &meta.workspace, &meta.rules)?;
            (meta.workspace.clone(), now)
        }
    };
    let changes = snapshot::diff(&entries, &meta.skipped, &now);
    let report = snapshot::restore(&store, &entries, &changes, &target)?;
    ctx.printer.status(format!(
        "restored snapshot {} into {}: {} paths written, {} removed",
        meta.id,
        target.display(),
        report.written,
        report.removed
    ));
    Ok(ExitStatus::Success)
}

/// A `--to` directory: new or empty.
fn empty_target(dir: &Path) -> Result<Workspace> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) => Err(
            CliError::new(format!("--to {}: the directory is not empty", dir.display()))
                .with_hint("name a new or empty directory")
                .into(),
        ),
        Ok(false) => Ok(Workspace::default()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Workspace::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// Refuses to restore into the workspace of a live run, or over changes
/// its newest snapshot does not hold (unless `force`, which snapshots the
/// workspace first so the restore can be undone).
fn check_workspace(ctx: &Context, store: &SnapshotStore, run: &RunMetadata, force: bool) -> Result<()> {
    if !run.state.is_terminal() {
        return Err(CliError::new(format!(
            "run {} is {}: its agent could be writing the workspace",
            run.display_name(),
            run.state
        ))
        .with_hint(format!(
            "stop it first (`moat stop {}`), or restore elsewhere with --to DIR",
            run.id
        ))
        .into());
    }
    let Some(newest) = store.list_workspace(&run.workspace)?.pop() else {
        return Ok(());
    };
    let now = snapshot::scan_workspace(store, &run.workspace, &newest.rules)?;
    let unsaved = snapshot::diff(&store.entries(&newest)?, &newest.skipped, &now);
    if unsaved.is_empty() {
        return Ok(());
    }
    if !force {
        let examples: Vec<&str> = unsaved.iter().take(5).map(|c| c.path.as_str()).collect();
        return Err(CliError::new(format!(
            "{} of {} {} from its newest snapshot {} ({}{}); restoring would overwrite them",
            if unsaved.len() == 1 {
                "1 path".to_string()
            } else {
                format!("{} paths", unsaved.len())
            },
            run.workspace.display(),
            if unsaved.len() == 1 { "differs" } else { "differ" },
            newest.id,
            examples.join(", "),
            if unsaved.len() > examples.len() { ", …" } else { "" }
        ))
        .with_hint(format!(
            "`moat snapshot diff {} {}` shows them; --force restores anyway (the workspace is snapshotted \
             first), --to DIR restores elsewhere",
            run.id, newest.id
        ))
        .into());
    }
    let cancel = AtomicBool::new(false);
    let safety = snapshot::take(
        store,
        &TakeRequest {
            workspace: &run.workspace,
            run_id: &run.id,
            trigger: Trigger::PreRestore,
            rules: newest.rules.clone(),
            cancel: &cancel,
        },
    )?;
    ctx.printer.status(format!(
        "the workspace as it was is snapshot {} (`moat snapshot restore {} {} --force` undoes this restore)",
        safety.id, run.id, safety.id
    ));
    Ok(())
}
