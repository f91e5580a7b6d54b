//! The one place where `moat run`'s flags, `moat.yaml`, the environment
//! (`MOAT_RUNTIME`, `MOAT_BASE_IMAGE`) and `config.yaml` are merged into a
//! [`ResolvedRun`]. Precedence, highest first: flag, moat.yaml, environment,
//! config.yaml, built-in default. Lists add up (grants, mounts, allowed
//! hosts); single values are replaced. Nothing here has side effects.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use moat_core::config::{
    self, ContainerConfig, GlobalConfig, HooksConfig, McpServer, Mount, NetworkConfig, PolicyMode, ProjectConfig,
    RuntimeKind, SecretRef, ServiceConfig, SnapshotConfig,
};
use moat_core::deps::DependencyError;
use moat_core::deps::services::{Catalog, ServiceSpec};
use moat_core::env_vars;
use serde::Serialize;

use crate::cli::RunArgs;

/// Image used when nothing names one.
pub const DEFAULT_IMAGE: &str = "debian:bookworm-slim";
/// Where the workspace is mounted in the container.
pub const WORKSPACE_TARGET: &str = "/workspace";

/// Where a resolved value came from (shown by `--dry-run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Flag,
    ProjectFile,
    Environment,
    GlobalConfig,
    Default,
    /// Chosen when the run starts (runtime detection).
    Auto,
}

/// Everything needed to start a run, after merging every source.
#[derive(Clone, Debug, Serialize)]
pub struct ResolvedRun {
    pub workspace: PathBuf,
    pub config_file: Option<PathBuf>,
    pub name: Option<String>,
    /// The agent this run is (`moat claude`, or `agent:` in moat.yaml);
    /// `crate::agent` adds its dependency, grant, hosts and files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Files the image's init writes into the run user's home (an agent's
    /// settings and placeholder credentials).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub home_files: Vec<moat_api::HomeFile>,
    pub image: String,
    pub image_source: Source,
    /// `None`: detected when the run starts.
    pub runtime: Option<RuntimeKind>,
    pub runtime_source: Source,
    /// `kubernetes:` of moat.yaml (used by `runtime: kubernetes`).
    #[serde(skip_serializing_if = "moat_core::config::KubernetesConfig::is_empty")]
    pub kubernetes: moat_core::config::KubernetesConfig,
    /// Empty: the image's default command.
    pub command: Vec<String>,
    pub interactive: bool,
    /// A TTY for the run (`-t`, or `interactive: true` on a terminal).
    pub tty: bool,
    /// Opens the escape menu of an interactive run (config.yaml).
    #[serde(skip)]
    pub escape_key: moat_core::config::EscapeKey,
    pub detach: bool,
    /// Print each step's duration (`--timings`, `MOAT_TIMINGS=1`).
    #[serde(skip)]
    pub timings: bool,
    pub keep: bool,
    pub rebuild: bool,
    /// Refuse a strict run the host firewall cannot isolate.
    pub require_isolation: bool,
    pub profile: Option<String>,
    pub grants: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretRef>,
    /// The workspace first (unless a mount replaces /workspace).
    pub mounts: Vec<ResolvedMount>,
    pub ports: BTreeMap<String, u16>,
    pub network: NetworkConfig,
    pub container: ContainerConfig,
    pub dependencies: Vec<String>,
    /// The services among `dependencies:`, with their `services:` settings.
    pub services: Vec<ServiceSpec>,
    /// `services:` as written (for the keys refused below).
    #[serde(skip)]
    pub service_settings: BTreeMap<String, ServiceConfig>,
    pub hooks: HooksConfig,
    pub snapshots: SnapshotConfig,
    /// Remote MCP servers relayed by the proxy (their grants are in `grants`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mcp: Vec<McpServer>,
}

/// A mount with its host path made absolute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResolvedMount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
    pub exclude: Vec<String>,
}

/// Values `moat run` reads from its environment.
#[derive(Clone, Debug, Default)]
pub struct EnvDefaults {
    pub runtime: Option<String>,
    pub base_image: Option<String>,
}

impl EnvDefaults {
    pub fn from_env() -> Self {
        EnvDefaults {
            runtime: env_vars::read_non_empty(env_vars::MOAT_RUNTIME),
            base_image: env_vars::read_non_empty(env_vars::MOAT_BASE_IMAGE),
        }
    }
}

