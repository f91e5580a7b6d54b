//! The 32-byte master key that encrypts credentials, and where it lives:
//!
//! - **keyring**: the OS keyring (Secret Service on Linux, Keychain on
//!   macOS) through the `keyring` crate, as the base64 secret of the entry
//!   service `moat`, account = the `MOAT_HOME` path. A marker file
//!   `MOAT_HOME/credentials/.key.keyring` (no secret in it) records that the
//!   key lives there, so a later run that cannot reach the keyring fails
//!   with a hint instead of quietly creating a second key.
//! - **file**: 32 raw bytes in `MOAT_HOME/credentials/.key` (0600, owned by
//!   the user).
//!
//! `MOAT_KEYRING_BACKEND` picks one ([`KeyBackend`]). Unset, moat keeps
//! using whatever holds the key already (marker → keyring, key file → file)
//! and puts a new key in the keyring when one is reachable, else in the
//! file: headless Linux and CI have no Secret Service. `keyring` makes an
//! unreachable keyring an error, and moves an existing key file into the
//! keyring (written, read back and compared before the file is removed, so
//! a crash leaves the key in at least one place). `file` never touches the
//! keyring. No backend ever replaces an existing key.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use moat_core::MoatHome;
use moat_core::atomic::{create_private_dir, write_atomic};
use moat_core::env_vars::{self, MOAT_KEYRING_BACKEND};
use moat_core::fs_perms::{self, UntrustedFile};
use moat_core::lock::{FileLock, LockError};
use rand::RngExt;
use serde::Serialize;

/// Length of the master key in bytes (AES-256).
pub const KEY_LEN: usize = 32;
/// File name of the key inside the credentials directory.
pub const KEY_FILE: &str = ".key";
/// Marker (inside the credentials directory) saying the key is in the OS
/// keyring.
pub const KEYRING_MARKER_FILE: &str = ".key.keyring";
/// Service name of moat's keyring entries.
pub const KEYRING_SERVICE: &str = "moat";
const KEY_LOCK_FILE: &str = ".key.lock";
const KEY_STAGING_FILE: &str = ".key.new";
/// How long key creation waits for another process creating it.
const KEY_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The credential encryption key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; KEY_LEN]);

impl MasterKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        MasterKey(bytes)
    }

    /// A fresh key from the thread-local CSPRNG.
    pub fn generate() -> Self {
        MasterKey(rand::rng().random())
    }

    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "refusing to use the key file {path}: its mode is {mode:o}, readable by other users; run `chmod 600 {path}`"
    )]
    LoosePermissions { path: PathBuf, mode: u32 },
    #[error("{0}")]
    Untrusted(UntrustedFile),
    #[error("key file {path} holds {len} bytes, expected {KEY_LEN}; it is damaged")]
    Malformed { path: PathBuf, len: usize },
    #[error("cannot access the key file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot create the key: {0}")]
    Lock(#[from] LockError),
    #[error("{MOAT_KEYRING_BACKEND}={0:?} is not a key store backend (expected `file` or `keyring`)")]
    UnknownBackend(String),
    #[error("the OS keyring is not reachable ({reason}); {hint}")]
    KeyringUnavailable { reason: String, hint: String },
    #[error("cannot {action} the credential key in the OS keyring ({entry}): {source}")]
    Keyring {
        action: &'static str,
        entry: String,
        source: keyring::Error,
    },
    #[error("the OS keyring entry {entry} does not hold a moat key; it is damaged")]
    KeyringMalformed { entry: String },
    #[error(
        "{MOAT_KEYRING_BACKEND}=file, but the credential key is in the OS keyring ({marker} records that); unset {MOAT_KEYRING_BACKEND} or set it to `keyring` to use it"
    )]
    KeyInKeyring { marker: PathBuf },
    #[error(
        "the key file {file} and the OS keyring entry {entry} hold different keys; moat will not guess which one encrypted your credentials: move the key file aside if the keyring's key is the right one, or remove {marker} and the keyring entry if the file's is"
    )]
    Conflict {
        file: PathBuf,
        entry: String,
        marker: PathBuf,
    },
}

