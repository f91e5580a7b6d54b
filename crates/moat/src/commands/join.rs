//! `moat join RUN AGENT [-p PROMPT] [-- ARGS]`: a second agent started in a
//! live run's container (a reviewer next to a coder). Checked before
//! anything changes: the agent is known, the run is live, its image has the
//! agent's command, and one of the agent's grants is stored. The grant and
//! hosts the run lacks are listed and added through the daemon only once the
//! user approves them (`y` on a terminal, or `--yes`). The agent then runs
//! through the daemon as the run's user, with its variables and home files
//! (placeholders only), on a terminal when there is one; its exit code is
//! moat's, and the run goes on.

use std::io::{BufRead, IsTerminal};

use anyhow::Result;
use moat_api::terminal::{AgentExec, Open};
use moat_api::{AddGrantsRequest, AddedGrants, DaemonClient, HomeFile};
use moat_core::deps::{Agent, Registry};
use moat_core::{MoatHome, RunId};
use moat_creds::Providers;

use crate::cli::JoinArgs;
use crate::context::{Context, ExitStatus};
use crate::live;
use crate::report::CliError;

/// What the joined agent needs, worked out on the host before the run is
/// touched.
struct Joining {
    run_id: RunId,
    name: String,
    grant: String,
    grant_hosts: Vec<String>,
    hosts: Vec<String>,
    argv: Vec<String>,
    agent: AgentExec,
}

pub fn join(ctx: &Context, args: &JoinArgs) -> Result<ExitStatus> {
    let registry = Registry::shipped()?;
    let agent = registry
        .agent(&args.agent)
        .ok_or_else(|| crate::agent::unknown_agent(&args.agent, &registry))?;
    let store = ctx.store()?;
    let run_id = store.resolve(Some(&args.run), true)?;
    let meta = store.load(&run_id)?;
    if meta.state.is_terminal() {
        return Err(
            CliError::new(format!("run {run_id} already {}; join needs a live run", meta.state))
                .with_hint(format!("start one with `moat {}` or `moat run -d`", args.agent))
                .into(),
        );
    }
    let home = ctx.home()?;
    let grant = crate::agent::grant_for(&home, ctx.profile.as_deref(), &meta.grants, &args.agent, agent)?;
    let joining = joining(&home, args, agent, run_id, grant)?;
    let plan = live::block_on(async {
        let client = live::daemon(&home).await?;
        check_command(&client, &joining, agent).await?;
        add(&client, &joining, true).await
    })?;
    if !is_empty(&plan) {
        approve(ctx, args.yes, &joining, &plan)?;
    }
    let escape_key = moat_core::config::load_global(&home)?.config.escape_key;
    let tty = args.prompt.is_none() && crate::resolve::stdio_is_terminal();
    live::block_on(async {
        let client = live::daemon(&home).await?;
        if !is_empty(&plan) {
            let added = add(&client, &joining, false).await?;
            if !is_empty(&added) {
                ctx.printer
                    .status(format!("added {} to {}", describe(&added), joining.run_id));
            }
        }
        let size = tty.then(|| crate::tty::raw::size().unwrap_or(moat_core::TerminalSize::DEFAULT));
        let open = Open::Exec {
            command: joining.argv.clone(),
            size,
            as_agent: Some(joining.agent.clone()),
        };
        let io = client
            .terminal(&joining.run_id, &open)
            .await
            .map_err(live::client_error)?;
        let options = crate::tty::SessionOptions {
            tty,
            stop_on_interrupt: false,
            escape_key,
        };
        crate::tty::run(&client, &joining.run_id, io, &ctx.printer, options).await
    })
}

