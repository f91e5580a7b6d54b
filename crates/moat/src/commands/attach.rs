//! `moat attach`: re-attach to a live run's output or terminal through the daemon.

use anyhow::Result;

use crate::cli::AttachArgs;
use crate::context::{Context, ExitStatus, not_yet_available};

pub fn attach(_ctx: &Context, _args: &AttachArgs) -> Result<ExitStatus> {
    not_yet_available("attach")
}