/// Where the key is kept, for `moat doctor`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyStatus {
    /// `keyring` or `file`.
    pub backend: &'static str,
    /// `keyring (Secret Service, service "moat", account "/home/u/.moat")`
    /// or `file (/home/u/.moat/credentials/.key, 0600)`.
    pub location: String,
    /// Whether a key exists yet (one is created on the first grant).
    pub exists: bool,
    /// Why this backend was chosen, when it is not the obvious one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The key cannot be used; what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.location)?;
        if !self.exists && self.error.is_none() {
            f.write_str(", no key yet")?;
        }
        if let Some(note) = &self.note {
            write!(f, "; {note}")?;
        }
        if let Some(error) = &self.error {
            write!(f, "; error: {error}")?;
        }
        Ok(())
    }
}

/// Where the master key is kept.
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// The existing key, or `None` when none was created yet.
    fn load(&self) -> Result<Option<MasterKey>, KeyError>;
    /// The existing key, or a new one; concurrent callers get the same key
    /// and an existing key is never replaced.
    fn load_or_create(&self) -> Result<MasterKey, KeyError>;
    /// Where the key lives, for messages (`file /home/u/.moat/credentials/.key`).
    fn describe(&self) -> String;
    /// Which backend holds (or would hold) the key, for `moat doctor`.
    /// Never creates or moves a key.
    fn status(&self) -> KeyStatus;
}

/// Which [`KeyStore`] implementation to use (`MOAT_KEYRING_BACKEND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyBackend {
    /// Unset: keep the key where it is; put a new one in the keyring when
    /// reachable, else in the file.
    Auto,
    File,
    Keyring,
}

impl KeyBackend {
    /// The backend chosen by `MOAT_KEYRING_BACKEND` (unset = [`KeyBackend::Auto`]).
    pub fn from_env() -> Result<Self, KeyError> {
        Self::parse(env_vars::read(MOAT_KEYRING_BACKEND).as_deref())
    }

    /// Parses a `MOAT_KEYRING_BACKEND` value; unset or empty means auto.
    pub fn parse(value: Option<&str>) -> Result<Self, KeyError> {
        match value.map(str::trim) {
            None | Some("") => Ok(KeyBackend::Auto),
            Some("file") => Ok(KeyBackend::File),
            Some("keyring") => Ok(KeyBackend::Keyring),
            Some(other) => Err(KeyError::UnknownBackend(other.to_owned())),
        }
    }

    /// Builds the key store for `home`. Contacts no keyring yet.
    pub fn key_store(self, home: &MoatHome) -> Result<Box<dyn KeyStore>, KeyError> {
        let dir = home.credentials_dir();
        Ok(match self {
            KeyBackend::File => Box::new(FileKeyStore::new(&dir)),
            KeyBackend::Keyring => Box::new(KeyringKeyStore::for_home(home)?),
            KeyBackend::Auto => Box::new(AutoKeyStore::new(
                FileKeyStore::new(&dir),
                KeyringKeyStore::for_home(home)?,
            )),
        })
    }
}

fn io_error(path: &Path, source: io::Error) -> KeyError {
    KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Takes the key lock of `dir` (created 0700 if missing).
fn lock_keys(dir: &Path) -> Result<FileLock, KeyError> {
    create_private_dir(dir).map_err(|source| io_error(dir, source))?;
    Ok(FileLock::acquire(&dir.join(KEY_LOCK_FILE), KEY_LOCK_TIMEOUT)?)
}

fn sync_dir(dir: &Path) -> Result<(), KeyError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| io_error(dir, e))
}

// === impl FileKeyStore ===

/// The key as 32 raw bytes in a 0600 file.
#[derive(Clone, Debug)]
pub struct FileKeyStore {
    dir: PathBuf,
}

impl FileKeyStore {
    /// A key store keeping its key in `dir/.key`.
    pub fn new(dir: &Path) -> Self {
        FileKeyStore { dir: dir.to_path_buf() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    fn marker(&self) -> PathBuf {
        self.dir.join(KEYRING_MARKER_FILE)
    }

    /// The key in the file, ignoring the keyring marker.
    fn read_key(&self) -> Result<Option<MasterKey>, KeyError> {
        let path = self.path();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, e)),
        };
        let meta = file.metadata().map_err(|e| io_error(&path, e))?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::LoosePermissions {
                path,
                mode: mode & 0o777,
            });
        }
        fs_perms::check_metadata(&path, &meta, fs_perms::current_uid()).map_err(KeyError::Untrusted)?;
        let mut bytes = Vec::with_capacity(KEY_LEN);
        file.read_to_end(&mut bytes).map_err(|e| io_error(&path, e))?;
        let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| KeyError::Malformed {
            path: path.clone(),
            len: bytes.len(),
        })?;
        Ok(Some(MasterKey(key)))
    }

    /// Creates the key; the caller holds the key lock.
    fn create_locked(&self) -> Result<MasterKey, KeyError> {
        if let Some(existing) = self.load()? {
            return Ok(existing);
        }
        let key = MasterKey::generate();
        self.install_new_key(&key)?;
        tracing::info!(path = %self.path().display(), "created the credential encryption key");
        Ok(key)
    }

    /// Writes the key to a staging file, then hard-links it into place:
    /// unlike a rename, a link never replaces a key that appeared meanwhile.
    fn install_new_key(&self, key: &MasterKey) -> Result<(), KeyError> {
        let staging = self.dir.join(KEY_STAGING_FILE);
        let path = self.path();
        write_atomic(&staging, key.bytes(), 0o600).map_err(|e| io_error(&staging, e))?;
        let linked = fs::hard_link(&staging, &path);
        let _ = fs::remove_file(&staging);
        linked.map_err(|e| io_error(&path, e))?;
        sync_dir(&self.dir)
    }
}

