//! Every environment variable moat reads, declared once with what it does.

/// Root of moat's state (default `~/.moat`).
pub const MOAT_HOME: &str = "MOAT_HOME";
/// Force a runtime (`docker` or `apple`), below `--runtime` and `runtime:`.
pub const MOAT_RUNTIME: &str = "MOAT_RUNTIME";
/// Base image used when moat.yaml names none.
pub const MOAT_BASE_IMAGE: &str = "MOAT_BASE_IMAGE";
/// The daemon executable the CLI starts (default: `moatd` beside the CLI's
/// own executable, else `moatd` on `PATH`).
pub const MOAT_DAEMON_EXECUTABLE: &str = "MOAT_DAEMON_EXECUTABLE";
/// Credential profile (same as `--profile`).
pub const MOAT_PROFILE: &str = "MOAT_PROFILE";
/// Where the credential encryption key lives. `keyring`: the OS keyring
/// (Secret Service on Linux, Keychain on macOS); unreachable is an error, and
/// an existing `MOAT_HOME/credentials/.key` is moved into it. `file`: the
/// 0600 file `MOAT_HOME/credentials/.key`, never the keyring. Unset: keep the
/// key where it already is, and put a new one in the keyring when reachable,
/// else in the file (headless Linux, CI). `moat doctor` says which is used.
pub const MOAT_KEYRING_BACKEND: &str = "MOAT_KEYRING_BACKEND";
/// Log filter for moat's own diagnostics (tracing `EnvFilter` syntax).
pub const MOAT_LOG: &str = "MOAT_LOG";
/// Docker endpoint, as the Docker CLI reads it.
pub const DOCKER_HOST: &str = "DOCKER_HOST";
/// Disables colour on terminals.
pub const NO_COLOR: &str = "NO_COLOR";
