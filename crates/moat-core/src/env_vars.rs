//! Every environment variable moat reads, declared once with what it does,
//! and the only place that reads the process environment: other modules
//! call [`read`], [`read_non_empty`] or [`read_os_non_empty`] (with these
//! names, or with a name the user chose: `env://NAME` secrets, `env:`
//! pass-through, a provider's token variable).

use std::ffi::OsString;

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
/// Debug builds: asks the daemon to crash or pause at a named point of a
/// run's start (tests of the recovery paths).
pub const MOAT_FAULT: &str = "MOAT_FAULT";
/// Debug builds: a YAML file whose `dependencies:` and `agents:` entries
/// replace the shipped registry's (tests install a stand-in agent).
pub const MOAT_REGISTRY_OVERLAY: &str = "MOAT_REGISTRY_OVERLAY";
/// `1` prints how long each phase of `moat run` took (same as `--timings`).
pub const MOAT_TIMINGS: &str = "MOAT_TIMINGS";
/// The user's home directory: the default `MOAT_HOME` parent, the rootless
/// Docker socket, `~` in listings.
pub const HOME: &str = "HOME";
/// `dumb` disables colour.
pub const TERM: &str = "TERM";
/// Where a rootless Docker engine's socket lives.
pub const XDG_RUNTIME_DIR: &str = "XDG_RUNTIME_DIR";
/// Searched for the daemon executable when none sits beside the CLI.
pub const PATH: &str = "PATH";
/// Set to `true` on CI: tests that need Docker fail instead of skipping.
pub const CI: &str = "CI";

/// The value of `name` if it is set and valid UTF-8 (possibly empty).
pub fn read(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The value of `name` if it is set, valid UTF-8 and not empty.
pub fn read_non_empty(name: &str) -> Option<String> {
    read(name).filter(|value| !value.is_empty())
}

/// The raw value of `name` (any bytes: paths) if it is set and not empty.
pub fn read_os_non_empty(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_unset_values_are_told_apart_only_by_read() {
        // PATH is set in any environment the tests run in; the name below
        // is set by no one.
        assert!(read_non_empty(PATH).is_some());
        assert!(read_os_non_empty(PATH).is_some());
        let unset = "MOAT_TEST_SURELY_UNSET_VARIABLE";
        assert_eq!(read(unset), None);
        assert_eq!(read_non_empty(unset), None);
        assert_eq!(read_os_non_empty(unset), None);
    }
}
