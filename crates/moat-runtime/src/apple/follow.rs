//! `logs --follow` for the Apple backend: the CLI's follow never ends by
//! itself, so the stream is read while `inspect` is polled, and ends a short
//! drain after the container stops.

use tokio::time::Instant;

use crate::{OutputChunk, OutputStream, OutputStreamKind, RuntimeResult};

use super::runner::{ByteStream, command_line};
use super::{AppleRuntime, strings};

pub(super) fn stdout_chunk(data: bytes::Bytes) -> OutputChunk {
    OutputChunk {
        stream: OutputStreamKind::Stdout,
        data,
    }
}

/// Reads `lines` (from `container logs --follow`) while polling `inspect`;
/// once the container has stopped, reads what is left for
/// [`AppleOptions::log_drain`](super::AppleOptions::log_drain) and ends.
pub(super) fn follow_logs(runtime: AppleRuntime, id: String, lines: ByteStream) -> OutputStream {
    let next_poll = Instant::now() + runtime.options.poll_interval;
    let state = FollowState {
        runtime,
        id,
        lines,
        next_poll,
        drain_until: None,
    };
    Box::pin(futures_util::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        match state.next_chunk().await {
            Some(Ok(chunk)) => Some((Ok(chunk), Some(state))),
            Some(Err(err)) => Some((Err(err), None)),
            None => None,
        }
    }))
}

struct FollowState {
    runtime: AppleRuntime,
    id: String,
    lines: ByteStream,
    next_poll: Instant,
    /// Set once the container has stopped.
    drain_until: Option<Instant>,
}

impl FollowState {
    async fn next_chunk(&mut self) -> Option<RuntimeResult<OutputChunk>> {
        use futures_util::StreamExt;
        loop {
            if let Some(until) = self.drain_until {
                let read = tokio::time::timeout_at(until, self.lines.next()).await;
                return read.ok().flatten().map(|r| r.map(stdout_chunk));
            }
            tokio::select! {
                read = self.lines.next() => return read.map(|r| r.map(stdout_chunk)),
                () = tokio::time::sleep_until(self.next_poll) => self.poll().await,
            }
        }
    }

    async fn poll(&mut self) {
        let options = &self.runtime.options;
        self.next_poll = Instant::now() + options.poll_interval;
        match self.runtime.has_exited(&self.id).await {
            Ok(true) => self.drain_until = Some(Instant::now() + options.log_drain),
            Ok(false) => {}
            Err(err) => tracing::warn!(
                "following logs of {}: {} failed ({err}); still following",
                self.id,
                command_line(&strings(&["inspect", &self.id]))
            ),
        }
    }
}
