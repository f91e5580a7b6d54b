//! End to end with curl, the way containers use the proxy:
//! `--proxy http://moat:TOKEN@host:port` and the moat CA.

use std::process::Command;

use moat_proxy::NetworkPolicy;

use crate::support::{TestProxy, injection};

fn curl(proxy: &TestProxy, token: &str, url: &str) -> std::process::Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(["--proxy", &format!("http://moat:{token}@{}", proxy.addr)])
        .arg("--cacert")
        .arg(&proxy.moat_ca_path)
        .args(["--write-out", "\n%{http_code}", url])
        .output()
        .expect("curl is installed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_proxy_gets_injected_credentials() {
    let proxy = TestProxy::start("curl").await;
    let rule = injection(
        &proxy.upstream.pattern("api.example.test"),
        "x-api-key",
        "curl-key",
        None,
        "k",
    );
    let run = proxy.register("run", NetworkPolicy::default(), vec![rule]);
    let url = format!("https://{}/v1/models", proxy.upstream.authority("api.example.test"));
    let token = run.token.as_str().to_string();
    let ok = {
        let (proxy_ref, url) = (&proxy, url.clone());
        tokio::task::block_in_place(|| curl(proxy_ref, &token, &url))
    };
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout} {}", String::from_utf8_lossy(&ok.stderr));
    let (body, code) = stdout.rsplit_once('\n').unwrap();
    assert_eq!(code, "200");
    let seen: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(seen["headers"]["x-api-key"], "curl-key");
    assert_eq!(seen["path"], "/v1/models");

    let denied = tokio::task::block_in_place(|| curl(&proxy, "0000", &url));
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("407"), "{stderr}");
}