/// A flag or environment value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("--name: {0}")]
    Name(String),
    #[error("{var}: {message}")]
    Env { var: String, message: String },
    #[error("-e {0}: not set in this environment")]
    UnsetHostVar(String),
    #[error("mount source {} does not exist", .0.display())]
    MissingSource(PathBuf),
    #[error("--require-isolation needs the strict network policy (--policy strict or network.policy: strict)")]
    IsolationWithoutStrict,
    #[error("dependencies: {0}")]
    Dependencies(DependencyError),
    #[error(
        "container.dns cannot be used with the strict network policy: a strict run resolves names only \
         through the proxy (remove container.dns, or use network.policy: permissive)"
    )]
    DnsInStrict,
}

/// Inputs of [`resolve`]; `workspace` must already be absolute.
pub struct Sources<'a> {
    pub args: &'a RunArgs,
    pub workspace: &'a Path,
    pub project: &'a ProjectConfig,
    pub config_file: Option<&'a Path>,
    pub global: &'a GlobalConfig,
    pub env: &'a EnvDefaults,
    pub profile: Option<&'a str>,
    /// Reads a variable of the host environment (`-e KEY`).
    pub host_var: &'a dyn Fn(&str) -> Option<String>,
}

pub fn resolve(src: &Sources<'_>) -> Result<ResolvedRun, ResolveError> {
    let (args, project) = (src.args, src.project);
    let name = args.settings.name.clone().or_else(|| project.name.clone());
    if let Some(flag) = &args.settings.name {
        config::check_run_name(flag).map_err(ResolveError::Name)?;
    }
    let (image, image_source) = resolve_image(src);
    let (runtime, runtime_source) = resolve_runtime(src)?;
    let (env, secrets) = resolve_env(src)?;
    let network = resolve_network(args, &project.network);
    let split = split_services(project).map_err(ResolveError::Dependencies)?;
    if args.require_isolation && network.policy != PolicyMode::Strict {
        return Err(ResolveError::IsolationWithoutStrict);
    }
    if network.policy == PolicyMode::Strict && !project.container.dns.is_empty() {
        return Err(ResolveError::DnsInStrict);
    }
    Ok(ResolvedRun {
        workspace: src.workspace.to_path_buf(),
        config_file: src.config_file.map(Path::to_path_buf),
        name,
        agent: project.agent.clone(),
        home_files: Vec::new(),
        image,
        image_source,
        runtime,
        runtime_source,
        kubernetes: project.kubernetes.clone(),
        command: with_pre_run_hook(resolve_command(args, project), project.hooks.pre_run.as_deref()),
        interactive: args.interactive || args.tty || project.interactive,
        tty: args.tty || (project.interactive && !args.interactive && stdio_is_terminal()),
        escape_key: src.global.escape_key,
        detach: args.detach,
        timings: args.settings.timings || env_vars::read(env_vars::MOAT_TIMINGS).is_some_and(|v| v == "1"),
        keep: args.settings.keep,
        rebuild: args.settings.rebuild,
        require_isolation: args.require_isolation,
        profile: src.profile.map(str::to_string),
        grants: merge_unique(
            &merge_unique(&project.grants, &args.settings.grants),
            &mcp_grants(&project.mcp),
        ),
        env,
        secrets,
        mounts: resolve_mounts(src)?,
        ports: project.ports.clone(),
        network,
        container: project.container.clone(),
        dependencies: split.dependencies,
        services: split
            .services
            .iter()
            .map(|name| service_spec(name, project.services.get(name)))
            .collect(),
        service_settings: project.services.clone(),
        hooks: project.hooks.clone(),
        snapshots: project.snapshots.clone(),
        mcp: project.mcp.clone(),
    })
}

/// The grants `mcp:` servers name: the run needs them injected.
fn mcp_grants(servers: &[McpServer]) -> Vec<String> {
    servers.iter().map(|server| server.grant.clone()).collect()
}

