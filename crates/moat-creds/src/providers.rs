//! The provider registry: built-ins plus the user's YAML files from
//! `MOAT_HOME/providers/`, loaded without side effects. A YAML file another
//! user owns or could write is refused (`moat_core::fs_perms`): it decides
//! which hosts receive a credential.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use moat_core::MoatHome;
use moat_core::fs_perms::{self, UntrustedFile};

use crate::builtin::built_in_providers;
use crate::provider::{Provider, ProviderSource};
use crate::provider_file::{ProviderFileError, parse_provider_file};

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("invalid provider definitions:\n{}", render_lines(.0))]
    Invalid(Vec<ProviderFileError>),
    #[error("unknown provider {name:?} (known: {known})")]
    Unknown { name: String, known: String },
}

fn render_lines(errors: &[ProviderFileError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// Every provider moat can grant.
#[derive(Clone, Debug)]
pub struct Providers {
    providers: Vec<Provider>,
}

impl Providers {
    /// Built-ins plus `MOAT_HOME/providers/*.yaml` (and `*.yml`), in that
    /// order. All problems in all files, unsafe permissions included, are
    /// reported together.
    pub fn load(home: &MoatHome) -> Result<Self, ProviderError> {
        let mut providers = built_in_providers();
        let mut errors = Vec::new();
        for path in provider_files(&home.providers_dir())? {
            let yaml = match fs_perms::read_trusted(&path) {
                Ok(yaml) => yaml,
                Err(UntrustedFile::Io { source, .. }) => return Err(ProviderError::Io { path, source }),
                Err(untrusted) => {
                    errors.push(ProviderFileError {
                        path,
                        field: None,
                        message: untrusted.reason(),
                    });
                    continue;
                }
            };
            match parse_provider_file(&path, &yaml) {
                Ok(provider) => match defined_in(&providers, provider.name()) {
                    Some(other) => errors.push(ProviderFileError {
                        path,
                        field: Some("name".into()),
                        message: format!(
                            "provider {:?} is already defined in {}",
                            provider.name(),
                            other.display()
                        ),
                    }),
                    None => providers.push(provider),
                },
                Err(file_errors) => errors.extend(file_errors),
            }
        }
        if errors.is_empty() {
            Ok(Providers { providers })
        } else {
            Err(ProviderError::Invalid(errors))
        }
    }

    /// The built-in providers only.
    pub fn built_in() -> Self {
        Providers {
            providers: built_in_providers(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name() == name)
    }

    /// Like [`Providers::get`], with an error listing the known names.
    pub fn require(&self, name: &str) -> Result<&Provider, ProviderError> {
        self.get(name).ok_or_else(|| ProviderError::Unknown {
            name: name.to_owned(),
            known: self.names().join(", "),
        })
    }

    pub fn names(&self) -> Vec<&str> {
        self.providers.iter().map(Provider::name).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Provider> {
        self.providers.iter()
    }
}

/// Files (sorted) that define providers; a missing directory has none.
fn provider_files(dir: &Path) -> Result<Vec<PathBuf>, ProviderError> {
    let io_error = |source| ProviderError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_error)?.path();
        let is_yaml = path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Where a provider named `name` came from, if one is already registered.
fn defined_in(providers: &[Provider], name: &str) -> Option<PathBuf> {
    providers.iter().find(|p| p.name() == name).map(|p| match p.source() {
        ProviderSource::BuiltIn => PathBuf::from("(built in)"),
        ProviderSource::File(path) => path.clone(),
    })
}
