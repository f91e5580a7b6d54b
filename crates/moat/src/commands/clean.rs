//! `moat clean`: remove finished runs' records (after a prompt, or with
//! `-f`), then ask the daemon to reap what those runs left behind.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use moat_core::store::RunEntry;
use moat_daemon::reaper::SweepRequest;

use crate::cli::CleanArgs;
use crate::context::{Context, ExitStatus};
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
    } else if !finished.is_empty() && (args.force || confirm(finished.len())?) {
        for id in &finished {
            store.destroy(id)?;
        }
        writeln!(out, "removed {} finished run record(s)", finished.len())?;
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

fn confirm(count: usize) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::new(format!(
            "{count} finished run record(s) would be removed, but there is no terminal to confirm"
        ))
        .with_hint("pass -f to remove them, or --dry-run to list them")
        .into());
    }
    eprint!("remove {count} finished run record(s)? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
