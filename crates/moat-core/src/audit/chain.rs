//! One audit entry, `{seq, time, kind, prev, data, hash}`, and how it is
//! hashed: SHA-256 over a domain tag and the five fields, each prefixed by
//! its length as a big-endian u64, `data` in canonical JSON (object keys
//! sorted, no whitespace). Distinct entries can never encode alike, unlike
//! a plain concatenation of fields. A line of the log is the canonical JSON
//! of the whole entry, so every byte of it is checked.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Domain tag of an entry's hash.
const ENTRY_DOMAIN: &[u8] = b"moat-audit-entry-v1";
/// Domain tag of the `prev` of a run's first entry.
const GENESIS_DOMAIN: &[u8] = b"moat-audit-genesis-v1";

/// One line of `audit.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// 0 for the first entry, then one more per entry.
    pub seq: u64,
    /// RFC 3339 (UTC), hashed as written.
    pub time: String,
    /// What happened (`run_created`, `policy_denied`, ...).
    pub kind: String,
    /// The previous entry's `hash`; for seq 0, [`genesis_hash`] of the run.
    pub prev: String,
    /// The event's details (an object).
    pub data: Value,
    /// Hex SHA-256 of the other fields (see the module doc).
    pub hash: String,
}

impl Entry {
    /// A new entry chained after `prev`, with its hash computed.
    pub fn new(seq: u64, time: String, kind: String, prev: String, data: Value) -> Self {
        let mut entry = Entry {
            seq,
            time,
            kind,
            prev,
            data,
            hash: String::new(),
        };
        entry.hash = entry.expected_hash();
        entry
    }

    /// The hash the entry's fields call for (whatever its `hash` says).
    pub fn expected_hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(ENTRY_DOMAIN);
        let seq = self.seq.to_string();
        let data = canonical_json(&self.data);
        for field in [seq.as_str(), &self.time, &self.kind, &self.prev, &data] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    /// The entry as one log line (canonical JSON, without the newline).
    pub fn to_line(&self) -> String {
        match serde_json::to_value(self) {
            Ok(value) => canonical_json(&value),
            // An Entry is strings, a number and a Value: it always serialises.
            Err(_) => String::new(),
        }
    }
}

/// The `prev` of a run's first entry: binds the whole chain to the run, so
/// an entry or a chain from another run never verifies in this one.
pub fn genesis_hash(run_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(GENESIS_DOMAIN);
    hasher.update((run_id.len() as u64).to_be_bytes());
    hasher.update(run_id.as_bytes());
    hex::encode(hasher.finalize())
}

/// `value` as canonical JSON: object keys sorted by their UTF-8 bytes, no
/// whitespace, strings and numbers as serde_json writes them.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let value = json!({"b": 1, "a": {"d": [true, null], "c": "x\"y"}});
        assert_eq!(canonical_json(&value), r#"{"a":{"c":"x\"y","d":[true,null]},"b":1}"#);
    }

    /// Moving a byte from one field to the next changes the hash (a plain
    /// concatenation would not).
    #[test]
    fn field_boundaries_are_part_of_the_hash() {
        let a = Entry::new(1, "t".into(), "ab".into(), "c".into(), json!({}));
        let b = Entry::new(1, "t".into(), "a".into(), "bc".into(), json!({}));
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn the_genesis_differs_per_run() {
        assert_ne!(genesis_hash("run_a"), genesis_hash("run_b"));
    }
}
