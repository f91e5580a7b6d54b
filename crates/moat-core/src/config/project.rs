//! The project file `moat.yaml` (or `agent.yaml` when it is absent): typed
//! structs with the Go implementation's keys and shapes, and the rules that
//! relate several fields.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserializer;
use serde::{Deserialize, Serialize};

use super::mcp::{McpServer, check_servers as check_mcp_servers};
use super::network::NetworkConfig;
use super::shapes::{CommandSpec, Mount, RuntimeKind, SecretRef};
use super::values::{self, is_env_name};
use super::{ConfigError, Problem, Warning, decode, read};
use crate::deps::services;

/// The project file's name.
pub const PROJECT_FILE: &str = "moat.yaml";
/// The Go implementation's older name, read when `moat.yaml` is absent.
pub const AGENT_FILE: &str = "agent.yaml";

/// Keys the Go implementation understood that this one does not (yet):
/// they are ignored with a warning that says so, not called typos.
const GO_ONLY_KEYS: &[&str] = &[
    "version",
    "claude",
    "codex",
    "gemini",
    "volumes",
    "sandbox",
    "tracing",
    "language_servers",
    "clipboard",
];

/// Names accepted under `container.ulimits`.
const ULIMIT_NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// Smallest `container.memory` (MB) a workload can start with.
const MIN_MEMORY_MB: u64 = 128;

/// Everything `moat.yaml` can say. Every key is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProjectConfig {
    /// Run name (`--name` overrides).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// `node@20`, `postgres@17`, `docker:host`, ...
    #[serde(deserialize_with = "values::or_empty")]
    pub dependencies: Vec<String>,
    /// Credential providers injected by the proxy (`--grant` adds).
    #[serde(deserialize_with = "values::or_empty")]
    pub grants: Vec<String>,
    #[serde(deserialize_with = "values::scalar_map")]
    pub env: BTreeMap<String, String>,
    /// Environment variables resolved on the host from a secret store.
    #[serde(deserialize_with = "values::or_empty")]
    pub secrets: BTreeMap<String, SecretRef>,
    #[serde(deserialize_with = "values::or_empty")]
    pub mounts: Vec<Mount>,
    /// Named endpoints: name → container port.
    #[serde(deserialize_with = "values::port_map")]
    pub ports: BTreeMap<String, u16>,
    #[serde(deserialize_with = "values::or_empty")]
    pub network: NetworkConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandSpec>,
    pub interactive: bool,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "values::user_runtime")]
    pub runtime: Option<RuntimeKind>,
    /// Where `runtime: kubernetes` runs (docs/kubernetes.md).
    #[serde(
        deserialize_with = "values::or_empty",
        skip_serializing_if = "KubernetesConfig::is_empty"
    )]
    pub kubernetes: KubernetesConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
    #[serde(deserialize_with = "values::or_empty")]
    pub container: ContainerConfig,
    #[serde(deserialize_with = "values::or_empty")]
    pub hooks: HooksConfig,
    #[serde(deserialize_with = "values::or_empty")]
    pub snapshots: SnapshotConfig,
    /// Settings for service dependencies, keyed by service name.
    #[serde(deserialize_with = "values::or_empty")]
    pub services: BTreeMap<String, ServiceConfig>,
    /// Remote MCP servers relayed by the proxy with a grant's credential.
    #[serde(deserialize_with = "values::or_empty")]
    pub mcp: Vec<McpServer>,
}

/// `kubernetes:` in moat.yaml: the cluster a `runtime: kubernetes` run
/// goes to. Every key is optional: the kubeconfig's current context, that
/// context's namespace (else `default`); without a claim the run has no
/// workspace and is refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct KubernetesConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A PersistentVolumeClaim in the namespace mounted at /workspace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_claim: Option<String>,
    /// The image of the namespace's in-cluster proxy (holding `moatd`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_image: Option<String>,
}

impl KubernetesConfig {
    pub fn is_empty(&self) -> bool {
        self == &KubernetesConfig::default()
    }

