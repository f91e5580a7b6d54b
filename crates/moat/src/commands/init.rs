//! `moat init [PATH]`: prints a moat.yaml guessed from the project's files
//! (`project_guess`) and writes it once the user agrees (`--yes` without
//! asking); an existing moat.yaml is replaced only with `--force`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context as _, Result};
use moat_core::config::PROJECT_FILE;

use crate::cli::InitArgs;
use crate::context::{Context, ExitStatus};
use crate::project_guess;
use crate::report::CliError;

pub fn init(ctx: &Context, args: &InitArgs) -> Result<ExitStatus> {
    let dir = match &args.path {
        Some(path) => path.clone(),
        None => std::env::current_dir().context("reading the current directory")?,
    };
    if !dir.is_dir() {
        return Err(CliError::new(format!("{} is not a directory", dir.display())).into());
    }
    let target = dir.join(PROJECT_FILE);
    if target.exists() && !args.force && !args.dry_run {
        return Err(
            CliError::new(format!("{} exists; moat init does not replace it", target.display()))
                .with_hint("`moat init --dry-run` prints the guess; `--force` replaces the file")
                .into(),
        );
    }
    let yaml = project_guess::guess(&dir).to_yaml();
    let mut out = ctx.printer.stdout();
    out.write_all(yaml.as_bytes())?;
    out.flush()?;
    if args.dry_run {
        return Ok(ExitStatus::Success);
    }
    if !args.yes && !confirmed(ctx, &target)? {
        ctx.printer.status("nothing written");
        return Ok(ExitStatus::Success);
    }
    moat_core::atomic::write_atomic(&target, yaml.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", target.display()))?;
    ctx.printer.status(format!(
        "wrote {}; `moat run` will ask you to approve it (`moat trust`)",
        target.display()
    ));
    Ok(ExitStatus::Success)
}

/// Asks on the terminal; without one, writing needs `--yes`.
fn confirmed(ctx: &Context, target: &std::path::Path) -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(
            CliError::new("not writing without a confirmation, and there is no terminal to ask")
                .with_hint("pass --yes to write the printed moat.yaml, or --dry-run to only print it")
                .into(),
        );
    }
    ctx.printer.prompt(format!("Write {}? [y/N] ", target.display()));
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
