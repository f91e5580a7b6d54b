//! `moat system prune`: ask the daemon for a sweep now and print its report.

use std::io::Write;

use anyhow::Result;
use moat_api::sweep::ObjectKind;
use moat_api::sweep::SweepRequest;

use crate::cli::{PruneArgs, SystemArgs, SystemCommand};
use crate::context::{Context, ExitStatus};
use crate::{live, maintenance};

pub fn system(ctx: &Context, args: &SystemArgs) -> Result<ExitStatus> {
    match &args.command {
        SystemCommand::Prune(prune) => self::prune(ctx, prune),
    }
}

fn prune(ctx: &Context, args: &PruneArgs) -> Result<ExitStatus> {
    let home = ctx.home()?;
    let request = SweepRequest {
        kinds: kinds(args),
        dry_run: args.dry_run,
        force: args.force,
        legacy: args.legacy,
    };
    let report = live::block_on(maintenance::sweep(&home, &ctx.printer, &request))?;
    let mut out = ctx.printer.stdout();
    maintenance::print_report(&report, &mut out)?;
    out.flush()?;
    let failed = report.error.is_some() || report.runtimes.iter().any(|r| !r.failed.is_empty());
    Ok(if failed {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

fn kinds(args: &PruneArgs) -> Vec<ObjectKind> {
    [
        (args.containers, ObjectKind::Container),
        (args.networks, ObjectKind::Network),
        (args.volumes, ObjectKind::Volume),
    ]
    .into_iter()
    .filter_map(|(wanted, kind)| wanted.then_some(kind))
    .collect()
}