    /// The cluster target alone (context, namespace, claim): what one
    /// runtime serves, whatever proxy image a run names.
    pub fn cluster(&self) -> KubernetesConfig {
        KubernetesConfig {
            proxy_image: None,
            ..self.clone()
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerConfig {
    /// Memory limit in MB.
    #[serde(deserialize_with = "memory_mb", skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    #[serde(deserialize_with = "cpus", skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(deserialize_with = "values::or_empty")]
    pub dns: Vec<IpAddr>,
    #[serde(deserialize_with = "values::or_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// Most processes and threads the container may hold at once.
    #[serde(deserialize_with = "pids_limit", skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u32>,
    /// The user the command runs as (`uid:gid` or a name in the image);
    /// by default the workspace's owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A resource limit; `-1` means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HooksConfig {
    /// Runs as the container user at image build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_build: Option<String>,
    /// Runs as root at image build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_build_root: Option<String>,
    /// Runs in /workspace before the command on every start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_run: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotConfig {
    pub disabled: bool,
    #[serde(deserialize_with = "values::or_empty")]
    pub triggers: SnapshotTriggers,
    #[serde(deserialize_with = "values::or_empty")]
    pub exclude: SnapshotExclude,
    #[serde(deserialize_with = "values::or_empty")]
    pub retention: SnapshotRetention,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotTriggers {
    pub disable_pre_run: bool,
    pub disable_git_commits: bool,
    pub disable_builds: bool,
    pub disable_idle: bool,
    pub idle_threshold_seconds: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotExclude {
    pub ignore_gitignore: bool,
    #[serde(deserialize_with = "values::or_empty")]
    pub additional: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotRetention {
    pub max_count: u32,
    pub delete_initial: bool,
}

/// Settings of one service of `dependencies:` (`postgres`, `redis`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceConfig {
    /// Extra variables of the service's container.
    #[serde(deserialize_with = "values::scalar_map")]
    pub env: BTreeMap<String, String>,
    /// Refused by `moat run`: services are built from Debian packages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Memory limit of the service container in MB.
    #[serde(deserialize_with = "memory_mb", skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Wait for the service to be ready before starting (default true;
    /// `false` is refused by `moat run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// Refused by `moat run`: models to pull (ollama).
    #[serde(deserialize_with = "values::or_empty", skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// The version wanted, like `name@version` in `dependencies:`.
    #[serde(
        deserialize_with = "values::optional_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub version: Option<String>,
    /// Keep the data in a volume of the project, across runs.
    pub persist: bool,
    /// Bound on the readiness check (default 30s, at most 60s).
    #[serde(
        deserialize_with = "optional_duration",
        serialize_with = "serialize_optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub ready_timeout: Option<std::time::Duration>,
}

impl ServiceConfig {
    pub fn wait(&self) -> bool {
        self.wait.unwrap_or(true)
    }

    pub fn ready_timeout(&self) -> std::time::Duration {
        self.ready_timeout.unwrap_or(services::DEFAULT_READY_TIMEOUT)
    }
}

fn optional_duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<std::time::Duration>, D::Error> {
    values::duration(de).map(Some)
}

#[allow(clippy::ref_option)] // serde's serialize_with hands a reference
fn serialize_optional_duration<S: serde::Serializer>(
    value: &Option<std::time::Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => s.serialize_str(&values::format_duration(*d)),
        None => s.serialize_none(),
    }
}

fn memory_mb<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    values::parse_int(de, "a memory size in MB", |mb| match u64::try_from(mb) {
        Ok(mb) if mb >= MIN_MEMORY_MB => Ok(Some(mb)),
        _ => Err(format!("must be at least {MIN_MEMORY_MB} (MB), got {mb}")),
    })
}

fn pids_limit<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
    values::parse_int(de, "a number of processes", |n| match u32::try_from(n) {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(format!("must be a positive number of processes, got {n}")),
    })
}

fn cpus<'de, D: Deserializer<'de>>(de: D) -> Result<Option<f64>, D::Error> {
    values::parse_number(de, "a number of CPUs", |cpus| {
        if cpus > 0.0 && cpus.is_finite() {
            Ok(Some(cpus))
        } else {
            Err(format!("must be greater than 0, got {cpus}"))
        }
    })
}

/// A project file that was found and checked.
#[derive(Clone, Debug)]
pub struct LoadedProject {
    pub config: ProjectConfig,
    /// SHA-256 of the exact bytes parsed (trust on change), when a file
    /// was read.
    pub content_hash: Option<String>,
    /// The file read; `None` when the directory has neither file.
    pub path: Option<PathBuf>,
    pub warnings: Vec<Warning>,
}

/// Loads `dir/moat.yaml`, else `dir/agent.yaml`, else defaults.
pub fn load_project(dir: &Path) -> Result<LoadedProject, ConfigError> {
    for name in [PROJECT_FILE, AGENT_FILE] {
        let path = dir.join(name);
        if path.is_file() {
            return load_project_file(&path);
        }
    }
    Ok(LoadedProject {
        config: ProjectConfig::default(),
        content_hash: None,
        path: None,
        warnings: Vec::new(),
    })
}

/// Loads and checks one project file.
pub fn load_project_file(path: &Path) -> Result<LoadedProject, ConfigError> {
    let text = read(path)?;
    let (config, unknown): (ProjectConfig, _) = decode(path, &text)?;
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        });
    }
    let warnings = unknown
        .into_iter()
        .map(|key| {
            let message = if GO_ONLY_KEYS.contains(&key.as_str()) {
                "not supported by this version of moat; ignored"
            } else {
                "unknown key; ignored"
            };
            Warning {
                path: path.to_path_buf(),
                key,
                message: message.to_string(),
            }
        })
        .collect();
    Ok(LoadedProject {
        config,
        content_hash: Some(crate::trust::content_hash(text.as_bytes())),
        path: Some(path.to_path_buf()),
        warnings,
    })
}

