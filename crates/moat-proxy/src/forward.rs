//! One intercepted request, start to finish: run still registered → policy
//! (host, method, path) → destination (the tunnel's judged addresses, or one
//! resolution judged now) → strip proxy headers → inject credentials → send
//! to the CONNECT target (never the inner `Host`) at the judged addresses
//! through the shared pool → stream the response back, tracing the outcome.
//! WebSocket upgrades take a dedicated HTTP/1.1 connection and are spliced
//! after injection; any other `Upgrade` (e.g. `h2c`) is refused.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use crate::body::{CountingBody, ProxyBody, TracedBody, local_body};
use crate::destination::{Destination, check_destination};
use crate::events::ProxyEvent;
use crate::injection::InjectionSet;
use crate::path::PathError;
use crate::policy::{Decision, RequestCheck};
use crate::proxy::Shared;
use crate::registry::RunEntry;
use crate::trace::{TraceRecord, redact_path_and_query, redact_secrets};

/// Where a request goes: the CONNECT target, or an absolute-form URL's authority.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) tls: bool,
    /// Normalized: lowercase, no brackets, no trailing dot.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Judged when a CONNECT tunnel opened: every request in the tunnel goes
    /// to these addresses. `None` for absolute-form requests, which are
    /// judged one by one.
    pub(crate) destination: Option<Destination>,
}

impl Target {
    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// `host[:port]` as written in a URL (port omitted when it is the default).
    pub(crate) fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default_port = if self.tls { 443 } else { 80 };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// A refusal produced before any upstream traffic.
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) rule: String,
    pub(crate) body: String,
}

/// The trace record of a request in flight, completed when its response ends.
pub(crate) struct PendingTrace {
    pub(crate) run: Arc<RunEntry>,
    started: Instant,
    time: DateTime<Utc>,
    request_id: String,
    method: String,
    url: String,
    /// Path and query, redacted.
    path: String,
    host: String,
    pub(crate) status: Option<u16>,
    decision: &'static str,
    rule: String,
    pub(crate) grants: Vec<String>,
    bytes_out: Arc<AtomicU64>,
    /// The destination includes an RFC 1918 address.
    private_address: bool,
    /// Shadow mode: the rule under which strict would have refused it.
    pub(crate) would_block: Option<String>,
}

impl PendingTrace {
    /// Adds bytes sent upstream outside a counted body (a spliced upgrade).
    pub(crate) fn add_bytes_out(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn finish(mut self, bytes_in: u64, error: Option<String>) {
        if self.decision == "deny" {
            // A denial's rule may quote the request's path.
            self.rule = redact_secrets(&self.rule, self.run.redactables(&self.run.injections()));
        }
        if self.decision == "deny" {
            // Refused anyway: the refusal is what happened.
            self.would_block = None;
        }
        self.report();
        let record = TraceRecord {
            time: self.time,
            request_id: self.request_id,
            method: self.method,
            url: self.url,
            host: self.host,
            status: self.status,
            duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            bytes_in,
            decision: self.decision,
            rule: self.rule,
            grants: self.grants,
            error,
            private_address: self.private_address,
            would_block: self.would_block,
        };
        self.run.trace(record);
    }

    /// Tells the run's owner about a denial or the grants injected.
    fn report(&self) {
        if self.decision == "deny" {
            self.run.report(ProxyEvent::Denied {
                method: self.method.clone(),
                host: self.host.clone(),
                path: self.path.clone(),
                rule: self.rule.clone(),
            });
        }
        if let Some(rule) = &self.would_block {
            self.run.report(ProxyEvent::ShadowDenied {
                method: self.method.clone(),
                host: self.host.clone(),
                path: self.path.clone(),
                rule: rule.clone(),
            });
        }
        for grant in &self.grants {
            self.run.report(ProxyEvent::Injected {
                grant: grant.clone(),
                host: self.host.clone(),
            });
        }
    }
}

/// Begins the trace of a request to `target`.
pub(crate) fn start_trace(run: &Arc<RunEntry>, target: &Target, method: &Method, path_and_query: &str) -> PendingTrace {
    start_trace_with(run, &run.injections(), target, method, path_and_query)
}

/// [`start_trace`] with the injection snapshot already in hand.
fn start_trace_with(
    run: &Arc<RunEntry>,
    injections: &InjectionSet,
    target: &Target,
    method: &Method,
    path_and_query: &str,
) -> PendingTrace {
    static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);
    let path = redact_path_and_query(path_and_query, run.redactables(injections));
    // The agent chooses the host name too.
    let redact = |text: &str| redact_secrets(text, run.redactables(injections));
    PendingTrace {
        run: run.clone(),
        started: Instant::now(),
        time: Utc::now(),
        request_id: format!("{:08x}", NEXT_REQUEST.fetch_add(1, Ordering::Relaxed)),
        method: method.to_string(),
        url: format!("{}://{}{path}", target.scheme(), redact(&target.authority())),
        path,
        host: redact(&target.host),
        status: None,
        decision: "allow",
        rule: String::new(),
        grants: Vec::new(),
        bytes_out: Arc::new(AtomicU64::new(0)),
        private_address: target.destination.as_ref().is_some_and(|d| d.private),
        would_block: None,
    }
}