impl KeyStore for FileKeyStore {
    fn load(&self) -> Result<Option<MasterKey>, KeyError> {
        match self.read_key()? {
            Some(key) => Ok(Some(key)),
            None if self.marker().exists() => Err(KeyError::KeyInKeyring { marker: self.marker() }),
            None => Ok(None),
        }
    }

    fn load_or_create(&self) -> Result<MasterKey, KeyError> {
        match self.load()? {
            Some(key) => Ok(key),
            None => {
                let _lock = lock_keys(&self.dir)?;
                self.create_locked()
            }
        }
    }

    fn describe(&self) -> String {
        format!("file {}", self.path().display())
    }

    fn status(&self) -> KeyStatus {
        let (exists, error) = match self.load() {
            Ok(key) => (key.is_some(), None),
            Err(e) => (self.path().exists(), Some(e.to_string())),
        };
        KeyStatus {
            backend: "file",
            location: format!("file ({}, 0600)", self.path().display()),
            exists,
            note: None,
            error,
        }
    }
}

// === impl KeyringKeyStore ===

/// What the keyring entry holds.
enum Probe {
    Present(MasterKey),
    Absent,
    Unavailable(String),
}

/// The key as the base64 secret of an OS keyring entry. The credentials
/// directory keeps the marker and the lock, and any key file to move in.
#[derive(Clone, Debug)]
pub struct KeyringKeyStore {
    file: FileKeyStore,
    /// `service "moat", account "/home/u/.moat"`.
    entry_name: String,
    /// `Secret Service`, `Keychain`.
    platform: &'static str,
    /// The entry, or why no keyring can be used at all.
    entry: Result<Arc<keyring::Entry>, String>,
}

impl KeyringKeyStore {
    /// The entry of `home` in the platform's keyring. Contacts nothing yet.
    pub fn for_home(home: &MoatHome) -> Result<Self, KeyError> {
        let account = home.root().display().to_string();
        let entry_name = format!("service {KEYRING_SERVICE:?}, account {account:?}");
        let persistent = matches!(
            keyring::default::default_credential_builder().persistence(),
            keyring::credential::CredentialPersistence::UntilDelete
        );
        let entry = if persistent {
            let entry = keyring::Entry::new(KEYRING_SERVICE, &account).map_err(|source| KeyError::Keyring {
                action: "address",
                entry: entry_name.clone(),
                source,
            })?;
            Ok(Arc::new(entry))
        } else {
            Err("this platform has no supported OS keyring".to_owned())
        };
        Ok(KeyringKeyStore {
            file: FileKeyStore::new(&home.credentials_dir()),
            entry_name,
            platform: platform_keyring_name(),
            entry,
        })
    }

    /// A store using `entry` (e.g. from `keyring::mock`) for the key, with
    /// `credentials_dir` for the marker, the lock and a key file to move in.
    pub fn with_entry(credentials_dir: &Path, entry: keyring::Entry, platform: &'static str) -> Self {
        KeyringKeyStore {
            file: FileKeyStore::new(credentials_dir),
            entry_name: format!("{platform} entry"),
            platform,
            entry: Ok(Arc::new(entry)),
        }
    }

    fn entry_description(&self) -> String {
        format!("{} ({})", self.platform, self.entry_name)
    }

    fn marker(&self) -> PathBuf {
        self.file.marker()
    }

    fn keyring_error(&self, action: &'static str, source: keyring::Error) -> KeyError {
        KeyError::Keyring {
            action,
            entry: self.entry_description(),
            source,
        }
    }

