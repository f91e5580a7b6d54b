//! `moat agents`: the agents of the shipped registry, with their command,
//! dependency, grants and which grant a run would use (the first stored).

use std::io::Write;

use anyhow::Result;
use moat_core::deps::Registry;
use moat_creds::CredentialStore;
use serde::Serialize;

use crate::cli::AgentsArgs;
use crate::context::{Context, ExitStatus};

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    summary: String,
    command: String,
    dependency: String,
    grants: Vec<String>,
    /// The stored grant a run would use; `None`: none is stored.
    stored_grant: Option<String>,
}

pub fn agents(ctx: &Context, args: &AgentsArgs) -> Result<ExitStatus> {
    let registry = Registry::shipped()?;
    let store = CredentialStore::open(&ctx.home()?, ctx.profile.as_deref())?;
    let mut rows = Vec::new();
    for (name, agent) in registry.agents() {
        let mut stored_grant = None;
        for grant in &agent.grants {
            if store.load(grant)?.is_some() {
                stored_grant = Some(grant.clone());
                break;
            }
        }
        rows.push(Row {
            name: name.to_string(),
            summary: agent.summary.clone(),
            command: agent.command.join(" "),
            dependency: agent.dependency.clone(),
            grants: agent.grants.clone(),
            stored_grant,
        });
    }
    let mut out = ctx.printer.stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:<8} {:<8} {:<12} {:<18} {:<10} SUMMARY",
            "AGENT", "COMMAND", "DEPENDENCY", "GRANTS", "STORED"
        )?;
        for row in &rows {
            writeln!(
                out,
                "{:<8} {:<8} {:<12} {:<18} {:<10} {}",
                row.name,
                row.command,
                row.dependency,
                row.grants.join(", "),
                row.stored_grant.as_deref().unwrap_or("no"),
                row.summary
            )?;
        }
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}