/// Records a request the proxy answered itself (a credential endpoint):
/// `status`, the `rule` that served it, the body bytes returned.
pub(crate) fn finish_local(
    mut trace: PendingTrace,
    status: StatusCode,
    rule: &str,
    bytes_in: u64,
    error: Option<String>,
) {
    trace.status = Some(status.as_u16());
    if status == StatusCode::FORBIDDEN {
        trace.decision = "deny";
    }
    trace.rule = rule.to_string();
    trace.finish(bytes_in, error);
}

/// Answers a refusal and records it.
pub(crate) fn refuse(mut trace: PendingTrace, refusal: Refusal) -> Response<ProxyBody> {
    trace.status = Some(refusal.status.as_u16());
    trace.decision = if refusal.status == StatusCode::FORBIDDEN {
        "deny"
    } else {
        trace.decision
    };
    trace.rule = refusal.rule.clone();
    let error = (refusal.status != StatusCode::FORBIDDEN).then(|| refusal.body.trim().to_string());
    trace.finish(0, error);
    local_response(refusal.status, &refusal.rule, refusal.body)
}

pub(crate) fn local_response(status: StatusCode, rule: &str, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(local_body(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::FORBIDDEN
        && let Ok(value) = HeaderValue::from_str(rule)
    {
        headers.insert(HeaderName::from_static("x-moat-blocked"), value);
    }
    response
}

/// The refusal for a policy denial, explaining how to allow the request.
pub(crate) fn policy_refusal(decision: &Decision, target: &Target, method: &Method, path: &str) -> Refusal {
    let mut body = format!(
        "moat blocked {method} {}://{}{path}\nrule: {}\n",
        target.scheme(),
        target.authority(),
        decision.rule
    );
    if decision.rule.starts_with("strict") {
        let _ = writeln!(
            body,
            "To allow it, run with `moat run --allow-host {}` or add the host to network.rules in moat.yaml.",
            target.host
        );
    } else {
        let _ = writeln!(
            body,
            "To allow it, change the method/path rules for {} in network.rules (moat.yaml).",
            target.host
        );
    }
    Refusal {
        status: StatusCode::FORBIDDEN,
        rule: decision.rule.clone(),
        body,
    }
}

/// Shadow mode: strict refuses a private (RFC 1918) destination its rules do
/// not name exactly as `host:port` (see `check_destination`).
fn shadow_private_block(run: &RunEntry, target: &Target, destination: &Destination) -> Option<String> {
    let refused_by_strict = destination.private && !run.policy().explicitly_names(&target.host, target.port);
    (run.policy().is_shadow() && refused_by_strict)
        .then(|| "strict: private address not named as host:port in network.rules".to_string())
}

/// The refusal (400) of a path that method/path rules cannot judge.
fn malformed_path_refusal(rule: String, error: PathError, target: &Target, method: &Method) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        body: format!(
            "moat refused {method} {}://{}: {error}; the method/path rules for {} cannot judge it\n",
            target.scheme(),
            target.authority(),
            target.host
        ),
        rule,
    }
}

