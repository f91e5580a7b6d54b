//! Trust on change at the command line: before `moat run` uses a
//! workspace's moat.yaml, it must grant nothing beyond what was approved
//! (or moat's defaults, the first time). Approval is a `[y/N]` prompt on a
//! terminal, `moat trust PATH`, or `--trust` for one run; without a
//! terminal an unapproved config is refused with those hints.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context as _, Result};
use chrono::Utc;
use moat_core::MoatHome;
use moat_core::config::LoadedProject;
use moat_core::trust::{Facts, TrustRecord, TrustStore, Verdict, judge};

use crate::printer::Printer;
use crate::report::CliError;

/// How the user answers for this invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approval {
    /// Ask on a terminal; refuse without one.
    Ask,
    /// `--trust`: use it for this run, record nothing.
    ThisRunOnly,
}

/// Checks the project's config against its approval; records narrower
/// configs as the new baseline and approvals given at the prompt.
pub fn check(
    home: &MoatHome,
    printer: &Printer,
    project: &LoadedProject,
    workspace: &Path,
    approval: Approval,
) -> Result<()> {
    let (Some(path), Some(hash)) = (&project.path, &project.content_hash) else {
        return Ok(());
    };
    let store = TrustStore::new(home.trust_json());
    let facts = Facts::of(&project.config, workspace);
    let previous = store.get(path).context("reading the approvals of moat.yaml files")?;
    let widened = match judge(hash, &facts, previous.as_ref()) {
        Verdict::Approved => return Ok(()),
        Verdict::Narrower => return record(&store, path, hash, facts),
        Verdict::NeedsApproval(widened) => widened,
    };
    let listing = widened.iter().map(|line| format!("\n  - {line}")).collect::<String>();
    let baseline = if previous.is_some() {
        "was last approved"
    } else {
        "moat's defaults"
    };
    if approval == Approval::ThisRunOnly {
        printer.warning(format!(
            "using {} for this run without approving it:{listing}",
            path.display()
        ));
        return Ok(());
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        if prompt(path, baseline, &listing)? {
            return record(&store, path, hash, facts);
        }
        return Err(CliError::new(format!("{} was not approved; nothing was started", path.display())).into());
    }
    Err(
        CliError::new(format!("{} asks for more than {baseline}:{listing}", path.display()))
            .with_hint(format!(
                "the workspace is writable by the agent: review the file, then approve it with `moat trust {}` \
         (or pass --trust for this run only)",
                workspace.display()
            ))
            .into(),
    )
}

/// Records the config as approved (the baseline for its next change).
pub fn record(store: &TrustStore, path: &Path, hash: &str, facts: Facts) -> Result<()> {
    let record = TrustRecord {
        hash: hash.to_string(),
        approved_at: Utc::now(),
        facts,
    };
    store
        .set(path, record)
        .with_context(|| format!("recording the approval of {}", path.display()))
}

fn prompt(path: &Path, baseline: &str, listing: &str) -> Result<bool> {
    let mut err = std::io::stderr().lock();
    write!(
        err,
        "{} asks for more than {baseline}:{listing}\napprove it? [y/N] ",
        path.display()
    )?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