/// The agent's command line, variables and home files for `grant`, as
/// `moat <agent>` would give them (placeholders, never a credential).
fn joining(home: &MoatHome, args: &JoinArgs, agent: &Agent, run_id: RunId, grant: String) -> Result<Joining> {
    let providers = Providers::load(home)?;
    let provider = providers.require(&grant)?;
    let mut env: Vec<(String, String)> = agent.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend(provider.container_env());
    let home_files = agent
        .staged_files(&grant, provider.placeholder())
        .into_iter()
        .map(|file| HomeFile {
            mode: file.mode_bits(),
            path: file.path,
            contents: file.contents,
        })
        .collect();
    Ok(Joining {
        run_id,
        name: args.agent.clone(),
        grant_hosts: provider.hosts(),
        grant,
        hosts: agent.hosts.clone(),
        argv: agent.argv(args.prompt.as_deref(), &args.args),
        agent: AgentExec { env, home_files },
    })
}

/// Refuses before anything changes when the run's image has no such
/// command (`command -v` in the container).
async fn check_command(client: &DaemonClient, joining: &Joining, agent: &Agent) -> Result<()> {
    let Some(program) = agent.command.first() else {
        return Err(CliError::new(format!("agent {} has no command in the registry", joining.name)).into());
    };
    let probe = vec![
        "sh".to_string(),
        "-c".to_string(),
        "command -v \"$1\"".to_string(),
        "sh".to_string(),
        program.clone(),
    ];
    let found = client.exec(&joining.run_id, &probe).await.map_err(live::client_error)?;
    if found.exit_code == Some(0) {
        return Ok(());
    }
    Err(CliError::new(format!(
        "run {}'s image has no {program} command, so {} cannot join it; nothing was changed",
        joining.run_id, joining.name
    ))
    .with_hint(format!(
        "join a run started with the agent's dependency ({}): `moat {}`, or `dependencies: [{}]` in moat.yaml",
        agent.dependency, joining.name, agent.dependency
    ))
    .into())
}

/// Asks the daemon to add (or with `dry_run`, to say what it would add of)
/// the agent's grant and hosts.
async fn add(client: &DaemonClient, joining: &Joining, dry_run: bool) -> Result<AddedGrants> {
    let request = AddGrantsRequest {
        grants: vec![joining.grant.clone()],
        hosts: joining.hosts.clone(),
        dry_run,
    };
    client
        .add_grants(&joining.run_id, &request)
        .await
        .map_err(live::client_error)
}

fn is_empty(added: &AddedGrants) -> bool {
    added.grants.is_empty() && added.hosts.is_empty()
}

/// `grant claude and host api.anthropic.com`.
fn describe(added: &AddedGrants) -> String {
    let mut parts = Vec::new();
    if !added.grants.is_empty() {
        let noun = if added.grants.len() == 1 { "grant" } else { "grants" };
        parts.push(format!("{noun} {}", added.grants.join(", ")));
    }
    if !added.hosts.is_empty() {
        let noun = if added.hosts.len() == 1 { "host" } else { "hosts" };
        parts.push(format!("{noun} {}", added.hosts.join(", ")));
    }
    parts.join(" and ")
}

/// What the user is asked to approve, one line per grant and host.
fn listing(joining: &Joining, plan: &AddedGrants) -> String {
    let mut lines = vec![format!(
        "{} in {} needs what the run does not have:",
        joining.name, joining.run_id
    )];
    for grant in &plan.grants {
        let hosts = if grant == &joining.grant {
            format!(
                " (its credential injected into requests to {})",
                joining.grant_hosts.join(", ")
            )
        } else {
            String::new()
        };
        lines.push(format!("  grant {grant}{hosts}"));
    }
    for host in &plan.hosts {
        lines.push(format!("  host {host} (allowed by the run's network policy)"));
    }
    lines.join("\n")
}

/// The user's approval: `--yes`, else `y` on a terminal; without a terminal
/// to ask, a refusal naming `--yes`. Nothing is added when refused.
fn approve(ctx: &Context, yes: bool, joining: &Joining, plan: &AddedGrants) -> Result<()> {
    let listing = listing(joining, plan);
    if yes {
        ctx.printer.status(listing);
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(refusal(joining, plan, "there is no terminal to ask for approval").into());
    }
    ctx.printer
        .prompt(format!("{listing}\nadd them to the run until it ends? [y/N] "));
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        return Ok(());
    }
    Err(refusal(joining, plan, "not approved").into())
}

