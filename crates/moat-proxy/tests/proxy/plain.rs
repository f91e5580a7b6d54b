//! Plain `http://` absolute-form requests, and which local addresses the
//! proxy accepts connections on.

use std::sync::Arc;

use http::StatusCode;
use http_body_util::BodyExt as _;
use moat_proxy::{CertificateAuthority, NetworkPolicy, PolicyMode, ProxyConfig, ProxyHandle};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{TestProxy, injection, unique_dir};

/// The pattern a provider would write for the plain upstream: the bare
/// host when it listens on 80 (tests run as root), as `api.github.com`
/// does, else `host:port`.
fn plain_pattern(proxy: &TestProxy, host: &str) -> String {
    match proxy.upstream.plain_addr.port() {
        80 => host.to_string(),
        port => format!("{host}:{port}"),
    }
}

/// Attack: `curl http://api.example.test/` — a credential whose pattern
/// matches port 80 (or names the plain port) must not be sent in clear,
/// nor may the placeholder be swapped for it.
#[tokio::test]
async fn plain_http_requests_follow_the_same_rules_but_get_no_credential() {
    let proxy = TestProxy::start("plain").await;
    let plain = proxy.upstream.plain_addr;
    let rules = vec![
        injection(
            &plain_pattern(&proxy, "api.example.test"),
            "x-api-key",
            "plain-key",
            Some("moat-placeholder-plain"),
            "k",
        ),
        injection(
            &format!("api.example.test:{}", plain.port()),
            "authorization",
            "Bearer plain-token",
            None,
            "port",
        ),
    ];
    let strict = NetworkPolicy {
        mode: PolicyMode::Strict,
        rules: vec![],
    };
    let run = proxy.register("run", strict, rules);
    let client = proxy.client(&run.token);

    let url = format!("http://api.example.test:{}/plain?x=1", plain.port());
    let sent = [
        ("proxy-connection", "keep-alive"),
        ("x-api-key", "moat-placeholder-plain"),
    ];
    let response = client.absolute(&url, &sent).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["headers"]["x-api-key"], "moat-placeholder-plain", "{seen}");
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");
    assert!(!seen.to_string().contains("plain-key"), "{seen}");
    assert!(!seen.to_string().contains("plain-token"), "{seen}");
    assert_eq!(seen["path"], "/plain");
    assert!(seen["headers"].get("proxy-authorization").is_none(), "{seen}");
    assert!(seen["headers"].get("proxy-connection").is_none(), "{seen}");

    let blocked = format!("http://other.example.test:{}/", plain.port());
    assert_eq!(client.absolute(&blocked, &[]).await.status(), StatusCode::FORBIDDEN);

    let mut anonymous = proxy.client(&run.token);
    anonymous.auth = None;
    let response = anonymous.absolute(&url, &[]).await;
    assert_eq!(response.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);

    let records = run.trace_records(2).await;
    let traced_url = url.replace(":80/", "/");
    assert_eq!(records[0]["url"], traced_url.as_str());
    assert!(records[0].get("grants").is_none(), "{}", records[0]);
    assert_eq!(records[1]["decision"], "deny");
}

/// A provider that names its plain port and opts in (`plaintext: true`)
/// gets its credential injected over plain HTTP; TLS still works as before.
#[tokio::test]
async fn a_plaintext_opt_in_with_a_named_port_injects_over_plain_http() {
    let proxy = TestProxy::start("plain-opt-in").await;
    let plain = proxy.upstream.plain_addr;
    let mut rule = injection(
        &format!("api.example.test:{}", plain.port()),
        "x-api-key",
        "plain-key",
        None,
        "k",
    );
    rule.plaintext = true;
    let run = proxy.register("run", NetworkPolicy::default(), vec![rule]);
    let url = format!("http://api.example.test:{}/plain", plain.port());
    let response = proxy.client(&run.token).absolute(&url, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["headers"]["x-api-key"], "plain-key", "{seen}");
    let records = run.trace_records(1).await;
    assert_eq!(records[0]["grants"], serde_json::json!(["k"]));
}

#[tokio::test]
async fn strict_runs_reach_host_services_only_on_listed_ports() {
    let proxy = TestProxy::start("host-service").await;
    let strict = NetworkPolicy {
        mode: PolicyMode::Strict,
        rules: vec![],
    };
    let run = proxy.register("run", strict, vec![]);
    let client = proxy.client(&run.token);
    let listed = proxy.upstream.plain_addr.port();
    let response = client.absolute(&format!("http://moat-host:{listed}/svc"), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let unlisted = listed + 1;
    let response = client.absolute(&format!("http://moat-host:{unlisted}/svc"), &[]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let records = run.trace_records(2).await;
    assert_eq!(records[0]["rule"], "strict: host service port listed in network.host");
}

#[tokio::test]
async fn connections_on_other_local_addresses_are_closed() {
    let dir = unique_dir("local-addr");
    let ca = Arc::new(CertificateAuthority::load_or_create(&dir.join("ca")).unwrap());
    let config = ProxyConfig {
        accept_local_addrs: vec!["127.0.0.2".parse().unwrap()],
        extra_root_ca: None,
        ..ProxyConfig::default()
    };
    let handle = ProxyHandle::new(config, ca).unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let serving = handle.clone();
    tokio::spawn(async move { serving.serve(listener).await });

    let request = b"CONNECT a.example.test:443 HTTP/1.1\r\nhost: a.example.test:443\r\nconnection: close\r\n\r\n";
    let mut answers = Vec::new();
    for ip in ["127.0.0.2", "127.0.0.1"] {
        let mut tcp = tokio::net::TcpStream::connect((ip, port)).await.unwrap();
        let _ = tcp.write_all(request).await;
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer).await;
        answers.push(answer);
    }
    assert!(answers[0].starts_with("HTTP/1.1 407"), "{}", answers[0]);
    assert_eq!(answers[1], "");
    handle.shutdown();
    std::fs::remove_dir_all(&dir).unwrap();
}
