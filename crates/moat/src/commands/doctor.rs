//! `moat doctor`: runtime, daemon, reaper and credential health.

use anyhow::Result;

use crate::cli::DoctorArgs;
use crate::context::{Context, ExitStatus, not_yet_available};

pub fn doctor(_ctx: &Context, _args: &DoctorArgs) -> Result<ExitStatus> {
    not_yet_available("doctor")
}
