//! Loading providers from `MOAT_HOME/providers/*.yaml` next to the built-ins.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use moat_creds::{Credential, CredentialKind, ProviderError, ProviderSource, Providers};
use support::TempHome;

fn write_provider(home: &TempHome, file: &str, yaml: &str) -> std::path::PathBuf {
    let dir = home.home.providers_dir();
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file);
    fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn without_a_providers_directory_only_built_ins_exist() {
    let home = TempHome::new();
    let providers = Providers::load(&home.home).unwrap();
    assert_eq!(providers.names(), ["github", "anthropic", "claude", "openai", "gemini"]);
    let err = providers.require("gitlab").unwrap_err().to_string();
    assert_eq!(
        err,
        "unknown provider \"gitlab\" (known: github, anthropic, claude, openai, gemini)"
    );
}

#[test]
fn yaml_providers_are_added_after_the_built_ins() {
    let home = TempHome::new();
    let path = write_provider(
        &home,
        "gitlab.yaml",
        "name: gitlab\nhosts: [gitlab.example.test]\nheader: PRIVATE-TOKEN\nenv: GITLAB_TOKEN\n",
    );
    write_provider(&home, "notes.txt", "not a provider");
    write_provider(
        &home,
        "corp.yml",
        "name: corp\nhosts: ['*.corp.test']\nheader: Authorization\nprefix: 'Bearer '\n",
    );
    let providers = Providers::load(&home.home).unwrap();
    assert_eq!(providers.names().len(), 7);
    let gitlab = providers.get("gitlab").unwrap();
    assert_eq!(gitlab.source(), &ProviderSource::File(path));
    let injection = &gitlab.injections(&Credential::new("fake-gl-token", CredentialKind::Token))[0];
    assert!(moat_creds::host_matches(
        &injection.host_pattern,
        "gitlab.example.test",
        443
    ));
    assert_eq!(injection.grant, "gitlab");
    assert!(providers.get("corp").is_some());
}

#[test]
fn all_bad_files_are_reported_together_with_their_paths() {
    let home = TempHome::new();
    let shadow = write_provider(
        &home,
        "a.yaml",
        "name: github\nhosts: [evil.test]\nheader: Authorization\n",
    );
    let broken = write_provider(&home, "b.yaml", "name: [unclosed\n");
    let first = write_provider(&home, "c.yaml", "name: dup\nhosts: [a.test]\nheader: X-Key\n");
    let second = write_provider(&home, "d.yaml", "name: dup\nhosts: [b.test]\nheader: X-Key\n");

    let err = Providers::load(&home.home).unwrap_err();
    let ProviderError::Invalid(errors) = &err else {
        panic!("expected Invalid, got {err}");
    };
    assert_eq!(errors.len(), 3, "{err}");
    assert_eq!(errors[0].path, shadow);
    assert_eq!(errors[0].field.as_deref(), Some("name"));
    assert!(errors[0].message.contains("built-in"), "{}", errors[0]);
    assert_eq!(errors[1].path, broken);
    assert_eq!(errors[2].path, second);
    assert!(
        errors[2].message.contains(&first.display().to_string()),
        "{}",
        errors[2]
    );
    let rendered = err.to_string();
    assert!(
        rendered.contains(&format!("{}: name: ", second.display())),
        "{rendered}"
    );
}

#[test]
fn a_group_writable_provider_file_is_refused_with_a_chmod_hint() {
    // Another user in the file's group edits a provider so that the
    // credential is injected into requests to a host they control.
    let home = TempHome::new();
    let path = write_provider(
        &home,
        "gitlab.yaml",
        "name: gitlab\nhosts: [gitlab.example.test]\nheader: PRIVATE-TOKEN\n",
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o664)).unwrap();
    let err = Providers::load(&home.home).unwrap_err();
    let ProviderError::Invalid(errors) = &err else {
        panic!("expected Invalid, got {err}");
    };
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(errors[0].path, path);
    let message = err.to_string();
    assert!(message.contains("writable by its group"), "{message}");
    assert!(message.contains(&format!("chmod go-w {}", path.display())), "{message}");

    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(Providers::load(&home.home).unwrap().get("gitlab").is_some());
}

#[test]
fn a_provider_file_owned_by_another_user_is_refused() {
    // Another local user drops their own provider definition into
    // MOAT_HOME/providers/.
    if moat_core::fs_perms::current_uid() != 0 {
        return; // only root can give a file away; moat-core tests the rule itself
    }
    let home = TempHome::new();
    let path = write_provider(
        &home,
        "corp.yaml",
        "name: corp\nhosts: [api.corp.test]\nheader: Authorization\n",
    );
    std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
    let message = Providers::load(&home.home).unwrap_err().to_string();
    assert!(
        message.contains(&format!("{}: it is owned by uid 4242", path.display())),
        "{message}"
    );
    assert!(message.contains("chown"), "{message}");
}
