//! Turns bollard's errors into typed [`RuntimeError`]s: 404 is `NotFound`,
//! conflicts and "in use"/"active endpoints" are `InUse`, a missing or
//! refusing socket is `Unavailable`; everything else is `Other` naming the
//! operation.

use std::io;

use bollard::errors::Error as BollardError;

use crate::{RuntimeError, RuntimeKind};

const DOCKER: RuntimeKind = RuntimeKind::Docker;

/// Maps a failure of `op` on `what` (e.g. "network moat-run_…").
pub fn map_error(op: &str, what: &str, err: BollardError) -> RuntimeError {
    match err {
        BollardError::DockerResponseServerError { status_code, message } => from_status(op, what, status_code, message),
        BollardError::SocketNotFoundError(path) => RuntimeError::Unavailable {
            runtime: DOCKER,
            reason: format!("socket {path} does not exist"),
        },
        BollardError::HyperLegacyError { err } if err.is_connect() => RuntimeError::Unavailable {
            runtime: DOCKER,
            reason: error_chain(&err),
        },
        BollardError::IOError { err } if is_connection_failure(&err) => RuntimeError::Unavailable {
            runtime: DOCKER,
            reason: err.to_string(),
        },
        other => RuntimeError::Other {
            runtime: DOCKER,
            op: op.to_string(),
            message: error_chain(&other),
        },
    }
}

fn from_status(op: &str, what: &str, status: u16, message: String) -> RuntimeError {
    if status == 404 {
        return RuntimeError::NotFound {
            runtime: DOCKER,
            what: what.to_string(),
        };
    }
    if status == 409 || says_in_use(&message) {
        return RuntimeError::InUse {
            runtime: DOCKER,
            what: what.to_string(),
            detail: message,
        };
    }
    RuntimeError::Other {
        runtime: DOCKER,
        op: op.to_string(),
        message: format!("{message} (HTTP {status})"),
    }
}

fn says_in_use(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ["in use", "active endpoints", "is being used"]
        .iter()
        .any(|needle| message.contains(needle))
}

fn is_connection_failure(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::NotFound
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::ConnectionReset
    )
}

/// The error and its causes, joined, so "client error (Connect)" comes with
/// the errno that explains it.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

/// Docker's answer when a requested subnet collides with another network.
pub fn is_pool_overlap(err: &BollardError) -> bool {
    matches!(
        err,
        BollardError::DockerResponseServerError { message, .. } if message.to_ascii_lowercase().contains("overlap")
    )
}

/// Docker's 409 when a removal of the same container is already underway:
/// the object is going away, which is what the caller asked for.
pub fn is_removal_in_progress(err: &BollardError) -> bool {
    matches!(
        err,
        BollardError::DockerResponseServerError { status_code: 409, message } if message.contains("already in progress")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status_code: u16, message: &str) -> BollardError {
        BollardError::DockerResponseServerError {
            status_code,
            message: message.to_string(),
        }
    }

    #[test]
    fn not_found_is_typed_and_names_the_object() {
        let err = map_error("remove network", "network n1", server(404, "network n1 not found"));
        assert!(err.is_not_found());
        assert_eq!(err.to_string(), "docker: network n1 not found");
    }

    #[test]
    fn active_endpoints_and_conflicts_are_in_use() {
        let forbidden = server(
            403,
            "error while removing network: network n1 id 12 has active endpoints",
        );
        assert!(matches!(
            map_error("remove network", "network n1", forbidden),
            RuntimeError::InUse { .. }
        ));
        let conflict = server(409, "remove v1: volume is in use - [abc]");
        assert!(matches!(
            map_error("remove volume", "volume v1", conflict),
            RuntimeError::InUse { .. }
        ));
    }

    #[test]
    fn a_missing_socket_is_unavailable() {
        let err = map_error("ping", "engine", BollardError::SocketNotFoundError("/nope.sock".into()));
        assert!(matches!(err, RuntimeError::Unavailable { .. }));
        assert!(err.to_string().contains("/nope.sock"));
    }

    #[test]
    fn other_failures_keep_the_status_and_operation() {
        let err = map_error("create container", "container c", server(500, "boom"));
        assert_eq!(err.to_string(), "docker: create container failed: boom (HTTP 500)");
    }

    #[test]
    fn overlap_and_removal_in_progress_are_recognised() {
        assert!(is_pool_overlap(&server(
            403,
            "Pool overlaps with other one on this address space"
        )));
        assert!(!is_pool_overlap(&server(500, "boom")));
        assert!(is_removal_in_progress(&server(
            409,
            "removal of container c is already in progress"
        )));
        assert!(!is_removal_in_progress(&server(409, "name in use")));
    }
}
