//! Grants of a run: resolved from the credential store into the proxy's
//! injection rules and the placeholder variables the container sees, and
//! staged as files and sockets (the ssh grant's agent and known_hosts, the
//! npm grant's user config, the aws grant's config and credential
//! process). Run at creation, on re-adoption (secrets are
//! never persisted), when a credential changes (`moat revoke` takes
//! effect on live runs) and when grants are added to a live run (`moat
//! join`: recorded in its metadata and audit log, then handed to the proxy).

use std::path::Path;
use std::sync::Mutex;

use moat_core::MoatHome;
use moat_creds::aws::AwsGrant;
use moat_creds::{CredentialStore, InjectionSpec, Providers, RunGrantError, RunGrants, resolve_run_grants};
use moat_proxy::{InjectionRule, PolicyMode};
use moat_runtime::BindMount;

use crate::api::{AddGrantsRequest, AddedGrants, RunSpec};
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
    #[error("run {run} does not reach moat's proxy, so no credential can be injected into its requests")]
    NoProxy { run: String },
    #[error("grant {grant} stages files in the container when it is created, so it cannot be added to a live run")]
    StagedAtCreation { grant: String },
    #[error("host {host:?}: {reason}")]
    BadHost { host: String, reason: String },
    #[error("the run's record: {0}")]
    Record(#[from] moat_core::store::StoreError),
    #[error("updating the proxy: {0}")]
    Proxy(#[from] moat_proxy::ProxyError),
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
            GrantError::StagedAtCreation { grant } => Some(format!("start a new run with `--grant {grant}`")),
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

/// Resolves the grants of `handle` that still exist (revoked ones are dropped).
pub fn resolve_remaining(home: &MoatHome, handle: &RunHandle) -> Result<RunGrants, GrantError> {
    let store = CredentialStore::open(home, handle.spec.profile.as_deref())?;
    let providers = Providers::load(home)?;
    let remaining: Vec<String> = handle
        .grants()
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

/// Held while a run's injections are recomputed and swapped, so that a
/// refresh and an addition never swap in each other's stale snapshot.
static SWAPPING: Mutex<()> = Mutex::new(());

/// Adds to the live run `handle` the grants and hosts of `request` it does
/// not have (`moat join`, after the user approved them): each grant must be
/// stored and inject headers only (files staged at creation cannot reach a
/// running container). Recorded in the run's metadata (kept on
/// re-adoption) before the proxy sees it, then audited. With `dry_run`,
/// checks the same and changes nothing.
pub fn add_to_live_run(
    daemon: &Daemon,
    handle: &RunHandle,
    request: &AddGrantsRequest,
) -> Result<AddedGrants, GrantError> {
    let _swapping = SWAPPING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let added = missing_from(handle, request)?;
    if added.grants.is_empty() && added.hosts.is_empty() {
        return Ok(added);
    }
    let id = handle.id();
    let egress = daemon
        .egress()
        .filter(|_| handle.proxy_token().is_some())
        .ok_or_else(|| GrantError::NoProxy { run: id.to_string() })?;
    let store = CredentialStore::open(daemon.home(), handle.spec.profile.as_deref())?;
    let providers = Providers::load(daemon.home())?;
    for grant in &added.grants {
        let resolved = resolve_run_grants(&store, &providers, std::slice::from_ref(grant))?;
        if !resolved.ssh.keys.is_empty() || resolved.npmrc.is_some() || resolved.aws.is_some() {
            return Err(GrantError::StagedAtCreation { grant: grant.clone() });
        }
    }
    if request.dry_run {
        return Ok(added);
    }
    handle.update(daemon.store(), |meta| {
        meta.grants.extend(added.grants.iter().cloned());
        meta.added_hosts.extend(added.hosts.iter().cloned());
    })?;
    daemon.registry().persist_soon();
    let grants = resolve_remaining(daemon.home(), handle)?;
    egress.update_policy(&id, &handle.policy())?;
    egress.update_injections(&id, injection_rules(&grants));
    daemon.audit().record(
        &id,
        Event::GrantsAdded {
            grants: added.grants.clone(),
            hosts: added.hosts.clone(),
        },
    );
    Ok(added)
}

/// The grants and hosts of `request` the run does not have yet, each once;
/// a host that is no valid pattern is refused.
fn missing_from(handle: &RunHandle, request: &AddGrantsRequest) -> Result<AddedGrants, GrantError> {
    let grants = handle.grants();
    let policy = handle.policy();
    let mut added = AddedGrants::default();
    for grant in &request.grants {
        if !grants.contains(grant) && !added.grants.contains(grant) {
            added.grants.push(grant.clone());
        }
    }
    for host in &request.hosts {
        let host = moat_core::config::check_host_pattern(host).map_err(|reason| GrantError::BadHost {
            host: host.clone(),
            reason,
        })?;
        // A permissive run reaches every host: no rule to add.
        let needed = policy.mode != PolicyMode::Permissive;
        if needed && !policy.rules.iter().any(|rule| rule.host == host) && !added.hosts.contains(&host) {
            added.hosts.push(host);
        }
    }
    Ok(added)
}

/// Re-reads the credentials of every live run that has grants and swaps
/// its injection snapshot; returns how many runs were updated.
pub fn refresh_live_runs(daemon: &Daemon) -> usize {
    let Some(egress) = daemon.egress() else { return 0 };
    let _swapping = SWAPPING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut updated = 0;
    for handle in daemon.registry().all() {
        if handle.grants().is_empty() {
            continue;
        }
        match resolve_remaining(daemon.home(), &handle) {
            Ok(grants) => {
                daemon.ssh_agents().update(&handle.id(), grants.ssh.keys.clone());
                daemon.aws().update(&handle.id(), grants.aws.clone());
                if daemon.cluster_proxies().serves(&handle.id()) {
                    daemon
                        .cluster_proxies()
                        .update_injections(&handle.id(), injection_rules(&grants));
                } else {
                    egress.update_injections(&handle.id(), injection_rules(&grants));
                }
                let remaining = grant_names(&grants);
                let mut granted = handle.grants();
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
