//! The MCP relay: plain-HTTP requests addressed to the proxy itself
//! (`http://moat-proxy:PORT/mcp/<name>/...`, absolute-form through the
//! proxy or origin-form straight to it) go to the run's MCP server
//! `<name>`. The run is the one whose token the request presents, in
//! `Proxy-Authorization` or as `Authorization: Bearer <token>`; the
//! upstream URL comes from the run's registration, never from the request.
//! The presented token is removed, the server's extra headers set, and the
//! request continues as any intercepted one ([`crate::forward`]): policy,
//! credential injection, a streamed response (redirects passed back, never
//! followed) and a trace record naming the real URL. Paths naming one of
//! the run's credential endpoints go to [`crate::credential_endpoint`].

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use moat_core::config::McpUrl;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::forward::{Target, forward, local_response};
use crate::proxy::{Shared, proxy_auth_required};
use crate::registry::RunEntry;
use crate::token::presented_secret;

/// The name containers use for the proxy (and the relay's host).
pub const PROXY_HOST_NAME: &str = "moat-proxy";
/// Path prefix of the relay; the server's name follows.
const RELAY_PREFIX: &str = "/mcp/";

/// One remote MCP server of a run, as registered.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct McpRoute {
    /// The path segment after `/mcp/`.
    pub name: String,
    /// `https://host[:port]/path`.
    pub url: String,
    /// Extra (non-secret) headers set on every relayed request.
    pub headers: Vec<(String, String)>,
}

/// A route ready to serve.
pub(crate) struct CompiledRoute {
    name: String,
    target: Arc<Target>,
    /// Without a trailing `/` (empty for the root).
    base_path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Validates a run's routes.
pub(crate) fn compile(routes: &[McpRoute]) -> Result<Vec<CompiledRoute>, ProxyError> {
    routes.iter().map(compile_route).collect()
}

fn compile_route(route: &McpRoute) -> Result<CompiledRoute, ProxyError> {
    let invalid = |reason: String| ProxyError::InvalidMcpRoute {
        name: route.name.clone(),
        reason,
    };
    if route.name.is_empty() || route.name.contains(['/', '?', '#', '%']) {
        return Err(invalid("the name must be one plain path segment".to_string()));
    }
    let url = McpUrl::parse(&route.url).map_err(invalid)?;
    let headers = route
        .headers
        .iter()
        .map(|(name, value)| {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(format!("header {name:?}: {e}")))?;
            let value = HeaderValue::from_str(value).map_err(|e| invalid(format!("value of {name}: {e}")))?;
            Ok((name, value))
        })
        .collect::<Result<_, ProxyError>>()?;
    Ok(CompiledRoute {
        name: route.name.clone(),
        target: Arc::new(Target {
            tls: true,
            host: url.host,
            port: url.port,
            destination: None,
        }),
        base_path: url.path.trim_end_matches('/').to_string(),
        headers,
    })
}

/// Whether `req` is addressed to the proxy itself (its name in the
/// absolute-form URL, or in `Host` of an origin-form request).
pub(crate) fn is_relay_request<B>(req: &Request<B>) -> bool {
    if req.method() == Method::CONNECT {
        return false;
    }
    let host = match req.uri().authority() {
        Some(authority) => Some(authority.host().to_string()),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<http::uri::Authority>().ok())
            .map(|a| a.host().to_string()),
    };
    host.is_some_and(|h| h.trim_end_matches('.').eq_ignore_ascii_case(PROXY_HOST_NAME))
}

