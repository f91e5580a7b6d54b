//! An agent's part of a run (`moat claude`, or `agent:` in moat.yaml),
//! from its definition in the shipped registry: its dependency added to
//! `dependencies:` (refused before any build when it cannot be installed),
//! one of its grants (the one asked for, else the first one stored; none
//! stored is an error naming the `moat grant` to run), its hosts allowed,
//! its variables set and its files staged in the run user's home with the
//! grant's placeholder (never a credential: the proxy injects the real one).

use anyhow::Result;
use moat_api::HomeFile;
use moat_core::MoatHome;
use moat_core::config::HostRule;
use moat_core::deps::{Agent, Registry, Request};
use moat_creds::{CredentialStore, Providers};

use crate::report::CliError;
use crate::resolve::ResolvedRun;

/// Gives `run` the agent its `agent` names (nothing without one).
pub fn apply(home: &MoatHome, run: &mut ResolvedRun) -> Result<()> {
    let Some(name) = run.agent.clone() else {
        return Ok(());
    };
    let registry = Registry::shipped().map_err(|e| CliError::new(e.to_string()))?;
    let agent = registry.agent(&name).ok_or_else(|| unknown_agent(&name, &registry))?;
    add_dependency(run, &agent.dependency);
    crate::launch::check_dependencies(run)?;
    let grant = choose_grant(home, run, &name, agent)?;
    if !run.grants.contains(&grant) {
        run.grants.push(grant.clone());
    }
    allow_hosts(run, &agent.hosts);
    for (key, value) in &agent.env {
        run.env.entry(key.clone()).or_insert_with(|| value.clone());
    }
    let providers = Providers::load(home)?;
    let placeholder = providers.require(&grant)?.placeholder().to_string();
    run.home_files = agent
        .staged_files(&grant, &placeholder)
        .into_iter()
        .map(|file| HomeFile {
            mode: file.mode_bits(),
            path: file.path,
            contents: file.contents,
        })
        .collect();
    if run.command.is_empty() {
        run.command = agent.argv(None, &[]);
        run.interactive = true;
        run.tty = crate::resolve::stdio_is_terminal();
    }
    Ok(())
}

pub(crate) fn unknown_agent(name: &str, registry: &Registry) -> anyhow::Error {
    let known: Vec<&str> = registry.agents().map(|(name, _)| name).collect();
    CliError::new(format!("unknown agent {name:?}"))
        .with_hint(format!("moat runs {}; `moat agents` lists them", known.join(", ")))
        .into()
}

/// Adds the agent's dependency unless the run names it already (perhaps
/// at a version).
fn add_dependency(run: &mut ResolvedRun, dependency: &str) {
    let named =
        |text: &String| matches!(text.parse::<Request>(), Ok(Request::Named { name, .. }) if name == dependency);
    if !run.dependencies.iter().any(named) {
        run.dependencies.push(dependency.to_string());
    }
}

/// The agent's grant the run asked for, else the first one stored.
fn choose_grant(home: &MoatHome, run: &ResolvedRun, name: &str, agent: &Agent) -> Result<String> {
    grant_for(home, run.profile.as_deref(), &run.grants, name, agent)
}

/// The agent's grant among `granted` (what a run has already), else the
/// first one stored in `profile`; none stored is an error naming the
/// `moat grant` commands to run.
pub(crate) fn grant_for(
    home: &MoatHome,
    profile: Option<&str>,
    granted: &[String],
    name: &str,
    agent: &Agent,
) -> Result<String> {
    if let Some(asked) = agent.grants.iter().find(|grant| granted.contains(grant)) {
        return Ok(asked.clone());
    }
    let store = CredentialStore::open(home, profile)?;
    for grant in &agent.grants {
        if store.load(grant)?.is_some() {
            return Ok(grant.clone());
        }
    }
    Err(missing_grant(name, agent, profile).into())
}

fn missing_grant(name: &str, agent: &Agent, profile: Option<&str>) -> CliError {
    let profile_flag = profile.map(|p| format!(" --profile {p}")).unwrap_or_default();
    let commands: Vec<String> = agent
        .grants
        .iter()
        .map(|grant| format!("`moat grant {grant}{profile_flag}`"))
        .collect();
    CliError::new(format!(
        "{name} needs a credential: none of its grants ({}) is stored{}; nothing was started",
        agent.grants.join(", "),
        profile.map(|p| format!(" in profile {p}")).unwrap_or_default()
    ))
    .with_hint(format!("run {} first", commands.join(" or ")))
}

fn allow_hosts(run: &mut ResolvedRun, hosts: &[String]) {
    for host in hosts {
        if !run.network.rules.iter().any(|rule| &rule.host == host) {
            run.network.rules.push(HostRule {
                host: host.clone(),
                requests: Vec::new(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_grant_error_names_each_command_to_run() {
        let registry = Registry::shipped().unwrap();
        let claude = registry.agent("claude").unwrap();
        let err = missing_grant("claude", claude, None);
        assert_eq!(
            err.to_string(),
            "claude needs a credential: none of its grants (claude, anthropic) is stored; nothing was started"
        );
        assert_eq!(
            err.hint(),
            Some("run `moat grant claude` or `moat grant anthropic` first")
        );
        let err = missing_grant("codex", registry.agent("codex").unwrap(), Some("work"));
        assert_eq!(err.hint(), Some("run `moat grant openai --profile work` first"));
    }
}
