//! The per-run request trace (`network.jsonl`, proxy.md § Trace): one JSON
//! record per request, sent through a bounded channel to one writer task per
//! run so a slow disk never stalls the data path; drops are counted and
//! reported when the run's trace closes.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

use crate::error::ProxyError;

/// Records buffered per run before new ones are dropped.
const TRACE_CHANNEL_CAPACITY: usize = 16 * 1024;

/// Records taken from the channel at once.
const RECEIVE_BATCH: usize = 256;
/// Pending bytes written out without waiting for the batch to end.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// How long records accumulate after the first before they are written.
const FLUSH_DELAY: Duration = Duration::from_millis(50);

/// Text that replaces a secret in traced values.
pub(crate) const REDACTED: &str = "[REDACTED]";

/// One proxied (or refused) request as written to `network.jsonl`.
#[derive(Clone, Debug, Serialize)]
pub struct TraceRecord {
    pub time: DateTime<Utc>,
    pub request_id: String,
    pub method: String,
    /// Full URL with userinfo, placeholders, secrets and token-like query values redacted.
    pub url: String,
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub duration_ms: f64,
    /// Request body bytes sent upstream.
    pub bytes_out: u64,
    /// Response body bytes returned to the client.
    pub bytes_in: u64,
    /// `allow` or `deny`.
    pub decision: &'static str,
    pub rule: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The destination resolved to an RFC 1918 address (permissive mode).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub private_address: bool,
    /// Shadow runs: the rule under which `strict` would have refused this
    /// allowed request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_block: Option<String>,
}

/// The final record written when a trace closed after dropping records.
#[derive(Serialize)]
struct DropSummary {
    time: DateTime<Utc>,
    trace_records_dropped: u64,
}

/// The sending side of one run's trace.
#[derive(Clone)]
pub(crate) struct TraceSink {
    tx: mpsc::Sender<TraceRecord>,
    drops: Arc<AtomicU64>,
}

impl TraceSink {
    /// Opens (appending) `path` and starts its writer task.
    pub(crate) fn open(run_id: &str, path: &Path) -> Result<Self, ProxyError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ProxyError::NoRuntime(run_id.to_string()))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| ProxyError::TraceOpen {
                path: path.to_path_buf(),
                source,
            })?;
        let (tx, rx) = mpsc::channel(TRACE_CHANNEL_CAPACITY);
        let drops = Arc::new(AtomicU64::new(0));
        let writer = TraceWriter {
            path: path.to_path_buf(),
            out: tokio::fs::File::from_std(file),
            drops: drops.clone(),
        };
        runtime.spawn(writer.run(rx));
        Ok(Self { tx, drops })
    }

    /// Queues a record; counts it as dropped if the writer is behind.
    pub(crate) fn record(&self, record: TraceRecord) {
        if self.tx.try_send(record).is_err() {
            self.drops.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }
}

struct TraceWriter {
    path: PathBuf,
    out: tokio::fs::File,
    drops: Arc<AtomicU64>,
}

impl TraceWriter {
    /// Waits for a record, lets more accumulate for [`FLUSH_DELAY`] while
    /// nobody is woken per record, then encodes and writes them together:
    /// a busy run costs one wake-up and one write per batch.
    async fn run(mut self, mut rx: mpsc::Receiver<TraceRecord>) {
        let mut batch = Vec::with_capacity(RECEIVE_BATCH);
        let mut pending = Vec::new();
        while rx.recv_many(&mut batch, RECEIVE_BATCH).await > 0 {
            tokio::time::sleep(FLUSH_DELAY).await;
            loop {
                for record in batch.drain(..) {
                    self.encode(&record, &mut pending);
                }
                if pending.len() >= WRITE_BATCH_BYTES {
                    self.write_out(&mut pending).await;
                }
                match rx.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
            self.write_out(&mut pending).await;
        }
        self.report_drops(&mut pending);
        self.write_out(&mut pending).await;
    }

    fn report_drops(&self, pending: &mut Vec<u8>) {
        let dropped = self.drops.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(path = %self.path.display(), dropped, "trace records were dropped");
            let summary = DropSummary {
                time: Utc::now(),
                trace_records_dropped: dropped,
            };
            self.encode(&summary, pending);
        }
    }

    fn encode(&self, value: &impl Serialize, pending: &mut Vec<u8>) {
        match serde_json::to_writer(&mut *pending, value) {
            Ok(()) => pending.push(b'\n'),
            Err(e) => tracing::warn!(path = %self.path.display(), "cannot encode trace record: {e}"),
        }
    }

