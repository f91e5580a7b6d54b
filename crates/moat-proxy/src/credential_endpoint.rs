//! Credential endpoints: `GET http://moat-proxy:PORT/<name>/credentials`,
//! where a run fetches short-lived credentials that whoever registered it
//! (the daemon) issues for it — the aws grant's `credential_process`. The
//! run is the one whose token the request presents, as for the MCP relay;
//! the proxy calls that run's source for `<name>` and answers with what it
//! returns. The trace records the request and its status, never the body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::{ProxyBody, local_body};
use crate::error::ProxyError;
use crate::forward::{Target, finish_local, local_response, start_trace};
use crate::registry::RunEntry;
use crate::relay::PROXY_HOST_NAME;

/// The path after the endpoint's name.
const CREDENTIALS_SUFFIX: &str = "/credentials";
/// Bound on a source's answer (it may ask a remote service, e.g. STS).
const SOURCE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a source gives no credentials: the status and the text the client
/// gets (no secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialRefusal {
    pub status: u16,
    pub message: String,
}

/// What a source answers: a JSON document, or a refusal.
pub type CredentialFuture = Pin<Box<dyn Future<Output = Result<String, CredentialRefusal>> + Send>>;

/// Issues a run's credentials of one kind, called once per request.
pub type CredentialSource = Arc<dyn Fn() -> CredentialFuture + Send + Sync>;

/// One endpoint of a run, served at `/<name>/credentials`.
#[derive(Clone)]
pub struct CredentialEndpoint {
    /// One plain path segment, e.g. `aws`.
    pub name: String,
    pub source: CredentialSource,
}

impl std::fmt::Debug for CredentialEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialEndpoint")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Refuses names that are not one plain path segment.
pub(crate) fn check_names(endpoints: &[CredentialEndpoint]) -> Result<(), ProxyError> {
    match endpoints
        .iter()
        .find(|e| e.name.is_empty() || e.name.contains(['/', '?', '#', '%']) || e.name == "mcp")
    {
        Some(bad) => Err(ProxyError::InvalidCredentialEndpoint(bad.name.clone())),
        None => Ok(()),
    }
}

/// The endpoint of `run` that `path` names, if any.
pub(crate) fn find<'a>(run: &'a RunEntry, path: &str) -> Option<&'a CredentialEndpoint> {
    let name = path.strip_prefix('/')?.strip_suffix(CREDENTIALS_SUFFIX)?;
    run.credential_endpoints().iter().find(|e| e.name == name)
}

/// Answers one request for `endpoint`'s credentials.
pub(crate) async fn serve<B>(
    run: Arc<RunEntry>,
    endpoint: &CredentialEndpoint,
    req: &Request<B>,
) -> Response<ProxyBody> {
    let target = Target {
        tls: false,
        host: PROXY_HOST_NAME.to_string(),
        port: req.uri().port_u16().unwrap_or(80),
        destination: None,
    };
    let path = req.uri().path();
    let trace = start_trace(&run, &target, req.method(), path);
    let rule = format!("credential endpoint {}", endpoint.name);
    if req.method() != Method::GET {
        let body = format!("moat proxy: {path} answers GET only\n");
        finish_local(
            trace,
            StatusCode::METHOD_NOT_ALLOWED,
            &rule,
            0,
            Some(body.trim().into()),
        );
        return local_response(StatusCode::METHOD_NOT_ALLOWED, &rule, body);
    }
    let answer = match tokio::time::timeout(SOURCE_TIMEOUT, (endpoint.source)()).await {
        Ok(answer) => answer,
        Err(_) => Err(CredentialRefusal {
            status: StatusCode::GATEWAY_TIMEOUT.as_u16(),
            message: format!(
                "the {} credentials were not issued within {SOURCE_TIMEOUT:?}",
                endpoint.name
            ),
        }),
    };
    match answer {
        Ok(json) => {
            finish_local(trace, StatusCode::OK, &rule, json.len() as u64, None);
            json_response(json)
        }
        Err(refusal) => {
            let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_GATEWAY);
            finish_local(trace, status, &rule, 0, Some(refusal.message.clone()));
            local_response(status, &rule, format!("moat proxy: {}\n", refusal.message))
        }
    }
}

fn json_response(json: String) -> Response<ProxyBody> {
    let mut response = Response::new(local_body(json));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