/// Serves one request addressed to the relay.
pub(crate) async fn serve(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    let Some(run) = authenticate(&shared, &req) else {
        return proxy_auth_required();
    };
    let path = req.uri().path().to_string();
    if let Some(endpoint) = crate::credential_endpoint::find(&run, &path) {
        return crate::credential_endpoint::serve(run.clone(), endpoint, &req).await;
    }
    let Some((route, rest)) = find_route(&run, &path) else {
        return local_response(
            StatusCode::NOT_FOUND,
            "mcp",
            format!(
                "moat proxy: no MCP server at {path}; this run's are {}\n",
                route_list(&run)
            ),
        );
    };
    let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let upstream_path = format!("{}{rest}{query}", route.base_path);
    let upstream_path = if upstream_path.starts_with('/') {
        upstream_path
    } else {
        format!("/{upstream_path}")
    };
    let Ok(uri) = upstream_path.parse() else {
        return local_response(
            StatusCode::BAD_REQUEST,
            "mcp",
            format!("moat proxy: cannot relay the path {path}\n"),
        );
    };
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    remove_presented_token(&run, &mut parts.headers);
    for (name, value) in &route.headers {
        parts.headers.insert(name.clone(), value.clone());
    }
    let target = route.target.clone();
    forward(shared, run.clone(), target, Request::from_parts(parts, body)).await
}

/// The run whose token the request presents: `Proxy-Authorization` (a
/// client using the proxy variables), else `Authorization: Bearer`.
fn authenticate(shared: &Shared, req: &Request<Incoming>) -> Option<Arc<RunEntry>> {
    [header::PROXY_AUTHORIZATION, header::AUTHORIZATION]
        .iter()
        .filter_map(|name| req.headers().get(name))
        .filter_map(|value| presented_secret(value.as_bytes()))
        .find_map(|secret| shared.registry.authenticate(&secret))
}

/// Takes out every `Authorization` that carries the run's token: it names
/// the run to the proxy, and is nobody else's business.
fn remove_presented_token(run: &RunEntry, headers: &mut http::HeaderMap) {
    let carries_token = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .any(|value| presented_secret(value.as_bytes()).is_some_and(|secret| run.token_matches(&secret)));
    if carries_token {
        headers.remove(header::AUTHORIZATION);
    }
}

/// The route `path` names and the rest of the path after its name.
fn find_route<'a>(run: &'a RunEntry, path: &'a str) -> Option<(&'a CompiledRoute, &'a str)> {
    let after = path.strip_prefix(RELAY_PREFIX)?;
    let (name, rest) = after.find('/').map_or((after, ""), |slash| after.split_at(slash));
    run.mcp_routes().iter().find(|r| r.name == name).map(|r| (r, rest))
}

fn route_list(run: &RunEntry) -> String {
    let names: Vec<String> = run
        .mcp_routes()
        .iter()
        .map(|r| format!("{RELAY_PREFIX}{}", r.name))
        .collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(url: &str) -> McpRoute {
        McpRoute {
            name: "docs".into(),
            url: url.into(),
            headers: vec![("x-org".into(), "acme".into())],
        }
    }

    #[test]
    fn routes_keep_the_url_path_without_its_trailing_slash() {
        let compiled = compile(&[route("https://mcp.example.com:8443/v1/mcp/")]).unwrap();
        assert_eq!(compiled[0].base_path, "/v1/mcp");
        assert_eq!(
            (compiled[0].target.host.as_str(), compiled[0].target.port),
            ("mcp.example.com", 8443)
        );
        assert!(compiled[0].target.tls);
        assert_eq!(compile(&[route("https://mcp.example.com")]).unwrap()[0].base_path, "");
        assert!(
            compile(&[route("http://mcp.example.com/")]).is_err(),
            "plain http is refused"
        );
        let bad_name = McpRoute {
            name: "a/b".into(),
            ..route("https://mcp.example.com/")
        };
        assert!(compile(&[bad_name]).is_err());
    }

    #[test]
    fn only_requests_for_the_proxys_own_name_are_relayed() {
        let absolute = Request::get("http://moat-proxy:8080/mcp/docs").body(()).unwrap();
        assert!(is_relay_request(&absolute));
        let origin = Request::get("/mcp/docs")
            .header("host", "MOAT-PROXY:8080")
            .body(())
            .unwrap();
        assert!(is_relay_request(&origin));
        let elsewhere = Request::get("http://example.com/mcp/docs").body(()).unwrap();
        assert!(!is_relay_request(&elsewhere));
        let connect = Request::connect("moat-proxy:443").body(()).unwrap();
        assert!(!is_relay_request(&connect));
    }
}
