//! The daemon's audit writer (issue 16, docs/audit.md): the only process
//! that writes `runs/<id>/audit.jsonl`. Call sites record an [`Event`] in
//! one line; one thread assigns every entry its seq and `prev`, so the
//! chain cannot fork however many tasks record at once. Each log is held
//! under an exclusive `flock` so a second writer (another process) is
//! refused rather than interleaved. Logs are fsynced and their heads signed
//! at least every second while events arrive and when a run is closed. A
//! torn last line left by a crash is cut off and the cut recorded in the
//! chain, never silently dropped.

mod event;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use moat_core::{MoatHome, RunId};
use moat_proxy::ProxyEventSink;

pub use event::Event;
use writer::Writer;

/// Events waiting for the writer before new ones are counted as dropped
/// (and the count recorded in the run's chain). The queue grows only as
/// events wait: a channel allocated at this capacity up front would keep
/// about 14 MiB resident in an idle daemon.
const QUEUE_CAPACITY: usize = 64 * 1024;
/// Longest time an event stays written but not fsynced (and its head unsigned).
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

enum Command {
    Record { run: RunId, time: String, event: Event },
    Close { run: RunId },
    Flush { done: SyncSender<()> },
}

/// The handle call sites record through (cheap to clone).
#[derive(Clone)]
pub struct AuditLog {
    tx: Sender<Command>,
    /// Events sent and not yet taken by the writer.
    queued: Arc<AtomicUsize>,
    /// Events dropped per run because the queue was full.
    dropped: Arc<Mutex<HashMap<RunId, u64>>>,
}

impl AuditLog {
    /// Starts the writer thread for the runs of `home`.
    pub fn start(home: &MoatHome) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let dropped = Arc::new(Mutex::new(HashMap::new()));
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = Writer::new(home.clone(), dropped.clone());
        let taken = queued.clone();
        let spawned = std::thread::Builder::new()
            .name("moat-audit".into())
            .spawn(move || run_writer(writer, rx, &taken));
        if let Err(e) = spawned {
            tracing::error!("cannot start the audit writer: {e}; audit events are lost");
        }
        AuditLog { tx, queued, dropped }
    }

    /// Appends `event` to run `run`'s log (written within [`SYNC_INTERVAL`]).
    pub fn record(&self, run: &RunId, event: Event) {
        let command = Command::Record {
            run: run.clone(),
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            event,
        };
        if self.queued.fetch_add(1, Ordering::AcqRel) >= QUEUE_CAPACITY {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            *crate::output::lock(&self.dropped).entry(run.clone()).or_default() += 1;
            return;
        }
        if self.tx.send(command).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            tracing::error!(run = %run, "the audit writer has stopped; an audit event is lost");
        }
    }

    /// Where the proxy reports run `run`'s denials and injections.
    pub fn proxy_sink(&self, run: &RunId) -> ProxyEventSink {
        let audit = self.clone();
        let run = run.clone();
        Arc::new(move |event| audit.record(&run, Event::from_proxy(event)))
    }

    /// Records [`Event::Attached`] now and [`Event::Detached`] when the
    /// returned guard is dropped.
    pub fn attachment(&self, run: &RunId) -> Attachment {
        self.record(run, Event::Attached);
        Attachment {
            audit: self.clone(),
            run: run.clone(),
        }
    }

    /// Fsyncs and signs run `run`'s log and lets go of it (its run is
    /// cleaned). A later event reopens it.
    pub fn close(&self, run: &RunId) {
        if self.tx.send(Command::Close { run: run.clone() }).is_err() {
            tracing::error!(run = %run, "the audit writer has stopped; the log was not signed at close");
        }
    }

    /// Waits (at most `timeout`) until everything recorded before this call
    /// is written, fsynced and signed; false if it was not in time.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        if self.tx.send(Command::Flush { done }).is_err() {
            return false;
        }
        finished.recv_timeout(timeout).is_ok()
    }
}

/// A client attached to a run; its drop records the detach.
pub struct Attachment {
    audit: AuditLog,
    run: RunId,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.audit.record(&self.run, Event::Detached);
    }
}

/// The writer thread: applies commands in order, and syncs what is dirty
/// every [`SYNC_INTERVAL`]; syncs everything when every handle is gone.
fn run_writer(mut writer: Writer, rx: Receiver<Command>, queued: &AtomicUsize) {
    loop {
        match rx.recv_timeout(writer.time_to_next_sync(SYNC_INTERVAL)) {
            Ok(Command::Record { run, time, event }) => {
                queued.fetch_sub(1, Ordering::AcqRel);
                writer.append(&run, time, &event);
            }
            Ok(Command::Close { run }) => writer.close(&run),
            Ok(Command::Flush { done }) => {
                writer.sync_all();
                let _ = done.try_send(());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                writer.sync_all();
                return;
            }
        }
        if writer.time_to_next_sync(SYNC_INTERVAL).is_zero() {
            writer.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_past_the_queue_capacity_are_counted_as_dropped() {
        let (tx, rx) = std::sync::mpsc::channel();
        let audit = AuditLog {
            tx,
            queued: Arc::new(AtomicUsize::new(QUEUE_CAPACITY - 1)),
            dropped: Arc::new(Mutex::new(HashMap::new())),
        };
        let run = RunId::generate();
        audit.record(&run, Event::Attached);
        audit.record(&run, Event::Attached);
        audit.record(&run, Event::Detached);
        assert_eq!(rx.try_iter().count(), 1);
        assert_eq!(audit.queued.load(Ordering::Acquire), QUEUE_CAPACITY);
        assert_eq!(crate::output::lock(&audit.dropped).get(&run), Some(&2));
    }
}
