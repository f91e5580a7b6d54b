//! `moat completions SHELL`: a completion script generated from the clap
//! definitions, on stdout.

use std::io::Write;

use anyhow::Result;

use crate::cli::{self, CompletionsArgs};
use crate::context::{Context, ExitStatus};

pub fn completions(ctx: &Context, args: &CompletionsArgs) -> Result<ExitStatus> {
    let mut out = ctx.printer.stdout();
    clap_complete::generate(args.shell, &mut cli::command(), "moat", &mut out);
    out.flush()?;
    Ok(ExitStatus::Success)
}
