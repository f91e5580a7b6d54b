//! Capturing a run's output: its container's log stream is followed into
//! the run's live output hub and `logs.jsonl` while it runs; once the
//! container has exited, the whole log is read once more and whatever the
//! follow missed is added. Docker can end a follow before the last chunk
//! of a container that exits at once reaches it, notably a last line
//! without its newline (`printf x`), which was then lost.

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use moat_core::RunId;
use moat_core::logs::{LogRecord, LogWriter};
use moat_core::paths::run_files;
use moat_runtime::{OutputChunk, OutputStream, Runtime};

use crate::lines::LineSplitter;
use crate::registry::RunHandle;
use crate::state::Daemon;

/// One run's output on its way to the hub and the log file.
pub struct Capture<'a> {
    handle: &'a RunHandle,
    id: RunId,
    writer: Option<LogWriter>,
    splitter: LineSplitter,
    /// Bytes taken so far, both streams, in arrival order.
    received: usize,
    since: Option<DateTime<Utc>>,
}

impl<'a> Capture<'a> {
    /// Opens the run's `logs.jsonl` for appending; output from `since` on.
    pub fn open(daemon: &Daemon, handle: &'a RunHandle, since: Option<DateTime<Utc>>) -> Self {
        let id = handle.id();
        let log_path = daemon.store().run_dir(&id).join(run_files::LOGS);
        let writer = match LogWriter::open(&log_path) {
            Ok(writer) => Some(writer),
            Err(e) => {
                tracing::error!(run = %id, "cannot open {}: {e}; output is not recorded", log_path.display());
                None
            }
        };
        Capture {
            handle,
            id,
            writer,
            splitter: LineSplitter::default(),
            received: 0,
            since,
        }
    }

    /// Follows the container's output until its stream ends.
    pub async fn follow(&mut self, runtime: &dyn Runtime, container: &str) {
        match runtime.logs(container, true, self.since).await {
            Ok(stream) => self.follow_stream(stream).await,
            Err(e) => tracing::warn!(run = %self.id, "cannot follow output: {e}"),
        }
    }

    /// Takes output from `stream` (a log follow or a terminal attachment)
    /// until it ends.
    pub async fn follow_stream(&mut self, mut stream: OutputStream) {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => self.take(&chunk),
                Err(e) => {
                    tracing::warn!(run = %self.id, "output stream broke: {e}");
                    return;
                }
            }
        }
    }

    /// After the container exited: reads its whole log once more and takes
    /// what the follow did not get (the log is the same bytes in the same
    /// order, so the first `received` bytes are skipped).
    pub async fn catch_up(&mut self, runtime: &dyn Runtime, container: &str) {
        let mut stream = match runtime.logs(container, false, self.since).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(run = %self.id, "cannot re-read output after exit: {e}");
                return;
            }
        };
        let mut skip = self.received;
        while let Some(Ok(mut chunk)) = stream.next().await {
            if skip >= chunk.data.len() {
                skip -= chunk.data.len();
                continue;
            }
            let missed = chunk.data.split_off(skip);
            skip = 0;
            tracing::debug!(run = %self.id, "took {} byte(s) the follow missed", missed.len());
            self.take(&OutputChunk {
                stream: chunk.stream,
                data: missed,
            });
        }
    }

    /// Records a last line without its newline.
    pub fn finish(mut self) {
        let records = self.splitter.finish();
        self.write(&records);
    }

    fn take(&mut self, chunk: &OutputChunk) {
        self.received += chunk.data.len();
        self.handle.output.push(chunk.stream, chunk.data.clone());
        if self.handle.spec.interactive {
            self.handle.terminal.push(chunk.stream, chunk.data.clone());
        }
        let records = self.splitter.feed(chunk.stream, &chunk.data);
        self.write(&records);
    }

    fn write(&mut self, records: &[LogRecord]) {
        let Some(out) = &mut self.writer else { return };
        let result = records
            .iter()
            .try_for_each(|r| out.append(r))
            .and_then(|()| out.flush());
        if let Err(e) = result {
            tracing::error!(run = %self.id, "writing logs.jsonl failed: {e}; further output is not recorded");
            self.writer = None;
        }
    }
}
