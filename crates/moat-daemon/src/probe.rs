//! Probing the container runtime for `moat doctor` and `moat status`:
//! which Docker endpoint was found (and how) and whether it answers.

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
            match docker.ping().await {
                Ok(()) => check.available = true,
                Err(e) => check.problem = Some(e.to_string()),
            }
        }
        Err(e) => check.problem = Some(e.to_string()),
    }
    check
}
