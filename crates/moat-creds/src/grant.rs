//! Finding a token for `moat grant PROVIDER`: the host environment first,
//! then `gh auth token` (github), then a prompt the caller supplies (the
//! binary owns the terminal; this crate never reads or prints to it).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::credential::CredentialKind;
use crate::provider::{GrantedToken, Provider};
use moat_core::subprocess::{Subprocess, SubprocessError, stderr_excerpt, strip_line_ending};

/// How long `gh auth token` may take.
pub const GH_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the user for a token, typically with echo off on a TTY.
pub trait TokenPrompt {
    /// The token typed for `provider`, or `None` when there is no one to
    /// ask (no TTY, user declined).
    fn ask_token(&self, provider: &Provider) -> io::Result<Option<String>>;
}

/// A prompt that never has an answer (non-interactive callers).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPrompt;

impl TokenPrompt for NoPrompt {
    fn ask_token(&self, _provider: &Provider) -> io::Result<Option<String>> {
        Ok(None)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("no token found for {provider}; {hint}")]
    NoToken { provider: String, hint: String },
    #[error("reading the token for {provider} failed: {source}")]
    Prompt { provider: String, source: io::Error },
}

/// Where tokens are looked for; [`Default`] uses the real environment and
/// `gh` from `PATH`.
#[derive(Clone, Debug)]
pub struct TokenSources {
    pub gh_program: PathBuf,
    pub gh_timeout: Duration,
    /// Whether the host environment is consulted (tests turn it off).
    pub use_env: bool,
}

impl Default for TokenSources {
    fn default() -> Self {
        TokenSources {
            gh_program: PathBuf::from("gh"),
            gh_timeout: GH_TIMEOUT,
            use_env: true,
        }
    }
}

impl TokenSources {
    /// The first token found: environment, `gh auth token`, then `prompt`.
    pub fn acquire(&self, provider: &Provider, prompt: &dyn TokenPrompt) -> Result<GrantedToken, GrantError> {
        if let Some(token) = self.use_env.then(|| provider.grant_token_from_env()).flatten() {
            return Ok(token);
        }
        if provider.grant_sources().gh_cli
            && let Some(token) = self.gh_token()
        {
            return Ok(token);
        }
        let typed = prompt.ask_token(provider).map_err(|source| GrantError::Prompt {
            provider: provider.name().to_owned(),
            source,
        })?;
        match typed.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
            Some(token) => Ok(GrantedToken {
                token,
                source: "prompt".into(),
                kind: provider.kind(),
            }),
            None => Err(GrantError::NoToken {
                provider: provider.name().to_owned(),
                hint: no_token_hint(provider),
            }),
        }
    }

    /// `gh auth token`, when gh is installed and logged in.
    pub fn gh_token(&self) -> Option<GrantedToken> {
        let gh = Subprocess::new(&self.gh_program, self.gh_timeout).args(["auth", "token"]);
        let output = match gh.run_blocking() {
            Ok(output) => output,
            Err(SubprocessError::NotFound { .. }) => return None,
            Err(e) => {
                tracing::warn!("skipping `gh auth token`: {e}");
                return None;
            }
        };
        let token = strip_line_ending(&output.stdout).trim();
        if !output.status.success() || token.is_empty() {
            tracing::debug!(stderr = %stderr_excerpt(&output.stderr), "`gh auth token` gave no token");
            return None;
        }
        Some(GrantedToken {
            token: token.to_owned(),
            source: "gh auth token".into(),
            kind: CredentialKind::OauthToken,
        })
    }
}

impl Provider {
    /// A token from the default [`TokenSources`], else from `prompt`.
    pub fn acquire_token(&self, prompt: &dyn TokenPrompt) -> Result<GrantedToken, GrantError> {
        TokenSources::default().acquire(self, prompt)
    }
}

fn no_token_hint(provider: &Provider) -> String {
    let mut ways: Vec<String> = provider
        .grant_sources()
        .env_vars
        .iter()
        .map(|var| format!("set {var}"))
        .collect();
    if provider.grant_sources().gh_cli {
        ways.push("log in with `gh auth login`".into());
    }
    ways.push("run `moat grant` in a terminal to paste a token".into());
    ways.join(", or ")
}