    fn probe(&self) -> Result<Probe, KeyError> {
        let entry = match &self.entry {
            Ok(entry) => entry,
            Err(reason) => return Ok(Probe::Unavailable(reason.clone())),
        };
        match entry.get_password() {
            Ok(text) => decode_key(&text)
                .map(Probe::Present)
                .ok_or_else(|| KeyError::KeyringMalformed {
                    entry: self.entry_description(),
                }),
            Err(keyring::Error::NoEntry) => Ok(Probe::Absent),
            Err(keyring::Error::NoStorageAccess(e) | keyring::Error::PlatformFailure(e)) => {
                Ok(Probe::Unavailable(e.to_string()))
            }
            Err(e) => Err(self.keyring_error("read", e)),
        }
    }

    fn unavailable(&self, reason: String) -> KeyError {
        let hint = if self.marker().exists() {
            format!(
                "the credential key is kept there ({} records that): run moat where the keyring is reachable, or {}",
                self.marker().display(),
                keyring_hint()
            )
        } else {
            keyring_hint().to_owned()
        };
        KeyError::KeyringUnavailable { reason, hint }
    }

    /// Writes `key` to the entry and reads it back.
    fn store_key(&self, key: &MasterKey) -> Result<(), KeyError> {
        let entry = self.entry.as_ref().map_err(|reason| self.unavailable(reason.clone()))?;
        entry
            .set_password(&BASE64.encode(key.bytes()))
            .map_err(|e| self.keyring_error("store", e))?;
        match self.probe()? {
            Probe::Present(stored) if stored == *key => Ok(()),
            Probe::Unavailable(reason) => Err(self.unavailable(reason)),
            _ => Err(KeyError::KeyringMalformed {
                entry: self.entry_description(),
            }),
        }
    }

    fn write_marker(&self) -> Result<(), KeyError> {
        let marker = self.marker();
        let text = format!(
            "The moat credential key is in the OS keyring: {}.\nDo not delete this file while it is; see `moat doctor`.\n",
            self.entry_description()
        );
        write_atomic(&marker, text.as_bytes(), 0o600).map_err(|e| io_error(&marker, e))
    }

    /// Moves the key file's key into the keyring: store, read back and
    /// compare, record the marker, and only then remove the file. A crash at
    /// any step leaves the key in the file, the keyring, or both (equal).
    /// The caller holds the key lock.
    fn move_in_locked(&self, file_key: MasterKey) -> Result<MasterKey, KeyError> {
        match self.probe()? {
            Probe::Unavailable(reason) => return Err(self.unavailable(reason)),
            Probe::Present(existing) if existing != file_key => {
                return Err(KeyError::Conflict {
                    file: self.file.path(),
                    entry: self.entry_description(),
                    marker: self.marker(),
                });
            }
            Probe::Present(_) => {}
            Probe::Absent => self.store_key(&file_key)?,
        }
        self.write_marker()?;
        let path = self.file.path();
        fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
        sync_dir(&self.file.dir)?;
        tracing::info!(
            from = %path.display(),
            to = %self.entry_description(),
            "moved the credential key into the OS keyring"
        );
        Ok(file_key)
    }

    /// Creates a key in the keyring, or returns the one there (recording
    /// the marker if it was lost); the caller holds the key lock.
    fn create_locked(&self) -> Result<MasterKey, KeyError> {
        if let Some(key) = self.load_locked()? {
            if !self.marker().exists() {
                self.write_marker()?;
            }
            return Ok(key);
        }
        let key = MasterKey::generate();
        self.store_key(&key)?;
        self.write_marker()?;
        tracing::info!(entry = %self.entry_description(), "created the credential encryption key in the OS keyring");
        Ok(key)
    }

    /// [`KeyStore::load`] with the key lock held.
    fn load_locked(&self) -> Result<Option<MasterKey>, KeyError> {
        if let Some(file_key) = self.file.read_key()? {
            return self.move_in_locked(file_key).map(Some);
        }
        match self.probe()? {
            Probe::Present(key) => Ok(Some(key)),
            Probe::Absent => Ok(None),
            Probe::Unavailable(reason) => Err(self.unavailable(reason)),
        }
    }
}

impl KeyStore for KeyringKeyStore {
    fn load(&self) -> Result<Option<MasterKey>, KeyError> {
        if self.file.path().exists() {
            let _lock = lock_keys(&self.file.dir)?;
            return self.load_locked();
        }
        match self.probe()? {
            Probe::Present(key) => Ok(Some(key)),
            Probe::Absent => Ok(None),
            Probe::Unavailable(reason) => Err(self.unavailable(reason)),
        }
    }

