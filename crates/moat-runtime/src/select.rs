//! Which runtime a command uses: `--runtime` flag > `runtime:` in moat.yaml >
//! `MOAT_RUNTIME` > detection (Apple first on macOS/arm64 when its CLI is
//! available, else Docker; Kubernetes only when named) (runtime.md, "Selection"). A pure function of its
//! inputs; probing the runtimes is the caller's job.

use std::fmt;

use crate::RuntimeKind;

/// What probing one runtime found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Available,
    /// Not usable, with the reason (e.g. "no Docker socket found").
    Unavailable(String),
}

impl Probe {
    fn is_available(&self) -> bool {
        matches!(self, Probe::Available)
    }
}

/// Where a forced choice came from, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectionSource {
    Flag,
    Config,
    Env,
}

impl fmt::Display for SelectionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SelectionSource::Flag => "--runtime",
            SelectionSource::Config => "`runtime:` in moat.yaml",
            SelectionSource::Env => "MOAT_RUNTIME",
        })
    }
}

/// Everything selection depends on.
#[derive(Clone, Debug)]
pub struct SelectionInput<'a> {
    pub flag: Option<&'a str>,
    pub config: Option<&'a str>,
    /// Value of `MOAT_RUNTIME` (empty counts as unset).
    pub env: Option<&'a str>,
    /// `std::env::consts::OS`, e.g. `macos`, `linux`.
    pub os: &'a str,
    /// `std::env::consts::ARCH`, e.g. `aarch64`, `x86_64`.
    pub arch: &'a str,
    pub docker: Probe,
    pub apple: Probe,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("unknown runtime {name:?} from {origin}: expected `docker`, `apple` or `kubernetes`")]
    Unknown { name: String, origin: SelectionSource },
    #[error(
        "{origin} asks for Apple containers, which need macOS on Apple silicon (this is {os}/{arch}); use `--runtime docker`"
    )]
    AppleUnsupportedPlatform {
        origin: SelectionSource,
        os: String,
        arch: String,
    },
    #[error("{origin} asks for {runtime}, which is unavailable: {reason}. {fix}")]
    ForcedUnavailable {
        runtime: RuntimeKind,
        origin: SelectionSource,
        reason: String,
        fix: String,
    },
    #[error(
        "no container runtime is available (docker: {docker}; apple: {apple}). Start Docker (or set DOCKER_HOST), or on macOS 26+ install Apple's `container` CLI"
    )]
    NoneAvailable { docker: String, apple: String },
}

/// Chooses the runtime for this invocation.
pub fn select_runtime(input: &SelectionInput<'_>) -> Result<RuntimeKind, SelectionError> {
    match forced_choice(input)? {
        Some((kind, source)) => check_forced(input, kind, source),
        None => detect(input),
    }
}

