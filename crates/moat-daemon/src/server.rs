//! The API server: HTTP/1.1 + JSON over the daemon's Unix socket
//! (daemon-and-reaper.md §2). The socket (0600 in a 0700 directory) is the
//! only authentication; the API is never served over TCP.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use moat_core::RunId;
use serde::Serialize;
use tokio::net::UnixListener;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream_shim::channel_stream;

use crate::api::{
    API_VERSION, AddGrantsRequest, ApiError, AttachEvent, CAPABILITIES, CreateEvent, CreateRunResponse, ExecRequest,
    ExecResult, Health, NDJSON, RunSpec, StopRequest,
};
use crate::audit::Event;
use crate::network::NetworkError;
use crate::progress::Progress;
use crate::reaper::SweepRequest;
use crate::state::Daemon;
use crate::supervisor::{self, CreatedRun, RunError};
use moat_api::terminal::UPGRADE_PROTOCOL as TERMINAL_PROTOCOL;

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Lines of a finished run's log replayed to a client that attaches after
/// the daemon has let go of the run's live output.
const FINISHED_REPLAY_LINES: usize = 1000;
/// Bound on reading a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one `exec` in a run's container (the runtime may bound it sooner).
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(600);

pub type Body = BoxBody<Bytes, Infallible>;

/// Accepts connections until the daemon shuts down.
pub async fn serve(daemon: Daemon, listener: UnixListener) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accepting an API connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = daemon.shutdown_token().cancelled() => return,
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| route(daemon.clone(), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                tracing::debug!("API connection ended: {e}");
            }
        });
    }
}

async fn route(daemon: Daemon, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let response = match (&method, segments.as_slice()) {
        (&Method::GET, ["v1", "health"]) => json(StatusCode::OK, &health(&daemon)),
        (&Method::GET, ["v1", "runtime"]) => json(StatusCode::OK, &crate::probe::check_docker().await),
        (&Method::POST, ["v1", "runs"]) => create(&daemon, req).await,
        (&Method::GET, ["v1", "runs"]) => {
            let views: Vec<_> = daemon
                .registry()
                .all()
                .iter()
                .map(|h| h.view(daemon.routing_port()))
                .collect();
            json(StatusCode::OK, &views)
        }
        (&Method::GET, ["v1", "runs", id]) => match live_run(&daemon, id) {
            Ok(handle) => json(StatusCode::OK, &handle.view(daemon.routing_port())),
            Err(reject) => reject.into_response(),
        },
        (&Method::DELETE, ["v1", "runs", id]) => destroy(&daemon, id).await,
        (&Method::GET, ["v1", "runs", id, "suggestion"]) => suggestion(&daemon, id),
        (&Method::POST, ["v1", "runs", id, "stop"]) => stop(&daemon, id, req).await,
        (&Method::GET, ["v1", "runs", id, "attach"]) => attach(&daemon, id),
        (&Method::GET, ["v1", "runs", id, "terminal"]) => terminal(&daemon, id, req, Session::Attach),
        (&Method::GET, ["v1", "runs", id, "exec", "terminal"]) => terminal(&daemon, id, req, Session::Exec),
        (&Method::POST, ["v1", "runs", id, "exec"]) => exec(&daemon, id, req).await,
        (&Method::POST, ["v1", "runs", id, "grants"]) => add_grants(&daemon, id, req).await,
        (&Method::POST, ["v1", "maintenance", "reap"]) => reap(&daemon, req).await,
        (&Method::POST, ["v1", "maintenance", "images", "prune"]) => prune_images(&daemon, req).await,
        (&Method::POST, ["v1", "grants", "refresh"]) => {
            let updated = crate::grants::refresh_live_runs(&daemon);
            daemon.oauth().wake();
            json(StatusCode::OK, &serde_json::json!({"updated_runs": updated}))
        }
        (&Method::POST, ["v1", "shutdown"]) => {
            daemon.begin_shutdown();
            json(StatusCode::ACCEPTED, &serde_json::json!({"shutting_down": true}))
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such API call: {method} {path}"),
            None,
        ),
    };
    Ok(response)
}

