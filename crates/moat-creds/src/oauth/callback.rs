//! The loopback redirect of the browser flow (RFC 8252): a listener on
//! `127.0.0.1` with a random port that takes exactly one callback, checks
//! its `state`, and gives back the authorization code. Requests for other
//! paths are answered 404 and do not count; the wait is bounded.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

use super::OauthError;

/// The path of the redirect URI.
pub const CALLBACK_PATH: &str = "/callback";
/// How long a browser may take to finish a login.
pub const CALLBACK_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on reading one request from a connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head read.
const MAX_REQUEST: usize = 16 * 1024;

/// A bound listener waiting for the one callback.
#[derive(Debug)]
pub struct Callback {
    listener: TcpListener,
    redirect_uri: String,
}

impl Callback {
    /// Listens on `127.0.0.1` with a port the system picks.
    pub async fn bind() -> Result<Self, OauthError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| OauthError::Callback(format!("cannot listen on 127.0.0.1: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| OauthError::Callback(e.to_string()))?
            .port();
        Ok(Callback {
            listener,
            redirect_uri: format!("http://127.0.0.1:{port}{CALLBACK_PATH}"),
        })
    }

    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits (at most `timeout`) for the callback and returns its code;
    /// the listener is closed afterwards, whatever the outcome.
    pub async fn wait(self, expected_state: &str, timeout: Duration) -> Result<String, OauthError> {
        let waiting = async {
            loop {
                let (stream, _) = self
                    .listener
                    .accept()
                    .await
                    .map_err(|e| OauthError::Callback(format!("accepting the callback failed: {e}")))?;
                if let Some(outcome) = answer(stream, expected_state).await {
                    return outcome;
                }
            }
        };
        match tokio::time::timeout(timeout, waiting).await {
            Ok(outcome) => outcome,
            Err(_) => Err(OauthError::Callback(format!(
                "no callback on {} within {timeout:?}",
                self.redirect_uri
            ))),
        }
    }
}

/// Handles one connection: `None` when it was not the callback.
async fn answer(mut stream: TcpStream, expected_state: &str) -> Option<Result<String, OauthError>> {
    let Ok(Some(target)) = tokio::time::timeout(REQUEST_TIMEOUT, read_target(&mut stream)).await else {
        return None;
    };
    let Ok(url) = Url::parse("http://127.0.0.1").and_then(|base| base.join(&target)) else {
        respond(&mut stream, 400, "Bad request.").await;
        return None;
    };
    if url.path() != CALLBACK_PATH {
        respond(&mut stream, 404, "Not found.").await;
        return None;
    }
    let outcome = outcome_of(&url, expected_state);
    match &outcome {
        Ok(_) => respond(&mut stream, 200, "moat is authorized; you can close this page.").await,
        Err(e) => respond(&mut stream, 400, &format!("moat was not authorized: {e}")).await,
    }
    Some(outcome)
}

/// The code of a callback URL whose `state` is the expected one.
fn outcome_of(url: &Url, expected_state: &str) -> Result<String, OauthError> {
    let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    if param("state").as_deref() != Some(expected_state) {
        return Err(OauthError::StateMismatch);
    }
    if let Some(error) = param("error") {
        return Err(OauthError::Issuer {
            error,
            description: param("error_description"),
        });
    }
    param("code")
        .filter(|code| !code.is_empty())
        .ok_or_else(|| OauthError::Callback("the callback carried no code".into()))
}

/// The request target of a GET (`/callback?…`), or `None`.
async fn read_target(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 || head.len() + read > MAX_REQUEST {
            return None;
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.lines().next()?.split(' ');
    match (words.next(), words.next()) {
        (Some("GET"), Some(target)) => Some(target.to_owned()),
        _ => None,
    }
}

async fn respond(stream: &mut TcpStream, status: u16, message: &str) {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Bad Request",
    };
    let body = format!("<!doctype html><title>moat</title><p>{}</p>\n", html_escape(message));
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = stream.write_all(response.as_bytes()).await {
        tracing::debug!("answering the oauth callback failed: {e}");
    }
    let _ = stream.shutdown().await;
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(uri: &str, path_and_query: &str) -> String {
        let addr = uri.trim_start_matches("http://").split('/').next().unwrap().to_owned();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path_and_query} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn one_callback_with_the_right_state_gives_the_code() {
        let callback = Callback::bind().await.unwrap();
        let uri = callback.redirect_uri().to_owned();
        let waiting = tokio::spawn(callback.wait("s-123", Duration::from_secs(10)));
        assert!(get(&uri, "/favicon.ico").await.starts_with("HTTP/1.1 404"));
        let answer = get(&uri, "/callback?code=c-9&state=s-123").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(waiting.await.unwrap().unwrap(), "c-9");
        let addr = uri.trim_start_matches("http://").split('/').next().unwrap().to_owned();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the listener is closed after one callback"
        );
    }

    /// Attack: a page the user visits fires a forged callback at the port.
    #[tokio::test]
    async fn a_callback_with_another_state_fails_the_flow() {
        let callback = Callback::bind().await.unwrap();
        let uri = callback.redirect_uri().to_owned();
        let waiting = tokio::spawn(callback.wait("s-123", Duration::from_secs(10)));
        let answer = get(&uri, "/callback?code=forged&state=guess").await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(matches!(waiting.await.unwrap(), Err(OauthError::StateMismatch)));
    }

    #[tokio::test]
    async fn the_issuer_refusing_and_silence_are_errors() {
        let callback = Callback::bind().await.unwrap();
        let uri = callback.redirect_uri().to_owned();
        let waiting = tokio::spawn(callback.wait("s", Duration::from_secs(10)));
        get(&uri, "/callback?error=access_denied&state=s").await;
        let err = waiting.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("access_denied"), "{err}");
        let silent = Callback::bind().await.unwrap();
        let err = silent.wait("s", Duration::from_millis(50)).await.unwrap_err();
        assert!(err.to_string().contains("no callback"), "{err}");
    }
}
