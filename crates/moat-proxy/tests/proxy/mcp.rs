//! The MCP relay: `http://moat-proxy:PORT/mcp/<name>` reaches the run's
//! server with the grant's credential, whether the client comes through
//! the proxy (absolute form, `Proxy-Authorization`) or straight to it
//! (origin form, the run token as a bearer); the token never goes
//! upstream, responses stream, redirects come back unfollowed, and the
//! trace names the real URL.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use moat_proxy::{McpRoute, NetworkPolicy, PolicyMode};
use tokio::net::TcpStream;

use crate::support::{TestProxy, TestRun, injection, next_data};

const SECRET: &str = "Bearer real-mcp-secret-7d1e";

fn route(name: &str, proxy: &TestProxy, path: &str) -> McpRoute {
    McpRoute {
        name: name.to_string(),
        url: format!("https://{}{path}", proxy.upstream.authority("api.example.test")),
        headers: vec![("x-org".to_string(), "acme".to_string())],
    }
}

/// A strict run whose only way to the upstream is its grant.
fn register(proxy: &TestProxy) -> TestRun {
    let rule = injection(
        &proxy.upstream.pattern("api.example.test"),
        "authorization",
        SECRET,
        None,
        "mcp-docs",
    );
    let routes = vec![
        route("docs", proxy, "/v1/echo/"),
        route("stream", proxy, "/sse"),
        route("moved", proxy, "/redirect"),
    ];
    let strict = NetworkPolicy {
        mode: PolicyMode::Strict,
        rules: vec![],
    };
    proxy.register_with_mcp("run", strict, vec![rule], routes)
}

/// An origin-form request straight to the proxy, as a client that ignores
/// the proxy variables sends it.
async fn direct(proxy: &TestProxy, path: &str, authorization: Option<&str>) -> Response<Incoming> {
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(connection);
    let mut req = Request::get(path).header("host", format!("moat-proxy:{}", proxy.addr.port()));
    if let Some(authorization) = authorization {
        req = req.header("authorization", authorization);
    }
    sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
}

async fn json(response: Response<Incoming>) -> serde_json::Value {
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn the_relay_injects_the_grant_and_never_forwards_the_run_token() {
    let proxy = TestProxy::start("mcp-inject").await;
    let run = register(&proxy);
    let token = run.token.as_str().to_string();
    let relay = format!("http://moat-proxy:{}", proxy.addr.port());
    let client = proxy.client(&run.token);

    let through_proxy = client
        .absolute(
            &format!("{relay}/mcp/docs/tools?page=2"),
            &[("x-org", "forged"), ("authorization", &format!("Bearer {token}"))],
        )
        .await;
    let seen = json(through_proxy).await;
    assert_eq!(seen["path"], "/v1/echo/tools", "{seen}");
    assert_eq!(seen["query"], "page=2");
    assert_eq!(seen["headers"]["authorization"], SECRET);
    assert_eq!(seen["headers"]["x-org"], "acme", "the file's headers win");
    assert_eq!(seen["headers"].get("proxy-authorization"), None);
    assert!(
        !seen.to_string().contains(&token),
        "the run token went upstream: {seen}"
    );

    let straight = json(direct(&proxy, "/mcp/docs", Some(&format!("Bearer {token}"))).await).await;
    assert_eq!(straight["path"], "/v1/echo");
    assert_eq!(straight["headers"]["authorization"], SECRET);
    assert!(!straight.to_string().contains(&token));

    let records = run.trace_records(2).await;
    let expected = format!(
        "https://{}/v1/echo/tools?page=2",
        proxy.upstream.pattern("api.example.test")
    );
    assert_eq!(records[0]["url"], expected.as_str());
    assert_eq!(records[0]["grants"], serde_json::json!(["mcp-docs"]));
    let trace = std::fs::read_to_string(&run.trace_path).unwrap();
    assert!(!trace.contains(&token) && !trace.contains("real-mcp-secret"));
}

#[tokio::test]
async fn the_relay_refuses_unknown_runs_and_names() {
    let proxy = TestProxy::start("mcp-refuse").await;
    let run = register(&proxy);
    assert_eq!(
        direct(&proxy, "/mcp/docs", None).await.status(),
        StatusCode::PROXY_AUTHENTICATION_REQUIRED
    );
    let wrong = format!("Bearer {}", moat_proxy::ProxyToken::generate().as_str());
    assert_eq!(
        direct(&proxy, "/mcp/docs", Some(&wrong)).await.status(),
        StatusCode::PROXY_AUTHENTICATION_REQUIRED
    );
    let bearer = format!("Bearer {}", run.token.as_str());
    let unknown = direct(&proxy, "/mcp/nope/x", Some(&bearer)).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let body = unknown.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("/mcp/docs"),
        "lists the run's servers"
    );
}

#[tokio::test]
async fn relayed_events_stream_and_redirects_come_back_unfollowed() {
    let _not_flooded = crate::support::CPU.read().await;
    let proxy = TestProxy::start("mcp-stream").await;
    let run = register(&proxy);
    let bearer = format!("Bearer {}", run.token.as_str());

    let sent = Instant::now();
    let response = direct(&proxy, "/mcp/stream", Some(&bearer)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = next_data(&mut body).await.unwrap();
    let first_at = sent.elapsed();
    let second = next_data(&mut body).await.unwrap();
    assert_eq!(
        (&first[..], &second[..]),
        (&b"data: one\n\n"[..], &b"data: two\n\n"[..])
    );
    // The upstream holds the second event (and the end) back 200 ms.
    assert!(first_at < Duration::from_millis(150), "first event after {first_at:?}");

    let moved = direct(&proxy, "/mcp/moved", Some(&bearer)).await;
    assert_eq!(moved.status(), StatusCode::FOUND);
    assert_eq!(moved.headers()["location"], "https://other.example.test/");
    let records = run.trace_records(2).await;
    assert!(
        records
            .iter()
            .all(|r| !r["url"].as_str().unwrap().contains("other.example.test")),
        "the proxy followed the redirect: {records:?}"
    );
}
