//! The providers moat knows without configuration: github, anthropic,
//! claude, openai and gemini. Placeholders have the length of a real token
//! but are plainly fake (`moat…placeholder…`) so no scanner or human can
//! mistake them for a secret.

use crate::credential::CredentialKind;
use crate::provider::{GrantSources, HeaderRule, Provider, ProviderSource, ValidationEndpoint, ValueFormat};
use moat_core::HostPattern;

/// Names of the built-in providers, in display order.
pub const BUILT_IN_NAMES: [&str; 5] = ["github", "anthropic", "claude", "openai", "gemini"];

const ANTHROPIC_VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");
/// The beta an OAuth token needs on Anthropic's API.
const ANTHROPIC_OAUTH_BETA: (&str, &str) = ("anthropic-beta", "oauth-2025-04-20");

/// All built-in providers.
pub fn built_in_providers() -> Vec<Provider> {
    vec![github(), anthropic(), claude(), openai(), gemini()]
}

fn github() -> Provider {
    Provider {
        name: "github".into(),
        rules: vec![
            rule("api.github.com", "Authorization", bearer()),
            rule(
                "github.com",
                "Authorization",
                ValueFormat::BasicAuth {
                    username: "x-access-token".into(),
                },
            ),
        ],
        placeholder: "moat_placeholder_github_token_0000000000".into(),
        env_var: Some("GH_TOKEN".into()),
        kind: CredentialKind::Token,
        grant_sources: GrantSources {
            env_vars: vec!["GH_TOKEN".into(), "GITHUB_TOKEN".into()],
            gh_cli: true,
        },
        validation: Some(endpoint(
            "https://api.github.com/user",
            &[("accept", "application/vnd.github+json")],
        )),
        source: ProviderSource::BuiltIn,
    }
}

fn anthropic() -> Provider {
    api_key_provider(
        "anthropic",
        rule("api.anthropic.com", "x-api-key", ValueFormat::Prefixed(String::new())),
        "moat-placeholder-anthropic-api-key-0000000000000000000000000000000000000000000000000000",
        "ANTHROPIC_API_KEY",
        endpoint("https://api.anthropic.com/v1/models", &[ANTHROPIC_VERSION]),
    )
}

/// Claude Code's OAuth token: `Authorization: Bearer`, with the OAuth beta
/// added to `anthropic-beta` and any `x-api-key` the client sent removed
/// (the API refuses a request carrying both).
fn claude() -> Provider {
    let oauth = HeaderRule {
        list_additions: vec![(ANTHROPIC_OAUTH_BETA.0.into(), ANTHROPIC_OAUTH_BETA.1.into())],
        removals: vec!["x-api-key".into()],
        ..rule("api.anthropic.com", "Authorization", bearer())
    };
    Provider {
        kind: CredentialKind::OauthToken,
        ..api_key_provider(
            "claude",
            oauth,
            "moat-placeholder-claude-oauth-token-000000000000000000000000000000000000000000000000000000000000000000000",
            "CLAUDE_CODE_OAUTH_TOKEN",
            endpoint(
                "https://api.anthropic.com/v1/models",
                &[ANTHROPIC_VERSION, ANTHROPIC_OAUTH_BETA],
            ),
        )
    }
}

fn openai() -> Provider {
    api_key_provider(
        "openai",
        rule("api.openai.com", "Authorization", bearer()),
        "moat-placeholder-openai-api-key-000000000000000000000000000000000000000000000000000000000000000",
        "OPENAI_API_KEY",
        endpoint("https://api.openai.com/v1/models", &[]),
    )
}

fn gemini() -> Provider {
    api_key_provider(
        "gemini",
        rule(
            "generativelanguage.googleapis.com",
            "x-goog-api-key",
            ValueFormat::Prefixed(String::new()),
        ),
        "moat-placeholder-gemini-api-key-000000",
        "GEMINI_API_KEY",
        endpoint("https://generativelanguage.googleapis.com/v1beta/models", &[]),
    )
}

/// A provider with one rule whose token comes from `env_var` on the host
/// and is shown to the container under the same variable.
fn api_key_provider(
    name: &str,
    rule: HeaderRule,
    placeholder: &str,
    env_var: &str,
    validation: ValidationEndpoint,
) -> Provider {
    Provider {
        name: name.into(),
        rules: vec![rule],
        placeholder: placeholder.into(),
        env_var: Some(env_var.into()),
        kind: CredentialKind::ApiKey,
        grant_sources: GrantSources {
            env_vars: vec![env_var.into()],
            gh_cli: false,
        },
        validation: Some(validation),
        source: ProviderSource::BuiltIn,
    }
}

fn rule(host: &str, header: &str, value: ValueFormat) -> HeaderRule {
    HeaderRule {
        host: HostPattern::parse(host).unwrap_or_else(|e| unreachable!("built-in host pattern: {e}")),
        header: header.into(),
        value,
        plaintext: false,
        list_additions: Vec::new(),
        removals: Vec::new(),
    }
}

