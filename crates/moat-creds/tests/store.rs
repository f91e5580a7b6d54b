//! The encrypted credential store through its public API: round trips,
//! tampering, files moved between profiles and providers, the old format,
//! wrong keys, profiles, listing and removal.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use moat_core::MoatHome;
use moat_creds::sealed::{self, Binding};
use moat_creds::{Credential, CredentialKind, CredentialStore, FileKeyStore, KeyStore, MasterKey, StoreError};
use support::TempHome;

const FAKE_TOKEN: &str = "fake-github-token-for-tests-7e2a";

fn store(home: &MoatHome, profile: Option<&str>) -> CredentialStore {
    let keys = Box::new(FileKeyStore::new(&home.credentials_dir()));
    CredentialStore::with_key_store(home, profile, keys).unwrap()
}

/// Stores a fake credential for `provider`.
fn save(store: &CredentialStore, provider: &str, token: &str, kind: CredentialKind) {
    store.save(provider, &Credential::new(token, kind)).unwrap();
}

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn save_then_load_round_trips_and_the_file_is_not_plaintext() {
    let home = TempHome::new();
    let store = store(&home.home, None);
    let mut credential = Credential::new(FAKE_TOKEN, CredentialKind::Token);
    credential.metadata.scopes = vec!["repo".into(), "read:org".into()];
    credential.metadata.account = Some("octo-fake".into());
    store.save("github", &credential).unwrap();

    assert_eq!(store.load("github").unwrap(), Some(credential));
    let path = home.home.credentials_dir().join("github.enc");
    let bytes = fs::read(&path).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("fake-github-token"));
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&home.home.credentials_dir()), 0o700);
    assert_eq!(store.load("openai").unwrap(), None);
}

