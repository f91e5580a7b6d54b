//! The 32-byte master key that encrypts credentials, and where it lives.
//! [`KeyStore`] is the seam for OS keyrings; the file backend keeps the key
//! in `MOAT_HOME/credentials/.key` (0600). `MOAT_KEYRING_BACKEND=file` forces
//! the file backend; it is also the default, since no keyring backend is
//! implemented yet (Linux hosts commonly have no secret service).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use moat_core::MoatHome;
use moat_core::atomic::{create_private_dir, write_atomic};
use moat_core::env_vars::MOAT_KEYRING_BACKEND;
use moat_core::lock::{FileLock, LockError};
use rand::RngExt;

/// Length of the master key in bytes (AES-256).
pub const KEY_LEN: usize = 32;
/// File name of the key inside the credentials directory.
pub const KEY_FILE: &str = ".key";
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
    #[error("key file {path} holds {len} bytes, expected {KEY_LEN}; it is damaged")]
    Malformed { path: PathBuf, len: usize },
    #[error("cannot access the key file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot create the key: {0}")]
    Lock(#[from] LockError),
    #[error("{MOAT_KEYRING_BACKEND}={0:?} is not a key store backend (expected `file` or `keyring`)")]
    UnknownBackend(String),
    #[error(
        "no OS keyring backend is available in this build; set {MOAT_KEYRING_BACKEND}=file to keep the key in MOAT_HOME/credentials/.key"
    )]
    KeyringUnavailable,
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
}

/// Which [`KeyStore`] implementation to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyBackend {
    File,
    Keyring,
}

impl KeyBackend {
    /// The backend chosen by `MOAT_KEYRING_BACKEND`, or the platform default.
    pub fn from_env() -> Result<Self, KeyError> {
        Self::parse(std::env::var(MOAT_KEYRING_BACKEND).ok().as_deref())
    }

    /// Parses a `MOAT_KEYRING_BACKEND` value; unset or empty means default.
    pub fn parse(value: Option<&str>) -> Result<Self, KeyError> {
        match value.map(str::trim) {
            None | Some("") => Ok(Self::platform_default()),
            Some("file") => Ok(KeyBackend::File),
            Some("keyring") => Ok(KeyBackend::Keyring),
            Some(other) => Err(KeyError::UnknownBackend(other.to_owned())),
        }
    }

    /// The file backend everywhere until a keyring backend exists; Linux
    /// keeps it as the default even then (no secret service on most hosts).
    pub fn platform_default() -> Self {
        KeyBackend::File
    }

    /// Builds the key store for `home`.
    pub fn key_store(self, home: &MoatHome) -> Result<Box<dyn KeyStore>, KeyError> {
        match self {
            KeyBackend::File => Ok(Box::new(FileKeyStore::new(&home.credentials_dir()))),
            KeyBackend::Keyring => Err(KeyError::KeyringUnavailable),
        }
    }
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

    fn create(&self) -> Result<MasterKey, KeyError> {
        create_private_dir(&self.dir).map_err(|source| self.io_error(&self.dir, source))?;
        let _lock = FileLock::acquire(&self.dir.join(KEY_LOCK_FILE), KEY_LOCK_TIMEOUT)?;
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
        write_atomic(&staging, key.bytes(), 0o600).map_err(|e| self.io_error(&staging, e))?;
        let linked = fs::hard_link(&staging, &path);
        let _ = fs::remove_file(&staging);
        linked.map_err(|e| self.io_error(&path, e))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| self.io_error(&self.dir, e))
    }

    fn io_error(&self, path: &Path, source: io::Error) -> KeyError {
        KeyError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl KeyStore for FileKeyStore {
    fn load(&self) -> Result<Option<MasterKey>, KeyError> {
        let path = self.path();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_error(&path, e)),
        };
        let mode = file
            .metadata()
            .map_err(|e| self.io_error(&path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::LoosePermissions {
                path,
                mode: mode & 0o777,
            });
        }
        let mut bytes = Vec::with_capacity(KEY_LEN);
        file.read_to_end(&mut bytes).map_err(|e| self.io_error(&path, e))?;
        let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| KeyError::Malformed {
            path: path.clone(),
            len: bytes.len(),
        })?;
        Ok(Some(MasterKey(key)))
    }

    fn load_or_create(&self) -> Result<MasterKey, KeyError> {
        match self.load()? {
            Some(key) => Ok(key),
            None => self.create(),
        }
    }

    fn describe(&self) -> String {
        format!("file {}", self.path().display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    #[test]
    fn creates_once_with_private_modes_and_reloads_the_same_key() {
        let tmp = TempDir::new();
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
        let tmp = TempDir::new();
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
        let tmp = TempDir::new();
        let store = FileKeyStore::new(tmp.path());
        store.load_or_create().unwrap();
        fs::set_permissions(store.path(), fs::Permissions::from_mode(0o644)).unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, KeyError::LoosePermissions { mode: 0o644, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(store.load_or_create().is_err(), "must not replace the key");
    }

    #[test]
    fn a_damaged_key_file_is_reported_not_replaced() {
        let tmp = TempDir::new();
        let store = FileKeyStore::new(tmp.path());
        write_atomic(&store.path(), b"too short", 0o600).unwrap();
        let err = store.load_or_create().unwrap_err();
        assert!(matches!(err, KeyError::Malformed { len: 9, .. }), "{err}");
        assert_eq!(fs::read(store.path()).unwrap(), b"too short");
    }

    #[test]
    fn backend_selection() {
        assert_eq!(KeyBackend::parse(None).unwrap(), KeyBackend::File);
        assert_eq!(KeyBackend::parse(Some("file")).unwrap(), KeyBackend::File);
        assert_eq!(KeyBackend::parse(Some("keyring")).unwrap(), KeyBackend::Keyring);
        let err = KeyBackend::parse(Some("vault")).unwrap_err();
        assert!(err.to_string().contains("\"vault\""), "{err}");
        let home = MoatHome::new("/nonexistent");
        let err = KeyBackend::Keyring.key_store(&home).unwrap_err();
        assert!(err.to_string().contains("MOAT_KEYRING_BACKEND=file"), "{err}");
        let store = KeyBackend::File.key_store(&home).unwrap();
        assert_eq!(store.describe(), "file /nonexistent/credentials/.key");
    }
}
