//! Where the master key lives: the OS keyring (through `keyring`'s mock
//! credential builder, so no test touches a real keyring), the key file,
//! the fallback between them when `MOAT_KEYRING_BACKEND` is unset, and moving
//! a key file into the keyring without ever losing the key.

mod support;

use std::any::Any;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use keyring::credential::CredentialApi;
use moat_core::MoatHome;
use moat_creds::keystore::{KEY_FILE, KEYRING_MARKER_FILE};
use moat_creds::{
    AutoKeyStore, Credential, CredentialKind, CredentialStore, FileKeyStore, KeyError, KeyStore, KeyringKeyStore,
};
use support::TempHome;

const FAKE_TOKEN: &str = "fake-github-token-for-keyring-3c1d";

/// A keyring entry from the crate's mock builder: works, persists only in
/// the entry (shared by cloning the store).
fn mock_keyring(home: &MoatHome) -> KeyringKeyStore {
    let credential = keyring::mock::default_credential_builder()
        .build(None, "moat", &home.root().display().to_string())
        .unwrap();
    KeyringKeyStore::with_entry(
        &home.credentials_dir(),
        keyring::Entry::new_with_credential(credential),
        "mock keyring",
    )
}

/// A keyring entry whose every call fails as on a host with no Secret
/// Service (headless Linux, CI).
#[derive(Debug)]
struct NoSecretService;

impl CredentialApi for NoSecretService {
    fn set_secret(&self, _: &[u8]) -> keyring::Result<()> {
        Err(unavailable())
    }

    fn get_secret(&self) -> keyring::Result<Vec<u8>> {
        Err(unavailable())
    }

