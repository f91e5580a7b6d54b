//! Streaming and protocols: SSE without buffering delay, HTTP/2 inside the
//! tunnel, WebSocket upgrades spliced after injection.

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use http::StatusCode;
use hyper_util::rt::TokioIo;
use moat_proxy::NetworkPolicy;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestProxy, get, get_h2, injection, next_data};

async fn assert_events_arrive_one_by_one(h2: bool) {
    let _not_flooded = crate::support::CPU.read().await;
    let proxy = TestProxy::start(if h2 { "sse-h2" } else { "sse-h1" }).await;
    let run = proxy.register("run", NetworkPolicy::default(), vec![]);
    let authority = proxy.upstream.authority("api.example.test");
    let mut tunnel = proxy.client(&run.token).tunnel(&authority, h2).await;
    let request = if h2 {
        get_h2(&authority, "/sse")
    } else {
        get("api.example.test", "/sse", &[])
    };
    let sent = Instant::now();
    let response = tunnel.send(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = next_data(&mut body).await.unwrap();
    let first_at = sent.elapsed();
    let second = next_data(&mut body).await.unwrap();
    let second_at = sent.elapsed();
    assert_eq!(&first[..], b"data: one\n\n");
    assert_eq!(&second[..], b"data: two\n\n");
    // The upstream sleeps 200 ms between events: the first must not wait for the second.
    assert!(first_at < Duration::from_millis(150), "first event after {first_at:?}");
    assert!(
        second_at.checked_sub(first_at).unwrap() > Duration::from_millis(150),
        "gap {:?}",
        second_at.checked_sub(first_at).unwrap()
    );
}

#[tokio::test]
async fn sse_events_arrive_without_buffering_over_http1() {
    assert_events_arrive_one_by_one(false).await;
}

#[tokio::test]
async fn sse_events_arrive_without_buffering_over_http2() {
    assert_events_arrive_one_by_one(true).await;
}

#[tokio::test]
async fn http2_requests_are_intercepted_and_injected() {
    let proxy = TestProxy::start("h2").await;
    let pattern = proxy.upstream.pattern("api.example.test");
    let rule = injection(&pattern, "x-api-key", "h2-key", None, "k");
    let run = proxy.register("run", NetworkPolicy::default(), vec![rule]);
    let authority = proxy.upstream.authority("api.example.test");
    let mut tunnel = proxy.client(&run.token).tunnel(&authority, true).await;
    for _ in 0..3 {
        let seen = tunnel.echo(get_h2(&authority, "/v1/messages")).await;
        assert_eq!(seen["headers"]["x-api-key"], "h2-key", "{seen}");
        assert_eq!(seen["path"], "/v1/messages");
        assert_eq!(seen["version"], "HTTP/2.0", "HTTP/2 clients use the upstream's HTTP/2");
    }
}

#[tokio::test]
async fn websocket_echo_works_with_injected_upgrade_request() {
    let proxy = TestProxy::start("ws").await;
    let pattern = proxy.upstream.pattern("api.example.test");
    let rule = injection(&pattern, "authorization", "Bearer ws-secret", None, "ws");
    let run = proxy.register("run", NetworkPolicy::default(), vec![rule]);
    let client = proxy.client(&run.token);
    let authority = proxy.upstream.authority("api.example.test");
    let (response, upgraded) = client.connect(&authority).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tls = client.tls(upgraded.unwrap(), "api.example.test", &[b"http/1.1"]).await;
    let url = format!("wss://{authority}/ws");
    let (mut ws, response) = tokio_tungstenite::client_async(url, TokioIo::new(tls).into_inner())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let greeting = ws.next().await.unwrap().unwrap();
    assert_eq!(greeting, Message::text("auth=Bearer ws-secret"));
    for text in ["hello", "again"] {
        ws.send(Message::text(text)).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
    }
    ws.close(None).await.unwrap();
    drop(ws);
    let records = run.trace_records(1).await;
    assert_eq!(records[0]["status"], 101);
    assert!(records[0]["bytes_in"].as_u64().unwrap() > 0, "{}", records[0]);
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_responses_finish() {
    let proxy = TestProxy::start("graceful").await;
    let run = proxy.register("run", NetworkPolicy::default(), vec![]);
    let authority = proxy.upstream.authority("api.example.test");
    let mut tunnel = proxy.client(&run.token).tunnel(&authority, false).await;
    let response = tunnel.send(get("api.example.test", "/sse", &[])).await;
    let mut body = response.into_body();
    assert_eq!(&next_data(&mut body).await.unwrap()[..], b"data: one\n\n");

    let handle = proxy.handle.clone();
    let drained = tokio::spawn(async move { handle.shutdown_gracefully(Duration::from_secs(5)).await });
    assert_eq!(&next_data(&mut body).await.unwrap()[..], b"data: two\n\n");
    assert!(
        drained.await.unwrap(),
        "connections did not close within the grace period"
    );
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "still accepting"
    );
}
