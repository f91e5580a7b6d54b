//! `moat status`: runtimes, live runs, disk used and health warnings.

use anyhow::Result;

use crate::cli::StatusArgs;
use crate::context::{Context, ExitStatus, not_yet_available};

pub fn status(_ctx: &Context, _args: &StatusArgs) -> Result<ExitStatus> {
    not_yet_available("status")
}
