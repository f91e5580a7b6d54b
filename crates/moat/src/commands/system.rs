//! `moat system prune`: ask the daemon for a sweep now and print its report.

use anyhow::Result;

use crate::cli::{SystemArgs, SystemCommand};
use crate::context::{Context, ExitStatus, not_yet_available};

pub fn system(_ctx: &Context, args: &SystemArgs) -> Result<ExitStatus> {
    match args.command {
        SystemCommand::Prune(_) => not_yet_available("system prune"),
    }
}