// === cross-field rules ===

impl ProjectConfig {
    /// Every rule the decoded file breaks, one problem per field.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.check_name(&mut problems);
        check_non_empty("dependencies", &self.dependencies, &mut problems);
        check_non_empty("grants", &self.grants, &mut problems);
        self.check_env(&mut problems);
        self.check_mount_targets(&mut problems);
        self.check_ulimits(&mut problems);
        self.check_services(&mut problems);
        check_mcp_servers(&self.mcp, &mut problems);
        if self.base_image.as_deref().is_some_and(|i| i.trim().is_empty()) {
            problems.push(Problem::new("base_image", "must not be empty"));
        }
        problems
    }

    fn check_name(&self, problems: &mut Vec<Problem>) {
        if let Some(Err(message)) = self.name.as_deref().map(check_run_name) {
            problems.push(Problem::new("name", message));
        }
    }

    fn check_env(&self, problems: &mut Vec<Problem>) {
        for key in self.env.keys().chain(self.secrets.keys()) {
            if !is_env_name(key) {
                let section = if self.env.contains_key(key) { "env" } else { "secrets" };
                problems.push(Problem::new(
                    format!("{section}.{key}"),
                    "not a valid environment variable name",
                ));
            }
        }
        for key in self.secrets.keys().filter(|k| self.env.contains_key(*k)) {
            problems.push(Problem::new(
                format!("secrets.{key}"),
                "also set in env; use one or the other",
            ));
        }
    }

    fn check_mount_targets(&self, problems: &mut Vec<Problem>) {
        for (i, mount) in self.mounts.iter().enumerate() {
            if let Some(first) = self.mounts[..i].iter().position(|m| m.target == mount.target) {
                problems.push(Problem::new(
                    format!("mounts[{i}].target"),
                    format!("{:?} is already mounted by mounts[{first}]", mount.target),
                ));
            }
        }
    }

    fn check_ulimits(&self, problems: &mut Vec<Problem>) {
        for (name, limit) in &self.container.ulimits {
            let field = format!("container.ulimits.{name}");
            if !ULIMIT_NAMES.contains(&name.as_str()) {
                problems.push(Problem::new(
                    field,
                    format!("unknown ulimit; expected one of {}", ULIMIT_NAMES.join(", ")),
                ));
            } else if limit.soft < -1 || limit.hard < -1 {
                problems.push(Problem::new(field, "limits must be -1 (unlimited) or more"));
            } else if unlimited_as_max(limit.soft) > unlimited_as_max(limit.hard) {
                problems.push(Problem::new(
                    field,
                    format!("soft limit {} exceeds hard limit {}", limit.soft, limit.hard),
                ));
            }
        }
    }

    fn check_services(&self, problems: &mut Vec<Problem>) {
        let declared: Vec<&str> = self
            .dependencies
            .iter()
            .map(|d| d.split(['@', ':']).next().unwrap_or(d))
            .collect();
        let catalog = services::Catalog::shipped().ok();
        for (name, service) in &self.services {
            let field = |key: &str| format!("services.{name}{key}");
            if !declared.contains(&name.as_str()) {
                problems.push(Problem::new(
                    field(""),
                    format!("{name:?} is not declared in dependencies"),
                ));
            } else if catalog.as_ref().is_some_and(|c| c.get(name).is_none()) {
                problems.push(Problem::new(field(""), format!("{name:?} is not a service moat runs")));
            }
            for key in service.env.keys() {
                if !is_env_name(key) || services::SIDECAR_VARIABLES.contains(&key.as_str()) {
                    problems.push(Problem::new(
                        field(&format!(".env.{key}")),
                        "not a valid environment variable name, or one moat sets (MOAT_SERVICE_*)",
                    ));
                }
            }
            if let Some(bound) = service.ready_timeout
                && (bound < std::time::Duration::from_secs(1) || bound > services::MAX_READY_TIMEOUT)
            {
                problems.push(Problem::new(
                    field(".ready_timeout"),
                    format!(
                        "must be between 1s and {}",
                        values::format_duration(services::MAX_READY_TIMEOUT)
                    ),
                ));
            }
        }
    }
}

/// Checks a run name (`name:` or `--name`): letters, digits, `-`, `_`, `.`,
/// and not `run_…`, which addresses runs by id.
pub fn check_run_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || !name.chars().all(allowed) {
        Err(format!("{name:?} may use only letters, digits, '-', '_' and '.'"))
    } else if name.starts_with("run_") {
        Err(format!("{name:?} must not start with \"run_\" (reserved for run ids)"))
    } else {
        Ok(())
    }
}

fn unlimited_as_max(limit: i64) -> i64 {
    if limit == -1 { i64::MAX } else { limit }
}

fn check_non_empty(section: &str, items: &[String], problems: &mut Vec<Problem>) {
    for (i, item) in items.iter().enumerate() {
        if item.trim().is_empty() {
            problems.push(Problem::new(format!("{section}[{i}]"), "must not be empty"));
        }
    }
}
