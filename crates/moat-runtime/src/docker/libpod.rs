//! The one question moat asks Podman outside the Docker-compatible API:
//! whether its service runs rootless. Podman's `/info` does not say (its
//! security options are the same either way); `/libpod/info` does, as
//! `host.security.rootless`. One HTTP/1.0 request on a connection of its
//! own, bounded by the caller.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The request for `/libpod/info` of Podman `version` (its libpod API
/// is versioned like Podman itself; an unversioned path is not served).
fn request(version: &str) -> String {
    format!("GET /v{version}/libpod/info HTTP/1.0\r\nHost: podman\r\nAccept: application/json\r\n\r\n")
}

/// Whether the Podman `version` service at `address` (`unix://…`,
/// `tcp://…`) runs without root.
pub async fn is_rootless(address: &str, version: &str) -> Result<bool, String> {
    let request = request(version);
    let response = match address.strip_prefix("unix://") {
        Some(path) => {
            exchange(
                tokio::net::UnixStream::connect(path).await.map_err(|e| e.to_string())?,
                &request,
            )
            .await?
        }
        None => {
            let host = (address.strip_prefix("tcp://"))
                .or_else(|| address.strip_prefix("http://"))
                .unwrap_or(address)
                .trim_end_matches('/');
            exchange(
                tokio::net::TcpStream::connect(host).await.map_err(|e| e.to_string())?,
                &request,
            )
            .await?
        }
    };
    rootless_in(&response)
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
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("a response without a body")?;
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1) != Some("200") {
        return Err(format!(
            "/libpod/info answered {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    let info: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("/libpod/info: {e}"))?;
    (info.pointer("/host/security/rootless"))
        .and_then(serde_json::Value::as_bool)
        .ok_or_else(|| "/libpod/info does not say whether Podman runs rootless".to_string())
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
    fn an_error_or_a_silent_answer_is_an_error() {
        assert!(rootless_in(b"HTTP/1.0 404 Not Found\r\n\r\nnope").is_err());
        assert!(rootless_in(b"HTTP/1.0 200 OK\r\n\r\n{\"host\":{}}").is_err());
    }
}