fn forced_choice(input: &SelectionInput<'_>) -> Result<Option<(RuntimeKind, SelectionSource)>, SelectionError> {
    let candidates = [
        (input.flag, SelectionSource::Flag),
        (input.config, SelectionSource::Config),
        (input.env, SelectionSource::Env),
    ];
    let Some((name, source)) = candidates
        .into_iter()
        .find_map(|(value, source)| non_empty(value).map(|name| (name, source)))
    else {
        return Ok(None);
    };
    parse_kind(name)
        .map(|kind| Some((kind, source)))
        .ok_or_else(|| SelectionError::Unknown {
            name: name.to_string(),
            origin: source,
        })
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn parse_kind(name: &str) -> Option<RuntimeKind> {
    match name.to_ascii_lowercase().as_str() {
        "docker" => Some(RuntimeKind::Docker),
        "apple" | "container" => Some(RuntimeKind::Apple),
        "kubernetes" | "k8s" => Some(RuntimeKind::Kubernetes),
        _ => None,
    }
}

fn is_apple_platform(input: &SelectionInput<'_>) -> bool {
    input.os == "macos" && input.arch == "aarch64"
}

fn check_forced(
    input: &SelectionInput<'_>,
    kind: RuntimeKind,
    origin: SelectionSource,
) -> Result<RuntimeKind, SelectionError> {
    if kind == RuntimeKind::Apple && !is_apple_platform(input) {
        return Err(SelectionError::AppleUnsupportedPlatform {
            origin,
            os: input.os.to_string(),
            arch: input.arch.to_string(),
        });
    }
    let (probe, fix) = match kind {
        // The cluster is reached (and its errors told) when the run starts.
        RuntimeKind::Kubernetes => return Ok(kind),
        RuntimeKind::Apple => (
            &input.apple,
            "Install Apple's `container` CLI (macOS 26+) and run `container system start`, or use `--runtime docker`.",
        ),
        _ => (
            &input.docker,
            "Start Docker (or point DOCKER_HOST at a running engine), or choose another runtime.",
        ),
    };
    match probe {
        Probe::Available => Ok(kind),
        Probe::Unavailable(reason) => Err(SelectionError::ForcedUnavailable {
            runtime: kind,
            origin,
            reason: reason.clone(),
            fix: fix.to_string(),
        }),
    }
}

fn detect(input: &SelectionInput<'_>) -> Result<RuntimeKind, SelectionError> {
    if is_apple_platform(input) && input.apple.is_available() {
        return Ok(RuntimeKind::Apple);
    }
    if input.docker.is_available() {
        return Ok(RuntimeKind::Docker);
    }
    Err(SelectionError::NoneAvailable {
        docker: reason_of(&input.docker),
        apple: if is_apple_platform(input) {
            reason_of(&input.apple)
        } else {
            format!("not supported on {}/{}", input.os, input.arch)
        },
    })
}

fn reason_of(probe: &Probe) -> String {
    match probe {
        Probe::Available => "available".to_string(),
        Probe::Unavailable(reason) => reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(reason: &str) -> Probe {
        Probe::Unavailable(reason.to_string())
    }

    fn input<'a>(os: &'a str, arch: &'a str, docker: Probe, apple: Probe) -> SelectionInput<'a> {
        SelectionInput {
            flag: None,
            config: None,
            env: None,
            os,
            arch,
            docker,
            apple,
        }
    }

    fn mac_with_both() -> SelectionInput<'static> {
        input("macos", "aarch64", Probe::Available, Probe::Available)
    }

    #[test]
    fn detection_prefers_apple_on_apple_silicon() {
        assert_eq!(select_runtime(&mac_with_both()), Ok(RuntimeKind::Apple));
    }

    #[test]
    fn detection_falls_back_to_docker_when_apple_cli_is_missing() {
        let i = input("macos", "aarch64", Probe::Available, down("no `container` CLI"));
        assert_eq!(select_runtime(&i), Ok(RuntimeKind::Docker));
    }

    #[test]
    fn detection_ignores_apple_on_intel_macs_and_linux() {
        let intel = input("macos", "x86_64", Probe::Available, Probe::Available);
        assert_eq!(select_runtime(&intel), Ok(RuntimeKind::Docker));
        let linux = input("linux", "aarch64", Probe::Available, Probe::Available);
        assert_eq!(select_runtime(&linux), Ok(RuntimeKind::Docker));
    }

    #[test]
    fn detection_with_nothing_available_explains_both() {
        let i = input("linux", "x86_64", down("no Docker socket found"), down("n/a"));
        let err = select_runtime(&i).unwrap_err();
        assert_eq!(
            err,
            SelectionError::NoneAvailable {
                docker: "no Docker socket found".into(),
                apple: "not supported on linux/x86_64".into(),
            }
        );
        assert!(err.to_string().contains("Start Docker"));
    }

    #[test]
    fn flag_beats_config_beats_env_beats_detection() {
        let mut i = mac_with_both();
        i.env = Some("docker");
        assert_eq!(select_runtime(&i), Ok(RuntimeKind::Docker));
        i.config = Some("apple");
        assert_eq!(select_runtime(&i), Ok(RuntimeKind::Apple));
        i.flag = Some("docker");
        assert_eq!(select_runtime(&i), Ok(RuntimeKind::Docker));
    }

    #[test]
    fn empty_values_count_as_unset() {
        let mut i = mac_with_both();
        i.flag = Some("");
        i.env = Some("  ");
        assert_eq!(select_runtime(&i), Ok(RuntimeKind::Apple));
    }

    #[test]
    fn unknown_names_are_rejected_with_their_source() {
        let mut i = mac_with_both();
        i.config = Some("podman");
        assert_eq!(
            select_runtime(&i),
            Err(SelectionError::Unknown {
                name: "podman".into(),
                origin: SelectionSource::Config
            })
        );
    }

    #[test]
    fn forced_docker_that_is_down_says_why_and_how_to_fix() {
        let mut i = input("linux", "x86_64", down("connection refused"), down("n/a"));
        i.env = Some("Docker");
        let err = select_runtime(&i).unwrap_err();
        assert!(matches!(
            err,
            SelectionError::ForcedUnavailable {
                runtime: RuntimeKind::Docker,
                origin: SelectionSource::Env,
                ..
            }
        ));
        let message = err.to_string();
        assert!(message.contains("MOAT_RUNTIME"), "{message}");
        assert!(message.contains("connection refused"), "{message}");
        assert!(message.contains("DOCKER_HOST"), "{message}");
    }

    #[test]
    fn forced_apple_is_not_replaced_by_docker_when_apple_is_down() {
        let mut i = input("macos", "aarch64", Probe::Available, down("system not started"));
        i.flag = Some("apple");
        let err = select_runtime(&i).unwrap_err();
        assert!(err.to_string().contains("container system start"), "{err}");
    }

    #[test]
    fn kubernetes_is_chosen_only_when_named() {
        let mut i = input("linux", "x86_64", down("no socket"), down("n/a"));
        i.flag = Some("kubernetes");
        assert_eq!(select_runtime(&i), Ok(RuntimeKind::Kubernetes));
        i.flag = None;
        assert!(select_runtime(&i).is_err(), "detection never picks a cluster");
    }

    #[test]
    fn forced_apple_on_linux_names_the_platform() {
        let mut i = input("linux", "x86_64", Probe::Available, Probe::Available);
        i.flag = Some("apple");
        assert_eq!(
            select_runtime(&i),
            Err(SelectionError::AppleUnsupportedPlatform {
                origin: SelectionSource::Flag,
                os: "linux".into(),
                arch: "x86_64".into()
            })
        );
    }
}
