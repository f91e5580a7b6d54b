//! `logs.jsonl`: one `{"ts","stream","line"}` record per output line, in
//! arrival order. Writing ([`LogWriter`]), reading the last lines without
//! loading the whole file ([`tail`]) and following a growing file
//! ([`LogFollower`]). Readers skip and count malformed lines instead of
//! failing: a crash can leave a torn last line.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// A terminal's output (an interactive run with a TTY): one stream,
    /// escape sequences included.
    Tty,
}

/// One line of a run's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub ts: DateTime<Utc>,
    pub stream: Stream,
    pub line: String,
}

/// Appends records to a run's `logs.jsonl`, flushing after every batch so
/// followers see output as it arrives.
pub struct LogWriter {
    out: BufWriter<File>,
}

impl LogWriter {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        Ok(LogWriter {
            out: BufWriter::new(file),
        })
    }

    pub fn append(&mut self, record: &LogRecord) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

// === reading ===

/// Size of the blocks [`tail`] reads backwards.
const TAIL_BLOCK: usize = 64 * 1024;

/// How often a follower looks for new output by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The last records of a log.
#[derive(Debug, Default)]
pub struct LogTail {
    /// Oldest first.
    pub records: Vec<LogRecord>,
    /// Lines skipped because they were not records.
    pub malformed: usize,
    /// Byte offset just after the last complete line: where a follower
    /// continues from.
    pub end_offset: u64,
}

fn parse_line(line: &[u8]) -> Option<LogRecord> {
    serde_json::from_slice(line).ok()
}

/// The last `n` records of the log at `path`, read backwards from the end in
/// blocks. A trailing line without its newline is still being written and
/// is left for a follower. A missing file is an empty log.
pub fn tail(path: &Path, n: usize) -> io::Result<LogTail> {
    let Some(file) = open_if_exists(path)? else {
        return Ok(LogTail::default());
    };
    let len = file.metadata()?.len();
    let end_offset = complete_lines_end(&file, len)?;
    let mut out = LogTail {
        end_offset,
        ..LogTail::default()
    };
    let mut pos = end_offset;
    // Bytes of a line whose start lies before `pos`.
    let mut carry: Vec<u8> = Vec::new();
    while pos > 0 && out.records.len() < n {
        let size = TAIL_BLOCK.min(usize::try_from(pos).unwrap_or(TAIL_BLOCK));
        pos -= size as u64;
        let mut block = vec![0; size];
        file.read_exact_at(&mut block, pos)?;
        block.extend_from_slice(&carry);
        let body_start = if pos == 0 {
            0
        } else {
            match block.iter().position(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => {
                    carry = block;
                    continue;
                }
            }
        };
        for line in block[body_start..].rsplit(|&b| b == b'\n') {
            if out.records.len() == n {
                break;
            }
            if line.is_empty() {
                continue;
            }
            match parse_line(line) {
                Some(record) => out.records.push(record),
                None => out.malformed += 1,
            }
        }
        block.truncate(body_start.saturating_sub(1));
        carry = block;
    }
    out.records.reverse();
    Ok(out)
}

