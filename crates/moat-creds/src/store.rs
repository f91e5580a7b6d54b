//! The encrypted credential store: one `<provider>.enc` file per provider
//! under `MOAT_HOME/credentials/` (or `credentials/profiles/<name>/` for a
//! profile), each sealed with the master key from a [`KeyStore`]
//! (ARCHITECTURE.md, "On-disk layout") and bound to its profile and
//! provider ([`sealed::Binding`]). A file that was copied in from another
//! profile or renamed from another provider is refused, naming where it
//! came from when that can be told.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use moat_core::MoatHome;
use moat_core::atomic::{create_private_dir, write_atomic};

use crate::builtin::BUILT_IN_NAMES;
use crate::credential::{Credential, CredentialSummary};
use crate::keystore::{KeyBackend, KeyError, KeyStore, MasterKey};
use crate::sealed::{self, Binding, OpenError, SealError};

/// Extension of encrypted credential files.
pub const CREDENTIAL_EXTENSION: &str = "enc";
/// Directory (inside `credentials/`) holding one directory per profile.
pub const PROFILES_DIR: &str = "profiles";
const MAX_NAME_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot access {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "cannot decrypt {path}: {source}. If the key ({key}) was replaced, the credential must be granted again (`moat grant {provider}`)"
    )]
    Decrypt {
        path: PathBuf,
        provider: String,
        key: String,
        source: OpenError,
    },
    #[error(
        "refusing {path}: it was encrypted for {sealed_for}, not for {here}; credential files cannot be copied between profiles or renamed between providers, so grant it again (`{grant}`)"
    )]
    Misplaced {
        path: PathBuf,
        sealed_for: String,
        here: String,
        grant: String,
    },
    #[error("{path} decrypted but does not hold a credential: {source}")]
    Malformed { path: PathBuf, source: serde_json::Error },
    #[error(
        "{path} exists but there is no encryption key ({key}); the key was removed, so grant the credential again (`moat grant {provider}`)"
    )]
    KeyMissing {
        path: PathBuf,
        provider: String,
        key: String,
    },
    #[error("cannot store the credential for {provider}: {source}")]
    Seal { provider: String, source: SealError },
}

/// The credentials of one profile (or of the default profile).
#[derive(Debug)]
pub struct CredentialStore {
    profile: Option<String>,
    credentials_dir: PathBuf,
    dir: PathBuf,
    keys: Box<dyn KeyStore>,
}

impl CredentialStore {
    /// The store of `profile` (`None` = default) in `home`, keyed by the
    /// backend `MOAT_KEYRING_BACKEND` selects. Creates nothing.
    pub fn open(home: &MoatHome, profile: Option<&str>) -> Result<Self, StoreError> {
        let keys = KeyBackend::from_env()?.key_store(home)?;
        Self::with_key_store(home, profile, keys)
    }

    /// Like [`CredentialStore::open`] with an explicit key store.
    pub fn with_key_store(home: &MoatHome, profile: Option<&str>, keys: Box<dyn KeyStore>) -> Result<Self, StoreError> {
        let credentials_dir = home.credentials_dir();
        let dir = match profile {
            None => credentials_dir.clone(),
            Some(name) => {
                check_name("profile", name)?;
                credentials_dir.join(PROFILES_DIR).join(name)
            }
        };
        Ok(CredentialStore {
            profile: profile.map(str::to_owned),
            credentials_dir,
            dir,
            keys,
        })
    }

    /// The profile this store serves (`None` = default).
    pub fn profile(&self) -> Option<&str> {
        self.profile.as_deref()
    }

    /// The directory holding this profile's `.enc` files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Encrypts and writes `credential` (0600, atomically), replacing any
    /// previous credential for `provider`. Creates the key on first use.
    pub fn save(&self, provider: &str, credential: &Credential) -> Result<(), StoreError> {
        let path = self.path_of(provider)?;
        let key = self.keys.load_or_create()?;
        let plaintext = serde_json::to_vec(credential).map_err(|source| StoreError::Malformed {
            path: path.clone(),
            source,
        })?;
        let sealed = sealed::seal(&key, self.binding(provider), &plaintext).map_err(|source| StoreError::Seal {
            provider: provider.to_owned(),
            source,
        })?;
        self.create_dirs()?;
        write_atomic(&path, &sealed, 0o600).map_err(|source| StoreError::Io { path, source })
    }

    /// The credential for `provider`, or `None` if none was granted.
    pub fn load(&self, provider: &str) -> Result<Option<Credential>, StoreError> {
        let path = self.path_of(provider)?;
        let sealed = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let Some(key) = self.keys.load()? else {
            return Err(StoreError::KeyMissing {
                path,
                provider: provider.to_owned(),
                key: self.keys.describe(),
            });
        };
        let opened = sealed::open(&key, self.binding(provider), &sealed).map_err(|source| {
            let origin = (source == OpenError::Unauthentic)
                .then(|| self.origin_of(&key, provider, &sealed))
                .flatten();
            match origin {
                Some(origin) => StoreError::Misplaced {
                    path: path.clone(),
                    sealed_for: origin.describe(),
                    here: self.binding(provider).describe(),
                    grant: self.grant_command(provider),
                },
                None => StoreError::Decrypt {
                    path: path.clone(),
                    provider: provider.to_owned(),
                    key: self.keys.describe(),
                    source,
                },
            }
        })?;
        if opened.version == sealed::LEGACY_FORMAT_VERSION {
            tracing::debug!(path = %path.display(), "credential file in the old format; it is rebound on its next save");
        }
        serde_json::from_slice(&opened.plaintext)
            .map(Some)
            .map_err(|source| StoreError::Malformed { path, source })
    }