fn health(daemon: &Daemon) -> Health {
    let usage = crate::resources::usage();
    Health {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        api_version: API_VERSION,
        capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        proxy_port: daemon.proxy_port(),
        routing_port: daemon.routing_port(),
        live_runs: daemon.registry().len(),
        started_at: daemon.started_at(),
        last_sweep: daemon.reaper().last_report().and_then(|r| serde_json::to_value(r).ok()),
        rss_bytes: usage.rss_bytes,
        open_files: usage.open_files,
        open_files_limit: usage.open_files_limit,
    }
}

/// Creates a run. The answer is one JSON object, or with
/// `accept: application/x-ndjson` a stream of [`CreateEvent`]s: progress
/// lines while a slow step goes on, then the outcome.
async fn create(daemon: &Daemon, req: Request<Incoming>) -> Response<Body> {
    let streamed = accepts_ndjson(&req);
    let spec: RunSpec = match read_json(req).await {
        Ok(spec) => spec,
        Err(reject) => return reject.into_response(),
    };
    let (progress, mut events) = Progress::channel();
    // A client that disconnects (killed CLI) must not cancel the creation:
    // it runs in its own task, which outlives this request.
    tokio::spawn({
        let daemon = daemon.clone();
        async move {
            let created = supervisor::create_run_reporting(&daemon, spec, &progress).await;
            let outcome = create_outcome(&daemon, created);
            progress.finish(outcome).await;
        }
    });
    if streamed {
        let body = StreamBody::new(channel_stream(events).map(|event| Ok(Frame::data(ndjson(&event)))));
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", NDJSON)
            .body(BodyExt::boxed(body))
            .unwrap_or_else(|_| internal_error());
    }
    while let Some(event) = events.recv().await {
        match event {
            CreateEvent::Progress { .. } => {}
            CreateEvent::Created(created) => return json(StatusCode::CREATED, &created),
            CreateEvent::Failed {
                status,
                error: message,
                hint,
            } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return error(status, message, hint);
            }
        }
    }
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "run creation ended without an outcome (see daemon.log)".into(),
        None,
    )
}

fn accepts_ndjson(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.split(',').any(|part| part.trim().starts_with(NDJSON)))
}

/// The last event of a creation's answer.
fn create_outcome(daemon: &Daemon, created: Result<CreatedRun, RunError>) -> CreateEvent {
    match created {
        Ok(CreatedRun {
            run_id,
            notices,
            timings,
        }) => {
            let state = daemon.registry().get(&run_id).map(|h| h.metadata().state);
            let state = state.unwrap_or(moat_core::RunState::Exited);
            CreateEvent::Created(CreateRunResponse {
                run_id,
                state,
                notices,
                timings,
            })
        }
        Err(e) => {
            let (status, body) = run_error_body(e);
            CreateEvent::Failed {
                status: status.as_u16(),
                error: body.error,
                hint: body.hint,
            }
        }
    }
}

async fn reap(daemon: &Daemon, req: Request<Incoming>) -> Response<Body> {
    let request: SweepRequest = match read_json(req).await {
        Ok(request) => request,
        Err(reject) => return reject.into_response(),
    };
    let report = daemon.reaper().sweep(daemon, &request, "on demand").await;
    json(StatusCode::OK, &report)
}

async fn prune_images(daemon: &Daemon, req: Request<Incoming>) -> Response<Body> {
    let request: moat_api::images::ImagePruneRequest = match read_json(req).await {
        Ok(request) => request,
        Err(reject) => return reject.into_response(),
    };
    match crate::image_prune::prune(daemon, &request).await {
        Ok(report) => json(StatusCode::OK, &report),
        Err(e) => run_error(e),
    }
}

/// The narrowest rules that would have allowed what a run did (from its
/// trace; the run may have ended).
fn suggestion(daemon: &Daemon, id: &str) -> Response<Body> {
    let run_id: RunId = match id.parse() {
        Ok(run_id) => run_id,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{e}"), None),
    };
    let run_dir = daemon.store().run_dir(&run_id);
    if !run_dir.is_dir() {
        return error(StatusCode::NOT_FOUND, format!("no run {run_id}"), None);
    }
    let trace = run_dir.join(moat_core::paths::run_files::NETWORK);
    let records = match crate::suggest::read_trace(&trace) {
        Ok(records) => records,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading {}: {e}", trace.display()),
                None,
            );
        }
    };
    match crate::suggest::suggest(&records) {
        Ok(suggestion) => json(StatusCode::OK, &suggestion),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None),
    }
}

