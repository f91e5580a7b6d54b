//! Run attribution: 407 challenges, per-run credentials, unregistration.

use http::StatusCode;
use moat_proxy::{NetworkPolicy, ProxyToken};

use crate::support::{ProxyClient, TestProxy, basic_auth, get, injection};

fn client_with_auth(proxy: &TestProxy, auth: Option<String>) -> ProxyClient {
    ProxyClient {
        proxy: proxy.addr,
        auth,
        moat_ca_pem: proxy.moat_ca_pem.clone(),
    }
}

#[tokio::test]
async fn missing_or_unknown_token_gets_407_with_basic_challenge() {
    let proxy = TestProxy::start("auth407").await;
    proxy.register("run-a", NetworkPolicy::default(), vec![]);
    let authority = proxy.upstream.authority("api.example.test");
    let unknown = basic_auth(ProxyToken::generate().as_str());
    for auth in [None, Some(unknown), Some("Bearer not-a-token".to_string())] {
        let (response, tunnel) = client_with_auth(&proxy, auth.clone()).connect(&authority).await;
        assert_eq!(response.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED, "{auth:?}");
        assert_eq!(response.headers()["proxy-authenticate"], "Basic realm=\"moat\"");
        assert!(tunnel.is_none());
    }
}

#[tokio::test]
async fn bearer_token_is_accepted() {
    let proxy = TestProxy::start("bearer").await;
    let run = proxy.register("run-a", NetworkPolicy::default(), vec![]);
    let auth = Some(format!("Bearer {}", run.token.as_str()));
    let (response, _) = client_with_auth(&proxy, auth)
        .connect(&proxy.upstream.authority("api.example.test"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_run_never_receives_another_runs_credentials() {
    let proxy = TestProxy::start("isolation").await;
    let pattern = proxy.upstream.pattern("api.example.test");
    let run_a = proxy.register("run-a", NetworkPolicy::default(), vec![]);
    let run_b = proxy.register(
        "run-b",
        NetworkPolicy::default(),
        vec![injection(
            &pattern,
            "authorization",
            "Bearer run-b-secret",
            None,
            "b-grant",
        )],
    );
    let authority = proxy.upstream.authority("api.example.test");
    let mut tunnel_a = proxy.client(&run_a.token).tunnel(&authority, false).await;
    let mut tunnel_b = proxy.client(&run_b.token).tunnel(&authority, false).await;
    let seen_a = tunnel_a.echo(get("api.example.test", "/a", &[])).await;
    let seen_b = tunnel_b.echo(get("api.example.test", "/b", &[])).await;
    assert!(seen_a["headers"].get("authorization").is_none(), "{seen_a}");
    assert_eq!(seen_b["headers"]["authorization"], "Bearer run-b-secret");
}

#[tokio::test]
async fn unregistering_closes_the_door_for_new_and_open_tunnels() {
    let proxy = TestProxy::start("unregister").await;
    let run = proxy.register("run-a", NetworkPolicy::default(), vec![]);
    let authority = proxy.upstream.authority("api.example.test");
    let client = proxy.client(&run.token);
    let mut tunnel = client.tunnel(&authority, false).await;
    tunnel.echo(get("api.example.test", "/before", &[])).await;
    let summary = proxy.handle.unregister_run("run-a").unwrap();
    assert_eq!(summary.dropped_records, 0);
    let response = tunnel.send(get("api.example.test", "/after", &[])).await;
    assert_eq!(response.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    let (response, _) = client.connect(&authority).await;
    assert_eq!(response.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert!(proxy.handle.unregister_run("run-a").is_err());
}
