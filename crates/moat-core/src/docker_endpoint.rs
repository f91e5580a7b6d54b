//! Where the Docker engine listens: `DOCKER_HOST`, else the first existing
//! socket among the usual places (Docker, rootless Docker, Podman, Colima,
//! Rancher Desktop, Docker Desktop), recorded so `moat doctor` can say which
//! one was used (runtime.md, "Docker"). Discovery is a pure function of the
//! environment and a file-existence check.

use crate::env_vars;
use std::fmt;
use std::path::{Path, PathBuf};

/// How the endpoint was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointSource {
    /// Given by the caller (configuration or tests).
    Explicit,
    /// The `DOCKER_HOST` environment variable.
    DockerHost,
    /// A well-known socket, named after what usually serves it.
    Socket(&'static str),
}

impl fmt::Display for EndpointSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointSource::Explicit => f.write_str("configured"),
            EndpointSource::DockerHost => f.write_str("DOCKER_HOST"),
            EndpointSource::Socket(name) => f.write_str(name),
        }
    }
}

/// The engine address moat talks to, e.g. `unix:///var/run/docker.sock`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerEndpoint {
    pub address: String,
    pub source: EndpointSource,
}

impl DockerEndpoint {
    /// Whether the engine runs in a VM on this machine (any engine off
    /// Linux; Docker Desktop, Colima, Rancher Desktop on Linux), where
    /// containers reach the host through `host.docker.internal` rather than
    /// a bridge gateway.
    pub fn is_desktop_vm(&self) -> bool {
        !cfg!(target_os = "linux")
            || matches!(
                self.source,
                EndpointSource::Socket(COLIMA | RANCHER_DESKTOP | DOCKER_DESKTOP)
            )
    }
}

const DOCKER: &str = "Docker";
const ROOTLESS_DOCKER: &str = "rootless Docker";
const ROOTLESS_PODMAN: &str = "rootless Podman";
const PODMAN: &str = "Podman";
const COLIMA: &str = "Colima";
const RANCHER_DESKTOP: &str = "Rancher Desktop";
const DOCKER_DESKTOP: &str = "Docker Desktop";

/// The environment discovery depends on.
#[derive(Clone, Debug, Default)]
pub struct EndpointEnv {
    pub docker_host: Option<String>,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl EndpointEnv {
    /// Reads `DOCKER_HOST`, `XDG_RUNTIME_DIR` and `HOME` from the process.
    pub fn from_process() -> EndpointEnv {
        EndpointEnv {
            docker_host: env_vars::read_non_empty(env_vars::DOCKER_HOST),
            xdg_runtime_dir: env_vars::read_os_non_empty(env_vars::XDG_RUNTIME_DIR).map(PathBuf::from),
            home: env_vars::read_os_non_empty(env_vars::HOME).map(PathBuf::from),
        }
    }
}

/// Well-known sockets in the order they are tried.
pub fn candidate_sockets(env: &EndpointEnv) -> Vec<(PathBuf, &'static str)> {
    let mut sockets = vec![(PathBuf::from("/var/run/docker.sock"), DOCKER)];
    if let Some(runtime_dir) = &env.xdg_runtime_dir {
        sockets.push((runtime_dir.join("docker.sock"), ROOTLESS_DOCKER));
        sockets.push((runtime_dir.join("podman/podman.sock"), ROOTLESS_PODMAN));
    }
    sockets.push((PathBuf::from("/run/podman/podman.sock"), PODMAN));
    if let Some(home) = &env.home {
        sockets.push((home.join(".colima/default/docker.sock"), COLIMA));
        sockets.push((home.join(".rd/docker.sock"), RANCHER_DESKTOP));
        sockets.push((home.join(".docker/run/docker.sock"), DOCKER_DESKTOP));
        sockets.push((home.join(".docker/desktop/docker.sock"), DOCKER_DESKTOP));
    }
    sockets
}

/// `DOCKER_HOST` if set, else the first candidate socket that exists; the
/// error lists what was tried.
pub fn discover(env: &EndpointEnv, exists: impl Fn(&Path) -> bool) -> Result<DockerEndpoint, String> {
    if let Some(host) = &env.docker_host {
        return Ok(DockerEndpoint {
            address: normalise_address(host),
            source: EndpointSource::DockerHost,
        });
    }
    let candidates = candidate_sockets(env);
    candidates
        .iter()
        .find(|(path, _)| exists(path))
        .map(|(path, name)| DockerEndpoint {
            address: format!("unix://{}", path.display()),
            source: EndpointSource::Socket(name),
        })
        .ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|(path, _)| path.display().to_string()).collect();
            format!(
                "no Docker socket found (DOCKER_HOST is unset; tried {})",
                tried.join(", ")
            )
        })
}

/// A bare socket path becomes a `unix://` address.
pub fn normalise_address(address: &str) -> String {
    if address.starts_with('/') {
        format!("unix://{address}")
    } else {
        address.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EndpointEnv {
        EndpointEnv {
            docker_host: None,
            xdg_runtime_dir: Some("/run/user/1000".into()),
            home: Some("/home/ada".into()),
        }
    }

    #[test]
    fn docker_host_wins_over_any_socket() {
        let mut e = env();
        e.docker_host = Some("tcp://10.0.0.5:2375".into());
        let endpoint = discover(&e, |_| true).unwrap();
        assert_eq!(endpoint.address, "tcp://10.0.0.5:2375");
        assert_eq!(endpoint.source, EndpointSource::DockerHost);
    }

    #[test]
    fn the_system_socket_comes_first() {
        let endpoint = discover(&env(), |_| true).unwrap();
        assert_eq!(endpoint.address, "unix:///var/run/docker.sock");
        assert_eq!(endpoint.source, EndpointSource::Socket("Docker"));
        assert_eq!(endpoint.is_desktop_vm(), !cfg!(target_os = "linux"));
    }

    #[test]
    fn later_candidates_are_used_when_earlier_ones_are_missing() {
        let only = |wanted: &'static str| move |p: &Path| p == Path::new(wanted);
        let rootless = discover(&env(), only("/run/user/1000/docker.sock")).unwrap();
        assert_eq!(rootless.source, EndpointSource::Socket("rootless Docker"));
        let podman = discover(&env(), only("/run/user/1000/podman/podman.sock")).unwrap();
        assert_eq!(podman.source, EndpointSource::Socket("rootless Podman"));
        let colima = discover(&env(), only("/home/ada/.colima/default/docker.sock")).unwrap();
        assert_eq!(colima.address, "unix:///home/ada/.colima/default/docker.sock");
        assert!(colima.is_desktop_vm());
        let desktop = discover(&env(), only("/home/ada/.docker/run/docker.sock")).unwrap();
        assert_eq!(desktop.source, EndpointSource::Socket("Docker Desktop"));
        let linux_desktop = discover(&env(), only("/home/ada/.docker/desktop/docker.sock")).unwrap();
        assert!(linux_desktop.is_desktop_vm());
    }

    #[test]
    fn nothing_found_lists_every_place_tried() {
        let err = discover(&env(), |_| false).unwrap_err();
        for path in [
            "/var/run/docker.sock",
            "/run/user/1000/docker.sock",
            "/run/podman/podman.sock",
            "/home/ada/.rd/docker.sock",
        ] {
            assert!(err.contains(path), "{err} should mention {path}");
        }
    }

    #[test]
    fn a_bare_path_in_docker_host_is_a_unix_socket() {
        assert_eq!(normalise_address("/tmp/d.sock"), "unix:///tmp/d.sock");
        assert_eq!(normalise_address("unix:///tmp/d.sock"), "unix:///tmp/d.sock");
    }
}
