//! What a run's `grants:` turn into: the injection rules for the proxy, the
//! placeholder environment for the container and the hosts strict policy
//! must allow, and what the daemon serves itself (the ssh grant's keys, the
//! aws grant's role). The daemon calls this once per run with the user's
//! profile.

use crate::aws::{AWS_GRANT, AwsError, AwsGrant};
use crate::npm::{NpmError, Registry};
use crate::provider::InjectionSpec;
use crate::providers::{ProviderError, Providers};
use crate::ssh::{SSH_GRANT, SshError, SshGrants};
use crate::store::{CredentialStore, StoreError};

/// Everything the daemon needs from the credential side for one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunGrants {
    pub injections: Vec<InjectionSpec>,
    /// Placeholder variables only; never a token.
    pub env: Vec<(String, String)>,
    /// Host patterns the grants inject into.
    pub hosts: Vec<String>,
    /// The `ssh` grant's keys (public halves) and known hosts.
    pub ssh: SshGrants,
    /// The npm user config of an npm grant (placeholder token only).
    pub npmrc: Option<String>,
    /// The aws grant: the role and the host keys that assume it, for the
    /// daemon only (a run gets short-lived keys it issues).
    pub aws: Option<AwsGrant>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunGrantError {
    #[error(transparent)]
    UnknownProvider(#[from] ProviderError),
    #[error("{provider} is not granted{profile}; run `moat grant {provider}` first")]
    NotGranted { provider: String, profile: String },
    #[error("the {provider} credential expired; run `moat grant {provider}` again")]
    Expired { provider: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("the npm grant's registry: {0}")]
    Npm(#[from] NpmError),
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// Resolves `grants` (provider names, duplicates ignored) against the store.
pub fn resolve_run_grants(
    store: &CredentialStore,
    providers: &Providers,
    grants: &[String],
) -> Result<RunGrants, RunGrantError> {
    let mut resolved = RunGrants::default();
    let mut seen: Vec<&str> = Vec::new();
    for name in grants {
        if seen.contains(&name.as_str()) {
            continue;
        }
        seen.push(name);
        // The ssh and aws grants are no providers: they inject no header.
        let provider = if name == SSH_GRANT || name == AWS_GRANT {
            None
        } else {
            Some(providers.require(name)?)
        };
        let credential = store.load(name)?.ok_or_else(|| RunGrantError::NotGranted {
            provider: name.clone(),
            profile: store.profile().map(|p| format!(" in profile {p}")).unwrap_or_default(),
        })?;
        if credential.is_expired(chrono::Utc::now()) {
            return Err(RunGrantError::Expired { provider: name.clone() });
        }
        let Some(provider) = provider else {
            if name == AWS_GRANT {
                resolved.aws = Some(AwsGrant::from_credential(&credential)?);
            } else {
                resolved.ssh = SshGrants::from_credential(&credential)?;
            }
            continue;
        };
        if let Some(url) = &credential.metadata.registry {
            resolved.npmrc = Some(Registry::parse(url)?.npmrc(provider.placeholder()));
        }
        resolved.injections.extend(provider.injections(&credential));
        resolved.env.extend(provider.container_env());
        resolved.hosts.extend(provider.hosts());
    }
    Ok(resolved)
}
