//! `moat run [PATH] [-- CMD…]`: resolve the run from flags, moat.yaml,
//! the environment and config.yaml, then start it through the daemon and
//! exit with the container's code. A workspace's moat.yaml must be approved
//! when it asks for more than before (trust on change), and dangerous
//! mounts are refused. A run of an agent (`agent:`, or `moat claude`) gets
//! the agent's dependency, grant, hosts and files. `--dry-run` stops after
//! resolving and prints the result, creating nothing.

use std::io::Write;

use anyhow::{Context as _, Result};
use moat_core::config;
use moat_core::env_vars;

use crate::cli::RunArgs;
use crate::context::{Context, ExitStatus};
use crate::dangerous::Guard;
use crate::report::CliError;
use crate::resolve::{self, EnvDefaults, ResolvedRun, Sources};
use crate::trust::{self, Approval};

pub fn run(ctx: &Context, args: RunArgs) -> Result<ExitStatus> {
    run_as(ctx, &args, None)
}

/// `moat run`, or the run of `agent` (`moat claude`: it replaces moat.yaml's
/// `agent:`).
pub fn run_as(ctx: &Context, args: &RunArgs, agent: Option<&str>) -> Result<ExitStatus> {
    if args.footer {
        return Err(
            CliError::new("--footer is not available in this version of moat; nothing was started")
                .with_hint("run without --footer; `moat list` and `moat status` show what the footer would")
                .into(),
        );
    }
    let mut resolved = prepare(ctx, args)?;
    if let Some(agent) = agent {
        resolved.agent = Some(agent.to_string());
    }
    crate::agent::apply(&ctx.home()?, &mut resolved)?;
    if args.settings.dry_run {
        print_dry_run(ctx, &resolved, args.settings.json)
    } else {
        start(ctx, resolved)
    }
}

/// Loads and checks every source without side effects.
fn prepare(ctx: &Context, args: &RunArgs) -> Result<ResolvedRun> {
    let workspace = std::fs::canonicalize(&args.path).with_context(|| format!("workspace {}", args.path.display()))?;
    if !workspace.is_dir() {
        return Err(CliError::new(format!("workspace {}: not a directory", workspace.display())).into());
    }
    let project = config::load_project(&workspace)?;
    let home = ctx.home()?;
    let global = config::load_global(&home)?;
    for warning in project.warnings.iter().chain(&global.warnings) {
        ctx.printer.warning(warning);
    }
    if !args.settings.dry_run {
        let approval = if args.settings.trust {
            Approval::ThisRunOnly
        } else {
            Approval::Ask
        };
        trust::check(&home, &ctx.printer, &project, &workspace, approval)?;
    }
    let host_var = |name: &str| env_vars::read(name);
    let resolved = resolve::resolve(&Sources {
        args,
        workspace: &workspace,
        project: &project.config,
        config_file: project.path.as_deref(),
        global: &global.config,
        env: &EnvDefaults::from_env(),
        profile: ctx.profile.as_deref(),
        host_var: &host_var,
    })
    .map_err(|e| match e {
        resolve::ResolveError::Dependencies(_) => CliError::new(e.to_string())
            .with_hint("docs/dependencies.md lists what `dependencies:` accepts, docs/services.md the services")
            .into(),
        other => anyhow::Error::from(other),
    })?;
    let guard = Guard::for_process(home.root(), &args.allow_dangerous_mounts);
    guard.check("the workspace", &resolved.workspace)?;
    for mount in &resolved.mounts {
        guard.check(&format!("mounted at {}", mount.target), &mount.source)?;
    }
    Ok(resolved)
}

fn print_dry_run(ctx: &Context, run: &ResolvedRun, json: bool) -> Result<ExitStatus> {
    let mut out = ctx.printer.stdout();
    if json {
        serde_json::to_writer_pretty(&mut out, run)?;
        writeln!(out)?;
    } else {
        out.write_all(serde_saphyr::to_string(run)?.as_bytes())?;
    }
    out.flush()?;
    for key in run.unsupported() {
        ctx.printer.warning(format!(
            "{key}: not supported yet; `moat run` refuses a run that uses it"
        ));
    }
    ctx.printer.status("dry run: nothing was created");
    Ok(ExitStatus::Success)
}

/// Asks the daemon to create and start the run, follows it and returns the
/// container's exit code.
fn start(ctx: &Context, run: ResolvedRun) -> Result<ExitStatus> {
    crate::launch::start(ctx, run)
}