    fn load_or_create(&self) -> Result<MasterKey, KeyError> {
        match self.load()? {
            Some(key) if self.marker().exists() => Ok(key),
            _ => {
                let _lock = lock_keys(&self.file.dir)?;
                self.create_locked()
            }
        }
    }

    fn describe(&self) -> String {
        format!("keyring {}", self.entry_description())
    }

    fn status(&self) -> KeyStatus {
        let location = format!("keyring ({}, {})", self.platform, self.entry_name);
        let (exists, error) = match self.probe() {
            Ok(Probe::Present(_)) => (true, None),
            Ok(Probe::Absent) => (false, None),
            Ok(Probe::Unavailable(reason)) => (false, Some(self.unavailable(reason).to_string())),
            Err(e) => (false, Some(e.to_string())),
        };
        let note = self.file.path().exists().then(|| {
            format!(
                "the key file {} is moved into the keyring on next use",
                self.file.path().display()
            )
        });
        KeyStatus {
            backend: "keyring",
            location,
            exists,
            note,
            error,
        }
    }
}

fn decode_key(text: &str) -> Option<MasterKey> {
    let bytes = BASE64.decode(text.trim()).ok()?;
    let key: [u8; KEY_LEN] = bytes.as_slice().try_into().ok()?;
    Some(MasterKey(key))
}

/// How to make the keyring reachable, or do without it.
fn keyring_hint() -> &'static str {
    if cfg!(target_os = "macos") {
        "unlock the login Keychain, or set MOAT_KEYRING_BACKEND=file to keep the key in MOAT_HOME/credentials/.key"
    } else {
        "start a Secret Service provider (e.g. gnome-keyring) in this session, or set MOAT_KEYRING_BACKEND=file to keep the key in MOAT_HOME/credentials/.key"
    }
}

fn platform_keyring_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "Keychain"
    } else {
        "Secret Service"
    }
}

// === impl AutoKeyStore ===

/// `MOAT_KEYRING_BACKEND` unset: the key stays where it is (marker →
/// keyring, key file → file); a new key goes to the keyring when it is
/// reachable, else to the file. Never moves a key.
#[derive(Clone, Debug)]
pub struct AutoKeyStore {
    file: FileKeyStore,
    keyring: KeyringKeyStore,
}

/// Where [`AutoKeyStore`] finds the key.
enum Holder {
    Keyring,
    File,
    Nowhere,
}

impl AutoKeyStore {
    pub fn new(file: FileKeyStore, keyring: KeyringKeyStore) -> Self {
        AutoKeyStore { file, keyring }
    }

    fn holder(&self) -> Holder {
        if self.file.marker().exists() {
            Holder::Keyring
        } else if self.file.path().exists() {
            Holder::File
        } else {
            Holder::Nowhere
        }
    }

    /// With no marker and no key file, a key already in the keyring (its
    /// marker lost) is used rather than replaced.
    fn load_nowhere(&self) -> Result<Option<MasterKey>, KeyError> {
        match self.keyring.probe()? {
            Probe::Present(key) => Ok(Some(key)),
            Probe::Absent | Probe::Unavailable(_) => Ok(None),
        }
    }
}

impl KeyStore for AutoKeyStore {
    fn load(&self) -> Result<Option<MasterKey>, KeyError> {
        match self.holder() {
            Holder::Keyring => self.keyring.load(),
            Holder::File => self.file.load(),
            Holder::Nowhere => self.load_nowhere(),
        }
    }

    fn load_or_create(&self) -> Result<MasterKey, KeyError> {
        match self.holder() {
            Holder::Keyring => return self.keyring.load_or_create(),
            Holder::File => return self.file.load_or_create(),
            Holder::Nowhere => {}
        }
        let _lock = lock_keys(&self.file.dir)?;
        match self.holder() {
            Holder::Keyring => return self.keyring.create_locked(),
            Holder::File => return self.file.create_locked(),
            Holder::Nowhere => {}
        }
        match self.keyring.probe()? {
            Probe::Present(_) | Probe::Absent => self.keyring.create_locked(),
            Probe::Unavailable(reason) => {
                tracing::info!(%reason, "no OS keyring is reachable; keeping the credential key in a file");
                self.file.create_locked()
            }
        }
    }

