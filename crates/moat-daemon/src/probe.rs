//! Probing the container runtime for `moat doctor` and `moat status`:
//! which Docker endpoint was found (and how), whether it answers, and
//! which engine it is (Docker, or Podman rootful or rootless).

use moat_api::RuntimeCheck;
use moat_runtime::Runtime;
use moat_runtime::docker::{DockerOptions, DockerRuntime};

/// Finds the Docker endpoint and pings it (bounded by the runtime's own
/// call timeout).
pub async fn check_docker() -> RuntimeCheck {
    let mut check = RuntimeCheck {
        kind: "docker".into(),
        endpoint: None,
        found_via: None,
        available: false,
        problem: None,
    };
    match DockerRuntime::new(DockerOptions::default()) {
        Ok(docker) => {
            check.endpoint = Some(docker.docker_endpoint().address.clone());
            check.found_via = Some(docker.docker_endpoint().source.to_string());
            // Podman answers the same API; name it as what it is.
            if let Ok(engine) = docker.engine().await {
                check.kind = engine.describe();
            }
            match docker.ping().await {
                Ok(()) => check.available = true,
                Err(e) => check.problem = Some(e.to_string()),
            }
        }
        Err(e) => check.problem = Some(e.to_string()),
    }
    check
}
