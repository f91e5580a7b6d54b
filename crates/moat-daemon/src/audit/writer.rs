//! The writer thread's state: one open, `flock`ed log per run with its next
//! seq and last hash, opened on the run's first event (verifying what is
//! already there and repairing a torn tail in the open), fsynced and signed
//! when dirty.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use moat_core::audit::{AuditKey, Entry, genesis_hash, verify_chain};
use moat_core::paths::run_files;
use moat_core::{MoatHome, RunId};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::event::Event;

#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("the run's directory is gone")]
    NoRunDirectory,
    #[error("another process holds {0} (only the daemon writes audit logs)")]
    AnotherWriter(PathBuf),
    #[error("cannot open {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} does not verify and its last line is unreadable; nothing is appended to it")]
    Unreadable { path: PathBuf },
}

/// One run's open log.
struct Chain {
    file: File,
    next_seq: u64,
    prev: String,
    /// Written since the last fsync and signature.
    dirty: bool,
}

pub(super) struct Writer {
    home: MoatHome,
    key: Option<AuditKey>,
    chains: HashMap<RunId, Chain>,
    dropped: Arc<Mutex<HashMap<RunId, u64>>>,
    last_sync: Instant,
}

impl Writer {
    pub(super) fn new(home: MoatHome, dropped: Arc<Mutex<HashMap<RunId, u64>>>) -> Self {
        let key = match AuditKey::load_or_create(&home) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::error!("audit logs are written unsigned: {e}");
                None
            }
        };
        Writer {
            home,
            key,
            chains: HashMap::new(),
            dropped,
            last_sync: Instant::now(),
        }
    }

    /// How long until dirty logs are due for their fsync and signature.
    pub(super) fn time_to_next_sync(&self, interval: Duration) -> Duration {
        if self.chains.values().any(|c| c.dirty) {
            interval.saturating_sub(self.last_sync.elapsed())
        } else {
            interval
        }
    }

    pub(super) fn append(&mut self, run: &RunId, time: String, event: &Event) {
        let dropped = crate::output::lock(&self.dropped).remove(run).unwrap_or(0);
        let Some(chain) = self.chain(run) else { return };
        if dropped > 0 {
            let (kind, data) = Event::EventsDropped { count: dropped }.kind_and_data();
            write_entry(run, chain, now(), kind, data);
        }
        let (kind, data) = event.kind_and_data();
        write_entry(run, chain, time, kind, data);
    }

    /// Fsyncs and signs the run's log and closes it.
    pub(super) fn close(&mut self, run: &RunId) {
        if let Some(mut chain) = self.chains.remove(run) {
            self.seal(run, &mut chain);
        }
    }

    /// Fsyncs and signs every log written since the last time.
    pub(super) fn sync_all(&mut self) {
        let mut chains = std::mem::take(&mut self.chains);
        for (run, chain) in chains.iter_mut().filter(|(_, c)| c.dirty) {
            self.seal(run, chain);
        }
        self.chains = chains;
        self.last_sync = Instant::now();
    }

    /// Fsyncs `chain` and writes its signed head (`audit.sig`).
    fn seal(&self, run: &RunId, chain: &mut Chain) {
        if let Err(e) = chain.file.sync_data() {
            tracing::error!(run = %run, "cannot fsync the audit log: {e}");
            return;
        }
        chain.dirty = false;
        let (Some(key), Some(seq)) = (&self.key, chain.next_seq.checked_sub(1)) else {
            return;
        };
        let head = key.sign_head(run.as_str(), seq, &chain.prev);
        let path = self.home.run_dir(run).join(run_files::AUDIT_SIGNATURE);
        let written = serde_json::to_vec_pretty(&head)
            .map_err(std::io::Error::other)
            .and_then(|bytes| moat_core::atomic::write_atomic(&path, &bytes, 0o600));
        if let Err(e) = written {
            tracing::error!(run = %run, "cannot write the audit log's signed head {}: {e}", path.display());
        }
    }

    /// The run's open log, opening it on first use; `None` (logged) when
    /// it cannot be written.
    fn chain(&mut self, run: &RunId) -> Option<&mut Chain> {
        if !self.chains.contains_key(run) {
            match open_chain(&self.home, run) {
                Ok((mut chain, repairs)) => {
                    for repair in repairs {
                        let (kind, data) = repair.kind_and_data();
                        write_entry(run, &mut chain, now(), kind, data);
                    }
                    self.chains.insert(run.clone(), chain);
                }
                Err(OpenError::NoRunDirectory) => {
                    tracing::debug!(run = %run, "audit event for a destroyed run dropped");
                    return None;
                }
                Err(e) => {
                    tracing::error!(run = %run, "audit event lost: {e}");
                    return None;
                }
            }
        }
        self.chains.get_mut(run)
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Appends one entry (one `write` of a whole line to an `O_APPEND` file).
fn write_entry(run: &RunId, chain: &mut Chain, time: String, kind: String, data: Value) {
    let entry = Entry::new(chain.next_seq, time, kind, chain.prev.clone(), data);
    let mut line = entry.to_line();
    line.push('\n');
    match chain.file.write_all(line.as_bytes()) {
        Ok(()) => {
            chain.next_seq += 1;
            chain.prev = entry.hash;
            chain.dirty = true;
        }
        Err(e) => tracing::error!(run = %run, "cannot append to the audit log (entry {} lost): {e}", entry.seq),
    }
}

/// Opens (creating) and locks the run's log and finds where it ends;
/// returns the entries to record about what was found (a torn tail cut
/// off, damage before the end).
fn open_chain(home: &MoatHome, run: &RunId) -> Result<(Chain, Vec<Event>), OpenError> {
    let dir = home.run_dir(run);
    if !dir.is_dir() {
        return Err(OpenError::NoRunDirectory);
    }
    let path = dir.join(run_files::AUDIT);
    let io = |source| OpenError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::AnotherWriter(path)),
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    File::open(&dir).and_then(|d| d.sync_all()).map_err(io)?;
    let mut log = Vec::new();
    file.read_to_end(&mut log).map_err(io)?;
    let mut repairs = Vec::new();
    let complete = log.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if complete < log.len() {
        let torn = log.split_off(complete);
        repairs.push(Event::TornLineRemoved {
            bytes: torn.len() as u64,
            sha256: hex::encode(Sha256::digest(&torn)),
        });
        file.set_len(complete as u64).map_err(io)?;
        tracing::warn!(run = %run, "the audit log ended in a torn line ({} bytes); cut off and recorded", torn.len());
    }
    let report = verify_chain(run.as_str(), &log);
    let (next_seq, prev) = match (&report.tamper, report.head()) {
        (None, Some(head)) => (head.seq + 1, head.hash.clone()),
        (None, None) => (0, genesis_hash(run.as_str())),
        (Some(tamper), _) => {
            let last = log[..complete.saturating_sub(1)]
                .rsplit(|b| *b == b'\n')
                .next()
                .and_then(|line| serde_json::from_slice::<Entry>(line).ok())
                .ok_or_else(|| OpenError::Unreadable { path: path.clone() })?;
            tracing::error!(run = %run, "the audit log does not verify: {tamper}; appending after its last entry");
            repairs.push(Event::ResumedDamagedLog {
                seq: tamper.seq,
                why: tamper.why.clone(),
            });
            (last.seq + 1, last.hash)
        }
    };
    Ok((
        Chain {
            file,
            next_seq,
            prev,
            dirty: false,
        },
        repairs,
    ))
}
