//! Every environment variable moat reads, declared once with what it does.

/// Root of moat's state (default `~/.moat`).
pub const MOAT_HOME: &str = "MOAT_HOME";
/// Force a runtime (`docker` or `apple`), below `--runtime` and `runtime:`.
pub const MOAT_RUNTIME: &str = "MOAT_RUNTIME";
/// Base image used when moat.yaml names none.
pub const MOAT_BASE_IMAGE: &str = "MOAT_BASE_IMAGE";
/// Executable the CLI re-executes as the daemon (defaults to the current one).
pub const MOAT_EXECUTABLE: &str = "MOAT_EXECUTABLE";
/// Credential profile (same as `--profile`).
pub const MOAT_PROFILE: &str = "MOAT_PROFILE";
/// `file` forces the file-backed key store instead of the OS keyring.
pub const MOAT_KEYRING_BACKEND: &str = "MOAT_KEYRING_BACKEND";
/// Log filter for moat's own diagnostics (tracing `EnvFilter` syntax).
pub const MOAT_LOG: &str = "MOAT_LOG";
/// Docker endpoint, as the Docker CLI reads it.
pub const DOCKER_HOST: &str = "DOCKER_HOST";
/// Disables colour on terminals.
pub const NO_COLOR: &str = "NO_COLOR";
