//! The container a run gets: labels, mounts, proxy variables, its
//! services' variables and addresses, staged grants, DNS, user.

use std::os::unix::fs::MetadataExt;

use moat_proxy::PolicyMode;
use moat_runtime::{BindMount, ContainerSpec, labels};

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
        extra_hosts.push((PROXY_HOST.to_string(), proxy.gateway.to_string()));
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

/// Tells the init of an image moat built which user to drop to.
const INIT_USER_VARIABLE: &str = "MOAT_USER";
/// Hands the init of an image moat built the files to write into the run
/// user's home: one line per file, `<octal mode> <path> <base64 contents>`.
const INIT_HOME_FILES_VARIABLE: &str = "MOAT_HOME_FILES";

/// The home files, with the run's MCP servers added to a staged agent
/// config when the run reaches the proxy.
fn home_files(spec: &RunSpec, relay: Option<&crate::mcp::RelayAccess>) -> String {
    use base64::Engine as _;
    let files = match relay {
        Some(relay) => crate::mcp::stage_claude_servers(&spec.home_files, &spec.mcp, relay),
        None => spec.home_files.clone(),
    };
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
