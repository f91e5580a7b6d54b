//! `moat clean`: ask the daemon to remove finished runs' records (after a
//! prompt, or with `-f`), then to reap what those runs left behind.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use moat_api::sweep::SweepRequest;
use moat_core::RunId;
use moat_core::store::RunEntry;

use crate::cli::CleanArgs;
use crate::context::{Context, ExitStatus};
use crate::printer::Printer;
use crate::report::CliError;
use crate::{live, maintenance};

pub fn clean(ctx: &Context, args: &CleanArgs) -> Result<ExitStatus> {
    let store = ctx.store()?;
    let finished: Vec<_> = store
        .list()?
        .into_iter()
        .filter_map(|entry| match entry {
            RunEntry::Readable(meta) if meta.state.is_terminal() => Some(meta.id),
            _ => None,
        })
        .collect();
    let mut out = ctx.printer.stdout();
    if args.dry_run {
        for id in &finished {
            writeln!(out, "would remove the record of {id}")?;
        }
    } else if !finished.is_empty() && (args.force || confirm(&ctx.printer, finished.len())?) {
        let (removed, kept) = destroy_through_daemon(ctx, &finished)?;
        writeln!(out, "removed {removed} finished run record(s)")?;
        for reason in kept {
            ctx.printer.warning(reason);
        }
    }
    let request = SweepRequest {
        dry_run: args.dry_run,
        force: true,
        ..Default::default()
    };
    let report = live::block_on(maintenance::sweep(&ctx.home()?, &ctx.printer, &request))?;
    maintenance::print_report(&report, &mut out)?;
    out.flush()?;
    Ok(ExitStatus::Success)
}

/// Asks the daemon to delete each record; the ones it refuses (cleanup
/// not finished) are kept and reported, never deleted behind its back.
fn destroy_through_daemon(ctx: &Context, ids: &[RunId]) -> Result<(usize, Vec<String>)> {
    let home = ctx.home()?;
    live::block_on(async {
        let client = live::daemon(&home).await?;
        let mut removed = 0;
        let mut kept = Vec::new();
        for id in ids {
            match client.destroy_run(id).await {
                Ok(_) => removed += 1,
                Err(e) => kept.push(format!("kept the record of {id}: {e}")),
            }
        }
        Ok((removed, kept))
    })
}

fn confirm(printer: &Printer, count: usize) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::new(format!(
            "{count} finished run record(s) would be removed, but there is no terminal to confirm"
        ))
        .with_hint("pass -f to remove them, or --dry-run to list them")
        .into());
    }
    printer.prompt(format!("remove {count} finished run record(s)? [y/N] "));
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
