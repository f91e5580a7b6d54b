//! Attacks on the audit log format (issue 16): every edit, deletion,
//! reordering, truncation, cross-run splice and foreign signature is
//! detected, and at the entry it concerns.

use moat_core::MoatHome;
use moat_core::audit::{AuditKey, Entry, SignatureCheck, check_signature, genesis_hash, verify_chain};
use serde_json::json;

const RUN: &str = "run_0123456789ab";

fn chain(run: &str, count: u64) -> Vec<String> {
    let mut prev = genesis_hash(run);
    (0..count)
        .map(|seq| {
            let data = json!({"host": format!("h{seq}.example.com"), "grant": "github", "n": seq});
            let entry = Entry::new(
                seq,
                format!("2025-01-01T00:00:{seq:02}.000000Z"),
                "credential_injected".into(),
                prev.clone(),
                data,
            );
            prev = entry.hash.clone();
            entry.to_line()
        })
        .collect()
}

fn joined(lines: &[String]) -> Vec<u8> {
    lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect()
}

fn tamper_seq(run: &str, log: &[u8]) -> (u64, String) {
    let report = verify_chain(run, log);
    let tamper = report.tamper.expect("tampering was not detected");
    (tamper.seq, tamper.why)
}

/// A home in a fresh directory, removed with the returned guard.
fn temp_home() -> (tempfile::TempDir, MoatHome) {
    let dir = tempfile::tempdir().unwrap();
    let home = MoatHome::new(dir.path().join("home"));
    (dir, home)
}

#[test]
fn an_untouched_chain_verifies() {
    let report = verify_chain(RUN, &joined(&chain(RUN, 5)));
    assert!(report.tamper.is_none(), "{:?}", report.tamper);
    assert_eq!(report.entries.len(), 5);
    assert!(verify_chain(RUN, b"").tamper.is_none());
}

/// Every byte of every line, changed, is caught at that line's entry.
#[test]
fn changing_any_byte_of_any_entry_is_detected_at_that_entry() {
    let lines = chain(RUN, 4);
    for (index, line) in lines.iter().enumerate() {
        for position in 0..line.len() {
            let mut edited = lines.clone();
            let mut bytes = line.clone().into_bytes();
            // A printable replacement that differs (never a newline).
            bytes[position] = if bytes[position] == b'7' { b'8' } else { b'7' };
            let Ok(text) = String::from_utf8(bytes) else { continue };
            edited[index] = text;
            let (seq, why) = tamper_seq(RUN, &joined(&edited));
            assert_eq!(seq, index as u64, "byte {position} of entry {index}: {why}");
        }
    }
}

#[test]
fn a_deleted_entry_is_named() {
    let mut lines = chain(RUN, 5);
    lines.remove(2);
    let (seq, why) = tamper_seq(RUN, &joined(&lines));
    assert_eq!(seq, 2);
    assert!(why.contains("holds seq 3 where seq 2 belongs"), "{why}");
}

#[test]
fn two_reordered_entries_are_detected_at_the_first() {
    let mut lines = chain(RUN, 5);
    lines.swap(1, 3);
    assert_eq!(tamper_seq(RUN, &joined(&lines)).0, 1);
}

#[test]
fn a_line_cut_mid_way_is_reported_not_dropped() {
    let mut log = joined(&chain(RUN, 3));
    log.truncate(log.len() - 10);
    let (seq, why) = tamper_seq(RUN, &log);
    assert_eq!(seq, 2);
    assert!(why.contains("cut off"), "{why}");
}

#[test]
fn an_entry_from_another_run_is_detected() {
    let mut lines = chain(RUN, 4);
    let other = chain("run_ffffffffffff", 4);
    lines[2] = other[2].clone();
    let (seq, why) = tamper_seq(RUN, &joined(&lines));
    assert_eq!(seq, 2, "{why}");
    // A whole chain of another run does not verify as this one.
    assert_eq!(tamper_seq(RUN, &joined(&other)).0, 0);
}

#[test]
fn a_renumbered_and_rehashed_log_without_an_entry_fails_the_signature() {
    let (_scratch, home) = temp_home();
    let key = AuditKey::load_or_create(&home).unwrap();
    let lines = chain(RUN, 5);
    let report = verify_chain(RUN, &joined(&lines));
    let head = key.sign_head(RUN, 4, &report.entries[4].hash);
    assert_eq!(
        check_signature(RUN, &report, &head, &key.public()),
        SignatureCheck::Signed { seq: 4, later: 0 }
    );
    // Entries removed from the end: the chain alone still verifies.
    let shortened = verify_chain(RUN, &joined(&lines[..3]));
    assert!(shortened.tamper.is_none());
    let SignatureCheck::Bad(tamper) = check_signature(RUN, &shortened, &head, &key.public()) else {
        panic!("a shortened log passed the signature check")
    };
    assert_eq!(tamper.seq, 3, "{}", tamper.why);
    // A log rebuilt from scratch (fresh hashes) differs at the signed head.
    let mut rebuilt = chain(RUN, 5);
    rebuilt.truncate(4);
    let forged = Entry::new(
        4,
        "2025-01-01T00:00:09.000000Z".into(),
        "cleaned".into(),
        verify_chain(RUN, &joined(&rebuilt)).entries[3].hash.clone(),
        json!({}),
    );
    rebuilt.push(forged.to_line());
    let rebuilt = verify_chain(RUN, &joined(&rebuilt));
    assert!(rebuilt.tamper.is_none());
    assert!(matches!(check_signature(RUN, &rebuilt, &head, &key.public()), SignatureCheck::Bad(t) if t.seq == 4));
    std::fs::remove_dir_all(home.root()).unwrap();
}

#[test]
fn a_head_signed_by_another_key_is_refused() {
    let ((_scratch, home), (_other_scratch, other_home)) = (temp_home(), temp_home());
    let key = AuditKey::load_or_create(&home).unwrap();
    let other = AuditKey::load_or_create(&other_home).unwrap();
    let report = verify_chain(RUN, &joined(&chain(RUN, 3)));
    let forged = other.sign_head(RUN, 2, &report.entries[2].hash);
    let SignatureCheck::Bad(tamper) = check_signature(RUN, &report, &forged, &key.public()) else {
        panic!("another key's signature was accepted")
    };
    assert!(tamper.why.contains("does not verify against key"), "{}", tamper.why);
    // A head of another run, even by the right key, does not vouch for this one.
    let elsewhere = key.sign_head("run_ffffffffffff", 2, &report.entries[2].hash);
    assert!(matches!(
        check_signature(RUN, &report, &elsewhere, &key.public()),
        SignatureCheck::Bad(_)
    ));
    std::fs::remove_dir_all(home.root()).unwrap();
    std::fs::remove_dir_all(other_home.root()).unwrap();
}