    fn describe(&self) -> String {
        match self.holder() {
            Holder::Keyring => self.keyring.describe(),
            Holder::File => self.file.describe(),
            Holder::Nowhere => match self.keyring.probe() {
                Ok(Probe::Present(_) | Probe::Absent) => self.keyring.describe(),
                _ => self.file.describe(),
            },
        }
    }

    fn status(&self) -> KeyStatus {
        match self.holder() {
            Holder::Keyring => self.keyring.status(),
            Holder::File => KeyStatus {
                note: Some(format!(
                    "an existing key file stays in use; {MOAT_KEYRING_BACKEND}=keyring moves it into the OS keyring"
                )),
                ..self.file.status()
            },
            Holder::Nowhere => match self.keyring.probe() {
                Ok(Probe::Present(_) | Probe::Absent) => self.keyring.status(),
                Ok(Probe::Unavailable(reason)) => KeyStatus {
                    note: Some(format!(
                        "no OS keyring is reachable ({reason}), so a new key goes to the file"
                    )),
                    ..self.file.status()
                },
                Err(e) => KeyStatus {
                    error: Some(e.to_string()),
                    ..self.keyring.status()
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_private_modes_and_reloads_the_same_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("credentials");
        let store = FileKeyStore::new(&dir);
        assert!(store.load().unwrap().is_none());
        let created = store.load_or_create().unwrap();
        assert_eq!(store.load_or_create().unwrap(), created);
        assert_eq!(FileKeyStore::new(&dir).load().unwrap(), Some(created));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.path()), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert!(!dir.join(KEY_STAGING_FILE).exists());
    }

    #[test]
    fn concurrent_creators_agree_on_one_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("credentials");
        let keys: Vec<MasterKey> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| FileKeyStore::new(&dir).load_or_create().unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|pair| pair[0] == pair[1]));
    }

    #[test]
    fn refuses_a_key_file_readable_by_others() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileKeyStore::new(tmp.path());
        store.load_or_create().unwrap();
        fs::set_permissions(store.path(), fs::Permissions::from_mode(0o644)).unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, KeyError::LoosePermissions { mode: 0o644, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(store.load_or_create().is_err(), "must not replace the key");
    }

    #[test]
    fn refuses_a_key_file_owned_by_another_user() {
        // Another local user plants a key of theirs, so that credentials
        // granted afterwards are sealed with a key they know.
        if fs_perms::current_uid() != 0 {
            return; // only root can give a file away; moat-core tests the rule itself
        }
        let tmp = tempfile::tempdir().unwrap();
        let store = FileKeyStore::new(tmp.path());
        store.load_or_create().unwrap();
        std::os::unix::fs::chown(store.path(), Some(4242), None).unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, KeyError::Untrusted(_)), "{err}");
        assert!(err.to_string().contains("owned by uid 4242"), "{err}");
    }

    #[test]
    fn a_damaged_key_file_is_reported_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FileKeyStore::new(tmp.path());
        write_atomic(&store.path(), b"too short", 0o600).unwrap();
        let err = store.load_or_create().unwrap_err();
        assert!(matches!(err, KeyError::Malformed { len: 9, .. }), "{err}");
        assert_eq!(fs::read(store.path()).unwrap(), b"too short");
    }

    #[test]
    fn backend_selection() {
        assert_eq!(KeyBackend::parse(None).unwrap(), KeyBackend::Auto);
        assert_eq!(KeyBackend::parse(Some("")).unwrap(), KeyBackend::Auto);
        assert_eq!(KeyBackend::parse(Some("file")).unwrap(), KeyBackend::File);
        assert_eq!(KeyBackend::parse(Some(" keyring ")).unwrap(), KeyBackend::Keyring);
        let err = KeyBackend::parse(Some("vault")).unwrap_err();
        assert!(err.to_string().contains("\"vault\""), "{err}");
        let home = MoatHome::new("/nonexistent");
        let store = KeyBackend::File.key_store(&home).unwrap();
        assert_eq!(store.describe(), "file /nonexistent/credentials/.key");
        assert_eq!(store.status().location, "file (/nonexistent/credentials/.key, 0600)");
    }

    #[test]
    fn keys_round_trip_through_their_keyring_text() {
        let key = MasterKey::generate();
        assert_eq!(decode_key(&BASE64.encode(key.bytes())), Some(key));
        assert_eq!(decode_key("c2hvcnQ="), None);
        assert_eq!(decode_key("not base64!"), None);
    }
}
