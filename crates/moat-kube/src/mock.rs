//! A stand-in for the Kubernetes API server, for tests (feature `mock`):
//! create/get/delete/list for pods, configmaps, secrets, services,
//! networkpolicies and deployments, watch and logs of pods, `/version`,
//! owner-reference garbage collection, and injected faults (an HTTP status,
//! a delay, an expired watch). Pods "run" by script: running after a
//! moment, then ended with the scripted output and exit code. A Deployment
//! becomes ready after a moment with a running, ready pod `<name>-0`, or
//! gets a pod stuck with a scripted reason. Port-forward (WebSocket,
//! `v4.channel.k8s.io`) of a pod's port reaches the address the test
//! registered for that port ([`MockApiServer::forward_port`]); any other
//! port fails on the error channel as a kubelet's refused connection does.
//! No attach or exec.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::port_forward::{DATA_CHANNEL, ERROR_CHANNEL, PROTOCOL, port_announcement};

type Body = BoxBody<Bytes, Infallible>;

/// What a pod does once created.
#[derive(Clone, Debug)]
pub struct PodScript {
    pub output: String,
    pub exit_code: i32,
    /// How long it runs.
    pub runs_for: Duration,
    /// A waiting reason instead of running (e.g. `ErrImagePull`).
    pub cannot_start: Option<String>,
}

impl Default for PodScript {
    fn default() -> Self {
        PodScript {
            output: String::new(),
            exit_code: 0,
            runs_for: Duration::from_millis(200),
            cannot_start: None,
        }
    }
}

/// A fault injected into requests whose method and path match.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: Method,
    /// Matched against `path?query`.
    pub path_contains: String,
    pub status: u16,
    pub delay: Duration,
    /// How many matching requests it affects.
    pub times: usize,
}

#[derive(Default)]
struct State {
    /// Objects by (plural kind, name), in one namespace per mock.
    objects: BTreeMap<(String, String), Value>,
    version: u64,
    script: PodScript,
    faults: Vec<Fault>,
    /// Watches still to be answered with 410 Gone.
    expire_watches: usize,
    /// Why a Deployment's pod cannot start; `None`: it becomes ready.
    deployment_stuck: Option<String>,
    /// Where a port-forward of a pod's port goes, by port.
    forwards: BTreeMap<u16, SocketAddr>,
    requests: Vec<String>,
}