    /// The redacted view of one credential (`moat grant show`), or `None`
    /// if it was never granted.
    pub fn summary(&self, provider: &str) -> Result<Option<CredentialSummary>, StoreError> {
        Ok(self.load(provider)?.map(|c| c.summary(provider)))
    }

    /// Every credential of this profile, redacted, sorted by provider. A
    /// file that cannot be read is listed with its error.
    pub fn list(&self) -> Result<Vec<CredentialSummary>, StoreError> {
        let mut summaries: Vec<CredentialSummary> = self
            .stored_providers()?
            .into_iter()
            .map(|provider| match self.load(&provider) {
                Ok(Some(credential)) => credential.summary(&provider),
                Ok(None) => unreadable(provider, "removed while listing".to_owned()),
                Err(e) => unreadable(provider, e.to_string()),
            })
            .collect();
        summaries.sort_by(|a, b| a.provider.cmp(&b.provider));
        Ok(summaries)
    }

    /// Deletes the credential for `provider`; `false` if there was none.
    pub fn remove(&self, provider: &str) -> Result<bool, StoreError> {
        let path = self.path_of(provider)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    fn binding<'a>(&'a self, provider: &'a str) -> Binding<'a> {
        Binding {
            profile: self.profile.as_deref(),
            provider,
        }
    }

    fn grant_command(&self, provider: &str) -> String {
        match &self.profile {
            None => format!("moat grant {provider}"),
            Some(profile) => format!("moat --profile {profile} grant {provider}"),
        }
    }

    /// Where a file that does not open here was sealed, if it opens as
    /// another profile's file of this provider or as another provider's
    /// file of this profile (a copy or a rename). `None` when it opens
    /// nowhere we know of: modified, or sealed under another key.
    fn origin_of(&self, key: &MasterKey, provider: &str, sealed: &[u8]) -> Option<OriginBinding> {
        let here = self.binding(provider);
        let profiles = std::iter::once(None).chain(self.profile_names().into_iter().map(Some));
        let mut candidates: Vec<OriginBinding> = profiles
            .map(|profile| OriginBinding {
                profile,
                provider: provider.to_owned(),
            })
            .collect();
        let mut providers: Vec<String> = BUILT_IN_NAMES.iter().map(|name| (*name).to_owned()).collect();
        providers.extend(self.stored_providers().unwrap_or_default());
        candidates.extend(providers.into_iter().map(|provider| OriginBinding {
            profile: self.profile.clone(),
            provider,
        }));
        candidates
            .into_iter()
            .filter(|candidate| candidate.binding() != here)
            .find(|candidate| sealed::open(key, candidate.binding(), sealed).is_ok())
    }

    /// Every profile with credentials in `home`: the default (`None`) and
    /// each profile directory.
    pub fn profiles(home: &MoatHome) -> Vec<Option<String>> {
        let named = profile_names_in(&home.credentials_dir());
        std::iter::once(None).chain(named.into_iter().map(Some)).collect()
    }

    /// Names of the profiles that have a directory.
    fn profile_names(&self) -> Vec<String> {
        profile_names_in(&self.credentials_dir)
    }

    /// The providers this profile holds a credential file for (unsorted).
    pub fn names(&self) -> Result<Vec<String>, StoreError> {
        self.stored_providers()
    }

    fn path_of(&self, provider: &str) -> Result<PathBuf, StoreError> {
        check_name("provider", provider)?;
        Ok(self.dir.join(format!("{provider}.{CREDENTIAL_EXTENSION}")))
    }

    fn stored_providers(&self) -> Result<Vec<String>, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut providers = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                path: self.dir.clone(),
                source,
            })?;
            let path = entry.path();
            let is_credential = path.extension().is_some_and(|e| e == CREDENTIAL_EXTENSION);
            if let (true, Some(stem)) = (is_credential, path.file_stem()) {
                providers.push(stem.to_string_lossy().into_owned());
            }
        }
        Ok(providers)
    }

    /// `credentials/` and, for a profile, `profiles/` and `profiles/<name>/`,
    /// all 0700.
    fn create_dirs(&self) -> Result<(), StoreError> {
        let mut dirs = vec![self.credentials_dir.clone()];
        if self.dir != self.credentials_dir {
            dirs.push(self.credentials_dir.join(PROFILES_DIR));
            dirs.push(self.dir.clone());
        }
        for dir in dirs {
            create_private_dir(&dir).map_err(|source| StoreError::Io { path: dir, source })?;
        }
        Ok(())
    }
}

/// Names of the profile directories under `credentials_dir`.
fn profile_names_in(credentials_dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(credentials_dir.join(PROFILES_DIR)) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect()
}

/// A binding found by [`CredentialStore::origin_of`], owning its names.
struct OriginBinding {
    profile: Option<String>,
    provider: String,
}

impl OriginBinding {
    fn binding(&self) -> Binding<'_> {
        Binding {
            profile: self.profile.as_deref(),
            provider: &self.provider,
        }
    }

    fn describe(&self) -> String {
        self.binding().describe()
    }
}

impl Binding<'_> {
    /// `provider "openai" in profile "work"` (or `in the default profile`).
    fn describe(&self) -> String {
        match self.profile {
            None => format!("provider {:?} in the default profile", self.provider),
            Some(profile) => format!("provider {:?} in profile {profile:?}", self.provider),
        }
    }
}

fn unreadable(provider: String, error: String) -> CredentialSummary {
    CredentialSummary {
        provider,
        details: None,
        error: Some(error),
    }
}

/// Names become file and directory names: keep them to a safe alphabet.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("must be at most 64 characters")
    } else if name.starts_with(['.', '-']) {
        Some("must start with a letter, digit or `_`")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some("may contain only letters, digits, `-`, `_` and `.`")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::InvalidName {
            what,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}
