//! Providers made from flags: `moat grant NAME --host HOST [--header H]
//! [--prefix P]` defines a provider for one host without the user writing
//! YAML. It is kept as `MOAT_HOME/providers/NAME.yaml` (0600), marked as
//! written by moat, so runs and a restarted daemon see it like any other
//! provider file (`moat revoke NAME` deletes the credential, not the
//! provider: other profiles may hold one). A file the user wrote is never
//! overwritten.

use std::io;
use std::path::{Path, PathBuf};

use moat_core::MoatHome;

use crate::provider::ProviderSource;
use crate::provider_file::{ProviderFileError, parse_provider_file};
use crate::providers::{ProviderError, Providers};

/// The first line of a provider file moat wrote from flags.
const MARKER: &str = "# Written by `moat grant --host`; running it again replaces this file.";
/// The header a provider for one host injects when none is named.
pub const DEFAULT_HEADER: &str = "Authorization";
/// The prefix of [`DEFAULT_HEADER`]'s value when none is named.
pub const DEFAULT_AUTHORIZATION_PREFIX: &str = "Bearer ";

/// Why a provider for one host cannot be defined.
#[derive(Debug, thiserror::Error)]
pub enum HostProviderError {
    #[error("{name} is a built-in provider, which names its own hosts; pick another name for --host")]
    BuiltIn { name: String },
    #[error("provider {name} is already defined in {}; edit that file instead of using --host", path.display())]
    DefinedByUser { name: String, path: PathBuf },
    #[error("{}", render(.0))]
    Invalid(Vec<ProviderFileError>),
    #[error(transparent)]
    Providers(#[from] ProviderError),
    #[error("cannot write {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn render(errors: &[ProviderFileError]) -> String {
    errors
        .iter()
        .map(|e| match &e.field {
            Some(field) => format!("--{}: {}", flag_of(field), e.message),
            None => e.message.clone(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The flag a field of the generated file came from.
fn flag_of(field: &str) -> &str {
    match field {
        "name" => "provider name",
        f if f.starts_with("hosts") => "host",
        other => other,
    }
}

/// A provider for one host: `header: prefix + token` on requests to `host`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostProvider {
    pub name: String,
    pub host: String,
    pub header: String,
    pub prefix: String,
}

impl HostProvider {
    /// From the flags: the header defaults to `Authorization`, whose prefix
    /// defaults to `Bearer `; any other header's prefix to nothing.
    pub fn from_flags(name: &str, host: &str, header: Option<&str>, prefix: Option<&str>) -> Self {
        let header = header.unwrap_or(DEFAULT_HEADER);
        let default_prefix = if header.eq_ignore_ascii_case(DEFAULT_HEADER) {
            DEFAULT_AUTHORIZATION_PREFIX
        } else {
            ""
        };
        HostProvider {
            name: name.to_string(),
            host: host.to_string(),
            header: header.to_string(),
            prefix: prefix.unwrap_or(default_prefix).to_string(),
        }
    }

    /// The provider file (JSON strings are YAML scalars, quoted safely).
    fn to_yaml(&self) -> String {
        let quote = |s: &str| serde_json::Value::from(s).to_string();
        format!(
            "{MARKER}\nname: {}\nhosts: [{}]\nheader: {}\nprefix: {}\n",
            quote(&self.name),
            quote(&self.host),
            quote(&self.header),
            quote(&self.prefix)
        )
    }

    /// Checks the provider like a file, then writes (or replaces a file
    /// moat wrote for the same name) `MOAT_HOME/providers/NAME.yaml`.
    pub fn save(&self, home: &MoatHome) -> Result<PathBuf, HostProviderError> {
        let dir = home.providers_dir();
        let path = dir.join(format!("{}.yaml", self.name));
        if crate::BUILT_IN_NAMES.contains(&self.name.as_str()) {
            return Err(HostProviderError::BuiltIn {
                name: self.name.clone(),
            });
        }
        let yaml = self.to_yaml();
        parse_provider_file(&path, &yaml).map_err(HostProviderError::Invalid)?;
        if let Some(existing) = Providers::load(home)?.get(&self.name)
            && let ProviderSource::File(file) = existing.source()
            && !(file == &path && written_by_moat(file))
        {
            return Err(HostProviderError::DefinedByUser {
                name: self.name.clone(),
                path: file.clone(),
            });
        }
        if path.exists() && !written_by_moat(&path) {
            return Err(HostProviderError::DefinedByUser {
                name: self.name.clone(),
                path,
            });
        }
        let io_error = |source| HostProviderError::Io {
            path: path.clone(),
            source,
        };
        moat_core::atomic::create_private_dir(&dir).map_err(io_error)?;
        moat_core::atomic::write_atomic(&path, yaml.as_bytes(), 0o600).map_err(io_error)?;
        Ok(path)
    }
}

fn written_by_moat(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.starts_with(MARKER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> (tempfile::TempDir, MoatHome) {
        let dir = tempfile::tempdir().unwrap();
        let home = MoatHome::new(dir.path().join("home"));
        (dir, home)
    }

    #[test]
    fn the_defaults_follow_the_header() {
        let p = HostProvider::from_flags("t", "api.example.com", None, None);
        assert_eq!((p.header.as_str(), p.prefix.as_str()), ("Authorization", "Bearer "));
        let p = HostProvider::from_flags("t", "api.example.com", Some("X-Api-Key"), None);
        assert_eq!(p.prefix, "");
    }

    #[test]
    fn a_saved_provider_loads_and_injects_and_can_be_redefined() {
        let (_dir, home) = home();
        let provider = HostProvider::from_flags("mytool", "api.example.com", Some("X-Key"), Some("k "));
        let path = provider.save(&home).unwrap();
        let loaded = Providers::load(&home).unwrap();
        let mytool = loaded.require("mytool").unwrap();
        let credential = crate::Credential::new("secret", crate::CredentialKind::Token);
        let injected = mytool.injections(&credential);
        assert_eq!(
            (
                injected[0].host_pattern.as_str(),
                injected[0].header_name.as_str(),
                injected[0].header_value.as_str()
            ),
            ("api.example.com", "X-Key", "k secret")
        );
        let other_host = HostProvider::from_flags("mytool", "api2.example.com", None, None);
        assert_eq!(
            other_host.save(&home).unwrap(),
            path,
            "saving again replaces moat's own file"
        );
        let reloaded = Providers::load(&home).unwrap();
        let injected = reloaded.require("mytool").unwrap().injections(&credential);
        assert_eq!(injected[0].host_pattern, "api2.example.com");
    }

    #[test]
    fn built_in_names_user_files_and_bad_flags_are_refused() {
        let (_dir, home) = home();
        let err = HostProvider::from_flags("github", "x.com", None, None)
            .save(&home)
            .unwrap_err();
        assert!(err.to_string().contains("built-in"), "{err}");
        std::fs::create_dir_all(home.providers_dir()).unwrap();
        let mine = home.providers_dir().join("mine.yaml");
        std::fs::write(&mine, "name: mine\nhosts: [a.com]\nheader: X\n").unwrap();
        let err = HostProvider::from_flags("mine", "b.com", None, None)
            .save(&home)
            .unwrap_err();
        assert!(err.to_string().contains("already defined"), "{err}");
        assert!(
            std::fs::read_to_string(&mine).unwrap().starts_with("name: mine"),
            "a user's file stays"
        );
        let err = HostProvider::from_flags("t", "b.com", Some("Host"), None)
            .save(&home)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--header: Host is managed by the proxy and cannot be injected"
        );
        let err = HostProvider::from_flags("t", "not a host", None, None)
            .save(&home)
            .unwrap_err();
        assert!(err.to_string().starts_with("--host: "), "{err}");
    }
}