/// Offset just after the last newline at or before `len`.
fn complete_lines_end(file: &File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut byte = [0u8; 1];
    // The common case (a newline at the very end) costs one read; a torn
    // line is scanned back in blocks.
    if end == 0 {
        return Ok(0);
    }
    file.read_exact_at(&mut byte, end - 1)?;
    if byte[0] == b'\n' {
        return Ok(end);
    }
    while end > 0 {
        let size = TAIL_BLOCK.min(usize::try_from(end).unwrap_or(TAIL_BLOCK));
        let start = end - size as u64;
        let mut block = vec![0; size];
        file.read_exact_at(&mut block, start)?;
        if let Some(i) = block.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Reads records as they are appended to a log.
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    file: Option<File>,
    /// Bytes consumed so far, including `partial`.
    offset: u64,
    /// The start of a line whose newline has not arrived yet.
    partial: Vec<u8>,
    malformed: usize,
    poll_interval: Duration,
}

impl LogFollower {
    /// Follows `path` from byte `offset` (0 for the start, or
    /// [`LogTail::end_offset`] to continue after a tail).
    pub fn new(path: &Path, offset: u64) -> Self {
        LogFollower {
            path: path.to_path_buf(),
            file: None,
            offset,
            partial: Vec::new(),
            malformed: 0,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }

    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Lines skipped so far because they were not records.
    pub fn malformed(&self) -> usize {
        self.malformed
    }

    /// Passes every complete record appended since the last call to
    /// `on_record`; returns how many there were. A missing file has none.
    pub fn read_available(&mut self, on_record: &mut impl FnMut(LogRecord) -> io::Result<()>) -> io::Result<usize> {
        if self.file.is_none() {
            self.file = open_if_exists(&self.path)?;
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(0);
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::with_capacity(TAIL_BLOCK, file);
        let mut count = 0;
        loop {
            let mut line = std::mem::take(&mut self.partial);
            let read = reader.read_until(b'\n', &mut line)?;
            self.offset += read as u64;
            if !line.ends_with(b"\n") {
                self.partial = line;
                return Ok(count);
            }
            line.pop();
            if line.is_empty() {
                continue;
            }
            match parse_line(&line) {
                Some(record) => {
                    count += 1;
                    on_record(record)?;
                }
                None => self.malformed += 1,
            }
        }
    }

    /// Passes records to `on_record` as they arrive, polling, until
    /// `finished` returns true and everything written before that is
    /// drained. A torn last line of a finished log counts as malformed.
    pub fn follow(
        &mut self,
        mut finished: impl FnMut() -> bool,
        mut on_record: impl FnMut(LogRecord) -> io::Result<()>,
    ) -> io::Result<()> {
        loop {
            // Checked before reading, so output written before the end was
            // observed is still read below.
            let done = finished();
            let read = self.read_available(&mut on_record)?;
            if done {
                self.finish_partial(&mut on_record)?;
                return Ok(());
            }
            if read == 0 {
                std::thread::sleep(self.poll_interval);
            }
        }
    }

    fn finish_partial(&mut self, on_record: &mut impl FnMut(LogRecord) -> io::Result<()>) -> io::Result<()> {
        let line = std::mem::take(&mut self.partial);
        if line.is_empty() {
            return Ok(());
        }
        match parse_line(&line) {
            Some(record) => on_record(record),
            None => {
                self.malformed += 1;
                Ok(())
            }
        }
    }
}

fn open_if_exists(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn record(i: usize) -> LogRecord {
        LogRecord {
            ts: Utc::now(),
            stream: if i.is_multiple_of(2) {
                Stream::Stdout
            } else {
                Stream::Stderr
            },
            line: format!("line {i}"),
        }
    }

    /// A log path in a fresh directory, removed with the returned guard.
    fn temp_log() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs.jsonl");
        (dir, path)
    }

    fn write_records(path: &Path, range: std::ops::Range<usize>) {
        let mut w = LogWriter::open(path).unwrap();
        for i in range {
            w.append(&record(i)).unwrap();
        }
        w.flush().unwrap();
    }

    fn lines(records: &[LogRecord]) -> Vec<String> {
        records.iter().map(|r| r.line.clone()).collect()
    }

    #[test]
    fn tail_returns_the_last_n_across_many_blocks() {
        let (_scratch, path) = temp_log();
        write_records(&path, 0..20_000);
        assert!(std::fs::metadata(&path).unwrap().len() > 10 * TAIL_BLOCK as u64);
        let tail = tail(&path, 3).unwrap();
        assert_eq!(lines(&tail.records), ["line 19997", "line 19998", "line 19999"]);
        let all = super::tail(&path, 50_000).unwrap();
        assert_eq!(all.records.len(), 20_000);
        assert_eq!(all.records[0].line, "line 0");
        assert_eq!(all.end_offset, std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn tail_skips_and_counts_malformed_lines_and_leaves_a_torn_end() {
        let (_scratch, path) = temp_log();
        write_records(&path, 0..2);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"not json\n\n").unwrap();
        drop(f);
        write_records(&path, 2..3);
        let complete = std::fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"ts\":").unwrap();
        let tail = tail(&path, 10).unwrap();
        assert_eq!(lines(&tail.records), ["line 0", "line 1", "line 2"]);
        assert_eq!(tail.malformed, 1);
        assert_eq!(tail.end_offset, complete);
    }

    #[test]
    fn tail_of_a_missing_or_empty_log_is_empty() {
        let (_scratch, path) = temp_log();
        assert!(tail(&path, 5).unwrap().records.is_empty());
        std::fs::write(&path, b"").unwrap();
        assert!(tail(&path, 5).unwrap().records.is_empty());
        write_records(&path, 0..3);
        assert!(tail(&path, 0).unwrap().records.is_empty());
    }

    #[test]
    fn follower_reads_appended_records_until_finished() {
        let (_scratch, path) = temp_log();
        write_records(&path, 0..2);
        let start = tail(&path, 1).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (path, done) = (path.clone(), done.clone());
            std::thread::spawn(move || {
                for i in 2..6 {
                    std::thread::sleep(Duration::from_millis(15));
                    write_records(&path, i..i + 1);
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        let mut seen = Vec::new();
        LogFollower::new(&path, start.end_offset)
            .with_poll_interval(Duration::from_millis(5))
            .follow(
                || done.load(Ordering::SeqCst),
                |r| {
                    seen.push(r.line);
                    Ok(())
                },
            )
            .unwrap();
        writer.join().unwrap();
        assert_eq!(seen, ["line 2", "line 3", "line 4", "line 5"]);
    }

    #[test]
    fn follower_waits_for_a_line_to_be_complete() {
        let (_scratch, path) = temp_log();
        let json = serde_json::to_string(&record(0)).unwrap();
        let (head, rest) = json.split_at(10);
        std::fs::write(&path, head).unwrap();
        let mut follower = LogFollower::new(&path, 0);
        let mut seen = Vec::new();
        let mut push = |r: LogRecord| {
            seen.push(r.line);
            Ok(())
        };
        assert_eq!(follower.read_available(&mut push).unwrap(), 0);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(format!("{rest}\ngarbage\n").as_bytes()).unwrap();
        assert_eq!(follower.read_available(&mut push).unwrap(), 1);
        assert_eq!(seen, ["line 0"]);
        assert_eq!(follower.malformed(), 1);
    }
}