async fn destroy(daemon: &Daemon, id: &str) -> Response<Body> {
    let run_id: RunId = match id.parse() {
        Ok(run_id) => run_id,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{e}"), None),
    };
    match crate::records::destroy(daemon, &run_id).await {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({"destroyed": run_id})),
        Err(e) => run_error(e),
    }
}

async fn stop(daemon: &Daemon, id: &str, req: Request<Incoming>) -> Response<Body> {
    let request: StopRequest = match read_json(req).await {
        Ok(request) => request,
        Err(reject) => return reject.into_response(),
    };
    let handle = match live_run(daemon, id) {
        Ok(handle) => handle,
        Err(reject) => return reject.into_response(),
    };
    let stopping = tokio::spawn({
        let daemon = daemon.clone();
        let id = handle.id();
        async move { supervisor::stop_run(&daemon, &id, request.kill).await }
    });
    let Ok(stopped) = stopping.await else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "stopping the run panicked".into(),
            None,
        );
    };
    match stopped {
        Ok(()) => json(StatusCode::ACCEPTED, &handle.view(daemon.routing_port())),
        Err(e) => run_error(e),
    }
}

/// Runs a command in a live run's container and returns its exit code and
/// whole output, bounded by [`EXEC_TIMEOUT`].
async fn exec(daemon: &Daemon, id: &str, req: Request<Incoming>) -> Response<Body> {
    let request: ExecRequest = match read_json(req).await {
        Ok(request) => request,
        Err(reject) => return reject.into_response(),
    };
    if request.command.is_empty() {
        return error(StatusCode::BAD_REQUEST, "exec needs a command".into(), None);
    }
    let handle = match live_run(daemon, id) {
        Ok(handle) => handle,
        Err(reject) => return reject.into_response(),
    };
    let meta = handle.metadata();
    if meta.state != moat_core::RunState::Running {
        return error(
            StatusCode::CONFLICT,
            format!("run {} is {}, not running", meta.id, meta.state),
            None,
        );
    }
    let container = meta.container_id.unwrap_or_else(|| meta.id.to_string());
    daemon.audit().record(&meta.id, Event::exec_started(&request.command));
    let running = async {
        let runtime = daemon.runtimes().for_spec(&handle.spec).await?;
        Ok::<_, RunError>(runtime.exec(&container, &request.command).await?)
    };
    let outcome = tokio::time::timeout(EXEC_TIMEOUT, running).await;
    daemon.audit().record(&meta.id, Event::exec_ended(&outcome));
    match outcome {
        Ok(Ok(output)) => json(
            StatusCode::OK,
            &ExecResult {
                exit_code: output.exit_code,
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            },
        ),
        Ok(Err(e)) => run_error(e),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("exec in run {} did not finish within {EXEC_TIMEOUT:?}", meta.id),
            None,
        ),
    }
}

