//! What moat reads from Podman as raw JSON rather than through the typed
//! Docker API client: whether its service runs rootless (Podman's `/info`
//! does not say; `/libpod/info` does, as `host.security.rootless`), and a
//! container whose state the client's types do not know (Podman's
//! `stopped`). One HTTP/1.0 request on a connection of its own, bounded by
//! the caller.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The request for `/libpod/info` of Podman `version` (its libpod API
/// is versioned like Podman itself; an unversioned path is not served).
fn request(version: &str) -> String {
    format!("GET /v{version}/libpod/info HTTP/1.0\r\nHost: podman\r\nAccept: application/json\r\n\r\n")
}

/// Whether the Podman `version` service at `address` (`unix://…`,
/// `tcp://…`) runs without root.
pub async fn is_rootless(address: &str, version: &str) -> Result<bool, String> {
    rootless_in(&get(address, &request(version)).await?)
}

/// The inspection of container `id` as JSON, its state named as the
/// Docker API names it: Podman's `stopped` (a container stopped and not
/// yet cleaned up by Podman) is Docker's `exited`.
pub async fn inspect_container(address: &str, id: &str) -> Result<serde_json::Value, String> {
    let request = format!("GET /containers/{id}/json HTTP/1.0\r\nHost: podman\r\nAccept: application/json\r\n\r\n");
    let mut inspection = json_body(&get(address, &request).await?, "container inspection")?;
    docker_state(&mut inspection);
    Ok(inspection)
}

/// The containers (running or not) matching `filters` (the Docker API's
/// `filters` map), as JSON, each state named as the Docker API names it.
pub async fn list_containers(
    address: &str,
    filters: &std::collections::HashMap<String, Vec<String>>,
) -> Result<Vec<serde_json::Value>, String> {
    let request = list_request(filters)?;
    let listed = json_body(&get(address, &request).await?, "container list")?;
    let serde_json::Value::Array(mut containers) = listed else {
        return Err("the container list is not a JSON array".to_string());
    };
    for container in &mut containers {
        rename_stopped(container.get_mut("State"));
    }
    Ok(containers)
}

/// The request listing all containers matching `filters`.
fn list_request(filters: &std::collections::HashMap<String, Vec<String>>) -> Result<String, String> {
    let filters = serde_json::to_string(filters).map_err(|e| e.to_string())?;
    let filters = percent_encoding::utf8_percent_encode(&filters, percent_encoding::NON_ALPHANUMERIC);
    Ok(format!(
        "GET /containers/json?all=true&filters={filters} HTTP/1.0\r\nHost: podman\r\nAccept: application/json\r\n\r\n"
    ))
}

/// Renames the states Podman reports that Docker's API does not have.
fn docker_state(inspection: &mut serde_json::Value) {
    rename_stopped(inspection.pointer_mut("/State/Status"));
}

/// Podman's `stopped` (stopped, not yet cleaned up) is Docker's `exited`.
fn rename_stopped(state: Option<&mut serde_json::Value>) {
    if let Some(state) = state
        && state.as_str() == Some("stopped")
    {
        *state = serde_json::Value::from("exited");
    }
}

/// The response to `request` from the service at `address`.
async fn get(address: &str, request: &str) -> Result<Vec<u8>, String> {
    match address.strip_prefix("unix://") {
        Some(path) => {
            exchange(
                tokio::net::UnixStream::connect(path).await.map_err(|e| e.to_string())?,
                request,
            )
            .await
        }
        None => {
            let host = (address.strip_prefix("tcp://"))
                .or_else(|| address.strip_prefix("http://"))
                .unwrap_or(address)
                .trim_end_matches('/');
            exchange(
                tokio::net::TcpStream::connect(host).await.map_err(|e| e.to_string())?,
                request,
            )
            .await
        }
    }
}

async fn exchange(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    request: &str,
) -> Result<Vec<u8>, String> {
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.map_err(|e| e.to_string())?;
    Ok(response)
}

/// `host.security.rootless` of a `/libpod/info` response (status line,
/// headers, JSON body).
fn rootless_in(response: &[u8]) -> Result<bool, String> {
    let info = json_body(response, "/libpod/info")?;
    (info.pointer("/host/security/rootless"))
        .and_then(serde_json::Value::as_bool)
        .ok_or_else(|| "/libpod/info does not say whether Podman runs rootless".to_string())
}

/// The JSON body of a `200` response (status line, headers, body) to the
/// request for `what`.
fn json_body(response: &[u8], what: &str) -> Result<serde_json::Value, String> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("a response without a body")?;
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{what} answered {}", head.lines().next().unwrap_or_default()));
    }
    serde_json::from_str(body).map_err(|e| format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_carries_podmans_version() {
        assert!(request("4.3.1").starts_with("GET /v4.3.1/libpod/info HTTP/1.0\r\n"));
    }

    #[test]
    fn the_rootless_flag_is_read_from_the_host_security_section() {
        let answer = |rootless: bool| {
            format!(
                "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{{\"host\":{{\"security\":{{\"rootless\":{rootless}}}}}}}"
            )
        };
        assert_eq!(rootless_in(answer(true).as_bytes()), Ok(true));
        assert_eq!(rootless_in(answer(false).as_bytes()), Ok(false));
    }

    #[test]
    fn podmans_stopped_state_is_dockers_exited() {
        let mut inspection = serde_json::json!({"Id": "c1", "State": {"Status": "stopped", "ExitCode": 3}});
        docker_state(&mut inspection);
        assert_eq!(inspection["State"]["Status"], "exited");
        let typed: bollard::models::ContainerInspectResponse = serde_json::from_value(inspection).unwrap();
        let state = typed.state.unwrap();
        assert_eq!(state.status, Some(bollard::models::ContainerStateStatusEnum::EXITED));
        assert_eq!(state.exit_code, Some(3));
        let mut running = serde_json::json!({"State": {"Status": "running"}});
        docker_state(&mut running);
        assert_eq!(running["State"]["Status"], "running");
    }

    #[test]
    fn a_listing_asks_for_every_container_matching_the_encoded_filters() {
        let filters =
            std::collections::HashMap::from([("label".to_string(), vec!["dev.moat.managed=true".to_string()])]);
        let request = list_request(&filters).unwrap();
        assert!(
            request.starts_with(
                "GET /containers/json?all=true&filters=%7B%22label%22%3A%5B%22dev%2Emoat%2Emanaged%3Dtrue%22%5D%7D HTTP/1.0\r\n"
            ),
            "{request}"
        );
    }

    #[test]
    fn podmans_stopped_state_in_a_listing_is_dockers_exited() {
        let mut listed = serde_json::json!([
            {"Id": "c1", "Names": ["/a"], "State": "stopped", "Labels": {"dev.moat.managed": "true"}},
            {"Id": "c2", "Names": ["/b"], "State": "running"}
        ]);
        for container in listed.as_array_mut().unwrap() {
            rename_stopped(container.get_mut("State"));
        }
        let typed: Vec<bollard::models::ContainerSummary> = serde_json::from_value(listed).unwrap();
        assert_eq!(typed[0].state, Some(bollard::models::ContainerSummaryStateEnum::EXITED));
        assert_eq!(
            typed[1].state,
            Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
        );
    }

    #[test]
    fn an_error_or_a_silent_answer_is_an_error() {
        assert!(rootless_in(b"HTTP/1.0 404 Not Found\r\n\r\nnope").is_err());
        assert!(rootless_in(b"HTTP/1.0 200 OK\r\n\r\n{\"host\":{}}").is_err());
    }
}
