//! The list index (`runs/.index`): the creation time of every finished run,
//! so that `moat list` without `--all` reads only the records it shows. It
//! is a cache, never a source of truth: it holds only runs whose state is
//! terminal (exited or failed, which never change state again), it is
//! written atomically by whoever lists, and an index that is missing,
//! unreadable or malformed in any way is ignored and rebuilt from the
//! records.
//!
//! Format: a header line, one `<run id> <created_at, Unix nanoseconds>`
//! line per run, and an `end <count>` trailer, so that a truncated or
//! edited file is recognised as malformed rather than trusted in part.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

use crate::atomic::write_atomic;
use crate::id::RunId;

const HEADER: &str = "moat-run-index 1";
const TRAILER: &str = "end";

/// File name of the index in the runs directory (never a valid run id).
pub const INDEX_FILE: &str = ".index";

/// Creation times (Unix nanoseconds) of finished runs, by id.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RunIndex {
    created: HashMap<RunId, i64>,
}

impl RunIndex {
    /// Reads the index at `path`; empty when it is missing or malformed.
    pub fn load(path: &Path) -> Self {
        fs::read_to_string(path)
            .ok()
            .and_then(|text| Self::parse(&text))
            .unwrap_or_default()
    }

    /// The index in `text`, or `None` if any part of it is malformed.
    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let mut created = HashMap::new();
        for line in lines {
            let (first, second) = line.split_once(' ')?;
            if first == TRAILER {
                let count: usize = second.parse().ok()?;
                return (count == created.len()).then_some(RunIndex { created });
            }
            created.insert(first.parse().ok()?, second.parse().ok()?);
        }
        None
    }

    /// When the finished run `id` was created, if the index knows it.
    pub fn created(&self, id: &RunId) -> Option<i64> {
        self.created.get(id).copied()
    }

    /// Records a finished run.
    pub fn insert(&mut self, id: RunId, created_nanos: i64) {
        self.created.insert(id, created_nanos);
    }

    /// Forgets every run not in `present`.
    pub fn retain(&mut self, present: impl Fn(&RunId) -> bool) {
        self.created.retain(|id, _| present(id));
    }

    pub fn len(&self) -> usize {
        self.created.len()
    }

    pub fn is_empty(&self) -> bool {
        self.created.is_empty()
    }

    /// Replaces the index at `path` atomically (0600).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        write_atomic(path, self.render().as_bytes(), 0o600)
    }

    fn render(&self) -> String {
        let mut ids: Vec<(&RunId, &i64)> = self.created.iter().collect();
        ids.sort_unstable();
        let mut text = String::with_capacity(32 * (ids.len() + 2));
        text.push_str(HEADER);
        text.push('\n');
        for (id, created) in ids {
            let _ = writeln!(text, "{id} {created}");
        }
        let _ = writeln!(text, "{TRAILER} {}", self.created.len());
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RunIndex {
        let mut index = RunIndex::default();
        index.insert("run_00000000000a".parse().unwrap(), 1_700_000_000_000_000_000);
        index.insert("run_00000000000b".parse().unwrap(), -5);
        index
    }

    #[test]
    fn saved_index_loads_back() {
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join(INDEX_FILE);
        sample().save(&path).unwrap();
        assert_eq!(RunIndex::load(&path), sample());
    }

    #[test]
    fn malformed_index_is_ignored_whole() {
        let text = sample().render();
        let truncated = &text[..text.len() - "end 2\n".len()];
        let wrong_count = text.replace("end 2", "end 3");
        let bad_id = text.replace("run_00000000000a", "run_zz");
        let bad_time = text.replace(" -5", " five");
        let bad_header = text.replace(HEADER, "moat-run-index 9");
        for broken in [truncated, &wrong_count, &bad_id, &bad_time, &bad_header, "", "\0\0"] {
            assert_eq!(RunIndex::parse(broken), None, "{broken:?}");
        }
        assert_eq!(RunIndex::parse(&text), Some(sample()));
    }

    #[test]
    fn missing_or_unreadable_index_is_empty() {
        let scratch = tempfile::tempdir().unwrap();
        assert!(RunIndex::load(&scratch.path().join("absent")).is_empty());
        assert!(RunIndex::load(scratch.path()).is_empty());
    }
}