impl ResolvedRun {
    /// Keys and flags this version of moat accepts in a file but cannot act
    /// on yet: a run that uses them is refused rather than run without them.
    pub fn unsupported(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut refuse = |used: bool, key: &'static str| {
            if used {
                keys.push(key);
            }
        };
        let settings = || self.service_settings.values();
        refuse(settings().any(|s| s.image.is_some()), "services.<name>.image");
        refuse(settings().any(|s| !s.models.is_empty()), "services.<name>.models");
        refuse(settings().any(|s| !s.wait()), "services.<name>.wait: false");
        refuse(
            self.hooks.pre_run.is_some() && self.command.is_empty(),
            "hooks.pre_run without a command",
        );
        // Only the pre-run snapshot is taken; the other triggers are refused.
        let triggers = &self.snapshots.triggers;
        refuse(triggers.disable_git_commits, "snapshots.triggers.disable_git_commits");
        refuse(triggers.disable_builds, "snapshots.triggers.disable_builds");
        refuse(triggers.disable_idle, "snapshots.triggers.disable_idle");
        refuse(
            triggers.idle_threshold_seconds != 0,
            "snapshots.triggers.idle_threshold_seconds",
        );
        keys
    }
}

/// Takes the services (`postgres@15`) out of `dependencies:`.
fn split_services(project: &ProjectConfig) -> Result<moat_core::deps::services::Split, DependencyError> {
    let pins: BTreeMap<String, String> = (project.services.iter())
        .filter_map(|(name, service)| service.version.clone().map(|v| (name.clone(), v)))
        .collect();
    Catalog::shipped()?.split(&project.dependencies, &pins)
}

/// What the daemon is asked to run for one service.
fn service_spec(name: &str, settings: Option<&ServiceConfig>) -> ServiceSpec {
    let settings = settings.cloned().unwrap_or_default();
    ServiceSpec {
        name: name.to_string(),
        persist: settings.persist,
        memory_bytes: settings
            .memory
            .map(|mb| i64::try_from(mb).unwrap_or(i64::MAX).saturating_mul(1024 * 1024)),
        ready_timeout_secs: settings.ready_timeout().as_secs(),
        env: settings.env,
    }
}

/// Both stdin and stdout are terminals (`interactive: true` then means a TTY).
pub fn stdio_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

fn resolve_image(src: &Sources<'_>) -> (String, Source) {
    [
        (src.args.settings.image.clone(), Source::Flag),
        (src.project.base_image.clone(), Source::ProjectFile),
        (src.env.base_image.clone(), Source::Environment),
        (src.global.base_image.clone(), Source::GlobalConfig),
    ]
    .into_iter()
    .find_map(|(image, source)| image.map(|i| (i, source)))
    .unwrap_or_else(|| (DEFAULT_IMAGE.to_string(), Source::Default))
}

fn resolve_runtime(src: &Sources<'_>) -> Result<(Option<RuntimeKind>, Source), ResolveError> {
    let from_env = match &src.env.runtime {
        Some(value) => Some(value.parse::<RuntimeKind>().map_err(|message| ResolveError::Env {
            var: env_vars::MOAT_RUNTIME.into(),
            message,
        })?),
        None => None,
    };
    let flag = src.args.runtime;
    Ok([
        (flag, Source::Flag),
        (src.project.runtime, Source::ProjectFile),
        (from_env, Source::Environment),
        (src.global.runtime, Source::GlobalConfig),
    ]
    .into_iter()
    .find_map(|(runtime, source)| runtime.map(|r| (Some(r), source)))
    .unwrap_or((None, Source::Auto)))
}

/// Shell that runs `hooks.pre_run` in /workspace, as the run user, before
/// the command; a failing hook ends the run with its exit code and says so.
const PRE_RUN_WRAPPER: &str = "sh -c \"$1\"; code=$?; if [ $code -ne 0 ]; then \
    echo \"moat: hooks.pre_run failed with exit code $code (its output is above); the command did not run\" >&2; \
    exit $code; fi; shift; exec \"$@\"";

/// The command, run after `hook` when there is one (and a command).
fn with_pre_run_hook(command: Vec<String>, hook: Option<&str>) -> Vec<String> {
    match hook {
        Some(hook) if !command.is_empty() => ["/bin/sh", "-c", PRE_RUN_WRAPPER, "moat-pre-run", hook]
            .into_iter()
            .map(str::to_string)
            .chain(command)
            .collect(),
        _ => command,
    }
}

fn resolve_command(args: &RunArgs, project: &ProjectConfig) -> Vec<String> {
    if !args.command.is_empty() {
        return args.command.clone();
    }
    project.command.as_ref().map(|c| c.argv()).unwrap_or_default()
}

