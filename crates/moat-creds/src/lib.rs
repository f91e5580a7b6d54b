//! Credentials for moat runs: the encrypted store (`MOAT_HOME/credentials`),
//! the master key, the providers that say what to inject where (proxy.md,
//! "Injection"), grant flows and validation, and `secrets:` resolution.
//! Nothing here prints; the binary renders results.

pub mod credential;
pub mod keystore;
pub mod sealed;
pub mod store;

#[cfg(test)]
mod test_support;

pub use credential::{Credential, CredentialKind, CredentialMetadata, CredentialSummary};
pub use keystore::{FileKeyStore, KeyBackend, KeyError, KeyStore, MasterKey};
pub use store::{CredentialStore, StoreError};
