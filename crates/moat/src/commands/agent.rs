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
        settings: args.settings.clone(),
        runtime: None,
        detach: false,
        interactive,
        tty: interactive && crate::resolve::stdio_is_terminal(),
        footer: false,
        require_isolation: false,
        allow_dangerous_mounts: Vec::new(),
    }
}
