//! Verifying a run's audit log: every line parses, is in canonical form,
//! has the next seq, chains to the previous entry's hash (the first to the
//! run's genesis) and matches its own hash; the file ends with a newline
//! (a torn last line is reported, never dropped); and the signed head, when
//! given, verifies against the verifier's key and is still in the log.

use super::chain::{Entry, genesis_hash};
use super::key::{PublicKey, SignedHead};

/// Where and why a log stops being trustworthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tamper {
    /// The first entry that cannot be trusted.
    pub seq: u64,
    pub why: String,
}

impl std::fmt::Display for Tamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TAMPERED at seq {} ({})", self.seq, self.why)
    }
}

/// The entries that verified, and the first problem, if any.
#[derive(Clone, Debug, Default)]
pub struct ChainReport {
    pub entries: Vec<Entry>,
    pub tamper: Option<Tamper>,
}

impl ChainReport {
    pub fn head(&self) -> Option<&Entry> {
        self.entries.last()
    }
}

/// Verifies the log of run `run_id` (the bytes of `audit.jsonl`).
pub fn verify_chain(run_id: &str, log: &[u8]) -> ChainReport {
    let mut report = ChainReport::default();
    let mut prev = genesis_hash(run_id);
    let mut rest = log;
    let mut line_number = 0usize;
    while !rest.is_empty() {
        let seq = report.entries.len() as u64;
        line_number += 1;
        let Some(end) = rest.iter().position(|b| *b == b'\n') else {
            report.tamper = Some(Tamper {
                seq,
                why: format!(
                    "line {line_number}, the last, is cut off ({} bytes without a newline): a write interrupted by a crash, or the file was truncated",
                    rest.len()
                ),
            });
            return report;
        };
        let line = &rest[..end];
        rest = &rest[end + 1..];
        match check_line(line, line_number, seq, &prev) {
            Ok(entry) => {
                prev = entry.hash.clone();
                report.entries.push(entry);
            }
            Err(why) => {
                report.tamper = Some(Tamper { seq, why });
                return report;
            }
        }
    }
    report
}

/// Checks one line as entry `seq` chained after `prev`.
fn check_line(line: &[u8], line_number: usize, seq: u64, prev: &str) -> Result<Entry, String> {
    let text = std::str::from_utf8(line).map_err(|_| format!("line {line_number} is not UTF-8"))?;
    let entry: Entry =
        serde_json::from_str(text).map_err(|e| format!("line {line_number} is not a valid entry: {e}"))?;
    if entry.seq != seq {
        return Err(format!(
            "line {line_number} holds seq {} where seq {seq} belongs: entries were removed, reordered or repeated",
            entry.seq
        ));
    }
    if entry.prev != prev {
        return Err(if seq == 0 {
            "the first entry does not start this run's chain: it belongs to another run's log".to_string()
        } else {
            format!(
                "its prev is not the hash of seq {}: an entry was removed, reordered, changed or taken from another log",
                seq - 1
            )
        });
    }
    if entry.expected_hash() != entry.hash {
        return Err(format!(
            "its content does not match its hash: the entry was edited (kind {:?})",
            entry.kind
        ));
    }
    if entry.to_line().as_bytes() != line {
        return Err("the line is not byte for byte as written (its JSON was reformatted or extended)".to_string());
    }
    Ok(entry)
}

/// What a signed head says about a verified chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    /// No signature was given.
    Unsigned,
    /// The head at `seq` is signed by the key; `later` entries follow it
    /// (written since the last signature).
    Signed { seq: u64, later: u64 },
    /// The signature does not vouch for this log.
    Bad(Tamper),
}

/// Checks `head` (the signed chain head) against `key`, the key the
/// verifier trusts, and against the entries of `report`.
pub fn check_signature(run_id: &str, report: &ChainReport, head: &SignedHead, key: &PublicKey) -> SignatureCheck {
    let bad = |seq, why: String| SignatureCheck::Bad(Tamper { seq, why });
    if head.run_id != run_id {
        return bad(
            head.seq,
            format!("the signature is for run {}, not {run_id}", head.run_id),
        );
    }
    if !key.verifies(head) {
        return bad(
            head.seq,
            format!(
                "the signature of the head (seq {}) does not verify against key {key}: it was made by another key, or the head was changed",
                head.seq
            ),
        );
    }
    let count = report.entries.len() as u64;
    let Some(signed) = report.entries.get(head.seq as usize) else {
        return bad(
            count,
            format!(
                "the log ends before seq {}, which the signature covers: entries were removed from the end",
                head.seq
            ),
        );
    };
    if signed.hash != head.hash {
        return bad(head.seq, "the entry differs from the one that was signed".to_string());
    }
    SignatureCheck::Signed {
        seq: head.seq,
        later: count - 1 - head.seq,
    }
}
