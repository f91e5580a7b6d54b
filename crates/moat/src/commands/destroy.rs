//! `moat destroy [RUN]`: ask the daemon to delete a finished run's record.
//! The daemon refuses while it may still own anything of the run (live,
//! being created, or its cleanup unfinished); an ambiguous name is an
//! error listing the matches, since this changes something.

use std::io::Write;

use anyhow::Result;

use crate::cli::DestroyArgs;
use crate::context::{Context, ExitStatus};
use crate::live;

pub fn destroy(ctx: &Context, args: &DestroyArgs) -> Result<ExitStatus> {
    let store = ctx.store()?;
    let id = store.resolve(args.run.as_deref(), true)?;
    let home = ctx.home()?;
    live::block_on(async {
        let client = live::daemon(&home).await?;
        client.destroy_run(&id).await.map_err(live::client_error)?;
        Ok(())
    })?;
    let mut out = ctx.printer.stdout();
    writeln!(out, "{id}")?;
    out.flush()?;
    Ok(ExitStatus::Success)
}