    async fn write_out(&mut self, pending: &mut Vec<u8>) {
        if pending.is_empty() {
            return;
        }
        let written = self.out.write_all(pending).await;
        let flushed = self.out.flush().await;
        if let Err(e) = written.and(flushed) {
            let lines = pending.iter().filter(|b| **b == b'\n').count() as u64;
            self.drops.fetch_add(lines, Ordering::Relaxed);
            tracing::warn!(path = %self.path.display(), "cannot write trace records: {e}");
        }
        pending.clear();
    }
}

/// Query parameter names whose values are redacted from traced URLs: a name
/// containing any of these (ignoring case, after percent-decoding) is sensitive.
const SENSITIVE_QUERY_WORDS: &[&str] = &[
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "pwd",
    "auth",
    "sig",
    "credential",
    "code",
    "session",
    "sessid",
    "jwt",
];

/// Redacts `secrets` (placeholders, injected values, the run's `secrets:`
/// values), however they are encoded, and token-like query values from a
/// URL's path and query.
pub(crate) fn redact_path_and_query<'a>(path_and_query: &str, secrets: impl Iterator<Item = &'a str>) -> String {
    let text = redact_secrets(path_and_query, secrets);
    match text.split_once('?') {
        None => text,
        Some((path, query)) => format!("{path}?{}", redact_query(query)),
    }
}

