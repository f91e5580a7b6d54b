//! `moat audit` end to end on logs written by the daemon's audit writer:
//! verdicts, the seq named on tampering, exports, and bundle verification
//! that trusts only the verifier's key.

use std::time::Duration;

use moat_core::RunState;
use moat_core::paths::run_files;
use moat_daemon::audit::{AuditLog, Event};

use super::support::TestHome;

/// A finished run whose audit log holds `events`, closed and signed.
fn audited_run(home: &TestHome, events: Vec<Event>) -> String {
    let meta = home.run(Some("audited"), RunState::Exited, 5);
    let audit = AuditLog::start(home.store.home());
    for event in events {
        audit.record(&meta.id, event);
    }
    audit.close(&meta.id);
    assert!(audit.flush(Duration::from_secs(10)));
    meta.id.to_string()
}

fn events() -> Vec<Event> {
    vec![
        Event::PolicyDenied {
            method: "GET".into(),
            host: "evil.example".into(),
            path: "/exfil".into(),
            rule: "strict: no rule".into(),
        },
        Event::CredentialInjected {
            grant: "github".into(),
            host: "api.github.com".into(),
        },
        Event::Exited {
            state: "exited".into(),
            exit_code: Some(0),
            failure: None,
        },
        Event::Cleaned { failures: vec![] },
    ]
}

#[test]
fn an_intact_log_is_printed_with_its_signed_head() {
    let home = TestHome::new();
    let id = audited_run(&home, events());
    let out = home.moat(&["audit", &id]);
    out.success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", out.stdout);
    assert!(
        lines[0].contains("policy_denied") && lines[0].contains("host=evil.example"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("credential_injected") && lines[1].contains("grant=github"));
    let key = home.moat(&["audit", "key"]).success().stdout.trim().to_string();
    assert!(key.starts_with("ed25519:"), "{key}");
    assert_eq!(lines[4], format!("INTACT: 4 entries, head seq 3 signed by {key}"));
}

#[test]
fn an_edited_entry_is_reported_with_its_seq_and_exit_1() {
    let home = TestHome::new();
    let id = audited_run(&home, events());
    let path = home.home_path(&format!("runs/{id}/{}", run_files::AUDIT));
    let log = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, log.replacen("evil.example", "good.example", 1)).unwrap();
    let out = home.moat(&["audit", &id]);
    out.failure(1);
    let verdict = out.stdout.lines().last().unwrap();
    assert!(
        verdict.starts_with("TAMPERED at seq 0 (its content does not match its hash"),
        "{verdict}"
    );
}

#[test]
fn entries_dropped_from_the_end_are_caught_by_the_signature() {
    let home = TestHome::new();
    let id = audited_run(&home, events());
    let path = home.home_path(&format!("runs/{id}/{}", run_files::AUDIT));
    let log = std::fs::read_to_string(&path).unwrap();
    let kept: String = log.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, kept).unwrap();
    let out = home.moat(&["audit", &id]);
    out.failure(1);
    assert!(
        out.stdout
            .contains("TAMPERED at seq 2 (the log ends before seq 3, which the signature covers"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_bundle_verifies_only_against_a_trusted_key() {
    let home = TestHome::new();
    let id = audited_run(&home, events());
    let bundle = home.path("run.audit.json");
    let bundle_arg = bundle.to_str().unwrap();
    home.moat(&["audit", &id, "--export", bundle_arg]).success();
    let key = home.moat(&["audit", "key"]).success().stdout.trim().to_string();

    let out = home.moat(&["audit", "verify", bundle_arg, "--key", &key]);
    out.success();
    assert!(
        out.stdout
            .ends_with(&format!("INTACT: run {id}, 4 entries, head seq 3 signed by {key}\n")),
        "{}",
        out.stdout
    );

    // Without a key the verifier chose: refused, nothing verified.
    let out = home.moat(&["audit", "verify", bundle_arg]);
    out.failure(2);
    assert!(out.stderr.contains("--key"), "{}", out.stderr);

    // Another home's key (an attacker re-signed the bundle with theirs).
    let other = TestHome::new();
    let other_key = other.moat(&["audit", "key"]).success().stdout.trim().to_string();
    let out = home.moat(&["audit", "verify", bundle_arg, "--key", &other_key]);
    out.failure(1);
    assert!(
        out.stdout
            .contains("TAMPERED at seq 3 (the signature of the head (seq 3) does not verify against key"),
        "{}",
        out.stdout
    );

    // The embedded key is usable only when asked for, and with a warning.
    let out = home.moat(&["audit", "verify", bundle_arg, "--trust-embedded-key"]);
    out.success();
    assert!(out.stderr.contains("proves nothing"), "{}", out.stderr);
}

#[test]
fn a_bundle_re_signed_by_another_key_with_its_key_embedded_is_refused() {
    let home = TestHome::new();
    let id = audited_run(&home, events());
    let bundle_path = home.path("run.audit.json");
    home.moat(&["audit", &id, "--export", bundle_path.to_str().unwrap()])
        .success();
    let key = home.moat(&["audit", "key"]).success().stdout.trim().to_string();

    // The attacker edits an entry, rebuilds the chain, signs it with a key
    // of their own and embeds that key.
    let attacker = TestHome::new();
    let forged_id = audited_run(&attacker, events());
    let forged_log =
        std::fs::read_to_string(attacker.home_path(&format!("runs/{forged_id}/{}", run_files::AUDIT))).unwrap();
    let forged_sig =
        std::fs::read_to_string(attacker.home_path(&format!("runs/{forged_id}/{}", run_files::AUDIT_SIGNATURE)))
            .unwrap();
    let attacker_key = attacker.moat(&["audit", "key"]).success().stdout.trim().to_string();
    let mut bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(&bundle_path).unwrap()).unwrap();
    bundle["run_id"] = forged_id.clone().into();
    bundle["lines"] = forged_log.lines().collect::<Vec<_>>().into();
    bundle["signature"] = serde_json::from_str(&forged_sig).unwrap();
    bundle["public_key_for_information"] = attacker_key.into();
    std::fs::write(&bundle_path, serde_json::to_vec(&bundle).unwrap()).unwrap();

    let out = home.moat(&["audit", "verify", bundle_path.to_str().unwrap(), "--key", &key]);
    out.failure(1);
    assert!(
        out.stdout.contains("TAMPERED at seq 3") && out.stdout.contains("does not verify against key"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_run_without_events_is_intact_and_empty() {
    let home = TestHome::new();
    let meta = home.run(None, RunState::Exited, 5);
    let out = home.moat(&["audit", meta.id.as_str()]);
    out.success();
    assert_eq!(out.stdout, "INTACT: 0 entries, chain verified; no signed head yet\n");
}
