//! Grants of a run: resolved from the credential store into the proxy's
//! injection rules and the placeholder variables the container sees, and
//! staged as files and sockets (the ssh grant's agent and known_hosts, the
//! npm grant's user config, the aws grant's config and credential
//! process). Run at creation, on re-adoption (secrets are
//! never persisted) and when a credential changes (`moat revoke` takes
//! effect on live runs).

use std::path::Path;

use moat_core::MoatHome;
use moat_creds::aws::AwsGrant;
use moat_creds::{CredentialStore, InjectionSpec, Providers, RunGrantError, RunGrants, resolve_run_grants};
use moat_proxy::{InjectionRule, PolicyMode};
use moat_runtime::BindMount;

use crate::api::RunSpec;
use crate::audit::Event;
use crate::aws;
use crate::registry::RunHandle;
use crate::ssh_agent::{self, AgentError, SocketAccess};
use crate::state::Daemon;

/// Where the ssh grant's known hosts appear: ssh's global known_hosts.
pub const CONTAINER_KNOWN_HOSTS: &str = "/etc/ssh/ssh_known_hosts";
/// Where the npm grant's user config appears (`NPM_CONFIG_USERCONFIG`).
pub const CONTAINER_NPMRC: &str = "/etc/moat/npmrc";
/// The run directory's subdirectory holding staged grant files.
const STAGED_DIR: &str = "grants";

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("{0}")]
    Resolve(#[from] RunGrantError),
    #[error("{0}")]
    Store(#[from] moat_creds::StoreError),
    #[error("{0}")]
    Providers(#[from] moat_creds::ProviderError),
    #[error("mcp server {server}: grant {grant} injects nothing into {host}, so the relay would send no credential")]
    McpNotCovered {
        server: String,
        grant: String,
        host: String,
    },
    #[error("{0}")]
    Agent(#[from] AgentError),
    #[error("staging the grant file {path}: {source}")]
    Stage { path: String, source: std::io::Error },
    #[error("the ssh grant needs a permissive run: a strict run reaches only the proxy, which carries HTTP, not ssh")]
    SshInStrictRun,
    #[error("the aws grant needs moat's proxy, which issues its credentials, and this run has none")]
    AwsWithoutProxy,
}

impl GrantError {
    pub fn hint(&self) -> Option<String> {
        match self {
            GrantError::Resolve(RunGrantError::NotGranted { provider, .. }) => {
                Some(format!("run `moat grant {provider}` first"))
            }
            GrantError::Resolve(RunGrantError::Expired { provider }) => {
                Some(format!("renew it with `moat grant {provider}`"))
            }
            GrantError::McpNotCovered { server, .. } => Some(format!(
                "store the server's token with `moat grant mcp {server} --url URL` (grant mcp-{server}), \
                 or name a grant for that host in mcp:"
            )),
            GrantError::SshInStrictRun => {
                Some("run with `--policy permissive` (or `network.policy: permissive`), or clone over HTTPS".into())
            }
            _ => None,
        }
    }
}

/// Each `mcp:` server's grant must inject into the server's host: checked
/// once the grants are resolved, before anything is created.
pub fn check_mcp_coverage(spec: &RunSpec, grants: &RunGrants) -> Result<(), GrantError> {
    for server in &spec.mcp {
        let Ok(url) = moat_core::config::McpUrl::parse(&server.url) else {
            continue; // refused when the proxy compiles the route
        };
        let covered = grants
            .injections
            .iter()
            .filter(|i| i.grant == server.grant)
            .any(|i| moat_core::host_pattern::host_matches(&i.host_pattern, &url.host, url.port));
        if !covered {
            return Err(GrantError::McpNotCovered {
                server: server.name.clone(),
                grant: server.grant.clone(),
                host: url.host_pattern(),
            });
        }
    }
    Ok(())
}

/// Resolves every grant of the run; a missing grant is an error.
pub fn resolve(home: &MoatHome, spec: &RunSpec) -> Result<RunGrants, GrantError> {
    if spec.grants.is_empty() {
        return Ok(RunGrants::default());
    }
    let store = CredentialStore::open(home, spec.profile.as_deref())?;
    let providers = Providers::load(home)?;
    Ok(resolve_run_grants(&store, &providers, &spec.grants)?)
}

/// Resolves the grants that still exist (revoked ones are dropped).
pub fn resolve_remaining(home: &MoatHome, spec: &RunSpec) -> Result<RunGrants, GrantError> {
    let store = CredentialStore::open(home, spec.profile.as_deref())?;
    let providers = Providers::load(home)?;
    let remaining: Vec<String> = spec
        .grants
        .iter()
        .filter(|name| matches!(store.load(name), Ok(Some(_))))
        .cloned()
        .collect();
    Ok(resolve_run_grants(&store, &providers, &remaining)?)
}

/// What a run's container gets from its staged grants.
#[derive(Debug, Default)]
pub struct Staged {
    pub mounts: Vec<BindMount>,
    pub env: Vec<(String, String)>,
}

/// Stages the ssh agent (served from now until the run's cleanup), the
/// known hosts and the npm config of `grants` for run `handle`.
pub fn stage(daemon: &Daemon, handle: &RunHandle, grants: &RunGrants) -> Result<Staged, GrantError> {
    let mut staged = Staged::default();
    let run_dir = daemon.store().run_dir(&handle.id());
    if !grants.ssh.keys.is_empty() {
        if handle.spec.policy.mode == PolicyMode::Strict {
            return Err(GrantError::SshInStrictRun);
        }
        let run_user = crate::supervisor::command_user(&handle.spec);
        let access = SocketAccess::for_run_user(run_user.as_deref());
        let agent_dir =
            daemon
                .ssh_agents()
                .start(daemon.audit(), &handle.id(), &run_dir, grants.ssh.keys.clone(), access)?;
        staged.mounts.push(BindMount {
            source: agent_dir.display().to_string(),
            target: ssh_agent::CONTAINER_AGENT_DIR.into(),
            read_only: true,
        });
        staged.env.push((
            "SSH_AUTH_SOCK".into(),
            format!("{}/{}", ssh_agent::CONTAINER_AGENT_DIR, ssh_agent::SOCKET_NAME),
        ));
        let known_hosts = write_staged(&run_dir, "known_hosts", &grants.ssh.known_hosts(), 0o644)?;
        staged.mounts.push(read_only(&known_hosts, CONTAINER_KNOWN_HOSTS));
    }
    if let Some(aws) = &grants.aws {
        let port = daemon.proxy_port().ok_or(GrantError::AwsWithoutProxy)?;
        stage_aws(&mut staged, &run_dir, aws, port)?;
    }
    if let Some(npmrc) = &grants.npmrc {
        let path = write_staged(&run_dir, "npmrc", npmrc, 0o644)?;
        staged.mounts.push(read_only(&path, CONTAINER_NPMRC));
        staged
            .env
            .push(("NPM_CONFIG_USERCONFIG".into(), CONTAINER_NPMRC.into()));
    }
    Ok(staged)
}

/// The aws grant's AWS config (region, `credential_process`) and the
/// process, which asks the proxy on `proxy_port`; neither holds a key.
fn stage_aws(staged: &mut Staged, run_dir: &Path, grant: &AwsGrant, proxy_port: u16) -> Result<(), GrantError> {
    let process = format!("{}/{}", aws::CONTAINER_AWS_DIR, aws::PROCESS_NAME);
    let config = format!("{}/{}", aws::CONTAINER_AWS_DIR, aws::CONFIG_NAME);
    let url = format!(
        "http://{}:{proxy_port}/{}/credentials",
        moat_proxy::PROXY_HOST_NAME,
        aws::ENDPOINT_NAME
    );
    let script = write_staged(
        run_dir,
        "aws-credential-process",
        &moat_creds::aws::credential_process_script(&url),
        0o755,
    )?;
    let contents = grant.container_config(&process, crate::egress::CA_CERT_IN_CONTAINER);
    let config_file = write_staged(run_dir, "aws-config", &contents, 0o644)?;
    staged.mounts.push(read_only(&script, &process));
    staged.mounts.push(read_only(&config_file, &config));
    staged.env.push(("AWS_CONFIG_FILE".into(), config));
    // The JavaScript SDK v2 reads the config file only when asked to.
    staged.env.push(("AWS_SDK_LOAD_CONFIG".into(), "1".into()));
    Ok(())
}

fn read_only(source: &Path, target: &str) -> BindMount {
    BindMount {
        source: source.display().to_string(),
        target: target.into(),
        read_only: true,
    }
}

/// Writes a staged file (no secret: public keys, host keys, placeholders,
/// the aws credential process) world-readable (`mode`), so any run user can
/// read it through its mount.
fn write_staged(run_dir: &Path, name: &str, contents: &str, mode: u32) -> Result<std::path::PathBuf, GrantError> {
    let dir = run_dir.join(STAGED_DIR);
    let path = dir.join(name);
    let error = |source| GrantError::Stage {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(error)?;
    moat_core::atomic::write_atomic(&path, contents.as_bytes(), mode).map_err(error)?;
    Ok(path)
}

pub fn injection_rules(grants: &RunGrants) -> Vec<InjectionRule> {
    grants.injections.iter().map(rule).collect()
}

fn rule(spec: &InjectionSpec) -> InjectionRule {
    InjectionRule {
        host_pattern: spec.host_pattern.clone(),
        header_name: spec.header_name.clone(),
        header_value: spec.header_value.clone(),
        placeholder: spec.placeholder.clone(),
        grant: spec.grant.clone(),
        plaintext: spec.plaintext,
        list_additions: spec.list_additions.clone(),
        removals: spec.removals.clone(),
    }
}

/// The names of the grants that inject something, sorted.
fn grant_names(grants: &RunGrants) -> Vec<String> {
    let mut names: Vec<String> = grants.injections.iter().map(|i| i.grant.clone()).collect();
    if !grants.ssh.keys.is_empty() {
        names.push(moat_creds::ssh::SSH_GRANT.into());
    }
    if grants.aws.is_some() {
        names.push(moat_creds::aws::AWS_GRANT.into());
    }
    names.sort();
    names.dedup();
    names
}

/// Re-reads the credentials of every live run that has grants and swaps
/// its injection snapshot; returns how many runs were updated.
pub fn refresh_live_runs(daemon: &Daemon) -> usize {
    let Some(egress) = daemon.egress() else { return 0 };
    let mut updated = 0;
    for handle in daemon.registry().all() {
        if handle.spec.grants.is_empty() {
            continue;
        }
        match resolve_remaining(daemon.home(), &handle.spec) {
            Ok(grants) => {
                daemon.ssh_agents().update(&handle.id(), grants.ssh.keys.clone());
                daemon.aws().update(&handle.id(), grants.aws.clone());
                egress.update_injections(&handle.id(), injection_rules(&grants));
                let remaining = grant_names(&grants);
                let mut granted = handle.spec.grants.clone();
                granted.sort();
                granted.dedup();
                if remaining != granted {
                    daemon
                        .audit()
                        .record(&handle.id(), Event::GrantsChanged { grants: remaining });
                }
                updated += 1;
            }
            Err(e) => tracing::warn!(run = %handle.id(), "refreshing grants failed: {e}"),
        }
    }
    updated
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_core::config::McpServer;

    fn grants_for(host_pattern: &str) -> RunGrants {
        RunGrants {
            injections: vec![InjectionSpec {
                host_pattern: host_pattern.into(),
                header_name: "Authorization".into(),
                header_value: "Bearer fake-mcp-value".into(),
                placeholder: None,
                grant: "mcp-docs".into(),
                plaintext: false,
                list_additions: vec![],
                removals: vec![],
            }],
            ..RunGrants::default()
        }
    }

    /// Attack: a moat.yaml pairs a grant with a URL on another host; the
    /// run is refused rather than relaying without (or with the wrong) token.
    #[test]
    fn an_mcp_server_needs_its_grant_to_inject_into_its_host() {
        let spec = RunSpec {
            mcp: vec![McpServer {
                name: "docs".into(),
                url: "https://mcp.example.com:8443/mcp".into(),
                grant: "mcp-docs".into(),
                ..McpServer::default()
            }],
            ..RunSpec::default()
        };
        assert!(check_mcp_coverage(&spec, &grants_for("mcp.example.com:8443")).is_ok());
        let err = check_mcp_coverage(&spec, &grants_for("mcp.example.com")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "mcp server docs: grant mcp-docs injects nothing into mcp.example.com:8443, so the relay would send no credential"
        );
        assert!(err.hint().unwrap().contains("moat grant mcp docs --url"));
        assert!(check_mcp_coverage(&spec, &RunGrants::default()).is_err());
    }
}
