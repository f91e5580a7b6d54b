//! `moat exec`: run a command in a live run's container; exits with its code.

use anyhow::Result;

use crate::cli::ExecArgs;
use crate::context::{Context, ExitStatus, not_yet_available};

pub fn exec(_ctx: &Context, _args: &ExecArgs) -> Result<ExitStatus> {
    not_yet_available("exec")
}
