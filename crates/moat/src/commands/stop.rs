//! `moat stop`: ask the daemon to stop a live run.

use anyhow::Result;

use crate::cli::StopArgs;
use crate::context::{Context, ExitStatus, not_yet_available};

pub fn stop(_ctx: &Context, _args: &StopArgs) -> Result<ExitStatus> {
    not_yet_available("stop")
}
