//! Plain `http://` absolute-form requests, and which local addresses the
//! proxy accepts connections on.

use std::sync::Arc;

use http::StatusCode;
use http_body_util::BodyExt as _;
use moat_proxy::{CertificateAuthority, NetworkPolicy, PolicyMode, ProxyConfig, ProxyHandle};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{TestProxy, injection, unique_dir};

#[tokio::test]
async fn plain_http_requests_follow_the_same_rules() {
    let proxy = TestProxy::start("plain").await;
    let plain = proxy.upstream.plain_addr;
    let pattern = format!("api.example.test:{}", plain.port());
    let rule = injection(&pattern, "x-api-key", "plain-key", None, "k");
    let strict = NetworkPolicy {
        mode: PolicyMode::Strict,
        rules: vec![],
    };
    let run = proxy.register("run", strict, vec![rule]);
    let client = proxy.client(&run.token);

    let url = format!("http://api.example.test:{}/plain?x=1", plain.port());
    let response = client.absolute(&url, &[("proxy-connection", "keep-alive")]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["headers"]["x-api-key"], "plain-key");
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
    assert_eq!(records[1]["decision"], "deny");
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
