//! `moat trust [PATH]`: approve a workspace's moat.yaml after showing what
//! it grants beyond moat's defaults.

use std::io::Write;

use anyhow::{Context as _, Result};
use moat_core::config;
use moat_core::trust::{Facts, TrustStore};

use crate::cli::TrustArgs;
use crate::context::{Context, ExitStatus};
use crate::report::CliError;

pub fn trust(ctx: &Context, args: &TrustArgs) -> Result<ExitStatus> {
    let workspace = std::fs::canonicalize(&args.path).with_context(|| format!("workspace {}", args.path.display()))?;
    let project = config::load_project(&workspace)?;
    let (Some(path), Some(hash)) = (&project.path, &project.content_hash) else {
        return Err(CliError::new(format!(
            "{} has no moat.yaml or agent.yaml: nothing to approve",
            workspace.display()
        ))
        .into());
    };
    let facts = Facts::of(&project.config, &workspace);
    let beyond_defaults = facts.widened_from(&Facts::default());
    crate::trust::record(&TrustStore::new(ctx.home()?.trust_json()), path, hash, facts)?;
    let mut out = ctx.printer.stdout();
    writeln!(out, "approved {} (sha256 {})", path.display(), &hash[..16])?;
    if beyond_defaults.is_empty() {
        writeln!(out, "it grants nothing beyond moat's defaults")?;
    } else {
        writeln!(out, "it grants beyond moat's defaults:")?;
        for line in beyond_defaults {
            writeln!(out, "  - {line}")?;
        }
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}
