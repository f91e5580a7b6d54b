//! The typed API client the CLI uses. Errors are classified so the user
//! reads "daemon not running" or "timed out", not a socket errno.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use moat_core::RunId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::suggestion::Suggestion;
use crate::sweep::{SweepReport, SweepRequest};
use crate::terminal::{Frame, Open, UPGRADE_PROTOCOL, write_frame};
use crate::wire::{
    AddGrantsRequest, AddedGrants, ApiError, AttachEvent, CreateEvent, CreateRunResponse, ExecRequest, ExecResult,
    Health, NDJSON, RunSpec, RunView, RuntimeCheck, StopRequest,
};
use hyper::upgrade::Upgraded;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Run creation may build moat's base image (the daemon bounds that at 11
/// minutes), then create a network twice with a sweep between, and a
/// container; the daemon answers within its own, shorter deadlines. The
/// answer's head must come within [`CALL_TIMEOUT`].
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(840);
/// A sweep may wait for another (150 s) and take up to 2 minutes itself.
const REAP_TIMEOUT: Duration = Duration::from_secs(300);
/// A graceful stop waits for the grace period and the kill.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The daemon bounds an exec by `server::EXEC_TIMEOUT`; allow for its answer.
const EXEC_TIMEOUT: Duration = Duration::from_secs(630);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the moat daemon is not running (no answer on {0})")]
    NotRunning(PathBuf),
    /// The socket is there but cannot be used (permissions, a file that is
    /// not a socket): a daemon may live behind it, so it is not "down".
    #[error("cannot connect to the moat daemon on {socket}: {source}")]
    Unreachable { socket: PathBuf, source: std::io::Error },
    #[error("the moat daemon did not answer {op} within {after:?}")]
    Timeout { op: String, after: Duration },
    #[error("{}", .0.error)]
    Api(ApiError, StatusCode),
    #[error("unexpected answer from the moat daemon to {op}: {detail}")]
    Protocol { op: String, detail: String },
}

impl ClientError {
    pub fn hint(&self) -> Option<&str> {
        match self {
            ClientError::Api(e, _) => e.hint.as_deref(),
            ClientError::Timeout { .. } => {
                Some("check `moat daemon status`; `moat daemon restart` replaces a wedged daemon")
            }
            _ => None,
        }
    }

    /// The daemon refused because it is exiting; a new one can be started.
    pub fn is_shutting_down(&self) -> bool {
        self.status() == Some(StatusCode::SERVICE_UNAVAILABLE) && self.to_string().contains("shutting down")
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api(_, status) => Some(*status),
            _ => None,
        }
    }
}

/// A connection upgraded to the terminal protocol (`terminal.rs`).
pub type TerminalConnection = TokioIo<Upgraded>;

/// A client for one daemon socket.
#[derive(Clone, Debug)]
pub struct DaemonClient {
    socket: PathBuf,
}

