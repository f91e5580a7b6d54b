//! Credentials for moat runs: the encrypted store (`MOAT_HOME/credentials`),
//! the master key (OS keyring or key file), the providers that say what to
//! inject where (proxy.md, "Injection"), grant flows and validation, and
//! `secrets:` resolution, and OAuth grants with refresh.
//! Nothing here prints; the binary renders results.

pub mod aws;
mod builtin;
pub mod credential;
pub mod grant;
pub mod host_provider;
pub mod keystore;
pub mod npm;
pub mod oauth;
pub mod provider;
mod provider_file;
pub mod providers;
pub mod run_grants;
pub mod sealed;
pub mod secrets;
pub mod sigv4;
pub mod ssh;
pub mod ssh_agent;
pub mod store;
pub mod sts;
pub mod validate;

pub use builtin::BUILT_IN_NAMES;
pub use credential::{Credential, CredentialKind, CredentialMetadata, CredentialSummary, RedactedCredential};
pub use grant::{GrantError, NoPrompt, TokenPrompt, TokenSources};
pub use host_provider::{HostProvider, HostProviderError};
pub use keystore::{AutoKeyStore, FileKeyStore, KeyBackend, KeyError, KeyStatus, KeyStore, KeyringKeyStore, MasterKey};
pub use moat_core::host_pattern::{HostPattern, HostPatternError, host_matches};
pub use provider::{
    GrantSources, GrantedToken, HeaderRule, InjectionSpec, Provider, ProviderSource, ValidationEndpoint, ValueFormat,
};
pub use provider_file::ProviderFileError;
pub use providers::{ProviderError, Providers};
pub use run_grants::{RunGrantError, RunGrants, resolve_run_grants};
pub use secrets::{SecretError, SecretResolver, resolve_secret};
pub use store::{CredentialStore, StoreError};
pub use validate::{ValidationError, ValidationOptions, ValidationOutcome};
