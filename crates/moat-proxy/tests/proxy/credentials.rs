//! Credential endpoints: `http://moat-proxy:PORT/<name>/credentials`
//! answers the run that presents its token (through the proxy or straight
//! to it) with what that run's source issues; another run's token, no
//! token, another name or another method get nothing from the source, and
//! the trace records the request without its body.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;
use moat_proxy::{CredentialEndpoint, CredentialFuture, CredentialRefusal, NetworkPolicy, PolicyMode};

use crate::support::{TestProxy, body_text};

/// A source that issues `answer` for run `run`, counting its calls.
fn endpoint(run: &'static str, calls: Arc<AtomicUsize>, refuse: bool) -> CredentialEndpoint {
    CredentialEndpoint {
        name: "aws".into(),
        source: Arc::new(move || -> CredentialFuture {
            calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if refuse {
                    Err(CredentialRefusal {
                        status: 403,
                        message: "the aws grant was revoked".into(),
                    })
                } else {
                    Ok(format!("{{\"Version\":1,\"AccessKeyId\":\"ASIA-{run}\"}}"))
                }
            })
        }),
    }
}

fn strict() -> NetworkPolicy {
    NetworkPolicy {
        mode: PolicyMode::Strict,
        rules: vec![],
    }
}

#[tokio::test]
async fn each_run_gets_its_own_sources_answer_and_only_with_its_token() {
    let proxy = TestProxy::start("credential-endpoint").await;
    let (calls_a, calls_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let run_a = proxy.register_with_endpoints(
        "a",
        strict(),
        vec![],
        vec![],
        vec![endpoint("a", calls_a.clone(), false)],
    );
    let run_b = proxy.register_with_endpoints(
        "b",
        strict(),
        vec![],
        vec![],
        vec![endpoint("b", calls_b.clone(), true)],
    );
    let url = format!("http://moat-proxy:{}/aws/credentials", proxy.addr.port());

    let answer = proxy.client(&run_a.token).absolute(&url, &[]).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()["content-type"], "application/json");
    assert_eq!(answer.headers()["cache-control"], "no-store");
    assert_eq!(body_text(answer).await, "{\"Version\":1,\"AccessKeyId\":\"ASIA-a\"}");

    let refused = proxy.client(&run_b.token).absolute(&url, &[]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(body_text(refused).await.contains("revoked"));

    let mut anonymous = proxy.client(&run_a.token);
    anonymous.auth = None;
    let unauthenticated = anonymous.absolute(&url, &[]).await;
    assert_eq!(unauthenticated.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    let other_name = proxy
        .client(&run_a.token)
        .absolute(&url.replace("/aws/", "/gcp/"), &[])
        .await;
    assert_eq!(other_name.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        calls_a.load(Ordering::SeqCst),
        1,
        "only the authenticated request asked run a's source"
    );
    assert_eq!(calls_b.load(Ordering::SeqCst), 1);

    let records = run_a.trace_records(1).await;
    let record = &records[0];
    assert_eq!(record["url"], url.as_str());
    assert_eq!(record["status"], 200);
    assert_eq!(record["rule"], "credential endpoint aws");
    assert!(
        !record.to_string().contains("ASIA-a"),
        "the trace holds no credential: {record}"
    );
    let refusals = run_b.trace_records(1).await;
    assert_eq!(refusals[0]["decision"], "deny");
}