/// Replaces every occurrence of each secret in `text` with [`REDACTED`],
/// whether written as is, percent-encoded (escapes in any case, in any mix
/// with plain characters) or with `+` for a space.
pub(crate) fn redact_secrets<'a>(text: &str, secrets: impl Iterator<Item = &'a str>) -> String {
    let secrets: Vec<&str> = secrets.filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return text.to_string();
    }
    let decoded = DecodedText::new(text);
    let mut hidden = vec![false; text.len()];
    let mut any = false;
    for secret in secrets {
        for view in decoded.views() {
            for start in memchr::memmem::find_iter(view, secret.as_bytes()) {
                let from = decoded.spans[start].0;
                let to = decoded.spans[start + secret.len() - 1].1;
                hidden[from..to].fill(true);
                any = true;
            }
        }
    }
    if !any {
        return text.to_string();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if hidden[i] {
            out.extend_from_slice(REDACTED.as_bytes());
            while i < bytes.len() && hidden[i] {
                i += 1;
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL part percent-decoded once, each decoded byte knowing the span of
/// the original text it came from.
struct DecodedText {
    /// `+` kept as `+`.
    plain: Vec<u8>,
    /// `+` read as a space (form encoding), when the text has a `+`.
    plus_as_space: Option<Vec<u8>>,
    /// Original `[start, end)` of each decoded byte.
    spans: Vec<(usize, usize)>,
}

impl DecodedText {
    fn new(text: &str) -> Self {
        let bytes = text.as_bytes();
        let mut plain = Vec::with_capacity(bytes.len());
        let mut spans = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let (byte, width) = match crate::path::escaped_byte(bytes, i) {
                Some(byte) => (byte, 3),
                None => (bytes[i], 1),
            };
            plain.push(byte);
            spans.push((i, i + width));
            i += width;
        }
        let plus_as_space = bytes.contains(&b'+').then(|| {
            plain
                .iter()
                .zip(&spans)
                .map(|(&byte, &(start, end))| if end - start == 1 && byte == b'+' { b' ' } else { byte })
                .collect()
        });
        Self {
            plain,
            plus_as_space,
            spans,
        }
    }

    fn views(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.plain.as_slice()).chain(self.plus_as_space.as_deref())
    }
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_sensitive_name(name) => format!("{name}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_sensitive_name(name: &str) -> bool {
    let name = String::from_utf8_lossy(&crate::path::percent_decode(name)).to_ascii_lowercase();
    SENSITIVE_QUERY_WORDS.iter().any(|w| name.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secrets_and_sensitive_query_values() {
        let url = redact_path_and_query(
            "/v1/fake-ph-123/x?access_token=abc&page=2&sig=zz",
            ["fake-ph-123"].into_iter(),
        );
        assert_eq!(url, "/v1/[REDACTED]/x?access_token=[REDACTED]&page=2&sig=[REDACTED]");
    }

    /// Leak: OAuth codes, session ids, JWTs and passwords in query values, and
    /// sensitive names hidden behind percent-encoding, reach the trace file.
    #[test]
    fn more_sensitive_names_and_encoded_names_are_redacted() {
        let url = redact_path_and_query(
            "/cb?code=oauth-code-1&pwd=hunter2&passwd=p2&PHPSESSID=s1&session=s2&jwt=j1\
             &x-amz-signature=s3&%74oken=t1&access%5Ftoken=t2&page=2&q=hello",
            std::iter::empty(),
        );
        assert_eq!(
            url,
            "/cb?code=[REDACTED]&pwd=[REDACTED]&passwd=[REDACTED]&PHPSESSID=[REDACTED]&session=[REDACTED]\
             &jwt=[REDACTED]&x-amz-signature=[REDACTED]&%74oken=[REDACTED]&access%5Ftoken=[REDACTED]&page=2&q=hello"
        );
    }

    /// Leak: a `secrets:` value (or an injected token) the agent puts in a
    /// URL, plainly or percent-encoded, is written to the trace file.
    #[test]
    fn secrets_are_redacted_anywhere_and_however_encoded() {
        let secret = "s3cr/t+v@lue";
        let cases = [
            ("/files/s3cr/t+v@lue/x", "/files/[REDACTED]/x"),
            ("/files/s3cr%2Ft%2Bv%40lue", "/files/[REDACTED]"),
            ("/files/s3cr%2ft%2bv%40lue", "/files/[REDACTED]"),
            ("/files/%73%33%63%72%2F%74%2B%76%40%6C%75%65", "/files/[REDACTED]"),
            ("/x?q=s3cr%2Ft%2Bv%40lue&page=2", "/x?q=[REDACTED]&page=2"),
            ("/x?q=pre-s3cr/t+v@lue-post", "/x?q=pre-[REDACTED]-post"),
            ("/a/s3cr/t+v@lue/b?q=s3cr%2Ft+v%40lue", "/a/[REDACTED]/b?q=[REDACTED]"),
        ];
        for (raw, expected) in cases {
            assert_eq!(redact_path_and_query(raw, [secret].into_iter()), expected, "{raw}");
        }
        // `+` for a space, as form encoding writes it.
        let spaced = redact_path_and_query("/x?q=my+pass+phrase&page=2", ["my pass phrase"].into_iter());
        assert_eq!(spaced, "/x?q=[REDACTED]&page=2");
        // Overlapping and adjacent occurrences leave nothing of either.
        assert_eq!(redact_secrets("/abcabc", ["abc", "cab"].into_iter()), "/[REDACTED]");
        assert_eq!(redact_secrets("/nothing", ["abc", ""].into_iter()), "/nothing");
    }

    fn record(id: usize) -> TraceRecord {
        TraceRecord {
            time: Utc::now(),
            request_id: format!("r{id}"),
            method: "GET".into(),
            url: "https://h/".into(),
            host: "h".into(),
            status: Some(200),
            duration_ms: 1.0,
            bytes_out: 0,
            bytes_in: 5,
            decision: "allow",
            rule: "permissive".into(),
            grants: vec![],
            error: None,
            private_address: false,
            would_block: None,
        }
    }

    async fn wait_for_lines(path: &Path, count: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= count {
                return text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            }
            assert!(std::time::Instant::now() < deadline, "trace not written: {text}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_full_channel_drops_and_reports_the_count() {
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join("moat-trace-drops");
        let _ = std::fs::remove_file(&path);
        let sink = TraceSink::open("run-drops", &path).unwrap();
        // The writer cannot run while this loop holds the (single) thread.
        for i in 0..TRACE_CHANNEL_CAPACITY + 10 {
            sink.record(record(i));
        }
        assert_eq!(sink.dropped(), 10);
        drop(sink);
        let lines = wait_for_lines(&path, TRACE_CHANNEL_CAPACITY + 1).await;
        assert_eq!(lines.last().unwrap()["trace_records_dropped"], 10);
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn records_are_appended_as_json_lines() {
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join("moat-trace");
        let _ = std::fs::remove_file(&path);
        let sink = TraceSink::open("run-1", &path).unwrap();
        for i in 0..3 {
            sink.record(record(i));
        }
        drop(sink);
        let lines = wait_for_lines(&path, 3).await;
        let ids: Vec<&str> = lines.iter().map(|l| l["request_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["r0", "r1", "r2"]);
        std::fs::remove_file(&path).unwrap();
    }
}
