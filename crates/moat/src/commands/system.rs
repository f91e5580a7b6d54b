//! `moat system prune`: ask the daemon for a sweep now and print its report;
//! with `--images`, ask it to remove the images it built that went unused.

use std::io::Write;

use anyhow::Result;
use moat_api::images::{DEFAULT_UNUSED_DAYS, ImagePruneReport, ImagePruneRequest};
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
    if args.images {
        return prune_images(ctx, args);
    }
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

fn prune_images(ctx: &Context, args: &PruneArgs) -> Result<ExitStatus> {
    let home = ctx.home()?;
    let request = ImagePruneRequest {
        older_than_days: args.older_than.unwrap_or(DEFAULT_UNUSED_DAYS),
        dry_run: args.dry_run,
    };
    let report = live::block_on(async {
        let client = live::daemon(&home).await?;
        client.prune_images(&request).await.map_err(live::client_error)
    })?;
    let mut out = ctx.printer.stdout();
    print_images(&report, request.older_than_days, &mut out)?;
    out.flush()?;
    Ok(if report.failed.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

fn print_images(report: &ImagePruneReport, days: u32, out: &mut impl Write) -> std::io::Result<()> {
    let verb = if report.dry_run { "would remove" } else { "removed" };
    for image in &report.removed {
        writeln!(out, "{verb} {}", image.tag)?;
    }
    for image in &report.failed {
        writeln!(out, "could not remove {}: {}", image.tag, image.reason)?;
    }
    for image in &report.kept {
        writeln!(out, "kept {} ({})", image.tag, image.reason)?;
    }
    writeln!(
        out,
        "{} image(s) {verb}, {} kept, {} failed (unused for {days} days or more: removed)",
        report.removed.len(),
        report.kept.len(),
        report.failed.len()
    )
}
