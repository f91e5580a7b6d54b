//! `moat trace`: the run's proxied requests from `network.jsonl`.

use anyhow::Result;

use crate::cli::TraceArgs;
use crate::context::{Context, ExitStatus, not_yet_available};

pub fn trace(_ctx: &Context, _args: &TraceArgs) -> Result<ExitStatus> {
    not_yet_available("trace")
}
