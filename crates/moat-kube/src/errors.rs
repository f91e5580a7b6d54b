//! Kubernetes API failures as moat's typed runtime errors, each saying
//! what was refused and what to do about it (403: RBAC, 409: a name in
//! use, 410: an expired watch, unreachable servers: the kubeconfig).

use moat_runtime::{RuntimeError, RuntimeKind};

pub(crate) const KUBERNETES: RuntimeKind = RuntimeKind::Kubernetes;

/// `err` from `op` on `what` in `namespace`.
pub(crate) fn map_error(op: &str, what: &str, namespace: &str, err: kube::Error) -> RuntimeError {
    match err {
        kube::Error::Api(status) => from_status(op, what, namespace, status.code, &status.message),
        kube::Error::HyperError(e) => unreachable(&e.to_string()),
        kube::Error::Service(e) => unreachable(&e.to_string()),
        other => RuntimeError::Other {
            runtime: KUBERNETES,
            op: op.to_string(),
            message: other.to_string(),
        },
    }
}

fn unreachable(reason: &str) -> RuntimeError {
    RuntimeError::Unavailable {
        runtime: KUBERNETES,
        reason: format!("cannot reach the API server ({reason}); check the kubeconfig's context and server"),
    }
}

/// An API answer with HTTP status `code`.
pub(crate) fn from_status(op: &str, what: &str, namespace: &str, code: u16, message: &str) -> RuntimeError {
    let other = |message: String| RuntimeError::Other {
        runtime: KUBERNETES,
        op: op.to_string(),
        message,
    };
    match code {
        404 => RuntimeError::NotFound {
            runtime: KUBERNETES,
            what: format!("{what} in namespace {namespace}"),
        },
        401 => RuntimeError::Unavailable {
            runtime: KUBERNETES,
            reason: format!("the API server does not accept the kubeconfig's credentials ({message}); log in again"),
        },
        403 => other(format!(
            "forbidden: the kubeconfig's user may not do this in namespace {namespace} ({message}); \
             grant it the RBAC verbs listed in docs/kubernetes.md"
        )),
        409 => other(format!(
            "conflict: {what} already exists in namespace {namespace} ({message}); remove it or let `moat clean` reap it"
        )),
        410 => other(format!(
            "gone: the API server expired the resource version this call used ({message})"
        )),
        _ => other(format!("the API server answered {code}: {message}")),
    }
}

/// A missing object is success for removals.
pub(crate) fn missing_is_ok(result: Result<(), RuntimeError>) -> Result<(), RuntimeError> {
    match result {
        Err(err) if err.is_not_found() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_says_what_to_do() {
        let forbidden = from_status("create pod run-1", "pod run-1", "agents", 403, "pods is forbidden").to_string();
        assert!(
            forbidden.contains("forbidden") && forbidden.contains("RBAC"),
            "{forbidden}"
        );
        assert!(forbidden.contains("namespace agents"), "{forbidden}");
        let conflict = from_status("create pod run-1", "pod run-1", "agents", 409, "exists").to_string();
        assert!(conflict.contains("already exists"), "{conflict}");
        assert!(from_status("get", "pod x", "ns", 404, "").is_not_found());
    }
}
