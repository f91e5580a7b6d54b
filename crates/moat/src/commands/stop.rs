//! `moat stop`: ask the daemon to stop a live run (graceful, then killed
//! after the grace period); the daemon records the exit and cleans up.

use anyhow::Result;

use crate::cli::StopArgs;
use crate::context::{Context, ExitStatus};
use crate::live;
use crate::report::CliError;

pub fn stop(ctx: &Context, args: &StopArgs) -> Result<ExitStatus> {
    let store = ctx.store()?;
    let run_id = store.resolve(args.run.as_deref(), true)?;
    let meta = store.load(&run_id)?;
    if meta.state.is_terminal() {
        return Err(CliError::new(format!("run {run_id} already {}", meta.state))
            .with_hint(format!("`moat destroy {run_id}` deletes its record"))
            .into());
    }
    let home = ctx.home()?;
    live::block_on(async {
        let client = live::daemon(&home).await?;
        client.stop_run(&run_id, false).await.map_err(live::client_error)?;
        ctx.printer.status(format!("stopped {run_id}"));
        Ok(ExitStatus::Success)
    })
}
