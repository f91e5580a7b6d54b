//! Protocol upgrades: only WebSocket is spliced, and a spliced WebSocket
//! lives no longer than its run's registration and the grant it carries.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use http::StatusCode;
use hyper_util::rt::TokioIo;
use moat_proxy::NetworkPolicy;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestProxy, TestRun, body_text, get, injection};

/// Attack: `Upgrade: h2c` turns the connection into HTTP/2 spliced byte for
/// byte, whose later requests would bypass per-request policy and injection.
/// Refused, inside a tunnel and as a plain request, before reaching upstream.
#[tokio::test]
async fn h2c_upgrades_are_refused() {
    let proxy = TestProxy::start("h2c").await;
    let up = &proxy.upstream;
    let run = proxy.register("run", NetworkPolicy::default(), vec![]);
    let client = proxy.client(&run.token);
    let h2c = [
        ("connection", "Upgrade, HTTP2-Settings"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
    ];

    let mut tunnel = client.tunnel(&up.authority("api.example.test"), false).await;
    let response = tunnel.send(get("api.example.test", "/", &h2c)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.headers()["x-moat-blocked"], "upgrade");
    assert!(body_text(response).await.contains("only websocket"));

    let url = format!("http://api.example.test:{}/", up.plain_addr.port());
    let response = client.absolute(&url, &h2c).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let records = run.trace_records(2).await;
    assert!(
        records
            .iter()
            .all(|r| r["decision"] == "deny" && r["rule"] == "upgrade"),
        "{records:?}"
    );
}

type Ws = tokio_tungstenite::WebSocketStream<
    tokio_rustls::client::TlsStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>,
>;

/// Opens a WebSocket to the upstream's echo route through an intercepted
/// tunnel and reads its greeting (`auth=<Authorization it received>`).
async fn open_websocket(proxy: &TestProxy, run: &TestRun) -> (Ws, String) {
    let client = proxy.client(&run.token);
    let authority = proxy.upstream.authority("api.example.test");
    let (response, upgraded) = client.connect(&authority).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tls = client.tls(upgraded.unwrap(), "api.example.test", &[b"http/1.1"]).await;
    let (mut ws, response) =
        tokio_tungstenite::client_async(format!("wss://{authority}/ws"), TokioIo::new(tls).into_inner())
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let greeting = ws.next().await.unwrap().unwrap().into_text().unwrap().to_string();
    (ws, greeting)
}

async fn assert_echoes(ws: &mut Ws) {
    ws.send(Message::text("still there?")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert_eq!(echoed.unwrap().unwrap().unwrap(), Message::text("still there?"));
}

/// Completes when the proxy has closed the WebSocket (end of stream or a
/// connection error); panics if it stays open.
async fn assert_closed(ws: &mut Ws) {
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the WebSocket stayed open");
}

/// Attack: keep using a spliced WebSocket (and the credential injected into
/// its upgrade request) after the run was stopped.
#[tokio::test]
async fn websocket_tunnels_close_when_their_run_is_unregistered() {
    let proxy = TestProxy::start("ws-unregister").await;
    let run = proxy.register("run", NetworkPolicy::default(), vec![]);
    let (mut ws, _) = open_websocket(&proxy, &run).await;
    assert_echoes(&mut ws).await;
    proxy.handle.unregister_run("run").unwrap();
    assert_closed(&mut ws).await;
    let records = run.trace_records(1).await;
    assert_eq!(records[0]["status"], 101);
    assert_eq!(records[0]["error"], "closed: the run was unregistered");
}

/// Attack: keep a WebSocket authenticated with a credential after the user
/// revoked the grant (`moat revoke`). A refresh that keeps the grant leaves
/// it open; removing the grant closes it.
#[tokio::test]
async fn websocket_tunnels_close_when_their_grant_is_revoked() {
    let proxy = TestProxy::start("ws-revoke").await;
    let pattern = proxy.upstream.pattern("api.example.test");
    let granted = injection(&pattern, "authorization", "Bearer ws-secret", None, "ws");
    let run = proxy.register("run", NetworkPolicy::default(), vec![granted]);
    let (mut ws, greeting) = open_websocket(&proxy, &run).await;
    assert_eq!(greeting, "auth=Bearer ws-secret");

    let refreshed = injection(&pattern, "authorization", "Bearer ws-secret-2", None, "ws");
    let other = injection("other.example.test", "x-api-key", "k", None, "other");
    proxy
        .handle
        .update_injections("run", vec![refreshed, other.clone()])
        .unwrap();
    assert_echoes(&mut ws).await;

    proxy.handle.update_injections("run", vec![other]).unwrap();
    assert_closed(&mut ws).await;
    let records = run.trace_records(1).await;
    assert_eq!(records[0]["error"], "closed: grant ws was revoked");
}
