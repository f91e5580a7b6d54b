//! Probing the container runtime from the CLI without the daemon: which
//! Docker endpoint moat found (and how) and whether it answers. Shared by
//! `moat doctor` and `moat status`.

use moat_runtime::Runtime;
use moat_runtime::docker::{DockerOptions, DockerRuntime};
use serde::Serialize;

/// What probing one runtime found.
#[derive(Serialize)]
pub struct RuntimeCheck {
    pub kind: &'static str,
    pub endpoint: Option<String>,
    pub found_via: Option<String>,
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Finds the Docker endpoint and pings it (bounded by the runtime's own
/// call timeout).
pub async fn check_docker() -> RuntimeCheck {
    let mut check = RuntimeCheck {
        kind: "docker",
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

/// One line for people, e.g. `docker at unix:///var/run/docker.sock (found via ...)`.
pub fn describe(check: &RuntimeCheck) -> String {
    let problem = check.problem.as_deref().unwrap_or("?");
    match (&check.endpoint, check.available) {
        (Some(endpoint), true) => format!(
            "{} at {endpoint} (found via {})",
            check.kind,
            check.found_via.as_deref().unwrap_or("?")
        ),
        (Some(endpoint), false) => format!("{} at {endpoint} does not answer: {problem}", check.kind),
        (None, _) => format!("none found: {problem}"),
    }
}
