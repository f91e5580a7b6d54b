//! Splits a run's output chunks into `logs.jsonl` records, one per line and
//! per stream, keeping arrival order.

use chrono::Utc;
use moat_core::logs::{LogRecord, Stream};

/// A line longer than this is cut into several records.
const MAX_LINE_BYTES: usize = 256 * 1024;

/// Per-stream partial-line buffers.
#[derive(Default)]
pub struct LineSplitter {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    tty: Vec<u8>,
}

impl LineSplitter {
    /// Feeds one chunk; returns the complete lines it finished.
    pub fn feed(&mut self, stream: Stream, data: &[u8]) -> Vec<LogRecord> {
        let mut records = Vec::new();
        let buffer = self.buffer(stream);
        for &byte in data {
            if byte == b'\n' {
                records.push(record(stream, buffer));
            } else {
                buffer.push(byte);
                if buffer.len() >= MAX_LINE_BYTES {
                    records.push(record(stream, buffer));
                }
            }
        }
        records
    }

    /// Flushes unterminated lines (at the end of the output).
    pub fn finish(&mut self) -> Vec<LogRecord> {
        let mut records = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr, Stream::Tty] {
            let buffer = self.buffer(stream);
            if !buffer.is_empty() {
                records.push(record(stream, buffer));
            }
        }
        records
    }

    fn buffer(&mut self, stream: Stream) -> &mut Vec<u8> {
        match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
            Stream::Tty => &mut self.tty,
        }
    }
}

fn record(stream: Stream, buffer: &mut Vec<u8>) -> LogRecord {
    let mut line = String::from_utf8_lossy(buffer).into_owned();
    if line.ends_with('\r') {
        line.pop();
    }
    buffer.clear();
    LogRecord {
        ts: Utc::now(),
        stream,
        line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(records: &[LogRecord]) -> Vec<(Stream, &str)> {
        records.iter().map(|r| (r.stream, r.line.as_str())).collect()
    }

    #[test]
    fn partial_lines_are_joined_per_stream() {
        let mut splitter = LineSplitter::default();
        assert!(splitter.feed(Stream::Stdout, b"hel").is_empty());
        let err = splitter.feed(Stream::Stderr, b"oops\n");
        assert_eq!(lines(&err), vec![(Stream::Stderr, "oops")]);
        let out = splitter.feed(Stream::Stdout, b"lo\r\nwor");
        assert_eq!(lines(&out), vec![(Stream::Stdout, "hello")]);
        assert_eq!(lines(&splitter.finish()), vec![(Stream::Stdout, "wor")]);
    }
}
