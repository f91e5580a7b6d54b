//! `moat audit`: verify a run's audit chain and signature, or an exported log.

use anyhow::Result;

use crate::cli::AuditArgs;
use crate::context::{Context, ExitStatus, not_yet_available};

pub fn audit(_ctx: &Context, _args: &AuditArgs) -> Result<ExitStatus> {
    not_yet_available("audit")
}