/// Streams a run's output as newline-delimited [`AttachEvent`]s: a replay of
/// recent output, then live output, then the exit event.
/// `moat join`: adds grants and hosts to a live run (see
/// [`crate::grants::add_to_live_run`]).
async fn add_grants(daemon: &Daemon, id: &str, req: Request<Incoming>) -> Response<Body> {
    let request: AddGrantsRequest = match read_json(req).await {
        Ok(request) => request,
        Err(reject) => return reject.into_response(),
    };
    let handle = match live_run(daemon, id) {
        Ok(handle) => handle,
        Err(reject) => return reject.into_response(),
    };
    match crate::grants::add_to_live_run(daemon, &handle, &request) {
        Ok(added) => json(StatusCode::OK, &added),
        Err(e) => {
            use crate::grants::GrantError;
            let status = match &e {
                GrantError::BadHost { .. } => StatusCode::BAD_REQUEST,
                GrantError::NoProxy { .. } => StatusCode::CONFLICT,
                GrantError::Record(_) | GrantError::Proxy(_) | GrantError::Stage { .. } => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let hint = e.hint();
            error(status, e.to_string(), hint)
        }
    }
}

fn attach(daemon: &Daemon, id: &str) -> Response<Body> {
    let run_id: RunId = match id.parse() {
        Ok(run_id) => run_id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string(), None),
    };
    let live_or_just_finished = daemon
        .registry()
        .get(&run_id)
        .or_else(|| daemon.registry().recently_finished(&run_id));
    let Some(handle) = live_or_just_finished else {
        return finished_run_exit(daemon, &run_id);
    };
    let guard = (daemon.client_attached(), daemon.audit().attachment(&run_id));
    let subscription = handle.output.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<AttachEvent>(256);
    tokio::spawn(async move {
        let _guard = guard;
        for event in subscription.replay {
            if tx.send(event).await.is_err() {
                return;
            }
        }
        if subscription.finished {
            return;
        }
        let mut live = subscription.live;
        loop {
            let event = match live.recv().await {
                Ok(event) => event,
                Err(RecvError::Lagged(n)) => AttachEvent::Truncated { dropped_bytes: n },
                Err(RecvError::Closed) => return,
            };
            let last = matches!(event, AttachEvent::Exit { .. });
            if tx.send(event).await.is_err() || last {
                return;
            }
        }
    });
    let body = StreamBody::new(channel_stream(rx).map(|event| Ok(Frame::data(ndjson(&event)))));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", NDJSON)
        .body(BodyExt::boxed(body))
        .unwrap_or_else(|_| internal_error())
}

/// Which terminal session an upgrade is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Session {
    Attach,
    Exec,
}