fn bearer() -> ValueFormat {
    ValueFormat::Prefixed("Bearer ".into())
}

fn endpoint(url: &str, headers: &[(&str, &str)]) -> ValidationEndpoint {
    ValidationEndpoint {
        url: url.into(),
        expect_status: 200,
        headers: headers
            .iter()
            .map(|(name, value)| ((*name).into(), (*value).into()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::Credential;

    fn find(name: &str) -> Provider {
        built_in_providers().into_iter().find(|p| p.name() == name).unwrap()
    }

    #[test]
    fn names_match_the_list_and_placeholders_are_unique_and_fake() {
        let providers = built_in_providers();
        let names: Vec<&str> = providers.iter().map(Provider::name).collect();
        assert_eq!(names, BUILT_IN_NAMES);
        for provider in &providers {
            assert!(provider.placeholder().contains("placeholder"), "{}", provider.name());
            let same = providers
                .iter()
                .filter(|p| p.placeholder() == provider.placeholder())
                .count();
            assert_eq!(same, 1, "{}", provider.name());
        }
    }

    #[test]
    fn github_injects_bearer_for_the_api_and_basic_for_git() {
        let credential = Credential::new("fake-gh-token", CredentialKind::Token);
        let injections = find("github").injections(&credential);
        let by_host: Vec<(&str, &str, &str)> = injections
            .iter()
            .map(|i| (i.host_pattern.as_str(), i.header_name.as_str(), i.header_value.as_str()))
            .collect();
        assert_eq!(
            by_host,
            [
                ("api.github.com", "Authorization", "Bearer fake-gh-token"),
                // base64("x-access-token:fake-gh-token")
                (
                    "github.com",
                    "Authorization",
                    "Basic eC1hY2Nlc3MtdG9rZW46ZmFrZS1naC10b2tlbg=="
                ),
            ]
        );
        assert!(injections.iter().all(|i| i.grant == "github"));
        let shown = format!("{injections:?}");
        assert!(!shown.contains("fake-gh-token"), "{shown}");
    }

    #[test]
    fn api_providers_inject_their_own_header_and_env() {
        let credential = Credential::new("fake-key", CredentialKind::ApiKey);
        for (name, host, header, value, env) in [
            (
                "anthropic",
                "api.anthropic.com",
                "x-api-key",
                "fake-key",
                "ANTHROPIC_API_KEY",
            ),
            (
                "claude",
                "api.anthropic.com",
                "Authorization",
                "Bearer fake-key",
                "CLAUDE_CODE_OAUTH_TOKEN",
            ),
            (
                "openai",
                "api.openai.com",
                "Authorization",
                "Bearer fake-key",
                "OPENAI_API_KEY",
            ),
            (
                "gemini",
                "generativelanguage.googleapis.com",
                "x-goog-api-key",
                "fake-key",
                "GEMINI_API_KEY",
            ),
        ] {
            let provider = find(name);
            let injections = provider.injections(&credential);
            assert_eq!(injections.len(), 1, "{name}");
            assert_eq!(injections[0].host_pattern, host);
            assert_eq!(injections[0].header_name, header);
            assert_eq!(injections[0].header_value, value);
            assert_eq!(injections[0].placeholder.as_deref(), Some(provider.placeholder()));
            assert_eq!(
                provider.container_env(),
                [(env.to_owned(), provider.placeholder().to_owned())]
            );
        }
    }

    #[test]
    fn claude_adds_the_oauth_beta_and_drops_a_client_api_key() {
        let credential = Credential::new("fake-oauth", CredentialKind::OauthToken);
        let injections = find("claude").injections(&credential);
        assert_eq!(
            injections[0].list_additions,
            [("anthropic-beta".to_owned(), "oauth-2025-04-20".to_owned())]
        );
        assert_eq!(injections[0].removals, ["x-api-key"]);
        let anthropic = find("anthropic").injections(&credential);
        assert!(anthropic[0].list_additions.is_empty() && anthropic[0].removals.is_empty());
    }

    #[test]
    fn github_grants_from_gh_token_then_github_token() {
        let github = find("github");
        let both = |name: &str| match name {
            "GH_TOKEN" => Some("fake-from-gh-token".to_owned()),
            "GITHUB_TOKEN" => Some("fake-from-github-token".to_owned()),
            _ => None,
        };
        let granted = github.grant_token_from_lookup(&both).unwrap();
        assert_eq!(granted.token, "fake-from-gh-token");
        assert_eq!(granted.source, "env GH_TOKEN");

        let second = |name: &str| (name == "GITHUB_TOKEN").then(|| " fake-second \n".to_owned());
        let granted = github.grant_token_from_lookup(&second).unwrap();
        assert_eq!(granted.token, "fake-second");

        let placeholder = github.placeholder().to_owned();
        let only_placeholder = move |_: &str| Some(placeholder.clone());
        assert!(github.grant_token_from_lookup(&only_placeholder).is_none());
        assert!(github.grant_token_from_lookup(&|_| Some("  ".into())).is_none());
    }
}
