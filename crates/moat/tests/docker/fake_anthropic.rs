//! A local stand-in for Anthropic's API in the end-to-end tests: HTTPS for
//! `api.anthropic.com` on port 443 of a loopback address of its own (the
//! daemon's `resolve:` sends the name there), recording every request's
//! headers. `POST /v1/messages` answers one JSON message, or with
//! `"stream": true` the response head at once, then the server-sent
//! events of a streamed message, [`EVENT_SPACING`] apart, recording when
//! each event was handed to the connection.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::upstream::{Seen, tls_acceptor};

pub const API_HOST: &str = "api.anthropic.com";
/// Between two streamed events.
pub const EVENT_SPACING: Duration = Duration::from_millis(200);
/// The text of every answer.
pub const ANSWER: &str = "Hello from the fake Anthropic API";

/// One streamed event as the fake sent it.
#[derive(Clone, Debug)]
pub struct SentEvent {
    pub kind: String,
    /// Unix time, in seconds, when it was handed to the connection.
    pub at: f64,
}

pub struct FakeAnthropic {
    pub address: IpAddr,
    pub ca_file: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The events of each streamed answer, in order.
    sent: Arc<Mutex<Vec<Vec<SentEvent>>>>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeAnthropic {
    /// Serves on port 443 of a loopback address no other test uses (needs
    /// the privilege to bind port 443); the CA goes to `dir`.
    pub fn start(dir: &Path) -> FakeAnthropic {
        let (acceptor, ca_file) = tls_acceptor(&[API_HOST], dir);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let address = IpAddr::V4(unique_loopback());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(SocketAddr::new(address, 443)))
            .unwrap_or_else(|e| panic!("the fake Anthropic API must listen on {address}:443: {e}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        runtime.spawn(serve(listener, acceptor, seen.clone(), sent.clone()));
        FakeAnthropic {
            address,
            ca_file,
            seen,
            sent,
            _runtime: runtime,
        }
    }

    /// The `config.yaml` lines that make a daemon trust this server and
    /// send `api.anthropic.com` to it.
    pub fn config(&self) -> String {
        format!(
            "extra_ca_file: {}\nresolve:\n  {API_HOST}: {}\n",
            self.ca_file.display(),
            self.address
        )
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The events of the last streamed answer.
    pub fn last_stream(&self) -> Vec<SentEvent> {
        self.sent.lock().unwrap().last().cloned().unwrap_or_default()
    }
}

/// `127.77.x.y`, different for each call of a process (and, short of a
/// process id collision modulo 1024, for each process).
fn unique_loopback() -> Ipv4Addr {
    let n = (super::support::unique() as u32 % 64 + std::process::id() * 64) % (254 * 256);
    Ipv4Addr::new(127, 77, (n / 254) as u8, (n % 254 + 1) as u8)
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    seen: Arc<Mutex<Vec<Seen>>>,
    sent: Arc<Mutex<Vec<Vec<SentEvent>>>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, seen, sent) = (acceptor.clone(), seen.clone(), sent.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else { return };
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (seen, sent) = (seen.clone(), sent.clone());
                async move { Ok::<_, Infallible>(answer(req, &seen, sent).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    seen: &Mutex<Vec<Seen>>,
    sent: Arc<Mutex<Vec<Vec<SentEvent>>>>,
) -> Response<Body> {
    seen.lock().unwrap().push(Seen {
        path: req.uri().path().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
    });
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if request["stream"] == true {
        return Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(streamed(sent))
            .unwrap();
    }
    let message = serde_json::json!({
        "id": "msg_fake", "type": "message", "role": "assistant", "model": "claude-fake",
        "content": [{"type": "text", "text": ANSWER}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 1, "output_tokens": 7}
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(message.to_string())).boxed_unsync())
        .unwrap()
}

/// The events of a streamed message, the text in words.
fn events() -> Vec<(String, serde_json::Value)> {
    let mut events = vec![
        (
            "message_start",
            serde_json::json!({"type": "message_start", "message": {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": "claude-fake",
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 1, "output_tokens": 0}}}),
        ),
        (
            "content_block_start",
            serde_json::json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for word in ANSWER.split(' ') {
        events.push((
            "content_block_delta",
            serde_json::json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": format!("{word} ")}}),
        ));
    }
    events.push((
        "content_block_stop",
        serde_json::json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push((
        "message_delta",
        serde_json::json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 7}}),
    ));
    events.push(("message_stop", serde_json::json!({"type": "message_stop"})));
    events
        .into_iter()
        .map(|(kind, data)| (kind.to_string(), data))
        .collect()
}

fn streamed(sent: Arc<Mutex<Vec<Vec<SentEvent>>>>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let stream = {
        let mut sent = sent.lock().unwrap();
        sent.push(Vec::new());
        sent.len() - 1
    };
    tokio::spawn(async move {
        // The head goes out first, so the client is reading (not still
        // setting up its stream) when the first event is sent.
        for (kind, data) in events() {
            tokio::time::sleep(EVENT_SPACING).await;
            let frame = Bytes::from(format!("event: {kind}\ndata: {data}\n\n"));
            if tx.send(frame).await.is_err() {
                return;
            }
            let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
            sent.lock().unwrap()[stream].push(SentEvent { kind, at });
        }
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    })
    .boxed();
    StreamBody::new(frames).boxed_unsync()
}
