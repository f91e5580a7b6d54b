//! Grants of a run: resolved from the credential store into the proxy's
//! injection rules and the placeholder variables the container sees. Run at
//! creation, on re-adoption (secrets are never persisted) and when a
//! credential changes (`moat revoke` takes effect on live runs).

use moat_core::MoatHome;
use moat_creds::{CredentialStore, InjectionSpec, Providers, RunGrantError, RunGrants, resolve_run_grants};
use moat_proxy::InjectionRule;

use crate::api::RunSpec;
use crate::audit::Event;
use crate::state::Daemon;

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
