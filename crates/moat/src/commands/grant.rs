//! `moat grant`: store, list and show credentials.

use anyhow::Result;

use crate::cli::GrantArgs;
use crate::context::{Context, ExitStatus, not_yet_available};

pub fn grant(_ctx: &Context, _args: &GrantArgs) -> Result<ExitStatus> {
    not_yet_available("grant")
}