/// Serves one request for `run` to `target`.
pub(crate) async fn forward(
    shared: Arc<Shared>,
    run: Arc<RunEntry>,
    target: Arc<Target>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let path_and_query = req.uri().path_and_query().map_or("/", |pq| pq.as_str()).to_string();
    let injections = run.injections();
    let mut trace = start_trace_with(&run, &injections, &target, req.method(), &path_and_query);
    if !run.is_active() {
        return refuse(trace, unregistered_refusal(&run.run_id));
    }
    if req.method() == Method::CONNECT {
        let refusal = Refusal {
            status: StatusCode::METHOD_NOT_ALLOWED,
            rule: "request".to_string(),
            body: "moat proxy: CONNECT inside an intercepted tunnel is not supported\n".to_string(),
        };
        return refuse(trace, refusal);
    }
    let implicit = run.implicit_allowance(&injections, &target.host, target.port);
    let checked = run.policy().check_request(
        &target.host,
        target.port,
        implicit,
        req.method(),
        req.uri(),
        req.headers(),
    );
    let path_and_query = match checked {
        RequestCheck::Allow {
            rule,
            path_and_query: normalised,
            would_block,
        } => {
            trace.rule = rule;
            trace.would_block = would_block;
            // Where path rules apply, the server gets the path they judged.
            normalised.unwrap_or(path_and_query)
        }
        RequestCheck::Deny { decision, path } => {
            let refusal = policy_refusal(&decision, &target, req.method(), &path);
            return refuse(trace, refusal);
        }
        RequestCheck::Malformed { rule, error } => {
            trace.decision = "deny";
            return refuse(trace, malformed_path_refusal(rule, error, &target, req.method()));
        }
    };
    if let Some(refusal) = refused_upgrade(&req) {
        return refuse(trace, refusal);
    }
    // One resolution per request (or per tunnel), judged and then dialled.
    let destination = match &target.destination {
        Some(destination) => destination.clone(),
        None => match check_destination(&shared, &run, &target).await {
            Ok(destination) => destination,
            Err(refusal) => return refuse(trace, refusal),
        },
    };
    trace.private_address = destination.private;
    if trace.would_block.is_none() {
        trace.would_block = shadow_private_block(&run, &target, &destination);
    }

    let mut req = req;
    let upgrade = is_upgrade(&req);
    let client_version = req.version();
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_proxy_headers(&mut parts.headers, upgrade);
    trace.grants = injections.apply(&target.host, target.port, target.tls, &mut parts.headers);
    let uri = format!("{}://{}{path_and_query}", target.scheme(), target.authority());
    let Ok(uri) = uri.parse() else {
        return refuse(trace, bad_request(format!("cannot form an upstream URL from {uri}")));
    };
    let mut upstream = Request::from_parts(parts, CountingBody::new(body, trace.bytes_out.clone()));
    *upstream.uri_mut() = uri;
    *upstream.version_mut() = Version::HTTP_11;
    upstream.headers_mut().remove(header::HOST);

    match client_upgrade {
        Some(on_upgrade) => {
            crate::upgrade::forward_upgrade(&shared, &target, &destination, upstream, on_upgrade, trace).await
        }
        None => send_pooled(&shared, client_version, &destination, upstream, trace).await,
    }
}

async fn send_pooled(
    shared: &Shared,
    client_version: Version,
    destination: &Destination,
    upstream: Request<CountingBody<Incoming>>,
    mut trace: PendingTrace,
) -> Response<ProxyBody> {
    let timeout = shared.timeouts.upstream_response;
    let client = shared.clients.for_request(client_version, &destination.addresses);
    let result = tokio::time::timeout(timeout, client.request(upstream)).await;
    let response = match result {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return refuse(trace, upstream_failure(&e)),
        Err(_) => {
            return refuse(
                trace,
                gateway_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("no response headers within {timeout:?}"),
                ),
            );
        }
    };
    trace.status = Some(response.status().as_u16());
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, TracedBody::new(body, trace).boxed_unsync())
}

fn upstream_failure(error: &hyper_util::client::legacy::Error) -> Refusal {
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let _ = write!(detail, ": {cause}");
        source = cause.source();
    }
    gateway_error(StatusCode::BAD_GATEWAY, detail)
}

pub(crate) fn gateway_error(status: StatusCode, detail: String) -> Refusal {
    Refusal {
        status,
        rule: "upstream".to_string(),
        body: format!("moat proxy: upstream request failed: {detail}\n"),
    }
}

fn bad_request(detail: String) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        rule: "request".to_string(),
        body: format!("moat proxy: {detail}\n"),
    }
}

pub(crate) fn unregistered_refusal(run_id: &str) -> Refusal {
    Refusal {
        status: StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        rule: "auth".to_string(),
        body: format!("moat proxy: run {run_id} is no longer registered\n"),
    }
}

/// Refuses a request carrying an `Upgrade` other than `websocket` (e.g.
/// `h2c`): a switched protocol is spliced byte for byte, beyond per-request
/// policy and injection, and only WebSocket is expected there.
fn refused_upgrade<B>(req: &Request<B>) -> Option<Refusal> {
    let offered: Vec<&[u8]> = req
        .headers()
        .get_all(header::UPGRADE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if offered.is_empty()
        || offered
            .iter()
            .all(|v| v.trim_ascii().eq_ignore_ascii_case(b"websocket"))
    {
        return None;
    }
    let shown: Vec<String> = offered
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    Some(Refusal {
        status: StatusCode::FORBIDDEN,
        rule: "upgrade".to_string(),
        body: format!(
            "moat blocked a protocol upgrade to {:?}: only websocket upgrades are proxied.\n",
            shown.join(", ")
        ),
    })
}

/// An HTTP/1.1 `Connection: upgrade` request with an `Upgrade` header.
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && header_has_token(req.headers(), &header::CONNECTION, "upgrade")
}

fn header_has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes `Proxy-Authorization`, `Proxy-Connection` and hop-by-hop headers
/// (keeping `Connection`/`Upgrade` for an upgrade).
fn strip_proxy_headers(headers: &mut HeaderMap, upgrade: bool) {
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove("proxy-connection");
    strip_hop_by_hop(headers, upgrade);
}

fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if !upgrade {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    headers.remove("keep-alive");
    headers.remove(header::PROXY_AUTHENTICATE);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::TRAILER);
    let te_trailers_only = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers_only {
        headers.remove(header::TE);
    }
}