impl DaemonClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        DaemonClient { socket: socket.into() }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(Method::GET, "/v1/health", None::<&()>, HEALTH_TIMEOUT).await
    }

    /// The narrowest rules that would have allowed what run `id` did.
    pub async fn suggest_policy(&self, id: &RunId) -> Result<Suggestion, ClientError> {
        let path = format!("/v1/runs/{id}/suggestion");
        self.call(Method::GET, &path, None::<&()>, CALL_TIMEOUT).await
    }

    /// The container runtime as the daemon sees it.
    pub async fn runtime_check(&self) -> Result<RuntimeCheck, ClientError> {
        self.call(Method::GET, "/v1/runtime", None::<&()>, CALL_TIMEOUT).await
    }

    pub async fn create_run(&self, spec: &RunSpec) -> Result<CreateRunResponse, ClientError> {
        self.create_run_with_progress(spec, |_| {}).await
    }

    /// Creates a run; `on_progress` gets the daemon's progress lines as they
    /// come (e.g. while it sweeps orphans to make room for the run's
    /// network). A daemon that does not stream answers with one object.
    pub async fn create_run_with_progress(
        &self,
        spec: &RunSpec,
        mut on_progress: impl FnMut(&str),
    ) -> Result<CreateRunResponse, ClientError> {
        let op = "POST /v1/runs".to_string();
        let payload = Bytes::from(serde_json::to_vec(spec).map_err(|e| protocol(&op, e))?);
        let exchange = async {
            let request = Outgoing {
                method: Method::POST,
                path: "/v1/runs",
                body: payload,
                accept: Some(NDJSON),
            };
            let response = self.send(request, CALL_TIMEOUT, &op).await?;
            let response = check_status(response, &op).await?;
            if !is_ndjson(&response) {
                return json_body(response, &op).await;
            }
            let events = ndjson_events::<CreateEvent>(response.into_body(), op.clone());
            tokio::pin!(events);
            while let Some(event) = events.next().await {
                match event? {
                    CreateEvent::Progress { message } => on_progress(&message),
                    CreateEvent::Created(created) => return Ok(created),
                    CreateEvent::Failed { status, error, hint } => {
                        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                        return Err(ClientError::Api(ApiError { error, hint }, status));
                    }
                }
            }
            Err(protocol(&op, "the answer ended before the run was created or refused"))
        };
        within(CREATE_TIMEOUT, &op, exchange).await
    }

    pub async fn list_runs(&self) -> Result<Vec<RunView>, ClientError> {
        self.call(Method::GET, "/v1/runs", None::<&()>, CALL_TIMEOUT).await
    }

    pub async fn stop_run(&self, id: &RunId, kill: bool) -> Result<RunView, ClientError> {
        let path = format!("/v1/runs/{id}/stop");
        self.call(Method::POST, &path, Some(&StopRequest { kill }), STOP_TIMEOUT)
            .await
    }

    /// Deletes a finished run's record; refused (409) while the daemon may
    /// still own anything of the run.
    pub async fn destroy_run(&self, id: &RunId) -> Result<serde_json::Value, ClientError> {
        let path = format!("/v1/runs/{id}");
        self.call(Method::DELETE, &path, None::<&()>, STOP_TIMEOUT).await
    }

    /// Runs `command` in a live run's container; its whole output comes back
    /// once it ends (lossy UTF-8). Bounded by 10 minutes on the daemon side.
    pub async fn exec(&self, id: &RunId, command: &[String]) -> Result<ExecResult, ClientError> {
        let path = format!("/v1/runs/{id}/exec");
        let request = ExecRequest {
            command: command.to_vec(),
        };
        self.call(Method::POST, &path, Some(&request), EXEC_TIMEOUT).await
    }

    /// Asks for a sweep now (waits for one in progress first).
    pub async fn reap(&self, request: &SweepRequest) -> Result<SweepReport, ClientError> {
        self.call(Method::POST, "/v1/maintenance/reap", Some(request), REAP_TIMEOUT)
            .await
    }

    /// Removes the images moat built that no run used lately.
    pub async fn prune_images(
        &self,
        request: &crate::images::ImagePruneRequest,
    ) -> Result<crate::images::ImagePruneReport, ClientError> {
        self.call(
            Method::POST,
            "/v1/maintenance/images/prune",
            Some(request),
            REAP_TIMEOUT,
        )
        .await
    }

    /// Tells the daemon credentials changed so live runs pick it up.
    /// Adds grants and hosts to a live run (`moat join`), or with
    /// `dry_run` says what would be added.
    pub async fn add_grants(&self, id: &RunId, request: &AddGrantsRequest) -> Result<AddedGrants, ClientError> {
        let path = format!("/v1/runs/{id}/grants");
        self.call(Method::POST, &path, Some(request), CALL_TIMEOUT).await
    }

    pub async fn refresh_grants(&self) -> Result<serde_json::Value, ClientError> {
        self.call(Method::POST, "/v1/grants/refresh", None::<&()>, CALL_TIMEOUT)
            .await
    }

    pub async fn shutdown(&self) -> Result<serde_json::Value, ClientError> {
        self.call(Method::POST, "/v1/shutdown", None::<&()>, CALL_TIMEOUT).await
    }

    /// Streams a run's output events until its exit event. Only the
    /// connection is bounded: a run may go on for days.
    pub async fn attach(
        &self,
        id: &RunId,
    ) -> Result<impl Stream<Item = Result<AttachEvent, ClientError>> + use<>, ClientError> {
        let op = format!("attach {id}");
        let path = format!("/v1/runs/{id}/attach");
        let request = Outgoing {
            method: Method::GET,
            path: &path,
            body: Bytes::new(),
            accept: None,
        };
        let response = self.send(request, CALL_TIMEOUT, &op).await?;
        let response = check_status(response, &op).await?;
        Ok(ndjson_events(response.into_body(), op))
    }

    /// Joins an interactive run's terminal (`open` is an attach) or runs a
    /// command with a terminal (`open` is an exec): the connection, upgraded
    /// to the terminal protocol, with the `open` frame sent. Only the
    /// upgrade is bounded: a session may last for days.
    pub async fn terminal(&self, id: &RunId, open: &Open) -> Result<TerminalConnection, ClientError> {
        let path = match open {
            Open::Attach { .. } => format!("/v1/runs/{id}/terminal"),
            Open::Exec { .. } => format!("/v1/runs/{id}/exec/terminal"),
        };
        let op = format!("open the terminal of {id}");
        let upgrading = async {
            let stream = self.connect().await?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| protocol(&op, e))?;
            tokio::spawn(async move {
                let _ = connection.with_upgrades().await;
            });
            let request = Request::builder()
                .method(Method::GET)
                .uri(&path)
                .header("host", "moat-daemon")
                .header(hyper::header::CONNECTION, "upgrade")
                .header(hyper::header::UPGRADE, UPGRADE_PROTOCOL)
                .body(Full::new(Bytes::new()))
                .map_err(|e| protocol(&op, e))?;
            let response = sender.send_request(request).await.map_err(|e| protocol(&op, e))?;
            if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                let response = check_status(response, &op).await?;
                return Err(protocol(
                    &op,
                    format!("answered {} instead of upgrading", response.status()),
                ));
            }
            let upgraded = hyper::upgrade::on(response).await.map_err(|e| protocol(&op, e))?;
            let mut io = TokioIo::new(upgraded);
            write_frame(&mut io, &Frame::Open(open.clone()))
                .await
                .map_err(|e| protocol(&op, e))?;
            Ok(io)
        };
        within(CALL_TIMEOUT, &op, upgrading).await
    }

    async fn connect(&self) -> Result<UnixStream, ClientError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.socket)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) if is_absent(&e) => Err(ClientError::NotRunning(self.socket.clone())),
            Ok(Err(source)) => Err(ClientError::Unreachable {
                socket: self.socket.clone(),
                source,
            }),
            Err(_) => Err(ClientError::Timeout {
                op: format!("connect to {}", self.socket.display()),
                after: CONNECT_TIMEOUT,
            }),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let op = format!("{method} {path}");
        let payload = match body {
            Some(body) => Bytes::from(serde_json::to_vec(body).map_err(|e| protocol(&op, e))?),
            None => Bytes::new(),
        };
        let exchange = async {
            let request = Outgoing {
                method,
                path,
                body: payload,
                accept: None,
            };
            let response = self.send(request, timeout, &op).await?;
            let response = check_status(response, &op).await?;
            json_body(response, &op).await
        };
        within(timeout, &op, exchange).await
    }

    async fn send(
        &self,
        outgoing: Outgoing<'_>,
        timeout: Duration,
        op: &str,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream = self.connect().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| protocol(op, e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(outgoing.method)
            .uri(outgoing.path)
            .header("host", "moat-daemon")
            .header("content-type", "application/json");
        if let Some(accept) = outgoing.accept {
            request = request.header("accept", accept);
        }
        let request = request.body(Full::new(outgoing.body)).map_err(|e| protocol(op, e))?;
        match tokio::time::timeout(timeout, sender.send_request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(protocol(op, e)),
            Err(_) => Err(ClientError::Timeout {
                op: op.to_string(),
                after: timeout,
            }),
        }
    }
}

