//! `moat daemon status|stop|restart|run`: manage the daemon of this
//! MOAT_HOME (`run` is what the CLI spawns, hidden from help).

use anyhow::Result;

use crate::cli::{DaemonArgs, DaemonCommand};
use crate::context::{Context, ExitStatus, not_yet_available};

pub fn daemon(_ctx: &Context, args: &DaemonArgs) -> Result<ExitStatus> {
    match args.command {
        DaemonCommand::Status { .. } => not_yet_available("daemon status"),
        DaemonCommand::Stop => not_yet_available("daemon stop"),
        DaemonCommand::Restart => not_yet_available("daemon restart"),
        DaemonCommand::Run => not_yet_available("daemon run"),
    }
}
