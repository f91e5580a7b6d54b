//! Reaching the namespace proxy's control API from outside the cluster: a
//! ready proxy pod, then the API server's port-forward to its control port,
//! opened as a WebSocket with the kubeconfig's credentials (docs/kubernetes.md,
//! "The in-cluster proxy").

use hyper::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::client::Body;
use moat_runtime::{RuntimeError, RuntimeResult, bounded};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::KubeRuntime;
use crate::errors::{KUBERNETES, from_status};
use crate::names::PROXY_POD_LABEL;
use crate::port_forward::{PROTOCOL, ProxyControlStream};
use crate::proxy_manifest::{CONTROL_PORT, PROXY_CONTAINER};

impl KubeRuntime {
    /// A byte stream to the control API of a ready pod of the namespace's
    /// proxy (its port 8443), through the API server's port-forward: the
    /// kubeconfig's user needs `create` (older API servers: `get`) on
    /// `pods/portforward`. Opening it is
    /// bounded by the call timeout; the stream then lasts until either side
    /// closes it.
    pub async fn open_proxy_control(&self) -> RuntimeResult<ProxyControlStream> {
        let op = format!(
            "open a port-forward to port {CONTROL_PORT} of the moat proxy in namespace {}",
            self.namespace
        );
        // Boxed: the API calls' futures are large.
        bounded(
            KUBERNETES,
            &op,
            self.timeouts.call,
            Box::pin(self.forward_control_port(&op)),
        )
        .await
    }

    async fn forward_control_port(&self, op: &str) -> RuntimeResult<ProxyControlStream> {
        let pod = self.ready_proxy_pod(op).await?;
        let port = CONTROL_PORT as u16;
        let key = generate_key();
        let request = port_forward_request(&self.namespace, &pod, port, &key).map_err(|e| self.refused(op, e))?;
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| self.error(op, &format!("pod {pod}"), e))?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(self.port_forward_refusal(op, &pod, response).await);
        }
        check_handshake(&response, &key).map_err(|e| self.refused(op, e))?;
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| self.refused(op, format!("the API server's upgrade to a WebSocket failed: {e}")))?;
        let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
        Ok(ProxyControlStream::over(socket, port))
    }

    /// The name of a running proxy pod whose container is ready.
    async fn ready_proxy_pod(&self, op: &str) -> RuntimeResult<String> {
        let selector = format!("{}={}", PROXY_POD_LABEL.0, PROXY_POD_LABEL.1);
        let pods = self.pods_with(&selector).await?;
        pods.iter()
            .find(|pod| is_ready(pod))
            .and_then(|pod| pod.metadata.name.clone())
            .ok_or_else(|| {
                self.refused(
                    op,
                    format!(
                        "no ready moat-proxy pod in namespace {ns}; deploy the proxy, or see why it is not \
                         ready with `kubectl -n {ns} get pods -l {selector}`",
                        ns = self.namespace
                    ),
                )
            })
    }

    /// The API server's answer other than 101, with its Status's message.
    async fn port_forward_refusal(&self, op: &str, pod: &str, response: Response<Body>) -> RuntimeError {
        let code = response.status().as_u16();
        let body = response.into_body().collect_bytes().await.unwrap_or_default();
        let message = serde_json::from_slice::<kube::core::Status>(&body)
            .map_or_else(|_| String::from_utf8_lossy(&body).into_owned(), |status| status.message);
        if code == 403 {
            return self.refused(
                op,
                format!(
                    "forbidden: the kubeconfig's user may not open a port-forward (pods/portforward) in namespace {} ({message}); \
                     grant it the RBAC verbs `create` and `get` on `pods/portforward` (docs/kubernetes.md, RBAC)",
                    self.namespace
                ),
            );
        }
        from_status(op, &format!("pod {pod}"), &self.namespace, code, &message)
    }

    fn refused(&self, op: &str, message: String) -> RuntimeError {
        RuntimeError::Other {
            runtime: KUBERNETES,
            op: op.to_string(),
            message,
        }
    }
}

/// Running, not being deleted, and ready (its Ready condition, or its
/// proxy container's status).
fn is_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    let condition_ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let container_ready = status
        .container_statuses
        .iter()
        .flatten()
        .any(|c| c.name == PROXY_CONTAINER && c.ready);
    status.phase.as_deref() == Some("Running")
        && pod.metadata.deletion_timestamp.is_none()
        && (condition_ready || container_ready)
}

/// The WebSocket upgrade request of a port-forward of `port` of `pod`.
fn port_forward_request(namespace: &str, pod: &str, port: u16, key: &str) -> Result<Request<Body>, String> {
    Request::get(format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}/portforward?ports={port}"
    ))
    .header(CONNECTION, "Upgrade")
    .header(UPGRADE, "websocket")
    .header(SEC_WEBSOCKET_VERSION, "13")
    .header(SEC_WEBSOCKET_KEY, key)
    .header(SEC_WEBSOCKET_PROTOCOL, PROTOCOL)
    .body(Body::from(Vec::new()))
    .map_err(|e| format!("cannot build the port-forward request: {e}"))
}

/// The 101's proof that it answers our key, and the protocol we asked for.
fn check_handshake(response: &Response<Body>, key: &str) -> Result<(), String> {
    let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
    if header(SEC_WEBSOCKET_ACCEPT) != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err("the API server's WebSocket answer does not match the request's key".into());
    }
    match header(SEC_WEBSOCKET_PROTOCOL) {
        Some(PROTOCOL) => Ok(()),
        other => Err(format!(
            "the API server answered the port-forward with protocol {} instead of {PROTOCOL}",
            other.unwrap_or("(none)")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "moat-proxy-0"}, "status": status})).unwrap()
    }

    #[test]
    fn only_a_running_ready_pod_is_chosen() {
        let ready_condition = serde_json::json!([{"type": "Ready", "status": "True"}]);
        let ready_container = serde_json::json!([{"name": "proxy", "image": "", "imageID": "", "ready": true,
            "restartCount": 0}]);
        assert!(is_ready(&pod(
            serde_json::json!({"phase": "Running", "conditions": ready_condition})
        )));
        assert!(is_ready(&pod(
            serde_json::json!({"phase": "Running", "containerStatuses": ready_container})
        )));
        assert!(!is_ready(&pod(
            serde_json::json!({"phase": "Pending", "conditions": ready_condition})
        )));
        assert!(!is_ready(&pod(serde_json::json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}]}))));
    }
}