/// moat.yaml's env, then `-e` flags; a flag also replaces a secret of the
/// same name.
type EnvAndSecrets = (BTreeMap<String, String>, BTreeMap<String, SecretRef>);

fn resolve_env(src: &Sources<'_>) -> Result<EnvAndSecrets, ResolveError> {
    let mut env = src.project.env.clone();
    let mut secrets = src.project.secrets.clone();
    for (key, value) in &src.args.settings.env {
        let value = match value {
            Some(value) => value.clone(),
            None => (src.host_var)(key).ok_or_else(|| ResolveError::UnsetHostVar(key.clone()))?,
        };
        secrets.remove(key);
        env.insert(key.clone(), value);
    }
    Ok((env, secrets))
}

/// The workspace, moat.yaml's mounts, then `--mount`s; a later mount on the
/// same target replaces an earlier one.
fn resolve_mounts(src: &Sources<'_>) -> Result<Vec<ResolvedMount>, ResolveError> {
    let workspace = Mount {
        source: src.workspace.display().to_string(),
        target: WORKSPACE_TARGET.into(),
        mode: moat_core::config::MountMode::default(),
        exclude: Vec::new(),
    };
    let mut mounts: Vec<ResolvedMount> = Vec::new();
    let all = std::iter::once(&workspace)
        .chain(&src.project.mounts)
        .chain(&src.args.settings.mounts);
    for mount in all {
        // Symlinks resolved: what is checked is what the runtime mounts.
        let given = normalize(&mount.host_path(src.workspace));
        let source = std::fs::canonicalize(&given).map_err(|_| ResolveError::MissingSource(given))?;
        mounts.retain(|m| m.target != mount.target);
        mounts.push(ResolvedMount {
            source,
            target: mount.target.clone(),
            read_only: mount.read_only(),
            exclude: mount.exclude.clone(),
        });
    }
    Ok(mounts)
}

fn resolve_network(args: &RunArgs, project: &NetworkConfig) -> NetworkConfig {
    let mut network = project.clone();
    if let Some(policy) = args.settings.policy {
        network.policy = policy;
    }
    for rule in &args.settings.allow_hosts {
        if !network.rules.iter().any(|r| r.host == rule.host) {
            network.rules.push(rule.clone());
        }
    }
    network
}

fn merge_unique(first: &[String], then: &[String]) -> Vec<String> {
    let mut merged: Vec<String> = Vec::new();
    for item in first.iter().chain(then) {
        if !merged.contains(item) {
            merged.push(item.clone());
        }
    }
    merged
}

