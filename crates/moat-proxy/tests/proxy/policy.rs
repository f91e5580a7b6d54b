//! Network policy: strict and shadow modes, method/path rules, resolved-address checks,
//! and redirects passed through rather than followed.

use std::sync::{Arc, Mutex};

use http::StatusCode;
use moat_proxy::{HostRule, NetworkPolicy, PolicyMode, ProxyEvent, ProxyToken, RunRegistration};

use crate::support::{TestProxy, body_text, get, get_h2, injection};

fn strict(rules: Vec<HostRule>) -> NetworkPolicy {
    NetworkPolicy {
        mode: PolicyMode::Strict,
        rules,
    }
}

fn host_rule(pattern: String, method_path_rules: &[&str]) -> HostRule {
    HostRule {
        host: pattern,
        requests: method_path_rules.iter().map(|s| s.parse().unwrap()).collect(),
    }
}

#[tokio::test]
async fn strict_mode_blocks_unlisted_hosts_and_explains_how_to_allow() {
    let proxy = TestProxy::start("strict").await;
    let up = &proxy.upstream;
    let policy = strict(vec![host_rule(up.pattern("api.example.test"), &[])]);
    let grant = injection(&up.pattern("other.example.test"), "x-api-key", "k", None, "other");
    let run = proxy.register("run", policy, vec![grant]);
    let client = proxy.client(&run.token);

    let (response, tunnel) = client.connect(&up.authority("evil.example.test")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(tunnel.is_none());
    let body = body_text(response).await;
    assert!(body.contains("strict"), "{body}");
    assert!(body.contains("moat run --allow-host evil.example.test"), "{body}");
    assert!(body.contains("network.rules"), "{body}");

    for host in ["api.example.test", "other.example.test"] {
        let mut tunnel = client.tunnel(&up.authority(host), false).await;
        tunnel.echo(get(host, "/", &[])).await;
    }
    let records = run.trace_records(3).await;
    let denied = records.iter().find(|r| r["decision"] == "deny").unwrap();
    assert_eq!(denied["host"], "evil.example.test");
    assert_eq!(denied["status"], 403);
}

#[tokio::test]
async fn method_path_rules_first_match_wins() {
    let proxy = TestProxy::start("methodpath").await;
    let up = &proxy.upstream;
    let rules = ["deny * /repos/secret/**", "allow GET /repos/**"];
    let policy = strict(vec![host_rule(up.pattern("api.example.test"), &rules)]);
    let run = proxy.register("run", policy, vec![]);
    let mut tunnel = proxy
        .client(&run.token)
        .tunnel(&up.authority("api.example.test"), false)
        .await;
    tunnel.echo(get("api.example.test", "/repos/public/x", &[])).await;

    let response = tunnel.send(get("api.example.test", "/repos/secret/key", &[])).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(body_text(response).await.contains("deny * /repos/secret/**"));

    let post = http::Request::post("/repos/public/x")
        .header("host", "api.example.test")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    let response = tunnel.send(post).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        body_text(response)
            .await
            .contains("no allow rule matches POST /repos/public/x")
    );
}

#[tokio::test]
async fn loopback_and_link_local_destinations_need_an_explicit_opt_in() {
    let proxy = TestProxy::start("restricted").await;
    let up = &proxy.upstream;
    let token = ProxyToken::generate();
    proxy
        .handle
        .register_run(RunRegistration {
            run_id: "no-host-ports".into(),
            token: token.clone(),
            policy: NetworkPolicy::default(),
            injections: vec![],
            trace_path: proxy.dir.join("no-host-ports.jsonl"),
            host_ports: vec![],
            redact_values: vec![],
            events: None,
            mcp_servers: vec![],
            credential_endpoints: vec![],
        })
        .unwrap();
    let client = proxy.client(&token);
    for authority in [
        up.authority("api.example.test"),
        "metadata.example.test:80".to_string(),
        "169.254.169.254:80".to_string(),
        "localhost:22".to_string(),
    ] {
        let (response, tunnel) = client.connect(&authority).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{authority}");
        assert!(tunnel.is_none());
        let body = body_text(response).await;
        assert!(body.contains("network.host"), "{authority}: {body}");
    }

    // The same upstream is reachable for a run listing the port, or naming host:port.
    let explicit = format!("api.example.test:{}", up.addr.port());
    let allowed = NetworkPolicy {
        mode: PolicyMode::Permissive,
        rules: vec![host_rule(explicit, &[])],
    };
    let token = ProxyToken::generate();
    proxy
        .handle
        .register_run(RunRegistration {
            run_id: "explicit".into(),
            token: token.clone(),
            policy: allowed,
            injections: vec![],
            trace_path: proxy.dir.join("explicit.jsonl"),
            host_ports: vec![],
            redact_values: vec![],
            events: None,
            mcp_servers: vec![],
            credential_endpoints: vec![],
        })
        .unwrap();
    let mut tunnel = proxy
        .client(&token)
        .tunnel(&up.authority("api.example.test"), false)
        .await;
    tunnel.echo(get("api.example.test", "/", &[])).await;
    let (response, _) = proxy.client(&token).connect(&up.authority("other.example.test")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let proxy = TestProxy::start("redirect").await;
    let run = proxy.register("run", NetworkPolicy::default(), vec![]);
    let mut tunnel = proxy
        .client(&run.token)
        .tunnel(&proxy.upstream.authority("api.example.test"), false)
        .await;
    let response = tunnel.send(get("api.example.test", "/redirect", &[])).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()["location"], "https://other.example.test/");
}

