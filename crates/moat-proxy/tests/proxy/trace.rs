//! The per-run trace: one redacted record per request.

use moat_proxy::NetworkPolicy;

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
