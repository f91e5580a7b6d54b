//! `moat grant NAME --host HOST`: a provider for one host defined by flags
//! (no YAML written by the user) injects its header into a real run's
//! requests to that host; the container never sees the secret.

use super::proxy::{API_HOST, TOKEN, home_with_upstream};
use super::support::text;

#[test]
fn a_provider_defined_by_flags_injects_its_header_and_the_container_never_sees_the_secret() {
    let Some((home, upstream)) = home_with_upstream() else {
        return;
    };
    let port = upstream.port;
    let host = format!("{API_HOST}:{port}");
    home.run_with_input(
        &[
            "grant",
            "mytool",
            "--host",
            &host,
            "--header",
            "X-Api-Key",
            "--prefix",
            "Key ",
        ],
        &format!("{TOKEN}\n"),
    );
    assert!(
        home.home().join("providers/mytool.yaml").exists(),
        "the provider is kept for the daemon"
    );

    let script = format!("curl -sS --max-time 10 https://{host}/hello; echo; env");
    let out = home.run(&["run", "-g", "mytool", "--allow-host", &host, "--", "sh", "-c", &script]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let seen = upstream.seen();
    let hello = seen
        .iter()
        .find(|s| s.path == "/hello")
        .unwrap_or_else(|| panic!("the request never arrived: {stdout}"));
    assert_eq!(hello.header("x-api-key"), Some(format!("Key {TOKEN}").as_str()));
    assert_eq!(hello.header("authorization"), None, "only the named header is set");
    assert!(!stdout.contains(TOKEN), "the container saw the secret: {stdout}");
    let run_id = home.only_run()["id"].as_str().unwrap().to_string();
    let record = std::fs::read_to_string(home.home().join("runs").join(&run_id).join("network.jsonl")).unwrap();
    assert!(!record.contains(TOKEN), "the trace holds the secret");
}
