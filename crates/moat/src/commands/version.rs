//! `moat version`: the version of this binary.

use std::io::Write;

use anyhow::Result;

use crate::cli::VersionArgs;
use crate::context::{Context, ExitStatus};

pub fn version(ctx: &Context, args: &VersionArgs) -> Result<ExitStatus> {
    let version = env!("CARGO_PKG_VERSION");
    let mut out = ctx.printer.stdout();
    if args.json {
        writeln!(out, "{}", serde_json::json!({ "version": version }))?;
    } else {
        writeln!(out, "moat {version}")?;
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}
