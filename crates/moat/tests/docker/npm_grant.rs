//! `moat grant npm --registry URL`: a run's npm config names the registry
//! with a placeholder token, and a request sent the way npm sends it
//! (`Authorization: Bearer <token from the config>`, with curl: the test
//! image has no npm) reaches the registry with the real token, which the
//! container never sees.

use super::proxy::{API_HOST, TOKEN, home_with_upstream};
use super::support::text;

#[test]
fn the_npm_config_holds_a_placeholder_and_the_registry_gets_the_token() {
    let Some((home, upstream)) = home_with_upstream() else {
        return;
    };
    let registry = format!("https://{API_HOST}:{}/npm/", upstream.port);
    home.run_with_input(&["grant", "npm", "--registry", &registry], &format!("{TOKEN}\n"));

    // What npm does: read the token for the registry from its user config
    // and send it as a bearer token.
    let script = r#"cat "$NPM_CONFIG_USERCONFIG"; echo ---
        registry=$(sed -n 's/^registry=//p' "$NPM_CONFIG_USERCONFIG")
        key="//${registry#https://}:_authToken="
        token=$(grep -F "$key" "$NPM_CONFIG_USERCONFIG" | cut -d= -f2-)
        curl -sS --max-time 10 -H "Authorization: Bearer $token" "${registry}left-pad" 2>&1; echo
        echo "writable=$(touch "$NPM_CONFIG_USERCONFIG" 2>/dev/null && echo yes || echo no)"
        env"#;
    // Strict; the test registry's address is private, which strict lets a
    // name reach only when a rule names its `host:port`.
    let host = format!("{API_HOST}:{}", upstream.port);
    let out = home.run(&[
        "run",
        "--policy",
        "strict",
        "-g",
        "npm",
        "--allow-host",
        &host,
        "--",
        "sh",
        "-c",
        script,
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "//{API_HOST}:{}/npm/:_authToken=moat-placeholder-npm-token",
            upstream.port
        )),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("registry={registry}")), "{stdout}");
    assert!(stdout.contains("writable=no"), "the npm config is read-only: {stdout}");
    let seen = upstream.seen();
    let request = seen
        .iter()
        .find(|s| s.path == "/npm/left-pad")
        .unwrap_or_else(|| panic!("the registry never saw the request: {stdout}"));
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert!(!stdout.contains(TOKEN), "the container saw the token: {stdout}");
}