/// Upgrades the connection to the terminal protocol (`terminal.rs`) for
/// a live run: joining an interactive run's terminal, or running a command
/// with the connection as its terminal.
fn terminal(daemon: &Daemon, id: &str, mut req: Request<Incoming>, session: Session) -> Response<Body> {
    let asks_upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case(TERMINAL_PROTOCOL));
    if !asks_upgrade {
        return error(
            StatusCode::UPGRADE_REQUIRED,
            format!("this call needs `Upgrade: {TERMINAL_PROTOCOL}`"),
            None,
        );
    }
    let handle = match live_run(daemon, id) {
        Ok(handle) => handle,
        Err(reject) => return reject.into_response(),
    };
    if session == Session::Attach && !handle.spec.interactive {
        return error(
            StatusCode::CONFLICT,
            format!("run {} is not interactive: it has no terminal to join", handle.id()),
            Some("`moat attach` follows its output instead".into()),
        );
    }
    let upgrading = hyper::upgrade::on(&mut req);
    let daemon = daemon.clone();
    tokio::spawn(async move {
        match upgrading.await {
            Ok(upgraded) => {
                let io = TokioIo::new(upgraded);
                crate::terminal_session::serve(daemon, handle, io, session == Session::Attach).await;
            }
            Err(e) => tracing::debug!("terminal upgrade failed: {e}"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(hyper::header::CONNECTION, "upgrade")
        .header(hyper::header::UPGRADE, TERMINAL_PROTOCOL)
        .body(Full::new(Bytes::new()).boxed())
        .unwrap_or_else(|_| internal_error())
}

/// Attach to a run that already left the registry: its recorded end.
fn finished_run_exit(daemon: &Daemon, run_id: &RunId) -> Response<Body> {
    match daemon.store().load(run_id) {
        Ok(meta) if meta.state.is_terminal() => {
            let mut body = recorded_output(daemon, run_id);
            body.extend_from_slice(&ndjson(&AttachEvent::Exit {
                state: meta.state,
                exit_code: meta.exit_code,
                failure: meta.failure,
            }));
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", NDJSON)
                .body(Full::new(Bytes::from(body)).boxed())
                .unwrap_or_else(|_| internal_error())
        }
        Ok(meta) => error(
            StatusCode::CONFLICT,
            format!("run {run_id} is {} but not supervised by this daemon", meta.state),
            None,
        ),
        Err(e) => error(StatusCode::NOT_FOUND, e.to_string(), None),
    }
}

/// A finished run's last recorded lines as output events (the log keeps
/// lines, so a last line without its newline gets one).
fn recorded_output(daemon: &Daemon, run_id: &RunId) -> Vec<u8> {
    let path = daemon.store().run_dir(run_id).join(moat_core::paths::run_files::LOGS);
    let records = match moat_core::logs::tail(&path, FINISHED_REPLAY_LINES) {
        Ok(tail) => tail.records,
        Err(e) => {
            tracing::warn!(run = %run_id, "cannot replay {}: {e}", path.display());
            Vec::new()
        }
    };
    let mut body = Vec::new();
    for record in records {
        let event = AttachEvent::Output {
            stream: record.stream,
            data: format!("{}\n", record.line),
        };
        body.extend_from_slice(&ndjson(&event));
    }
    body
}

fn ndjson(event: &impl Serialize) -> Bytes {
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// A request refused before it reached the run logic.
struct Reject {
    status: StatusCode,
    message: String,
}

impl Reject {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Reject {
            status,
            message: message.into(),
        }
    }

    fn into_response(self) -> Response<Body> {
        error(self.status, self.message, None)
    }
}

fn live_run(daemon: &Daemon, id: &str) -> Result<std::sync::Arc<crate::registry::RunHandle>, Reject> {
    let run_id: RunId = id
        .parse()
        .map_err(|e: moat_core::id::InvalidRunId| Reject::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    daemon
        .registry()
        .get(&run_id)
        .ok_or_else(|| Reject::new(StatusCode::NOT_FOUND, format!("run {run_id} is not live")))
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Reject> {
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) => {
            return Err(Reject::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read request body: {e}"),
            ));
        }
        Err(_) => {
            return Err(Reject::new(
                StatusCode::REQUEST_TIMEOUT,
                "timed out reading the request body",
            ));
        }
    };
    let bytes = if bytes.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        bytes
    };
    serde_json::from_slice(&bytes).map_err(|e| Reject::new(StatusCode::BAD_REQUEST, format!("invalid request: {e}")))
}

fn run_error(e: RunError) -> Response<Body> {
    let (status, body) = run_error_body(e);
    json(status, &body)
}

fn run_error_body(e: RunError) -> (StatusCode, ApiError) {
    let status = match &e {
        RunError::MissingWorkspace(_)
        | RunError::NotOnKubernetes(_)
        | RunError::UnknownImage { .. }
        | RunError::Grant(_)
        | RunError::Build(crate::image_build::BuildError::Dependencies(_)) => StatusCode::UNPROCESSABLE_ENTITY,
        RunError::NotLive(_) | RunError::Store(moat_core::store::StoreError::NotFound(_)) => StatusCode::NOT_FOUND,
        RunError::StillOwned { .. } | RunError::NameTaken { .. } => StatusCode::CONFLICT,
        RunError::NotAHostLabel(_) => StatusCode::BAD_REQUEST,
        RunError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        RunError::Runtime(moat_runtime::RuntimeError::Unavailable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
        RunError::Network(NetworkError::Exhausted { .. }) => StatusCode::SERVICE_UNAVAILABLE,
        RunError::Runtime(moat_runtime::RuntimeError::Timeout { .. })
        | RunError::Network(NetworkError::TimedOut { .. })
        | RunError::Deadline(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let hint = e.hint();
    let body = ApiError {
        error: e.to_string(),
        hint,
    };
    (status, body)
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)).boxed())
            .unwrap_or_else(|_| internal_error()),
        Err(_) => internal_error(),
    }
}

fn error(status: StatusCode, message: String, hint: Option<String>) -> Response<Body> {
    json(status, &ApiError { error: message, hint })
}

fn internal_error() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"error\":\"internal error\"}")).boxed());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

/// Adapts an mpsc receiver into a `Stream` without another dependency.
mod tokio_stream_shim {
    use futures_util::Stream;
    use tokio::sync::mpsc::Receiver;

    pub fn channel_stream<T: Send + 'static>(rx: Receiver<T>) -> impl Stream<Item = T> + Send {
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
    }
}