/// Attack: spell a path so its raw text escapes the rule that the path the
/// server resolves falls under (`/repos/../orgs/x` under `allow GET
/// /repos/**`; `/./admin`, `/%61dmin`, `/admin;x`, `//admin` past `deny *
/// /admin/**`), or override the method. Each is refused, over HTTP/1.1,
/// HTTP/2 and plain absolute-form HTTP, and an allowed request reaches the
/// upstream with the normalised path the rules judged.
#[tokio::test]
async fn path_rule_bypasses_are_refused_and_the_upstream_sees_the_normalised_path() {
    let proxy = TestProxy::start("normalise").await;
    let up = &proxy.upstream;
    let plain_port = up.plain_addr.port();
    let repos_only = ["allow GET /repos/**"];
    let no_admin = ["deny * /admin/**"];
    let policy = strict(vec![
        host_rule(up.pattern("api.example.test"), &repos_only),
        host_rule(format!("api.example.test:{plain_port}"), &repos_only),
        host_rule(up.pattern("other.example.test"), &no_admin),
    ]);
    let run = proxy.register("run", policy, vec![]);
    let client = proxy.client(&run.token);

    let mut api = client.tunnel(&up.authority("api.example.test"), false).await;
    for path in ["/repos/../orgs/x", "/repos/%2e%2e/orgs/x", "/repos/x/..;/../orgs/x"] {
        let response = api.send(get("api.example.test", path, &[])).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    for path in ["/repos/x%2F..%2F..%2Forgs", "/repos/x\\..\\..\\orgs", "/repos/x%00"] {
        let response = api.send(get("api.example.test", path, &[])).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    let overrides = [("x-http-method-override", "DELETE")];
    let response = api.send(get("api.example.test", "/repos/x", &overrides)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = api.send(get("api.example.test", "/repos/x?_method=DELETE", &[])).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let seen = api
        .echo(get(
            "api.example.test",
            "/repos/a/./b//c/../%64;v=1?page=2&q=%2F..",
            &[],
        ))
        .await;
    assert_eq!(seen["path"], "/repos/a/b/d;v=1", "{seen}");
    assert_eq!(seen["query"], "page=2&q=%2F..", "{seen}");

    let mut other = client.tunnel(&up.authority("other.example.test"), true).await;
    for path in [
        "/./admin",
        "/%61dmin",
        "/admin;x",
        "//admin",
        "/Admin/users",
        "/x/%2e%2e/admin",
    ] {
        let response = other.send(get_h2(&up.authority("other.example.test"), path)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let seen = other
        .echo(get_h2(&up.authority("other.example.test"), "/x/.%2E/y"))
        .await;
    assert_eq!(seen["path"], "/y", "{seen}");

    let base = format!("http://api.example.test:{plain_port}");
    let response = client.absolute(&format!("{base}/repos/../orgs/x"), &[]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = client.absolute(&format!("{base}/repos//x/%2e/y"), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen: serde_json::Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(seen["path"], "/repos/x/y", "{seen}");

    // Only the three allowed requests reached the upstream; the trace shows
    // every refusal as a denial.
    let records = run.trace_records(18).await;
    let allowed: Vec<&str> = records
        .iter()
        .filter(|r| r["decision"] == "allow")
        .map(|r| r["url"].as_str().unwrap())
        .collect();
    assert_eq!(allowed.len(), 3, "{allowed:?}");
    assert!(
        records
            .iter()
            .all(|r| r["decision"] == "allow" || r["decision"] == "deny")
    );
}

/// Shadow: what strict would refuse goes through, and the trace and the
/// run's event sink say under which rule strict would have refused it; the
/// rules' own refusals still hold; the same rules in strict refuse it.
#[tokio::test]
async fn shadow_mode_allows_and_records_what_strict_would_refuse() {
    let proxy = TestProxy::start("shadow").await;
    let up = &proxy.upstream;
    let rules = vec![host_rule(up.pattern("api.example.test"), &["allow GET /items/*"])];
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let token = ProxyToken::generate();
    let trace_path = proxy.dir.join("shadow.jsonl");
    proxy
        .handle
        .register_run(RunRegistration {
            run_id: "shadow".into(),
            token: token.clone(),
            policy: NetworkPolicy {
                mode: PolicyMode::Shadow,
                rules: rules.clone(),
            },
            injections: vec![],
            trace_path: trace_path.clone(),
            host_ports: vec![up.addr.port()],
            redact_values: vec![],
            events: Some(Arc::new(move |event| sink.lock().unwrap().push(event))),
            mcp_servers: vec![],
            credential_endpoints: vec![],
        })
        .unwrap();
    let client = proxy.client(&token);
    let mut api = client.tunnel(&up.authority("api.example.test"), false).await;
    api.echo(get("api.example.test", "/items/1", &[])).await;
    let response = api.send(get("api.example.test", "/admin", &[])).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "the rules' refusals hold");
    let mut other = client.tunnel(&up.authority("other.example.test"), false).await;
    let seen = other.echo(get("other.example.test", "/unlisted", &[])).await;
    assert_eq!(seen["path"], "/unlisted");

    let run = crate::support::TestRun { token, trace_path };
    let records = run.trace_records(3).await;
    let by_url = |suffix: &str| {
        records
            .iter()
            .find(|r| r["url"].as_str().unwrap().ends_with(suffix))
            .unwrap()
    };
    assert!(by_url("/items/1").get("would_block").is_none(), "{records:?}");
    assert_eq!(by_url("/admin")["decision"], "deny");
    assert!(by_url("/admin").get("would_block").is_none(), "{records:?}");
    let unlisted = by_url("/unlisted");
    assert_eq!(unlisted["decision"], "allow");
    assert!(
        unlisted["would_block"]
            .as_str()
            .unwrap()
            .starts_with("strict: no network.rules entry"),
        "{unlisted}"
    );
    let events = events.lock().unwrap().clone();
    assert!(events.contains(&ProxyEvent::ShadowDenied {
        method: "GET".into(),
        host: "other.example.test".into(),
        path: "/unlisted".into(),
        rule: unlisted["would_block"].as_str().unwrap().into(),
    }));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ProxyEvent::ShadowDenied { .. }))
            .count(),
        1,
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ProxyEvent::Denied { path, .. } if path == "/admin"))
    );

    // The same rules in strict refuse the unlisted host.
    let strict_run = proxy.register("strict", strict(rules), vec![]);
    let (response, tunnel) = proxy
        .client(&strict_run.token)
        .connect(&up.authority("other.example.test"))
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(tunnel.is_none());
}

/// `moat join` adds hosts to a live strict run: the new rules judge its
/// next request; the mode cannot change under it.
#[tokio::test]
async fn an_updated_policy_allows_a_host_on_the_next_request_and_keeps_its_mode() {
    let proxy = TestProxy::start("update-policy").await;
    let up = &proxy.upstream;
    let run = proxy.register("run", strict(vec![]), vec![]);
    let client = proxy.client(&run.token);
    let (refused, _) = client.connect(&up.authority("api.example.test")).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    let widened = strict(vec![host_rule(up.pattern("api.example.test"), &[])]);
    proxy.handle.update_policy("run", &widened).unwrap();
    let mut tunnel = client.tunnel(&up.authority("api.example.test"), false).await;
    tunnel.echo(get("api.example.test", "/", &[])).await;

    let permissive = NetworkPolicy {
        mode: PolicyMode::Permissive,
        rules: vec![],
    };
    let err = proxy.handle.update_policy("run", &permissive).unwrap_err();
    assert_eq!(
        err.to_string(),
        "run run's policy is strict; it cannot become permissive while it runs"
    );
    let (still_refused, _) = client.connect(&up.authority("evil.example.test")).await;
    assert_eq!(still_refused.status(), StatusCode::FORBIDDEN);
    assert!(proxy.handle.update_policy("gone", &widened).is_err());
}