/// Removes `.` and resolves `..` lexically (the path may not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(argv: &[&str]) -> RunArgs {
        let cli = crate::cli::Cli::parse_from(["moat", "run"].iter().chain(argv));
        match cli.command {
            crate::cli::Command::Run(args) => args,
            other => panic!("{other:?}"),
        }
    }

    fn resolve_with(
        argv: &[&str],
        project: &ProjectConfig,
        global: &GlobalConfig,
        env: &EnvDefaults,
    ) -> Result<ResolvedRun, ResolveError> {
        let args = args(argv);
        let host_var = |name: &str| (name == "HOST_ONLY").then(|| "from-host".to_string());
        resolve(&Sources {
            args: &args,
            workspace: Path::new("/tmp"),
            project,
            config_file: None,
            global,
            env,
            profile: None,
            host_var: &host_var,
        })
    }

    #[test]
    fn image_precedence_is_flag_file_env_global_default() {
        let mut project = ProjectConfig::default();
        let mut global = GlobalConfig::default();
        let mut env = EnvDefaults::default();
        let image = |p: &ProjectConfig, g: &GlobalConfig, e: &EnvDefaults, argv: &[&str]| {
            let r = resolve_with(argv, p, g, e).unwrap();
            (r.image, r.image_source)
        };
        assert_eq!(
            image(&project, &global, &env, &[]),
            (DEFAULT_IMAGE.into(), Source::Default)
        );
        global.base_image = Some("g".into());
        assert_eq!(image(&project, &global, &env, &[]), ("g".into(), Source::GlobalConfig));
        env.base_image = Some("e".into());
        assert_eq!(image(&project, &global, &env, &[]), ("e".into(), Source::Environment));
        project.base_image = Some("p".into());
        assert_eq!(image(&project, &global, &env, &[]), ("p".into(), Source::ProjectFile));
        assert_eq!(
            image(&project, &global, &env, &["--image", "f"]),
            ("f".into(), Source::Flag)
        );
    }

    #[test]
    fn runtime_precedence_and_bad_environment_value() {
        let project = ProjectConfig::default();
        let global = GlobalConfig {
            runtime: Some(RuntimeKind::Apple),
            ..GlobalConfig::default()
        };
        let env = EnvDefaults {
            runtime: Some("docker".into()),
            ..EnvDefaults::default()
        };
        let r = resolve_with(&[], &project, &global, &env).unwrap();
        assert_eq!(
            (r.runtime, r.runtime_source),
            (Some(RuntimeKind::Docker), Source::Environment)
        );
        let r = resolve_with(&["--runtime", "apple"], &project, &global, &env).unwrap();
        assert_eq!((r.runtime, r.runtime_source), (Some(RuntimeKind::Apple), Source::Flag));
        let auto = resolve_with(&[], &project, &GlobalConfig::default(), &EnvDefaults::default());
        assert_eq!(auto.unwrap().runtime_source, Source::Auto);
        let bad = EnvDefaults {
            runtime: Some("podman".into()),
            ..EnvDefaults::default()
        };
        let err = resolve_with(&[], &project, &global, &bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "MOAT_RUNTIME: invalid runtime \"podman\": expected \"docker\", \"apple\" or \"kubernetes\""
        );
    }

    #[test]
    fn flags_add_to_lists_and_replace_values() {
        let project: ProjectConfig = serde_saphyr::from_str(
            "grants: [github]\nenv: {A: '1', S: x}\nsecrets: {T: env://T}\n\
             command: echo hi\nmounts: ['/tmp:/data:ro']\nnetwork: {rules: [a.com]}\n",
        )
        .unwrap();
        let r = resolve_with(
            &[
                "-g",
                "github",
                "-g",
                "npm",
                "-e",
                "A=2",
                "-e",
                "T=plain",
                "-e",
                "HOST_ONLY",
                "-m",
                "/:/data",
                "--allow-host",
                "b.com",
                "--policy",
                "strict",
                "--",
                "ls",
                "-l",
            ],
            &project,
            &GlobalConfig::default(),
            &EnvDefaults::default(),
        )
        .unwrap();
        assert_eq!(r.grants, ["github", "npm"]);
        assert_eq!(r.env["A"], "2");
        assert_eq!(r.env["HOST_ONLY"], "from-host");
        assert!(!r.secrets.contains_key("T"));
        assert_eq!(r.command, ["ls", "-l"]);
        assert_eq!(r.mounts.len(), 2);
        assert_eq!(r.mounts[0].target, WORKSPACE_TARGET);
        assert_eq!(
            (r.mounts[1].source.as_path(), r.mounts[1].read_only),
            (Path::new("/"), false)
        );
        let hosts: Vec<&str> = r.network.rules.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(hosts, ["a.com", "b.com"]);
        assert_eq!(r.network.policy, PolicyMode::Strict);
    }

    #[test]
    fn file_values_apply_without_flags() {
        let project: ProjectConfig =
            serde_saphyr::from_str("name: web\ncommand: echo hi\ninteractive: true\n").unwrap();
        let r = resolve_with(&[], &project, &GlobalConfig::default(), &EnvDefaults::default()).unwrap();
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.command, ["/bin/sh", "-c", "echo hi"]);
        assert!(r.interactive);
    }

    #[test]
    fn bad_flags_are_errors() {
        let (p, g, e) = (
            ProjectConfig::default(),
            GlobalConfig::default(),
            EnvDefaults::default(),
        );
        let err = resolve_with(&["-n", "run_x"], &p, &g, &e).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--name: \"run_x\" must not start with \"run_\" (reserved for run ids)"
        );
        let err = resolve_with(&["-e", "NOPE_UNSET"], &p, &g, &e).unwrap_err();
        assert_eq!(err.to_string(), "-e NOPE_UNSET: not set in this environment");
        let err = resolve_with(&["-m", "/no/such/dir:/x"], &p, &g, &e).unwrap_err();
        assert_eq!(err.to_string(), "mount source /no/such/dir does not exist");
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("/w/./a/../b")), Path::new("/w/b"));
    }
}
