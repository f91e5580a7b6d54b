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

/// Query parameter names whose values are redacted from traced URLs.
const SENSITIVE_QUERY_WORDS: &[&str] = &[
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "auth",
    "sig",
    "credential",
];

/// Redacts `secrets` (placeholders, injected values) and token-like query
/// values from a URL's path and query.
pub(crate) fn redact_path_and_query<'a>(path_and_query: &str, secrets: impl Iterator<Item = &'a str>) -> String {
    let mut text = path_and_query.to_string();
    for secret in secrets.filter(|s| !s.is_empty() && path_and_query.contains(s)) {
        text = text.replace(secret, REDACTED);
    }
    match text.split_once('?') {
        None => text,
        Some((path, query)) => format!("{path}?{}", redact_query(query)),
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
    let name = name.to_ascii_lowercase();
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
        let path = std::env::temp_dir().join(format!("moat-trace-drops-{}.jsonl", std::process::id()));
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
        let path = std::env::temp_dir().join(format!("moat-trace-{}.jsonl", std::process::id()));
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
