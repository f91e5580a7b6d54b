//! Credential injection: host matching, placeholders, header hygiene, and
//! that the CONNECT target (not the inner Host) decides.

use moat_proxy::NetworkPolicy;

use crate::support::{TestProxy, get, injection};

#[tokio::test]
async fn exact_host_port_and_wildcard_rules_inject_only_where_they_match() {
    let proxy = TestProxy::start("patterns").await;
    let up = &proxy.upstream;
    let port = up.addr.port();
    let rules = vec![
        injection(
            &up.pattern("api.example.test"),
            "authorization",
            "Bearer exact-value",
            None,
            "exact",
        ),
        injection(
            &format!("other.example.test:{port}"),
            "x-api-key",
            "port-value",
            None,
            "with-port",
        ),
        injection(
            &up.pattern("*.wild.example.test"),
            "authorization",
            "Bearer wild-value",
            None,
            "wild",
        ),
    ];
    let run = proxy.register("run", NetworkPolicy::default(), rules);
    let client = proxy.client(&run.token);
    let cases = [
        ("api.example.test", Some(("authorization", "Bearer exact-value"))),
        ("other.example.test", Some(("x-api-key", "port-value"))),
        ("a.wild.example.test", Some(("authorization", "Bearer wild-value"))),
        ("wild.example.test", None),
        ("evil.example.test", None),
    ];
    for (host, expected) in cases {
        let mut tunnel = client.tunnel(&up.authority(host), false).await;
        let seen = tunnel.echo(get(host, "/", &[])).await;
        let headers = &seen["headers"];
        match expected {
            Some((name, value)) => assert_eq!(headers[name], value, "{host}: {seen}"),
            None => {
                assert!(headers.get("authorization").is_none(), "{host}: {seen}");
                assert!(headers.get("x-api-key").is_none(), "{host}: {seen}");
            }
        }
    }
}

#[tokio::test]
async fn placeholder_is_replaced_and_never_upgraded_for_other_hosts() {
    let proxy = TestProxy::start("placeholder").await;
    let up = &proxy.upstream;
    let rule = injection(
        &up.pattern("api.example.test"),
        "authorization",
        "token real-secret-value",
        Some("moat-placeholder-0000"),
        "github",
    );
    let run = proxy.register("run", NetworkPolicy::default(), vec![rule]);
    let client = proxy.client(&run.token);
    let sent = [("authorization", "token moat-placeholder-0000")];

    let mut api = client.tunnel(&up.authority("api.example.test"), false).await;
    let seen = api.echo(get("api.example.test", "/", &sent)).await;
    assert_eq!(seen["headers"]["authorization"], "token real-secret-value");

    let own = [("authorization", "Bearer users-own-credential")];
    let seen = api.echo(get("api.example.test", "/", &own)).await;
    assert_eq!(seen["headers"]["authorization"], "Bearer users-own-credential");

    let mut other = client.tunnel(&up.authority("other.example.test"), false).await;
    let seen = other.echo(get("other.example.test", "/", &sent)).await;
    assert_eq!(seen["headers"]["authorization"], "token moat-placeholder-0000");
}

#[tokio::test]
async fn spoofed_inner_host_cannot_redirect_a_credential() {
    let proxy = TestProxy::start("spoof").await;
    let up = &proxy.upstream;
    let rule = injection(
        &up.pattern("api.example.test"),
        "authorization",
        "Bearer api-only",
        None,
        "api",
    );
    let run = proxy.register("run", NetworkPolicy::default(), vec![rule]);
    let client = proxy.client(&run.token);

    // Tunnel to evil, claim to be api inside: no credential, and the
    // upstream sees the CONNECT target as Host.
    let mut evil = client.tunnel(&up.authority("evil.example.test"), false).await;
    let seen = evil.echo(get("api.example.test", "/", &[])).await;
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");
    assert!(upstream_host(&seen).starts_with("evil.example.test"), "{seen}");

    // Tunnel to api, claim to be evil: the request still goes to api.
    let mut api = client.tunnel(&up.authority("api.example.test"), false).await;
    let seen = api.echo(get("evil.example.test", "/", &[])).await;
    assert_eq!(seen["headers"]["authorization"], "Bearer api-only");
    assert!(upstream_host(&seen).starts_with("api.example.test"), "{seen}");
}

#[tokio::test]
async fn proxy_headers_are_stripped_before_forwarding() {
    let proxy = TestProxy::start("strip").await;
    let run = proxy.register("run", NetworkPolicy::default(), vec![]);
    let client = proxy.client(&run.token);
    let mut tunnel = client
        .tunnel(&proxy.upstream.authority("api.example.test"), false)
        .await;
    let sent = [
        ("proxy-authorization", "Basic c2VjcmV0"),
        ("proxy-connection", "keep-alive"),
    ];
    let seen = tunnel.echo(get("api.example.test", "/", &sent)).await;
    assert!(seen["headers"].get("proxy-authorization").is_none(), "{seen}");
    assert!(seen["headers"].get("proxy-connection").is_none(), "{seen}");
    assert_eq!(seen["version"], "HTTP/1.1", "HTTP/1.1 clients use upstream HTTP/1.1");
}

#[tokio::test]
async fn updated_injections_apply_to_an_open_tunnel() {
    let proxy = TestProxy::start("update").await;
    let pattern = proxy.upstream.pattern("api.example.test");
    let first = injection(&pattern, "authorization", "Bearer first", None, "g");
    let run = proxy.register("run", NetworkPolicy::default(), vec![first]);
    let mut tunnel = proxy
        .client(&run.token)
        .tunnel(&proxy.upstream.authority("api.example.test"), false)
        .await;
    let seen = tunnel.echo(get("api.example.test", "/", &[])).await;
    assert_eq!(seen["headers"]["authorization"], "Bearer first");
    let refreshed = injection(&pattern, "authorization", "Bearer refreshed", None, "g");
    proxy.handle.update_injections("run", vec![refreshed]).unwrap();
    let seen = tunnel.echo(get("api.example.test", "/", &[])).await;
    assert_eq!(seen["headers"]["authorization"], "Bearer refreshed");
    proxy.handle.update_injections("run", vec![]).unwrap();
    let seen = tunnel.echo(get("api.example.test", "/", &[])).await;
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");
}

/// The host the upstream saw: `Host` over HTTP/1.1, `:authority` over HTTP/2.
fn upstream_host(seen: &serde_json::Value) -> &str {
    seen["headers"]["host"]
        .as_str()
        .or_else(|| seen["authority"].as_str())
        .unwrap()
}
