//! `moat <agent> [PATH] [-p PROMPT] [-- ARGS]` (`moat claude`, `moat
//! codex`, `moat gemini`): `moat run` of the agent's command, interactive
//! (with a terminal when there is one) unless `-p` hands it one prompt, in
//! which case its answer is printed and its exit code is moat's.

use anyhow::Result;

use crate::cli::{AgentArgs, AgentCommand, RunArgs};
use crate::context::{Context, ExitStatus};

pub fn agent(ctx: &Context, command: &AgentCommand) -> Result<ExitStatus> {
    let registry = moat_core::deps::Registry::shipped()?;
    let Some(agent) = registry.agent(&command.name) else {
        anyhow::bail!("unknown agent {:?}", command.name);
    };
    let argv = agent.argv(command.args.prompt.as_deref(), &command.args.args);
    super::run::run_as(ctx, &run_args(&command.args, argv), Some(&command.name))
}

/// The `moat run` flags an agent's run amounts to.
fn run_args(args: &AgentArgs, command: Vec<String>) -> RunArgs {
    let interactive = args.prompt.is_none();
    RunArgs {
        path: args.path.clone(),
        command,
        grants: args.grants.clone(),
        env: args.env.clone(),
        mounts: args.mounts.clone(),
        name: args.name.clone(),
        runtime: None,
        image: args.image.clone(),
        rebuild: args.rebuild,
        keep: args.keep,
        detach: false,
        timings: args.timings,
        interactive,
        tty: interactive && crate::resolve::stdio_is_terminal(),
        footer: false,
        policy: args.policy,
        allow_hosts: args.allow_hosts.clone(),
        require_isolation: false,
        trust: args.trust,
        allow_dangerous_mounts: Vec::new(),
        dry_run: args.dry_run,
        json: args.json,
    }
}