    fn delete_credential(&self) -> keyring::Result<()> {
        Err(unavailable())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn unavailable() -> keyring::Error {
    keyring::Error::PlatformFailure("org.freedesktop.secrets was not provided by any .service files".into())
}

fn absent_keyring(home: &MoatHome) -> KeyringKeyStore {
    KeyringKeyStore::with_entry(
        &home.credentials_dir(),
        keyring::Entry::new_with_credential(Box::new(NoSecretService)),
        "Secret Service",
    )
}

fn auto(home: &MoatHome, keyring: &KeyringKeyStore) -> AutoKeyStore {
    AutoKeyStore::new(FileKeyStore::new(&home.credentials_dir()), keyring.clone())
}

fn store(home: &MoatHome, keys: impl KeyStore + 'static) -> CredentialStore {
    CredentialStore::with_key_store(home, None, Box::new(keys)).unwrap()
}

fn grant(store: &CredentialStore) -> Credential {
    let credential = Credential::new(FAKE_TOKEN, CredentialKind::Token);
    store.save("github", &credential).unwrap();
    credential
}

fn key_file(home: &MoatHome) -> PathBuf {
    home.credentials_dir().join(KEY_FILE)
}

fn marker(home: &MoatHome) -> PathBuf {
    home.credentials_dir().join(KEYRING_MARKER_FILE)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn with_a_keyring_no_key_file_is_written() {
    // Someone who can read MOAT_HOME (a backup, a synced folder, a
    // mistaken bind mount) gets the credential files but no key for them.
    let home = TempHome::new();
    let keyring = mock_keyring(&home.home);
    let credential = grant(&store(&home.home, keyring.clone()));

    assert!(!key_file(&home.home).exists());
    assert_eq!(mode(&marker(&home.home)), 0o600);
    assert!(!fs::read_to_string(marker(&home.home)).unwrap().contains(FAKE_TOKEN));
    assert_eq!(
        store(&home.home, keyring.clone()).load("github").unwrap(),
        Some(credential)
    );
    let status = keyring.status();
    assert_eq!(status.backend, "keyring");
    assert!(status.exists);
    assert!(
        status.location.starts_with("keyring (mock keyring"),
        "{}",
        status.location
    );
}

#[test]
fn unset_backend_puts_a_new_key_in_a_reachable_keyring() {
    let home = TempHome::new();
    let keyring = mock_keyring(&home.home);
    let keys = auto(&home.home, &keyring);
    assert_eq!(keys.status().backend, "keyring");
    let credential = grant(&store(&home.home, keys));

    assert!(!key_file(&home.home).exists());
    assert!(marker(&home.home).exists());
    assert!(keyring.load().unwrap().is_some());
    assert_eq!(
        store(&home.home, auto(&home.home, &keyring)).load("github").unwrap(),
        Some(credential)
    );
}

#[test]
fn unset_backend_falls_back_to_the_key_file_without_a_keyring() {
    // Headless Linux or CI: no Secret Service, so the key goes to the file
    // (0600), and doctor says why.
    let home = TempHome::new();
    let keys = auto(&home.home, &absent_keyring(&home.home));
    let status = keys.status();
    assert_eq!(status.backend, "file");
    assert!(
        status.note.as_deref().unwrap().contains("no OS keyring is reachable"),
        "{status}"
    );
    let credential = grant(&store(&home.home, keys));

    assert_eq!(mode(&key_file(&home.home)), 0o600);
    assert!(!marker(&home.home).exists());
    let keys = auto(&home.home, &absent_keyring(&home.home));
    assert_eq!(
        keys.status().location,
        format!("file ({}, 0600)", key_file(&home.home).display())
    );
    assert_eq!(store(&home.home, keys).load("github").unwrap(), Some(credential));
}

#[test]
fn a_required_keyring_that_is_unreachable_is_an_error_with_a_hint() {
    let home = TempHome::new();
    let keyring = absent_keyring(&home.home);
    let err = keyring.load_or_create().unwrap_err();
    assert!(matches!(err, KeyError::KeyringUnavailable { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("MOAT_KEYRING_BACKEND=file"), "{message}");
    assert!(message.contains("Secret Service"), "{message}");
    assert!(
        !key_file(&home.home).exists(),
        "must not fall back when the keyring is required"
    );
    assert!(keyring.status().error.is_some());
}

#[test]
fn an_existing_key_file_keeps_working_when_a_keyring_appears() {
    // Upgrading moat on a desktop must not strand credentials sealed with
    // the file key, nor move the key behind the user's back.
    let home = TempHome::new();
    let credential = grant(&store(&home.home, FileKeyStore::new(&home.home.credentials_dir())));
    let keyring = mock_keyring(&home.home);

    let keys = auto(&home.home, &keyring);
    assert_eq!(keys.status().backend, "file");
    assert!(keys.status().note.unwrap().contains("MOAT_KEYRING_BACKEND=keyring"));
    assert_eq!(store(&home.home, keys).load("github").unwrap(), Some(credential));
    assert!(key_file(&home.home).exists());
    // `status` never moves a key, unlike `load` with the key file present.
    assert!(!keyring.status().exists, "nothing may move into the keyring");
}

#[test]
fn requiring_the_keyring_moves_the_key_file_into_it() {
    // MOAT_KEYRING_BACKEND=keyring on a store that has a key file: the key
    // moves into the keyring, the file goes, every credential still opens.
    let home = TempHome::new();
    let file = FileKeyStore::new(&home.home.credentials_dir());
    let credential = grant(&store(&home.home, file.clone()));
    let file_key = file.load().unwrap().unwrap();
    let keyring = mock_keyring(&home.home);

    assert_eq!(
        store(&home.home, keyring.clone()).load("github").unwrap(),
        Some(credential.clone())
    );
    assert!(!key_file(&home.home).exists());
    assert!(marker(&home.home).exists());
    assert_eq!(keyring.load().unwrap(), Some(file_key));

    // Unset backend now follows the marker to the keyring.
    let keys = auto(&home.home, &keyring);
    assert_eq!(keys.status().backend, "keyring");
    assert_eq!(store(&home.home, keys).load("github").unwrap(), Some(credential));
    // And MOAT_KEYRING_BACKEND=file says where the key went instead of
    // creating a second one.
    let err = store(&home.home, file.clone()).load("github").unwrap_err().to_string();
    assert!(err.contains(KEYRING_MARKER_FILE), "{err}");
    assert!(file.load_or_create().is_err());
    assert!(!key_file(&home.home).exists());
}

#[test]
fn a_move_interrupted_before_the_file_was_removed_completes() {
    // A crash after the key reached the keyring and the marker was written,
    // but before the key file was removed: both hold the same key.
    let home = TempHome::new();
    let file = FileKeyStore::new(&home.home.credentials_dir());
    let credential = grant(&store(&home.home, file.clone()));
    let saved = fs::read(key_file(&home.home)).unwrap();
    let keyring = mock_keyring(&home.home);
    keyring.load().unwrap(); // moves the key
    fs::write(key_file(&home.home), &saved).unwrap();
    fs::set_permissions(key_file(&home.home), fs::Permissions::from_mode(0o600)).unwrap();

    let keys = auto(&home.home, &keyring);
    assert_eq!(store(&home.home, keys).load("github").unwrap(), Some(credential));
    assert!(!key_file(&home.home).exists());
}

#[test]
fn a_key_file_that_disagrees_with_the_keyring_is_never_deleted() {
    let home = TempHome::new();
    let keyring = mock_keyring(&home.home);
    grant(&store(&home.home, keyring.clone()));
    fs::remove_file(marker(&home.home)).unwrap();
    let other = FileKeyStore::new(&home.home.credentials_dir());
    let other_key = other.load_or_create().unwrap();

    let err = keyring.load().unwrap_err();
    assert!(matches!(err, KeyError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("will not guess"), "{err}");
    assert_eq!(other.load().unwrap(), Some(other_key), "the file key must survive");
}

#[test]
fn a_key_in_an_unreachable_keyring_is_not_replaced_by_a_file_key() {
    // The key lives in the keyring, but this session (ssh, no D-Bus) cannot
    // reach it: creating a second key in a file would strand every
    // credential sealed with the first.
    let home = TempHome::new();
    grant(&store(&home.home, mock_keyring(&home.home)));
    let keys = auto(&home.home, &absent_keyring(&home.home));

    let err = store(&home.home, keys).save(
        "openai",
        &Credential::new("fake-openai-key-0009", CredentialKind::ApiKey),
    );
    let message = err.unwrap_err().to_string();
    assert!(message.contains("not reachable"), "{message}");
    assert!(message.contains(KEYRING_MARKER_FILE), "{message}");
    assert!(!key_file(&home.home).exists());
}
