//! `moat clean`: remove finished runs' records and ask the daemon to reap orphans.

use anyhow::Result;

use crate::cli::CleanArgs;
use crate::context::{Context, ExitStatus, not_yet_available};

pub fn clean(_ctx: &Context, _args: &CleanArgs) -> Result<ExitStatus> {
    not_yet_available("clean")
}
