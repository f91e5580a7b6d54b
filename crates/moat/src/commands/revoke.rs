//! `moat revoke`: delete a stored credential.

use anyhow::Result;

use crate::cli::RevokeArgs;
use crate::context::{Context, ExitStatus, not_yet_available};

pub fn revoke(_ctx: &Context, _args: &RevokeArgs) -> Result<ExitStatus> {
    not_yet_available("revoke")
}
