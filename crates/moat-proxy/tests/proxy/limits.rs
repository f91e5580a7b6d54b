//! Fairness between runs: per-run limits on open tunnels, on new tunnels
//! per second, and on concurrent HTTP/2 streams per tunnel.

use std::time::{Duration, Instant};

use http::StatusCode;
use moat_proxy::{NetworkPolicy, RunLimits};

use crate::support::{TestProxy, Tunnel, body_text, get, get_h2};

fn limits(max_tunnels: u32, max_streams_per_tunnel: u32, handshakes_per_second: u32) -> RunLimits {
    RunLimits {
        max_tunnels,
        max_streams_per_tunnel,
        handshakes_per_second,
    }
}

/// Attack: one run holds open every connection the proxy can take. Its
/// extra CONNECTs are refused with 429, a closed tunnel frees its slot, and
/// another run is not affected.
#[tokio::test]
async fn a_run_cannot_hold_more_tunnels_than_its_limit() {
    let proxy = TestProxy::start_with_limits("limit-tunnels", limits(2, 100, 1000)).await;
    let authority = proxy.upstream.authority("api.example.test");
    let greedy = proxy.register("greedy", NetworkPolicy::default(), vec![]);
    let client = proxy.client(&greedy.token);
    let mut first = client.tunnel(&authority, false).await;
    first.echo(get("api.example.test", "/", &[])).await;
    let _second = client.tunnel(&authority, false).await;

    let (response, tunnel) = client.connect(&authority).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(tunnel.is_none());
    assert!(body_text(response).await.contains("proxy_max_tunnels"));

    let other = proxy.register("other", NetworkPolicy::default(), vec![]);
    proxy
        .client(&other.token)
        .tunnel(&authority, false)
        .await
        .echo(get("api.example.test", "/", &[]))
        .await;

    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (response, _) = client.connect(&authority).await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the closed tunnel's slot was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Attack: a run opens tunnels as fast as it can, each costing a TLS
/// handshake (and a certificate for a new name).
#[tokio::test]
async fn a_run_cannot_open_tunnels_faster_than_its_rate() {
    let proxy = TestProxy::start_with_limits("limit-rate", limits(100, 100, 2)).await;
    let authority = proxy.upstream.authority("api.example.test");
    let run = proxy.register("run", NetworkPolicy::default(), vec![]);
    let client = proxy.client(&run.token);
    let _one = client.tunnel(&authority, false).await;
    let _two = client.tunnel(&authority, false).await;
    let (response, _) = client.connect(&authority).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(body_text(response).await.contains("proxy_handshakes_per_second"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _three = client.tunnel(&authority, false).await;
    let records = run.trace_records(1).await;
    assert!(
        records.iter().any(|r| r["status"] == 429 && r["rule"] == "limit"),
        "{records:?}"
    );
}

/// Attack: one tunnel multiplexes unbounded HTTP/2 streams. With a limit of
/// one, a second stream opens only when the first (a 200 ms event stream)
/// has ended.
#[tokio::test]
async fn http2_streams_per_tunnel_are_limited() {
    let proxy = TestProxy::start_with_limits("limit-streams", limits(100, 1, 1000)).await;
    let authority = proxy.upstream.authority("api.example.test");
    let run = proxy.register("run", NetworkPolicy::default(), vec![]);
    let Tunnel::Http2(sender) = proxy.client(&run.token).tunnel(&authority, true).await else {
        panic!("no HTTP/2 tunnel");
    };
    // Let the client learn the server's SETTINGS before it opens streams.
    let mut warm = sender.clone();
    warm.send_request(get_h2(&authority, "/")).await.unwrap();
    let started = Instant::now();
    let requests = (0..2).map(|_| {
        let mut sender = sender.clone();
        let authority = authority.clone();
        tokio::spawn(async move {
            let response = sender.send_request(get_h2(&authority, "/sse")).await.unwrap();
            body_text(response).await
        })
    });
    for request in requests.collect::<Vec<_>>() {
        assert!(request.await.unwrap().contains("data: two"));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(380),
        "two 200 ms streams overlapped: {:?}",
        started.elapsed()
    );
}