#[test]
fn a_flipped_byte_is_a_clear_error() {
    let home = TempHome::new();
    let store = store(&home.home, None);
    save(&store, "openai", "fake-openai-key-0001", CredentialKind::ApiKey);
    let path = home.home.credentials_dir().join("openai.enc");
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    fs::write(&path, &bytes).unwrap();

    let err = store.load("openai").unwrap_err();
    assert!(matches!(err, StoreError::Decrypt { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("openai.enc"), "{message}");
    assert!(message.contains("modified"), "{message}");
}

#[test]
fn a_file_moved_to_another_provider_does_not_decrypt() {
    // An attacker renames the OpenAI key file to gemini.enc, so that the
    // OpenAI key would be sent to Gemini's hosts.
    let home = TempHome::new();
    let store = store(&home.home, None);
    save(&store, "openai", "fake-openai-key-0001", CredentialKind::ApiKey);
    let dir = home.home.credentials_dir();
    fs::rename(dir.join("openai.enc"), dir.join("gemini.enc")).unwrap();
    let err = store.load("gemini").unwrap_err();
    assert!(matches!(err, StoreError::Misplaced { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&dir.join("gemini.enc").display().to_string()),
        "{message}"
    );
    assert!(message.contains("encrypted for provider \"openai\""), "{message}");
    assert!(message.contains("moat grant gemini"), "{message}");
}

#[test]
fn a_file_copied_from_another_profile_does_not_decrypt() {
    // An attacker copies a credential file from the work profile into the
    // personal profile, so that personal runs would use the work token.
    let home = TempHome::new();
    let work = store(&home.home, Some("work"));
    save(&work, "github", FAKE_TOKEN, CredentialKind::Token);
    let personal = store(&home.home, Some("personal"));
    save(&personal, "openai", "fake-openai-key-0006", CredentialKind::ApiKey);
    let copied = personal.dir().join("github.enc");
    fs::copy(work.dir().join("github.enc"), &copied).unwrap();

    let err = personal.load("github").unwrap_err();
    assert!(matches!(err, StoreError::Misplaced { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&copied.display().to_string()), "{message}");
    assert!(message.contains("profile \"work\""), "{message}");
    assert!(message.contains("moat --profile personal grant github"), "{message}");
    let listed = personal.list().unwrap();
    assert!(
        listed[0].error.as_deref().unwrap().contains("profile \"work\""),
        "{listed:?}"
    );
    assert!(work.load("github").unwrap().is_some(), "the original still opens");
}

#[test]
fn a_profile_file_copied_into_the_default_profile_does_not_decrypt() {
    // The same attack into the default profile, which has no profile name.
    let home = TempHome::new();
    let work = store(&home.home, Some("work"));
    save(&work, "claude", "fake-oauth-token-0007", CredentialKind::OauthToken);
    let default = store(&home.home, None);
    fs::copy(work.dir().join("claude.enc"), default.dir().join("claude.enc")).unwrap();
    let message = default.load("claude").unwrap_err().to_string();
    assert!(
        message.contains("not for provider \"claude\" in the default profile"),
        "{message}"
    );
}

#[test]
fn a_file_in_the_old_format_still_opens_and_is_rewritten_on_save() {
    // Stores written before profiles were bound (format 1, provider-only
    // associated data) must keep working after an upgrade.
    let home = TempHome::new();
    let store = store(&home.home, Some("work"));
    save(&store, "openai", "fake-openai-key-0008", CredentialKind::ApiKey);
    let key = FileKeyStore::new(&home.home.credentials_dir()).load().unwrap().unwrap();
    let credential = Credential::new("fake-openai-key-0008", CredentialKind::ApiKey);
    let plaintext = serde_json::to_vec(&credential).unwrap();
    let binding = Binding {
        profile: None,
        provider: "openai",
    };
    let old = sealed::seal_version(&key, binding, &plaintext, sealed::LEGACY_FORMAT_VERSION).unwrap();
    let path = store.dir().join("openai.enc");
    fs::write(&path, &old).unwrap();

    assert_eq!(store.load("openai").unwrap(), Some(credential.clone()));
    store.save("openai", &credential).unwrap();
    assert_eq!(fs::read(&path).unwrap()[0], sealed::FORMAT_VERSION);
    assert_eq!(store.load("openai").unwrap(), Some(credential));
}

#[test]
fn a_replaced_key_is_reported_with_the_key_location() {
    let home = TempHome::new();
    save(
        &store(&home.home, None),
        "claude",
        "fake-oauth-token-0002",
        CredentialKind::OauthToken,
    );
    let other_key = MasterKey::generate();
    let key_path = FileKeyStore::new(&home.home.credentials_dir()).path();
    fs::write(&key_path, other_key.bytes()).unwrap();

    let err = store(&home.home, None).load("claude").unwrap_err();
    let message = err.to_string();
    assert!(message.contains(".key"), "{message}");
    assert!(message.contains("moat grant claude"), "{message}");
}

#[test]
fn a_deleted_key_is_reported_instead_of_silently_creating_one() {
    let home = TempHome::new();
    let store = store(&home.home, None);
    save(&store, "gemini", "fake-gemini-key-0003", CredentialKind::ApiKey);
    fs::remove_file(FileKeyStore::new(&home.home.credentials_dir()).path()).unwrap();
    let err = store.load("gemini").unwrap_err();
    assert!(matches!(err, StoreError::KeyMissing { .. }), "{err}");
    assert!(
        FileKeyStore::new(&home.home.credentials_dir())
            .load()
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_loose_key_file_is_refused_with_a_chmod_hint() {
    let home = TempHome::new();
    let store = store(&home.home, None);
    save(&store, "openai", "fake-openai-key-0004", CredentialKind::ApiKey);
    let key_path = FileKeyStore::new(&home.home.credentials_dir()).path();
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o640)).unwrap();
    let err = store.load("openai").unwrap_err().to_string();
    assert!(err.contains(&format!("chmod 600 {}", key_path.display())), "{err}");
}

#[test]
fn profiles_are_isolated_from_each_other_and_from_the_default() {
    let home = TempHome::new();
    let work = store(&home.home, Some("work"));
    work.save("github", &Credential::new(FAKE_TOKEN, CredentialKind::Token))
        .unwrap();

    assert_eq!(store(&home.home, None).load("github").unwrap(), None);
    assert!(store(&home.home, None).list().unwrap().is_empty());
    assert_eq!(store(&home.home, Some("personal")).load("github").unwrap(), None);
    assert!(work.load("github").unwrap().is_some());

    let profile_dir = home.home.credentials_dir().join("profiles").join("work");
    assert_eq!(work.dir(), profile_dir);
    assert_eq!(mode(&profile_dir), 0o700);
    assert!(profile_dir.join("github.enc").exists());
}

#[test]
fn list_is_sorted_redacted_and_reports_unreadable_files() {
    let home = TempHome::new();
    let store = store(&home.home, None);
    save(&store, "openai", "fake-openai-key-9z8y", CredentialKind::ApiKey);
    store
        .save("github", &Credential::new(FAKE_TOKEN, CredentialKind::Token))
        .unwrap();
    fs::write(home.home.credentials_dir().join("broken.enc"), b"\x01garbage").unwrap();

    let listed = store.list().unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.provider.as_str()).collect();
    assert_eq!(names, ["broken", "github", "openai"]);
    assert!(listed[0].details.is_none());
    assert!(listed[0].error.as_deref().unwrap().contains("truncated"));
    let github = listed[1].details.as_ref().unwrap();
    assert_eq!(github.token, "…7e2a");
    assert_eq!(listed[2].details.as_ref().unwrap().token, "…9z8y");

    let json = serde_json::to_string(&listed).unwrap();
    assert!(!json.contains("fake-github-token"), "{json}");
    assert!(!json.contains("fake-openai-key"), "{json}");
}

#[test]
fn remove_deletes_and_reports_whether_anything_was_there() {
    let home = TempHome::new();
    let store = store(&home.home, None);
    store
        .save("github", &Credential::new(FAKE_TOKEN, CredentialKind::Token))
        .unwrap();
    assert!(store.remove("github").unwrap());
    assert_eq!(store.load("github").unwrap(), None);
    assert!(!home.home.credentials_dir().join("github.enc").exists());
    assert!(!store.remove("github").unwrap());
}

#[test]
fn names_that_would_escape_the_directory_are_rejected() {
    let home = TempHome::new();
    let store = store(&home.home, None);
    for bad in ["../etc", "", ".key", "a/b"] {
        let err = store.load(bad).unwrap_err();
        assert!(matches!(err, StoreError::InvalidName { .. }), "{bad}: {err}");
    }
    let keys = Box::new(FileKeyStore::new(&home.home.credentials_dir()));
    let err = CredentialStore::with_key_store(&home.home, Some("../x"), keys).unwrap_err();
    assert!(err.to_string().contains("profile"), "{err}");
}

#[test]
fn show_gives_one_redacted_summary() {
    let home = TempHome::new();
    let store = store(&home.home, None);
    assert_eq!(store.summary("github").unwrap(), None);
    store
        .save("github", &Credential::new(FAKE_TOKEN, CredentialKind::Token))
        .unwrap();
    let shown = store.summary("github").unwrap().unwrap();
    assert_eq!(shown.provider, "github");
    assert_eq!(shown.details.unwrap().token, "…7e2a");
}
