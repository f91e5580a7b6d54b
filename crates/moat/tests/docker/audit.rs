//! The audit log of a real run (issue 16): the daemon records the run's
//! life, the proxy's denial and the credential injection (by grant name,
//! never the value) and the attached `moat run` in order, and signs the head when the run is cleaned.

use std::time::{Duration, Instant};

use super::proxy::{API_HOST, TOKEN, home_with_upstream, store_echo_grant};
use super::support::text;

#[test]
fn a_real_run_records_its_denial_and_injection_in_a_signed_chain() {
    let Some((home, upstream)) = home_with_upstream() else {
        return;
    };
    let port = upstream.port;
    store_echo_grant(&home, port);
    let script = format!(
        "curl -sS --max-time 10 https://{API_HOST}:{port}/injected; echo; \
         curl -sS --max-time 10 https://other.moat-test.example:{port}/denied; echo"
    );
    let allow = format!("{API_HOST}:{port}");
    let out = home.run(&[
        "run",
        "--policy",
        "strict",
        "--grant",
        "echo",
        "--allow-host",
        &allow,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let run_id = home.only_run()["id"].as_str().unwrap().to_string();
    let log_path = home.home().join("runs").join(&run_id).join("audit.jsonl");

    // The run is cleaned (and its whole log signed) just after `moat run`
    // returns; the signature may trail the last entry by up to a second.
    let sig_path = home.home().join("runs").join(&run_id).join("audit.sig");
    let signed_seq = || -> Option<u64> {
        let head: serde_json::Value = serde_json::from_slice(&std::fs::read(&sig_path).ok()?).ok()?;
        head["seq"].as_u64()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let entries: Vec<serde_json::Value> = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let last_seq = log.lines().count() as u64 - u64::from(!log.is_empty());
        if log.contains("\"kind\":\"cleaned\"") && signed_seq() == Some(last_seq) {
            assert!(!log.contains(TOKEN), "the credential reached the audit log");
            break log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        }
        assert!(Instant::now() < deadline, "the run was not cleaned within 30 s: {log}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let kinds: Vec<&str> = entries.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "run_created",
            "container_created",
            "container_started",
            "attached",
            "credential_injected",
            "policy_denied",
            "exited",
            "detached",
            "cleaned"
        ],
        "{entries:#?}"
    );
    assert_eq!(entries[0]["data"]["grants"], serde_json::json!(["echo"]));
    assert_eq!(entries[0]["data"]["policy_mode"], "strict");
    assert_eq!(
        entries[4]["data"],
        serde_json::json!({"grant": "echo", "host": API_HOST})
    );
    assert_eq!(entries[5]["data"]["host"], "other.moat-test.example");
    // Refused at the CONNECT, before any path was sent.
    assert_eq!(entries[5]["data"]["method"], "CONNECT");
    assert!(
        entries[5]["data"]["rule"].as_str().unwrap().contains("strict"),
        "{:?}",
        entries[5]
    );
    assert_eq!(entries[6]["data"]["exit_code"], 0);

    let audit = home.run(&["audit", &run_id]);
    let stdout = text(&audit.stdout);
    assert!(audit.status.success(), "{stdout}{}", text(&audit.stderr));
    let key = text(&home.run(&["audit", "key"]).stdout).trim().to_string();
    assert!(
        stdout.ends_with(&format!("INTACT: 9 entries, head seq 8 signed by {key}\n")),
        "{stdout}"
    );
}
