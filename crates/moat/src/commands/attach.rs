//! `moat attach`: re-attach to a live run's output through the daemon,
//! replaying recent output, until the run exits (then exit with its code).
//! Ctrl-C detaches; the run goes on.

use anyhow::Result;

use crate::cli::AttachArgs;
use crate::context::{Context, ExitStatus};
use crate::live;

pub fn attach(ctx: &Context, args: &AttachArgs) -> Result<ExitStatus> {
    let store = ctx.store()?;
    let run_id = store.resolve(Some(&args.run), false)?;
    let home = ctx.home()?;
    live::block_on(async {
        let client = live::daemon(&home).await?;
        live::follow(&client, &run_id, &ctx.printer, false).await
    })
}
