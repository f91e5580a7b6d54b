//! A provider: which hosts receive which header built from the granted
//! token, the placeholder a container sees instead of the token, and how a
//! token is obtained and checked (proxy.md, "Injection"). Built-in providers
//! live in `builtin.rs`, user-defined ones come from YAML (`provider_file.rs`).

use std::path::PathBuf;

use crate::credential::{Credential, CredentialKind};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use moat_core::HostPattern;
use moat_core::env_vars;

/// One header injection rule, as plain data; the daemon turns it into the
/// proxy's rule type. Deliberately not `Serialize`, and its `Debug` hides
/// the header value, so the token cannot leak through logs or traces.
#[derive(Clone, PartialEq, Eq)]
pub struct InjectionSpec {
    /// `host`, `host:port` or `*.suffix` (see [`moat_core::host_pattern`]).
    pub host_pattern: String,
    pub header_name: String,
    /// The complete header value, carrying the real token.
    pub header_value: String,
    /// The fake token the container holds; the proxy replaces it.
    pub placeholder: Option<String>,
    /// The grant (provider name) this rule comes from, for the trace.
    pub grant: String,
    /// Also injected into plain-HTTP requests (a `host:port` rule of a
    /// provider with `plaintext: true`); otherwise TLS upstreams only.
    pub plaintext: bool,
    /// See [`HeaderRule::list_additions`].
    pub list_additions: Vec<(String, String)>,
    /// See [`HeaderRule::removals`].
    pub removals: Vec<String>,
}

impl std::fmt::Debug for InjectionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InjectionSpec")
            .field("host_pattern", &self.host_pattern)
            .field("header_name", &self.header_name)
            .field("header_value", &"<redacted>")
            .field("placeholder", &self.placeholder)
            .field("grant", &self.grant)
            .field("plaintext", &self.plaintext)
            .field("list_additions", &self.list_additions)
            .field("removals", &self.removals)
            .finish()
    }
}

/// How a header value is built from a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueFormat {
    /// `prefix` + token, e.g. `Bearer ` + token, or the bare token.
    Prefixed(String),
    /// `Basic base64(username:token)`, as git sends to github.com.
    BasicAuth { username: String },
}

impl ValueFormat {
    pub fn render(&self, token: &str) -> String {
        match self {
            ValueFormat::Prefixed(prefix) => format!("{prefix}{token}"),
            ValueFormat::BasicAuth { username } => {
                format!("Basic {}", BASE64.encode(format!("{username}:{token}")))
            }
        }
    }
}

/// Which header, in which format, goes to which hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderRule {
    pub host: HostPattern,
    pub header: String,
    pub value: ValueFormat,
    /// Injected over plain HTTP too; only with a host naming its port.
    pub plaintext: bool,
    /// When the header is injected, each (header, token) pair's token is
    /// added to that header's comma-separated list (the claude grant's
    /// `anthropic-beta: oauth-2025-04-20`).
    pub list_additions: Vec<(String, String)>,
    /// When the header is injected, these headers are removed from the
    /// request (a client's `x-api-key` beside the claude grant's token).
    pub removals: Vec<String>,
}

/// An authenticated request that tells whether a token works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationEndpoint {
    /// `https://` URL fetched with GET.
    pub url: String,
    pub expect_status: u16,
    /// Extra request headers the API requires (e.g. `anthropic-version`).
    pub headers: Vec<(String, String)>,
}

/// Where a token comes from when the user runs `moat grant PROVIDER`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantSources {
    /// Host environment variables consulted in order.
    pub env_vars: Vec<String>,
    /// Whether `gh auth token` is tried after the environment.
    pub gh_cli: bool,
}

/// Where a provider was defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderSource {
    BuiltIn,
    File(PathBuf),
}

/// Everything moat knows about one credential provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    pub(crate) name: String,
    pub(crate) rules: Vec<HeaderRule>,
    pub(crate) placeholder: String,
    pub(crate) env_var: Option<String>,
    pub(crate) kind: CredentialKind,
    pub(crate) grant_sources: GrantSources,
    pub(crate) validation: Option<ValidationEndpoint>,
    pub(crate) source: ProviderSource,
}

