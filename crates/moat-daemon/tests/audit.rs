//! The daemon's audit writer under attack (issue 16): many tasks recording
//! at once never fork the chain, a second writer is refused rather than
//! interleaved, a torn tail is cut off and recorded, and every synced log
//! has a head signed by the home's key.

use std::time::Duration;

use moat_core::audit::{AuditKey, SignatureCheck, SignedHead, check_signature, verify_chain};
use moat_core::paths::run_files;
use moat_core::{MoatHome, RunId};
use moat_daemon::audit::{AuditLog, Event};

const FLUSH: Duration = Duration::from_secs(10);

/// A home holding one run's directory, in a fresh directory removed with
/// the returned guard.
fn home_with_run() -> (tempfile::TempDir, MoatHome, RunId) {
    let dir = tempfile::tempdir().unwrap();
    let home = MoatHome::new(dir.path().join("home"));
    let run = RunId::generate();
    std::fs::create_dir_all(home.run_dir(&run)).unwrap();
    (dir, home, run)
}

fn read_log(home: &MoatHome, run: &RunId) -> Vec<u8> {
    std::fs::read(home.run_dir(run).join(run_files::AUDIT)).unwrap()
}

fn injected(n: usize) -> Event {
    Event::CredentialInjected {
        grant: format!("grant-{n}"),
        host: "api.example.com".into(),
    }
}

/// Property: whatever the interleaving of recording threads, the chain is
/// one line per event, in seq order, and verifies.
#[test]
fn concurrent_events_never_fork_the_chain() {
    let (_scratch, home, run) = home_with_run();
    let audit = AuditLog::start(&home);
    const THREADS: usize = 16;
    const EACH: usize = 200;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (audit, run) = (audit.clone(), run.clone());
            scope.spawn(move || {
                for i in 0..EACH {
                    audit.record(&run, injected(t * EACH + i));
                }
            });
        }
    });
    assert!(audit.flush(FLUSH));
    let report = verify_chain(run.as_str(), &read_log(&home, &run));
    assert!(report.tamper.is_none(), "{:?}", report.tamper);
    assert_eq!(report.entries.len(), THREADS * EACH);
    let mut grants: Vec<String> = report
        .entries
        .iter()
        .map(|e| e.data["grant"].as_str().unwrap().to_string())
        .collect();
    grants.sort();
    grants.dedup();
    assert_eq!(grants.len(), THREADS * EACH, "an event was written twice or lost");
    std::fs::remove_dir_all(home.root()).unwrap();
}

/// Two writers racing on one run: the second is refused (the log is
/// `flock`ed), so the chain stays one chain.
#[test]
fn a_second_writer_is_refused_and_the_chain_stays_whole() {
    let (_scratch, home, run) = home_with_run();
    let first = AuditLog::start(&home);
    let second = AuditLog::start(&home);
    first.record(&run, Event::Attached);
    assert!(first.flush(FLUSH));
    std::thread::scope(|scope| {
        for audit in [&first, &second] {
            let run = run.clone();
            scope.spawn(move || {
                for i in 0..100 {
                    audit.record(&run, injected(i));
                }
            });
        }
    });
    assert!(first.flush(FLUSH) && second.flush(FLUSH));
    let report = verify_chain(run.as_str(), &read_log(&home, &run));
    assert!(report.tamper.is_none(), "{:?}", report.tamper);
    assert_eq!(
        report.entries.len(),
        101,
        "only the first writer's events are in the log"
    );
    std::fs::remove_dir_all(home.root()).unwrap();
}

/// A crash mid-write leaves a torn line: the next writer cuts it off and
/// says so in the chain, which then verifies.
#[test]
fn a_torn_tail_is_cut_off_and_recorded() {
    let (_scratch, home, run) = home_with_run();
    let audit = AuditLog::start(&home);
    audit.record(&run, Event::Attached);
    audit.close(&run);
    assert!(audit.flush(FLUSH));
    let path = home.run_dir(&run).join(run_files::AUDIT);
    let mut log = read_log(&home, &run);
    log.extend_from_slice(b"{\"data\":{},\"hash\":\"ab");
    std::fs::write(&path, &log).unwrap();
    assert!(
        verify_chain(run.as_str(), &log).tamper.is_some(),
        "the torn line was accepted"
    );
    audit.record(&run, Event::Detached);
    assert!(audit.flush(FLUSH));
    let report = verify_chain(run.as_str(), &read_log(&home, &run));
    assert!(report.tamper.is_none(), "{:?}", report.tamper);
    let kinds: Vec<&str> = report.entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["attached", "torn_line_removed", "detached"]);
    assert_eq!(report.entries[1].data["bytes"], 21);
    std::fs::remove_dir_all(home.root()).unwrap();
}

/// The writer fsyncs and signs within a second without being asked.
#[test]
fn the_head_is_signed_within_a_second_by_the_homes_key() {
    let (_scratch, home, run) = home_with_run();
    let audit = AuditLog::start(&home);
    for i in 0..3 {
        audit.record(&run, injected(i));
    }
    let sig_path = home.run_dir(&run).join(run_files::AUDIT_SIGNATURE);
    let started = std::time::Instant::now();
    let head: SignedHead = loop {
        if let Ok(bytes) = std::fs::read(&sig_path)
            && let Ok(head) = serde_json::from_slice::<SignedHead>(&bytes)
            && head.seq == 2
        {
            break head;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "no signed head after 3 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    let key = AuditKey::load_or_create(&home).unwrap().public();
    let report = verify_chain(run.as_str(), &read_log(&home, &run));
    assert_eq!(
        check_signature(run.as_str(), &report, &head, &key),
        SignatureCheck::Signed { seq: 2, later: 0 }
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.run_dir(&run).join(run_files::AUDIT))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::remove_dir_all(home.root()).unwrap();
}
