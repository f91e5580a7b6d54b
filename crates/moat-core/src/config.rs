//! Configuration files: the project's `moat.yaml` (or `agent.yaml`) and the
//! global `MOAT_HOME/config.yaml` (cli.md, "moat.yaml" and "Global config").
//!
//! Loading never has side effects. Per-value rules are checked while the YAML
//! is decoded, so their errors carry the line; rules that relate several
//! fields run afterwards and report every problem at once. Unknown keys are
//! warnings naming the full key path (the Go version ignored them silently,
//! which hid typos).

mod global;
mod keys;
mod mcp;
mod network;
mod project;
mod shapes;
mod values;
mod yaml_errors;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use global::{GlobalConfig, LoadedGlobal, SubnetPool, load_global};
pub use keys::EscapeKey;
pub use mcp::{McpServer, McpUrl, check_mcp_name, mcp_url_variable};
pub use network::{HostRule, NetworkConfig, NetworkPolicy, PolicyMode, RequestRule, RuleAction, check_host_pattern};
pub use project::{
    AGENT_FILE, ContainerConfig, HooksConfig, KubernetesConfig, LoadedProject, PROJECT_FILE, ProjectConfig,
    ServiceConfig, SnapshotConfig, SnapshotExclude, SnapshotRetention, SnapshotTriggers, Ulimit, check_run_name,
    load_project, load_project_file,
};
pub use shapes::{CommandSpec, Mount, MountMode, RuntimeKind, SecretRef, parse_mount};
pub use values::{format_duration, parse_duration};

/// A configuration file that cannot be used. Each problem is one line:
/// `<file>: <field.path>: <message>`, with `(line N)` where it is known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The YAML is malformed or a value has the wrong shape.
    #[error("{}", Problem::render(path, std::slice::from_ref(problem)))]
    Parse { path: PathBuf, problem: Problem },
    /// The file parsed but some fields break a rule.
    #[error("{}", Problem::render(path, problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

impl ConfigError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Read { path, .. } | ConfigError::Parse { path, .. } | ConfigError::Invalid { path, .. } => {
                path
            }
        }
    }
}

/// One thing wrong with a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Field path such as `mounts[1].target`; empty for the whole file.
    pub field: String,
    pub message: String,
    /// 1-based line, when the YAML parser knows it.
    pub line: Option<usize>,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            field: field.into(),
            message: message.into(),
            line: None,
        }
    }

    fn render(path: &Path, problems: &[Problem]) -> String {
        problems
            .iter()
            .map(|p| format!("{}: {p}", path.display()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

/// Something in a configuration file that moat ignores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub path: PathBuf,
    /// Full key path, such as `network.polcy`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.path.display(), self.key, self.message)
    }
}

/// Decodes `text` (the contents of `path`), collecting the paths of keys the
/// target type does not know. Errors name the field path (tracked by
/// `serde_path_to_error`) and the line (from the YAML parser).
fn decode<T: DeserializeOwned>(path: &Path, text: &str) -> Result<(T, Vec<String>), ConfigError> {
    let mut unknown = Vec::new();
    // An empty file (or one holding only comments) means "all defaults".
    let text = if text.trim().is_empty() { "{}" } else { text };
    let mut track = serde_path_to_error::Track::new();
    let decoded = serde_saphyr::with_deserializer_from_str(text, |de| {
        let de = serde_path_to_error::Deserializer::new(de, &mut track);
        serde_ignored::deserialize(de, |key| unknown.push(key_path(&key)))
    });
    let value = decoded.map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        problem: problem_from_yaml(&track.path().to_string(), &e, text),
    })?;
    Ok((value, unknown))
}

/// Formats an ignored key's path like validation messages do: `a.b[1].c`.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => match key_path(parent) {
            parent if parent.is_empty() => key.clone(),
            parent => format!("{parent}.{key}"),
        },
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

/// The field path where decoding stopped, the bare message and its line.
fn problem_from_yaml(field: &str, err: &serde_saphyr::Error, text: &str) -> Problem {
    let field = if field == "." { "" } else { field };
    Problem {
        field: field.to_string(),
        message: yaml_errors::message(err, text),
        line: err.location().map(|loc| loc.line() as usize),
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}