/// One request to the daemon.
struct Outgoing<'a> {
    method: Method,
    path: &'a str,
    body: Bytes,
    /// Media type asked for, when not plain JSON.
    accept: Option<&'static str>,
}

fn is_ndjson(response: &Response<Incoming>) -> bool {
    response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(NDJSON))
}

/// Bounds a whole exchange (connect, request, answer) by `limit`.
async fn within<T>(
    limit: Duration,
    op: &str,
    exchange: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| ClientError::Timeout {
            op: op.to_string(),
            after: limit,
        })?
}

/// Reads a whole response body.
async fn body_bytes(response: Response<Incoming>, op: &str) -> Result<Bytes, ClientError> {
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(|e| protocol(op, e))?
        .to_bytes())
}

/// Reads a whole response body as JSON.
async fn json_body<T: DeserializeOwned>(response: Response<Incoming>, op: &str) -> Result<T, ClientError> {
    let bytes = body_bytes(response, op).await?;
    serde_json::from_slice(&bytes).map_err(|e| protocol(op, e))
}

async fn check_status(response: Response<Incoming>, op: &str) -> Result<Response<Incoming>, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let bytes = body_bytes(response, op).await?;
    let error = serde_json::from_slice::<ApiError>(&bytes).unwrap_or_else(|_| ApiError {
        error: format!("{op} failed with {status}: {}", String::from_utf8_lossy(&bytes)),
        hint: None,
    });
    Err(ClientError::Api(error, status))
}

fn protocol(op: &str, detail: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol {
        op: op.to_string(),
        detail: detail.to_string(),
    }
}

/// Splits a streaming body into JSON lines.
fn ndjson_events<T: DeserializeOwned>(body: Incoming, op: String) -> impl Stream<Item = Result<T, ClientError>> {
    struct State {
        body: Incoming,
        buffer: Vec<u8>,
        op: String,
        done: bool,
    }
    futures_util::stream::unfold(
        State {
            body,
            buffer: Vec::new(),
            op,
            done: false,
        },
        |mut state| async move {
            loop {
                if let Some(pos) = state.buffer.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = state.buffer.drain(..=pos).collect();
                    let event = serde_json::from_slice(&line[..line.len() - 1]).map_err(|e| protocol(&state.op, e));
                    return Some((event, state));
                }
                if state.done {
                    return None;
                }
                match state.body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            state.buffer.extend_from_slice(&data);
                        }
                    }
                    Some(Err(e)) => {
                        state.done = true;
                        let error = protocol(&state.op, e);
                        return Some((Err(error), state));
                    }
                    None => state.done = true,
                }
            }
        },
    )
}

/// No socket, or nobody listening on it: no daemon.
fn is_absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}