/// A token found for a grant, with where it was found (for the record).
#[derive(Clone, PartialEq, Eq)]
pub struct GrantedToken {
    pub token: String,
    /// `env GH_TOKEN`, `gh auth token`, `prompt`.
    pub source: String,
    pub kind: CredentialKind,
}

impl std::fmt::Debug for GrantedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantedToken")
            .field("token", &crate::credential::redact(&self.token))
            .field("source", &self.source)
            .field("kind", &self.kind)
            .finish()
    }
}

impl GrantedToken {
    /// The credential to store for this token, created now.
    pub fn into_credential(self) -> Credential {
        let mut credential = Credential::new(self.token, self.kind);
        credential.metadata.source = Some(self.source);
        credential
    }
}

impl Provider {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn rules(&self) -> &[HeaderRule] {
        &self.rules
    }

    /// The fake token containers see in place of the real one.
    pub fn placeholder(&self) -> &str {
        &self.placeholder
    }

    /// The container environment variable holding the placeholder.
    pub fn env_var(&self) -> Option<&str> {
        self.env_var.as_deref()
    }

    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    pub fn grant_sources(&self) -> &GrantSources {
        &self.grant_sources
    }

    pub fn validation(&self) -> Option<&ValidationEndpoint> {
        self.validation.as_ref()
    }

    pub fn source(&self) -> &ProviderSource {
        &self.source
    }

    /// Host patterns this provider injects into (for strict policy: the
    /// hosts a run's grants need).
    pub fn hosts(&self) -> Vec<String> {
        self.rules.iter().map(|r| r.host.to_string()).collect()
    }

    /// The header injections carrying `credential`'s token.
    pub fn injections(&self, credential: &Credential) -> Vec<InjectionSpec> {
        self.rules
            .iter()
            .map(|rule| InjectionSpec {
                host_pattern: rule.host.to_string(),
                header_name: rule.header.clone(),
                header_value: rule.value.render(&credential.token),
                placeholder: Some(self.placeholder.clone()),
                grant: self.name.clone(),
                plaintext: rule.plaintext,
                list_additions: rule.list_additions.clone(),
                removals: rule.removals.clone(),
            })
            .collect()
    }

    /// Environment for the container: the placeholder only, never a token.
    pub fn container_env(&self) -> Vec<(String, String)> {
        self.env_var
            .iter()
            .map(|var| (var.clone(), self.placeholder.clone()))
            .collect()
    }

    /// A token from the host environment (`GH_TOKEN`, then `GITHUB_TOKEN`
    /// for github; the provider's variable otherwise).
    pub fn grant_token_from_env(&self) -> Option<GrantedToken> {
        self.grant_token_from_lookup(&env_vars::read)
    }

    /// [`Provider::grant_token_from_env`] against any variable lookup.
    pub fn grant_token_from_lookup(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Option<GrantedToken> {
        self.grant_sources.env_vars.iter().find_map(|var| {
            let token = lookup(var)?.trim().to_owned();
            (!token.is_empty() && token != self.placeholder).then(|| GrantedToken {
                token,
                source: format!("env {var}"),
                kind: self.kind,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_rendered_per_format() {
        let bearer = ValueFormat::Prefixed("Bearer ".into());
        assert_eq!(bearer.render("fake-token"), "Bearer fake-token");
        let basic = ValueFormat::BasicAuth {
            username: "x-access-token".into(),
        };
        // base64("x-access-token:fake-token")
        assert_eq!(basic.render("fake-token"), "Basic eC1hY2Nlc3MtdG9rZW46ZmFrZS10b2tlbg==");
    }

    #[test]
    fn granted_token_debug_is_redacted() {
        let granted = GrantedToken {
            token: "fake-token-value-5678".into(),
            source: "prompt".into(),
            kind: CredentialKind::Token,
        };
        let shown = format!("{granted:?}");
        assert!(!shown.contains("fake-token-value"), "{shown}");
        let credential = granted.into_credential();
        assert_eq!(credential.metadata.source.as_deref(), Some("prompt"));
    }
}
