//! The container a run gets: labels, mounts, proxy variables, its
//! services' variables and addresses, staged grants, DNS, user; and how a
//! second agent is started in it (`moat join`).

use std::os::unix::fs::MetadataExt;

use moat_api::HomeFile;
use moat_api::terminal::AgentExec;
use moat_proxy::PolicyMode;
use moat_runtime::{BindMount, ContainerSpec, ExecSpec, TerminalSize, labels};

use super::WORKSPACE_TARGET;
use super::proxy::ProxyAttachment;
use super::services::ServiceAccess;
use crate::api::RunSpec;
use crate::egress::{PROXY_HOST, PROXY_VARIABLES};
use crate::grants::Staged;
use crate::registry::RunHandle;
use crate::state::Daemon;

/// Whether a run's container can join a pool holder's network namespace:
/// it needs nothing of its network that the holder does not have already
/// (no service hosts, published ports or DNS of its own), and is not kept
/// (a kept container outlives its holder).
pub(super) fn can_join_holder(spec: &RunSpec) -> bool {
    spec.services.is_empty() && spec.ports.is_empty() && spec.dns.is_empty() && !spec.keep
}

/// The run's container: on `network`, or in the namespace of its pool
/// `holder` (see [`can_join_holder`]), which has the same hosts and DNS.
pub(super) fn container_spec(
    daemon: &Daemon,
    handle: &RunHandle,
    network: &str,
    holder: Option<&str>,
    proxy: Option<ProxyAttachment>,
    services: ServiceAccess,
    staged: Staged,
) -> ContainerSpec {
    let spec = &handle.spec;
    let id = handle.id();
    let mut labels = spec.labels.clone();
    labels.extend(labels::for_run(&daemon.home().label(), id.as_str(), labels::role::MAIN));
    let mut mounts = vec![BindMount {
        source: spec.workspace.display().to_string(),
        target: WORKSPACE_TARGET.to_string(),
        read_only: false,
    }];
    mounts.extend(spec.mounts.iter().cloned());
    // moat owns the proxy variables; user attempts were warned about by the CLI.
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .filter(|(k, _)| !PROXY_VARIABLES.contains(&k.as_str()))
        .chain(spec.secrets.0.iter())
        .cloned()
        .collect();
    let (user, init_user) = run_user(spec);
    env.retain(|(k, _)| k != INIT_USER_VARIABLE && k != INIT_HOME_FILES_VARIABLE);
    if let Some(user) = init_user {
        env.push((INIT_USER_VARIABLE.to_string(), user));
    }
    env.retain(|(k, _)| !services.env.iter().any(|(name, _)| name == k));
    env.extend(services.env);
    if !spec.home_files.is_empty() {
        let relay = proxy.as_ref().map(|p| &p.relay);
        env.push((INIT_HOME_FILES_VARIABLE.to_string(), home_files(spec, relay)));
    }
    let mut extra_hosts = services.hosts;
    env.retain(|(k, _)| !staged.env.iter().any(|(name, _)| name == k));
    env.extend(staged.env);
    mounts.extend(staged.mounts);
    if let Some(proxy) = proxy {
        env.extend(proxy.env);
        mounts.push(proxy.ca_mount);
        if let Some(gateway) = proxy.gateway {
            extra_hosts.push((PROXY_HOST.to_string(), gateway.to_string()));
        }
    }
    let mut container = ContainerSpec {
        name: id.to_string(),
        image: spec.image.clone(),
        command: spec.command.clone(),
        env,
        mounts,
        working_dir: Some(WORKSPACE_TARGET.to_string()),
        user,
        network: Some(network.to_string()),
        labels,
        extra_hosts,
        memory_bytes: spec.memory_bytes,
        cpus: spec.cpus,
        ulimits: spec.ulimits.clone(),
        pids_limit: spec.pids_limit,
        dns: container_dns(spec),
        tty: spec.terminal.is_some(),
        open_stdin: spec.interactive,
        console_size: spec.terminal,
        ..Default::default()
    };
    if let Some(holder) = holder {
        container.network = None;
        container.network_of = Some(holder.to_string());
        container.extra_hosts.clear();
        container.dns.clear();
    }
    container
}

