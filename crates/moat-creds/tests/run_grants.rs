//! Turning a run's `grants:` into injections, placeholder env and hosts.

mod support;

use moat_creds::{
    Credential, CredentialKind, CredentialStore, FileKeyStore, Providers, RunGrantError, resolve_run_grants,
};
use support::TempHome;

fn store(home: &TempHome, profile: Option<&str>) -> CredentialStore {
    let keys = Box::new(FileKeyStore::new(&home.home.credentials_dir()));
    CredentialStore::with_key_store(&home.home, profile, keys).unwrap()
}

fn names(grants: &[&str]) -> Vec<String> {
    grants.iter().map(|g| (*g).to_owned()).collect()
}

#[test]
fn granted_providers_yield_rules_env_and_hosts_without_tokens_in_env() {
    let home = TempHome::new();
    let store = store(&home, None);
    store
        .save("github", &Credential::new("fake-gh-token-1111", CredentialKind::Token))
        .unwrap();
    store
        .save(
            "openai",
            &Credential::new("fake-openai-key-2222", CredentialKind::ApiKey),
        )
        .unwrap();
    let providers = Providers::built_in();

    let run = resolve_run_grants(&store, &providers, &names(&["github", "openai", "github"])).unwrap();
    let rules: Vec<(&str, &str)> = run
        .injections
        .iter()
        .map(|i| (i.host_pattern.as_str(), i.grant.as_str()))
        .collect();
    assert_eq!(
        rules,
        [
            ("api.github.com", "github"),
            ("github.com", "github"),
            ("api.openai.com", "openai")
        ]
    );
    assert_eq!(run.hosts, ["api.github.com", "github.com", "api.openai.com"]);
    let env_names: Vec<&str> = run.env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(env_names, ["GH_TOKEN", "OPENAI_API_KEY"]);
    assert!(run.env.iter().all(|(_, v)| !v.contains("fake-")));
}

#[test]
fn missing_unknown_and_expired_grants_are_errors_with_a_next_step() {
    let home = TempHome::new();
    let providers = Providers::built_in();
    let work = store(&home, Some("work"));

    let err = resolve_run_grants(&work, &providers, &names(&["github"])).unwrap_err();
    assert!(matches!(err, RunGrantError::NotGranted { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "github is not granted in profile work; run `moat grant github` first"
    );

    let err = resolve_run_grants(&work, &providers, &names(&["gitlab"])).unwrap_err();
    assert!(err.to_string().starts_with("unknown provider \"gitlab\""), "{err}");

    let mut old = Credential::new("fake-oauth-3333", CredentialKind::OauthToken);
    old.metadata.expires_at = Some(chrono::Utc::now() - chrono::Duration::minutes(5));
    work.save("claude", &old).unwrap();
    let err = resolve_run_grants(&work, &providers, &names(&["claude"])).unwrap_err();
    assert!(matches!(err, RunGrantError::Expired { .. }), "{err}");
}
