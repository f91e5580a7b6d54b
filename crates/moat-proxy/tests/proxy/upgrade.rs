//! Protocol upgrades: only WebSocket is spliced.

use http::StatusCode;
use moat_proxy::NetworkPolicy;

use crate::support::{TestProxy, body_text, get};

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