/// How a second agent starts in the run's container (`moat join`): in an
/// image moat built, through its init as root, which stages the agent's
/// home files where the home has none of that name yet and drops to the
/// run's user; in another image, as the container's user, which works only
/// for an agent that needs no home files (nothing could stage them).
pub(crate) fn agent_exec(
    spec: &RunSpec,
    command: Vec<String>,
    tty: Option<TerminalSize>,
    agent: AgentExec,
) -> Result<ExecSpec, String> {
    if !spec.builds_image() {
        if let Some(file) = agent.home_files.first() {
            return Err(format!(
                "the agent needs ~/{} staged, and only the init of an image moat built (from `dependencies:`) \
                 stages files; start the run with the agent's dependency",
                file.path
            ));
        }
        return Ok(ExecSpec {
            command,
            tty,
            user: None,
            env: agent.env,
        });
    }
    for file in &agent.home_files {
        moat_core::deps::check_home_path(&file.path).map_err(|reason| format!("home file {}: {reason}", file.path))?;
        if file.mode > 0o777 {
            return Err(format!(
                "home file {}: mode {:o} is not permission bits",
                file.path, file.mode
            ));
        }
    }
    let mut env = agent.env;
    env.retain(|(k, _)| ![INIT_USER_VARIABLE, INIT_HOME_FILES_VARIABLE, INIT_KEEP_VARIABLE].contains(&k.as_str()));
    // Always set, so the values the container was created with (the first
    // agent's) are not inherited.
    env.push((INIT_USER_VARIABLE.to_string(), command_user(spec).unwrap_or_default()));
    env.push((
        INIT_HOME_FILES_VARIABLE.to_string(),
        encode_home_files(&agent.home_files),
    ));
    env.push((INIT_KEEP_VARIABLE.to_string(), "1".to_string()));
    let mut argv = vec![moat_core::deps::INIT_PATH.to_string()];
    argv.extend(command);
    Ok(ExecSpec {
        command: argv,
        tty,
        user: Some("0:0".to_string()),
        env,
    })
}

/// Tells the init of an image moat built which user to drop to.
const INIT_USER_VARIABLE: &str = "MOAT_USER";
/// Hands the init of an image moat built the files to write into the run
/// user's home: one line per file, `<octal mode> <path> <base64 contents>`.
const INIT_HOME_FILES_VARIABLE: &str = "MOAT_HOME_FILES";
/// Tells the init to leave home files that exist already as they are.
const INIT_KEEP_VARIABLE: &str = "MOAT_HOME_FILES_KEEP";

/// The home files, with the run's MCP servers added to a staged agent
/// config when the run reaches the proxy.
fn home_files(spec: &RunSpec, relay: Option<&crate::mcp::RelayAccess>) -> String {
    let files = match relay {
        Some(relay) => crate::mcp::stage_claude_servers(&spec.home_files, &spec.mcp, relay),
        None => spec.home_files.clone(),
    };
    encode_home_files(&files)
}