/// The mock server; stops when dropped.
pub struct MockApiServer {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    changes: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockApiServer {
    pub async fn start() -> std::io::Result<MockApiServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let (changes, _) = watch::channel(0);
        let server = Server {
            state: state.clone(),
            changes: changes.clone(),
        };
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(request).await) }
                    });
                    let io = TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(MockApiServer {
            address,
            state,
            changes,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A kubeconfig whose current context `mock` points here.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: mock\nclusters:\n- name: mock\n  cluster:\n    server: {}\n\
             contexts:\n- name: mock\n  context:\n    cluster: mock\n    user: mock\n    namespace: {namespace}\n\
             users:\n- name: mock\n  user:\n    token: not-a-real-token\n",
            self.url()
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn script(&self, script: PodScript) {
        self.state().script = script;
    }

    /// Deployments created from now on get a pod stuck waiting with `reason`
    /// (e.g. `ErrImagePull`) instead of becoming ready.
    pub fn stick_deployments(&self, reason: &str) {
        self.state().deployment_stuck = Some(reason.to_string());
    }

    /// A port-forward of `port` of any pod reaches `to` (TCP) from now on.
    pub fn forward_port(&self, port: u16, to: SocketAddr) {
        self.state().forwards.insert(port, to);
    }

    pub fn inject(&self, fault: Fault) {
        self.state().faults.push(fault);
    }

    /// The next `count` watches answer 410 Gone (an expired version).
    pub fn expire_watches(&self, count: usize) {
        self.state().expire_watches = count;
    }

    /// `METHOD path?query` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    /// The stored object of `kind` (plural) named `name`.
    pub fn object(&self, kind: &str, name: &str) -> Option<Value> {
        self.state().objects.get(&(kind.to_string(), name.to_string())).cloned()
    }

    /// Names of the stored objects of `kind`.
    pub fn names(&self, kind: &str) -> Vec<String> {
        self.state()
            .objects
            .keys()
            .filter(|(k, _)| k == kind)
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// Stores `object` as if another client created it.
    pub fn insert(&self, kind: &str, object: Value) {
        let mut state = self.state();
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        state.objects.insert((kind.to_string(), name), object);
        state.version += 1;
        self.changes.send_replace(state.version);
    }
}

#[derive(Clone)]
struct Server {
    state: Arc<Mutex<State>>,
    changes: watch::Sender<u64>,
}

/// A parsed request path: the kind (plural), and the name and
/// subresource when present.
struct Target {
    kind: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_target(path: &str) -> Option<Target> {
    let rest = path
        .strip_prefix("/api/v1/namespaces/")
        .or_else(|| path.strip_prefix("/apis/networking.k8s.io/v1/namespaces/"))
        .or_else(|| path.strip_prefix("/apis/apps/v1/namespaces/"))?;
    let mut parts = rest.split('/').skip(1);
    Some(Target {
        kind: parts.next()?.to_string(),
        name: parts.next().map(str::to_string),
        subresource: parts.next().map(str::to_string),
    })
}

fn query(request: &Request<Incoming>, key: &str) -> Option<String> {
    let pairs = request.uri().query()?;
    pairs.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn full(status: u16, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn failure(code: u16, message: &str) -> Response<Body> {
    let reason = match code {
        403 => "Forbidden",
        404 => "NotFound",
        409 => "AlreadyExists",
        410 => "Expired",
        _ => "InternalError",
    };
    full(code, &status(code, reason, message))
}

/// Whether every `key=value` of `selector` is among the object's labels.
fn selected(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (key, value) = term.split_once('=').unwrap_or((term, ""));
        object["metadata"]["labels"][key].as_str() == Some(value)
    })
}

impl Server {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn changed(&self, state: &mut State) {
        state.version += 1;
        self.changes.send_replace(state.version);
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let uri = request.uri().to_string();
        let line = format!("{} {}", request.method(), uri);
        let fault = {
            let mut state = self.state();
            state.requests.push(line);
            let found = state
                .faults
                .iter_mut()
                .find(|f| f.times > 0 && f.method == *request.method() && uri.contains(&f.path_contains));
            found.map(|f| {
                f.times -= 1;
                f.clone()
            })
        };
        if let Some(fault) = fault {
            tokio::time::sleep(fault.delay).await;
            if fault.status != 200 {
                return failure(
                    fault.status,
                    &format!("injected {} for {}", fault.status, fault.path_contains),
                );
            }
        }
        if request.uri().path() == "/version" {
            return full(
                200,
                &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-mock",
                "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "", "platform": "mock"}),
            );
        }
        let Some(target) = parse_target(request.uri().path()) else {
            return failure(404, "no such path in the mock");
        };
        match (request.method().clone(), &target.name, target.subresource.as_deref()) {
            (Method::POST, None, None) => self.create(&target.kind, request).await,
            (Method::GET, None, None) if query(&request, "watch").as_deref() == Some("true") => self.watch(&request),
            (Method::GET, None, None) => self.list(&target.kind, &query(&request, "labelSelector").unwrap_or_default()),
            (Method::GET, Some(name), None) => self.get(&target.kind, name),
            (Method::DELETE, Some(name), None) => self.delete(&target.kind, name),
            (Method::GET, Some(name), Some("log")) => {
                self.log(name, query(&request, "follow").as_deref() == Some("true"))
                    .await
            }
            (Method::GET, Some(name), Some("portforward")) => self.port_forward(name, request),
            _ => failure(404, "not implemented by the mock"),
        }
    }

    async fn create(&self, kind: &str, request: Request<Incoming>) -> Response<Body> {
        let Ok(body) = request.into_body().collect().await else {
            return failure(400, "unreadable body");
        };
        let Ok(mut object) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
            return failure(400, "body is not JSON");
        };
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let mut state = self.state();
        let key = (kind.to_string(), name.clone());
        if state.objects.contains_key(&key) {
            return failure(409, &format!("{kind} \"{name}\" already exists"));
        }
        state.version += 1;
        object["metadata"]["uid"] = json!(format!("uid-{kind}-{name}"));
        object["metadata"]["resourceVersion"] = json!(state.version.to_string());
        object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        if kind == "pods" {
            object["status"] = json!({"phase": "Pending"});
            self.run_pod(name, state.script.clone());
        }
        if kind == "deployments" {
            self.roll_out(&mut state, &object);
        }
        state.objects.insert(key, object.clone());
        self.changed(&mut state);
        full(201, &object)
    }

    /// A Deployment's pod: stuck as scripted, or running and ready a moment later.
    fn roll_out(&self, state: &mut State, deployment: &Value) {
        let name = deployment["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let labels = deployment["spec"]["template"]["metadata"]["labels"].clone();
        if let Some(reason) = state.deployment_stuck.clone() {
            let pod = json!({"metadata": {"name": format!("{name}-0"), "labels": labels},
                "status": {"phase": "Pending", "containerStatuses": [{"name": "proxy", "image": "", "imageID": "",
                    "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": reason, "message": "the mock cannot pull it"}}}]}});
            state.objects.insert(("pods".into(), format!("{name}-0")), pod);
            return;
        }
        let server = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut state = server.state();
            let pod = json!({"metadata": {"name": format!("{name}-0"), "labels": labels,
                "uid": format!("uid-pods-{name}-0")},
                "status": {"phase": "Running", "podIP": "10.1.2.4",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [{"name": "proxy", "image": "", "imageID": "", "ready": true,
                        "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}}}]}});
            state.objects.insert(("pods".into(), format!("{name}-0")), pod);
            if let Some(deployment) = state.objects.get_mut(&("deployments".to_string(), name)) {
                deployment["status"] = json!({"replicas": 1, "readyReplicas": 1});
            }
            server.changed(&mut state);
        });
    }

    /// Plays the pod's script: running (or stuck), then ended.
    fn run_pod(&self, name: String, script: PodScript) {
        let server = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let started = match &script.cannot_start {
                Some(reason) => json!({"waiting": {"reason": reason, "message": "the mock cannot pull it"}}),
                None => json!({"running": {"startedAt": "2026-01-01T00:00:01Z"}}),
            };
            if !server.set_pod_state(&name, "Pending", &started) || script.cannot_start.is_some() {
                return;
            }
            server
                .state()
                .objects
                .entry(("logs".into(), name.clone()))
                .or_insert(json!(script.output));
            tokio::time::sleep(script.runs_for).await;
            let phase = if script.exit_code == 0 { "Succeeded" } else { "Failed" };
            let ended = json!({"terminated": {"exitCode": script.exit_code, "reason": "Completed"}});
            server.set_pod_state(&name, phase, &ended);
        });
    }

    fn set_pod_state(&self, name: &str, phase: &str, container_state: &Value) -> bool {
        let mut state = self.state();
        state.version += 1;
        let version = state.version.to_string();
        let Some(pod) = state.objects.get_mut(&("pods".to_string(), name.to_string())) else {
            return false;
        };
        pod["metadata"]["resourceVersion"] = json!(version);
        pod["status"] = json!({"phase": phase, "podIP": "10.1.2.3", "containerStatuses": [{
            "name": "main", "image": "", "imageID": "", "ready": false, "restartCount": 0, "state": container_state}]});
        self.changes.send_replace(state.version);
        true
    }

    fn get(&self, kind: &str, name: &str) -> Response<Body> {
        match self.state().objects.get(&(kind.to_string(), name.to_string())) {
            Some(object) => full(200, object),
            None => failure(404, &format!("{kind} \"{name}\" not found")),
        }
    }

    fn list(&self, kind: &str, selector: &str) -> Response<Body> {
        let state = self.state();
        let items: Vec<&Value> = state
            .objects
            .iter()
            .filter(|((k, _), object)| k == kind && selected(object, selector))
            .map(|(_, object)| object)
            .collect();
        full(
            200,
            &json!({"apiVersion": "v1", "kind": "List",
            "metadata": {"resourceVersion": state.version.to_string()}, "items": items}),
        )
    }

    /// Deletes the object and, for an owner, what it owns (the cluster's
    /// garbage collector, done at once).
    fn delete(&self, kind: &str, name: &str) -> Response<Body> {
        let mut state = self.state();
        let Some(object) = state.objects.remove(&(kind.to_string(), name.to_string())) else {
            return failure(404, &format!("{kind} \"{name}\" not found"));
        };
        if let Some(uid) = object["metadata"]["uid"].as_str() {
            state.objects.retain(|_, other| {
                !other["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|owners| owners.iter().any(|o| o["uid"].as_str() == Some(uid)))
            });
        }
        self.changed(&mut state);
        full(200, &status(200, "", "deleted"))
    }

    /// Pod events as lines of JSON until the pod ends or goes.
    fn watch(&self, request: &Request<Incoming>) -> Response<Body> {
        let field = query(request, "fieldSelector").unwrap_or_default();
        let name = field.strip_prefix("metadata.name=").unwrap_or_default().to_string();
        let (sender, receiver) = mpsc::channel::<Bytes>(16);
        let expire = {
            let mut state = self.state();
            let expire = state.expire_watches > 0;
            state.expire_watches = state.expire_watches.saturating_sub(1);
            expire
        };
        let server = self.clone();
        let mut changes = self.changes.subscribe();
        tokio::spawn(async move {
            if expire {
                let event = json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version")});
                let _ = sender.send(Bytes::from(format!("{event}\n"))).await;
                return;
            }
            loop {
                let pod = server.state().objects.get(&("pods".to_string(), name.clone())).cloned();
                let (kind, done) = match &pod {
                    Some(pod) => (
                        "MODIFIED",
                        pod["status"]["containerStatuses"][0]["state"]["terminated"].is_object(),
                    ),
                    None => ("DELETED", true),
                };
                let object =
                    pod.unwrap_or_else(|| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}}));
                let event = json!({"type": kind, "object": object});
                if sender.send(Bytes::from(format!("{event}\n"))).await.is_err() || done {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
        streamed(receiver)
    }

    /// The pod's output: refused before it started (as the kubelet
    /// does), all of it at once; followed, once the pod has ended.
    async fn log(&self, name: &str, follow: bool) -> Response<Body> {
        let mut changes = self.changes.subscribe();
        loop {
            let (output, ended) = {
                let state = self.state();
                let Some(pod) = state.objects.get(&("pods".to_string(), name.to_string())) else {
                    return failure(404, &format!("pods \"{name}\" not found"));
                };
                let ended = pod["status"]["containerStatuses"][0]["state"]["terminated"].is_object();
                (
                    state.objects.get(&("logs".to_string(), name.to_string())).cloned(),
                    ended,
                )
            };
            let Some(output) = output else {
                return failure(
                    400,
                    &format!("container \"main\" in pod \"{name}\" is waiting to start"),
                );
            };
            if ended || !follow {
                let mut response =
                    Response::new(Full::new(Bytes::from(output.as_str().unwrap_or_default().to_string())).boxed());
                response
                    .headers_mut()
                    .insert("content-type", hyper::header::HeaderValue::from_static("text/plain"));
                return response;
            }
            if changes.changed().await.is_err() {
                return failure(500, "mock stopped");
            }
        }
    }

    /// A port-forward of one port of pod `name`: answered 101, then run as
    /// the kubelet would (the ports announced, then the registered
    /// address's bytes, or a refused connection on the error channel).
    fn port_forward(&self, name: &str, request: Request<Incoming>) -> Response<Body> {
        if !self
            .state()
            .objects
            .contains_key(&("pods".to_string(), name.to_string()))
        {
            return failure(404, &format!("pods \"{name}\" not found"));
        }
        let upgrade = request.headers().get(UPGRADE).and_then(|v| v.to_str().ok());
        let key = request
            .headers()
            .get(SEC_WEBSOCKET_KEY)
            .map(|key| derive_accept_key(key.as_bytes()));
        let Some(accept) = key.filter(|_| upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket"))) else {
            return failure(400, "a port-forward needs a WebSocket upgrade");
        };
        let Some(port) = query(&request, "ports").and_then(|p| p.parse::<u16>().ok()) else {
            return failure(400, "a port-forward needs one port in `ports`");
        };
        let target = self.state().forwards.get(&port).copied();
        let pod = name.to_string();
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(request).await else {
                return;
            };
            let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            forward(socket, &pod, port, target).await;
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "websocket")
            .header(SEC_WEBSOCKET_ACCEPT, accept)
            .header(SEC_WEBSOCKET_PROTOCOL, PROTOCOL)
            .body(Full::new(Bytes::new()).boxed())
            .unwrap_or_else(|e| failure(500, &e.to_string()))
    }
}

/// The kubelet's side of a port-forward of `port`.
async fn forward<S>(mut socket: WebSocketStream<S>, pod: &str, port: u16, target: Option<SocketAddr>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for channel in [DATA_CHANNEL, ERROR_CHANNEL] {
        if socket
            .send(Message::binary(port_announcement(channel, port)))
            .await
            .is_err()
        {
            return;
        }
    }
    let connected = match target {
        Some(address) => tokio::net::TcpStream::connect(address).await.map_err(|e| e.to_string()),
        None => Err("connection refused".to_string()),
    };
    match connected {
        Ok(connection) => relay(socket, connection).await,
        Err(reason) => {
            let text =
                format!("error forwarding port {port} to pod {pod}: dial tcp4 127.0.0.1:{port}: connect: {reason}");
            let mut message = vec![ERROR_CHANNEL];
            message.extend_from_slice(text.as_bytes());
            let _ = socket.send(Message::binary(message)).await;
            let _ = socket.close(None).await;
        }
    }
}

/// Data messages to the connection and its bytes back, until both ends close.
async fn relay<S>(socket: WebSocketStream<S>, connection: tokio::net::TcpStream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut to_client, mut from_client) = socket.split();
    let (mut from_target, mut to_target) = connection.into_split();
    let inbound = async move {
        while let Some(Ok(message)) = from_client.next().await {
            if let Message::Binary(frame) = message
                && let Some((&DATA_CHANNEL, data)) = frame.split_first()
                && to_target.write_all(data).await.is_err()
            {
                break;
            }
        }
        let _ = to_target.shutdown().await;
    };
    let outbound = async move {
        let mut buffer = vec![0_u8; 32 * 1024];
        loop {
            buffer[0] = DATA_CHANNEL;
            match from_target.read(&mut buffer[1..]).await {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if to_client.send(Message::binary(buffer[..=read].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_client.close().await;
    };
    tokio::join!(inbound, outbound);
}

fn streamed(mut receiver: mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures_util::stream::poll_fn(move |cx| {
        receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok::<_, Infallible>(Frame::data(bytes))))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
