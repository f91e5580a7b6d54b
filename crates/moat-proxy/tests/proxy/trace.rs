//! The per-run trace: one redacted record per request.

use moat_proxy::{HostRule, NetworkPolicy, PolicyMode, ProxyToken, RunRegistration};

use crate::support::{TestProxy, get, injection};

#[tokio::test]
async fn each_request_leaves_a_redacted_record() {
    let proxy = TestProxy::start("trace").await;
    let up = &proxy.upstream;
    let rule = injection(
        &up.pattern("api.example.test"),
        "authorization",
        "Bearer trace-secret-value",
        Some("moat-placeholder-1111"),
        "github",
    );
    let run = proxy.register("run", NetworkPolicy::default(), vec![rule]);
    let mut tunnel = proxy
        .client(&run.token)
        .tunnel(&up.authority("api.example.test"), false)
        .await;
    let path = "/repos/x?access_token=moat-placeholder-1111&page=2";
    tunnel.echo(get("api.example.test", path, &[])).await;
    tunnel.echo(get("api.example.test", "/plain", &[])).await;

    let records = run.trace_records(2).await;
    let first = &records[0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["host"], "api.example.test");
    assert_eq!(first["status"], 200);
    assert_eq!(first["decision"], "allow");
    assert_eq!(first["grants"], serde_json::json!(["github"]));
    assert!(first["bytes_in"].as_u64().unwrap() > 0);
    assert!(first["duration_ms"].as_f64().unwrap() >= 0.0);
    let url = first["url"].as_str().unwrap();
    assert!(url.starts_with("https://api.example.test"), "{url}");
    assert!(
        url.contains("access_token=[REDACTED]") && url.contains("page=2"),
        "{url}"
    );
    assert_ne!(records[0]["request_id"], records[1]["request_id"]);

    let text = std::fs::read_to_string(&run.trace_path).unwrap();
    assert!(!text.contains("trace-secret-value"), "{text}");
    assert!(!text.contains("moat-placeholder-1111"), "{text}");
}

/// Leak: the agent puts a run's `secrets:` value (which it holds in its
/// environment) in a URL, plainly or percent-encoded, in the path, the
/// query or the host name, or in a path a rule then quotes in its denial;
/// none of it may reach `network.jsonl`.
#[tokio::test]
async fn secret_values_are_redacted_from_urls_and_rules_however_encoded() {
    let proxy = TestProxy::start("trace-secrets").await;
    let up = &proxy.upstream;
    let token = ProxyToken::generate();
    let trace_path = proxy.dir.join("secrets.jsonl");
    let policy = NetworkPolicy {
        mode: PolicyMode::Permissive,
        rules: vec![HostRule {
            host: up.pattern("other.example.test"),
            requests: vec!["allow GET /public/**".parse().unwrap()],
        }],
    };
    proxy
        .handle
        .register_run(RunRegistration {
            run_id: "secrets".into(),
            token: token.clone(),
            policy,
            injections: vec![],
            trace_path: trace_path.clone(),
            host_ports: vec![up.addr.port()],
            redact_values: vec!["db-pass/w0rd+x".to_string(), "evil".to_string()],
            events: None,
            mcp_servers: vec![],
            credential_endpoints: vec![],
        })
        .unwrap();
    let client = proxy.client(&token);
    let mut api = client.tunnel(&up.authority("api.example.test"), false).await;
    for path in [
        "/dump/db-pass/w0rd+x/now",
        "/dump?p=db-pass%2Fw0rd%2Bx&page=2",
        "/dump/%64%62-pass%2fw0rd%2bx",
        "/cb?code=abc&jwt=eyJ.x.y&%73ession=s1&page=3",
    ] {
        api.echo(get("api.example.test", path, &[])).await;
    }
    let mut other = client.tunnel(&up.authority("other.example.test"), false).await;
    let response = other
        .send(get("other.example.test", "/private/db-pass/w0rd+x", &[]))
        .await;
    assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
    let mut evil = client.tunnel(&up.authority("evil.example.test"), false).await;
    evil.echo(get("evil.example.test", "/", &[])).await;

    let mut records = Vec::new();
    for _ in 0..200 {
        let text = std::fs::read_to_string(&trace_path).unwrap_or_default();
        records = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if records.len() >= 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let urls: Vec<&str> = records
        .iter()
        .map(|r: &serde_json::Value| r["url"].as_str().unwrap())
        .collect();
    let base = format!("https://{}", up.pattern("api.example.test"));
    assert_eq!(
        urls[..4],
        [
            format!("{base}/dump/[REDACTED]/now"),
            format!("{base}/dump?p=[REDACTED]&page=2"),
            format!("{base}/dump/[REDACTED]"),
            format!("{base}/cb?code=[REDACTED]&jwt=[REDACTED]&%73ession=[REDACTED]&page=3"),
        ]
    );
    assert_eq!(records[4]["decision"], "deny");
    assert_eq!(records[5]["host"], "[REDACTED].example.test");
    let evil_url = format!("https://{}/", up.pattern("[REDACTED].example.test"));
    assert_eq!(records[5]["url"], evil_url.as_str());
    let text = std::fs::read_to_string(&trace_path).unwrap();
    for leaked in ["db-pass", "w0rd", "%64%62", "eyJ", "evil"] {
        assert!(!text.contains(leaked), "{leaked} in {text}");
    }
}