/// `MOAT_HOME_FILES`: one line per file.
fn encode_home_files(files: &[HomeFile]) -> String {
    use base64::Engine as _;
    files
        .iter()
        .map(|file| {
            format!(
                "{:o} {} {}",
                file.mode,
                file.path,
                base64::engine::general_purpose::STANDARD.encode(&file.contents)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The user of the container and the one moat's init drops to. An image
/// built from `dependencies:` or build hooks starts as root, so its init can add moat's
/// CA to the system trust store, then drops to the run's user; any other
/// image starts as the run's user. The run's user is `container.user`, or
/// the workspace's owner so files the agent writes belong to the user.
fn run_user(spec: &RunSpec) -> (Option<String>, Option<String>) {
    let user = command_user(spec);
    if spec.builds_image() {
        (Some("0:0".to_string()), user)
    } else {
        (user, None)
    }
}

/// The user the run's command runs as: `container.user`, or the
/// workspace's owner (`uid:gid`).
pub(crate) fn command_user(spec: &RunSpec) -> Option<String> {
    spec.user.clone().or_else(|| workspace_owner(&spec.workspace))
}

/// A strict run resolves nothing itself: the proxy resolves for it, and
/// `moat-proxy` is in its hosts file. Its DNS points at a loopback address
/// where nothing answers, so no engine's embedded DNS (which forwards from
/// internal networks on engines before 25.0.5) carries queries out: DNS is
/// not a way out of a strict run.
pub(crate) const STRICT_DNS: &str = "127.0.0.1";

fn container_dns(spec: &RunSpec) -> Vec<String> {
    if spec.policy.mode == PolicyMode::Strict {
        vec![STRICT_DNS.to_string()]
    } else {
        spec.dns.clone()
    }
}

/// `uid:gid` of the workspace's owner, so files the agent writes belong to
/// the user (Linux).
pub(super) fn workspace_owner(workspace: &std::path::Path) -> Option<String> {
    let meta = std::fs::metadata(workspace).ok()?;
    Some(format!("{}:{}", meta.uid(), meta.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dependencies: &[&str], user: Option<&str>) -> RunSpec {
        RunSpec {
            workspace: std::env::temp_dir(),
            dependencies: dependencies.iter().map(|d| d.to_string()).collect(),
            user: user.map(str::to_string),
            ..RunSpec::default()
        }
    }

    fn claude_files() -> AgentExec {
        AgentExec {
            env: vec![
                ("CLAUDE_CODE_OAUTH_TOKEN".into(), "moat-placeholder-claude".into()),
                (INIT_USER_VARIABLE.into(), "0:0".into()),
            ],
            home_files: vec![HomeFile {
                path: ".claude.json".into(),
                mode: 0o600,
                contents: "{}".into(),
            }],
        }
    }

    /// `moat join` in an image moat built: through the init as root (to
    /// stage files and drop), as the run's user, keeping existing files;
    /// the variables the container was created with never leak through.
    #[test]
    fn a_joined_agent_starts_through_the_init_as_the_run_user() {
        let exec = agent_exec(
            &spec(&["git"], Some("1000:1000")),
            vec!["claude".into()],
            None,
            claude_files(),
        )
        .unwrap();
        assert_eq!(exec.command, [moat_core::deps::INIT_PATH, "claude"]);
        assert_eq!(exec.user.as_deref(), Some("0:0"));
        let env: std::collections::BTreeMap<_, _> = exec.env.iter().cloned().collect();
        assert_eq!(env.len(), exec.env.len(), "a variable is set twice: {:?}", exec.env);
        assert_eq!(
            env[INIT_USER_VARIABLE], "1000:1000",
            "the agent's own MOAT_USER is dropped"
        );
        assert_eq!(env[INIT_KEEP_VARIABLE], "1");
        assert_eq!(env[INIT_HOME_FILES_VARIABLE], "600 .claude.json e30=");
        assert_eq!(env["CLAUDE_CODE_OAUTH_TOKEN"], "moat-placeholder-claude");

        let no_files = AgentExec::default();
        let exec = agent_exec(&spec(&["git"], Some("1000:1000")), vec!["x".into()], None, no_files).unwrap();
        let env: std::collections::BTreeMap<_, _> = exec.env.iter().cloned().collect();
        assert_eq!(
            env[INIT_HOME_FILES_VARIABLE], "",
            "the first agent's files are not staged again"
        );
    }

    #[test]
    fn a_joined_agent_needing_files_is_refused_in_an_image_moat_did_not_build() {
        let err = agent_exec(&spec(&[], None), vec!["claude".into()], None, claude_files()).unwrap_err();
        assert!(err.contains("~/.claude.json") && err.contains("dependency"), "{err}");
        let plain = AgentExec {
            env: vec![("A".into(), "b".into())],
            home_files: vec![],
        };
        let exec = agent_exec(&spec(&[], None), vec!["tool".into()], None, plain).unwrap();
        assert_eq!(
            (exec.command.as_slice(), exec.user),
            (["tool".to_string()].as_slice(), None)
        );
        assert_eq!(exec.env, [("A".to_string(), "b".to_string())]);

        let mut escaping = claude_files();
        escaping.home_files[0].path = "../etc/passwd".into();
        assert!(agent_exec(&spec(&["git"], None), vec!["claude".into()], None, escaping).is_err());
    }

    #[test]
    fn a_built_image_starts_as_root_and_its_init_drops_to_the_run_user() {
        let owner = workspace_owner(&std::env::temp_dir());
        assert_eq!(run_user(&spec(&["git"], None)), (Some("0:0".into()), owner.clone()));
        assert_eq!(run_user(&spec(&[], None)), (owner, None));
    }

    #[test]
    fn container_user_overrides_the_workspace_owner() {
        assert_eq!(
            run_user(&spec(&["git"], Some("1000:1000"))),
            (Some("0:0".into()), Some("1000:1000".into()))
        );
        assert_eq!(run_user(&spec(&[], Some("node"))), (Some("node".into()), None));
    }
}