fn refusal(joining: &Joining, plan: &AddedGrants, why: &str) -> CliError {
    CliError::new(format!(
        "{} needs {} added to {}, and {why}; nothing was added and {} was not started",
        joining.name,
        describe(plan),
        joining.run_id,
        joining.name
    ))
    .with_hint(format!(
        "pass --yes to add them: `moat join {} {} --yes`",
        joining.run_id, joining.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joining() -> Joining {
        Joining {
            run_id: "run_0123456789ab".parse().unwrap(),
            name: "claude".into(),
            grant: "claude".into(),
            grant_hosts: vec!["api.anthropic.com".into()],
            hosts: vec!["api.anthropic.com".into()],
            argv: vec!["claude".into()],
            agent: AgentExec::default(),
        }
    }

    fn plan(grants: &[&str], hosts: &[&str]) -> AddedGrants {
        AddedGrants {
            grants: grants.iter().map(|g| g.to_string()).collect(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn the_listing_names_each_grant_with_its_hosts_and_each_host() {
        let text = listing(&joining(), &plan(&["claude"], &["api.anthropic.com"]));
        assert_eq!(
            text,
            "claude in run_0123456789ab needs what the run does not have:\n  \
             grant claude (its credential injected into requests to api.anthropic.com)\n  \
             host api.anthropic.com (allowed by the run's network policy)"
        );
    }

    #[test]
    fn a_refusal_says_nothing_was_added_and_names_yes() {
        let err = refusal(
            &joining(),
            &plan(&["claude"], &[]),
            "there is no terminal to ask for approval",
        );
        assert_eq!(
            err.to_string(),
            "claude needs grant claude added to run_0123456789ab, and there is no terminal to ask for approval; \
             nothing was added and claude was not started"
        );
        assert_eq!(
            err.hint(),
            Some("pass --yes to add them: `moat join run_0123456789ab claude --yes`")
        );
        assert_eq!(describe(&plan(&["a", "b"], &["x", "y"])), "grants a, b and hosts x, y");
        assert!(is_empty(&plan(&[], &[])));
        assert!(!is_empty(&plan(&[], &["x"])));
    }

    /// The joined agent gets the placeholder variable and files of the
    /// grant chosen (as `moat claude` would), never a credential.
    #[test]
    fn the_joined_agent_gets_its_variables_and_files_for_the_grant() {
        let scratch = tempfile::tempdir().unwrap();
        let home = MoatHome::new(scratch.path());
        let registry = Registry::shipped().unwrap();
        let agent = registry.agent("claude").unwrap();
        let args = JoinArgs {
            run: "r".into(),
            agent: "claude".into(),
            prompt: Some("hi".into()),
            yes: false,
            args: vec![],
        };
        let joined = super::joining(
            &home,
            &args,
            agent,
            "run_0123456789ab".parse().unwrap(),
            "claude".into(),
        )
        .unwrap();
        assert_eq!(joined.argv, ["claude", "-p", "hi"]);
        let env: std::collections::BTreeMap<_, _> = joined.agent.env.iter().cloned().collect();
        assert_eq!(env.get("DISABLE_AUTOUPDATER").map(String::as_str), Some("1"));
        let token = env.get("CLAUDE_CODE_OAUTH_TOKEN").unwrap();
        assert!(token.starts_with("moat-placeholder-claude"), "{token}");
        let paths: Vec<&str> = joined.agent.home_files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, [".claude/.credentials.json", ".claude.json"]);
        assert!(joined.agent.home_files[0].contents.contains(token.as_str()));
        assert_eq!(joined.agent.home_files[0].mode, 0o600);
    }
}
