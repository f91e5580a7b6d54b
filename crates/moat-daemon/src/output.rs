//! Live output of one run: a bounded ring buffer of recent chunks (replayed
//! to clients that attach late) and a broadcast to attached clients, made
//! when the first client attaches ([`LazyBroadcast`]).

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use moat_core::logs::Stream;
use tokio::sync::broadcast;

use crate::api::AttachEvent;

/// How much recent output is kept for replay.
const RING_CAPACITY_BYTES: usize = 1 << 20;
/// Events queued per attached client before it counts as lagging.
const BROADCAST_CAPACITY: usize = 4096;

/// Output fan-out for one run.
#[derive(Default)]
pub struct OutputHub {
    inner: Mutex<HubState>,
}

#[derive(Default)]
struct HubState {
    ring: VecDeque<(Stream, Bytes)>,
    ring_bytes: usize,
    dropped_bytes: u64,
    finished: Option<AttachEvent>,
    events: LazyBroadcast<AttachEvent>,
}

/// A broadcast channel made on the first subscription: a channel holds
/// its whole capacity from the start (a few hundred KiB at
/// [`BROADCAST_CAPACITY`]), and most runs never have a client attached.
/// Kept under the same lock as what it announces, so that a subscriber
/// misses nothing sent after its replay.
pub(crate) struct LazyBroadcast<T> {
    sender: Option<broadcast::Sender<T>>,
    capacity: usize,
}

impl<T: Clone> LazyBroadcast<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        LazyBroadcast { sender: None, capacity }
    }

    /// Sends to the subscribers, if any.
    pub(crate) fn send(&self, event: T) {
        if let Some(sender) = &self.sender {
            // No receivers left is fine: nobody is attached.
            let _ = sender.send(event);
        }
    }

    pub(crate) fn subscribe(&mut self) -> broadcast::Receiver<T> {
        let capacity = self.capacity;
        self.sender
            .get_or_insert_with(|| broadcast::channel(capacity).0)
            .subscribe()
    }
}

impl<T: Clone> Default for LazyBroadcast<T> {
    fn default() -> Self {
        LazyBroadcast::new(BROADCAST_CAPACITY)
    }
}

/// What an attaching client receives: the replay, then live events.
pub struct Subscription {
    pub replay: Vec<AttachEvent>,
    pub live: broadcast::Receiver<AttachEvent>,
    /// The run had already ended: the replay ends with its exit event.
    pub finished: bool,
}

impl OutputHub {
    pub fn push(&self, stream: Stream, data: Bytes) {
        let mut state = lock(&self.inner);
        state.ring_bytes += data.len();
        state.ring.push_back((stream, data.clone()));
        while state.ring_bytes > RING_CAPACITY_BYTES {
            let Some((_, old)) = state.ring.pop_front() else {
                break;
            };
            state.ring_bytes -= old.len();
            state.dropped_bytes += old.len() as u64;
        }
        state.events.send(output_event(stream, &data));
    }

    /// Records the run's end and tells every attached client; only the
    /// first call counts.
    pub fn finish(&self, exit: AttachEvent) {
        let mut state = lock(&self.inner);
        if state.finished.is_some() {
            return;
        }
        state.finished = Some(exit.clone());
        state.events.send(exit);
    }

    pub fn subscribe(&self) -> Subscription {
        let mut state = lock(&self.inner);
        let mut replay = Vec::with_capacity(state.ring.len() + 2);
        if state.dropped_bytes > 0 {
            replay.push(AttachEvent::Truncated {
                dropped_bytes: state.dropped_bytes,
            });
        }
        replay.extend(state.ring.iter().map(|(stream, data)| output_event(*stream, data)));
        if let Some(exit) = &state.finished {
            replay.push(exit.clone());
        }
        Subscription {
            replay,
            live: state.events.subscribe(),
            finished: state.finished.is_some(),
        }
    }
}

fn output_event(stream: Stream, data: &Bytes) -> AttachEvent {
    AttachEvent::Output {
        stream,
        data: String::from_utf8_lossy(data).into_owned(),
    }
}

/// Locks a mutex, recovering the data if a holder panicked (the state is
/// plain data and stays consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_core::RunState;

    #[test]
    fn late_subscribers_get_a_replay_then_live_events() {
        let hub = OutputHub::default();
        hub.push(Stream::Stdout, Bytes::from_static(b"one\n"));
        let mut sub = hub.subscribe();
        assert_eq!(
            sub.replay,
            vec![AttachEvent::Output {
                stream: Stream::Stdout,
                data: "one\n".into()
            }]
        );
        hub.push(Stream::Stderr, Bytes::from_static(b"two\n"));
        let exit = AttachEvent::Exit {
            state: RunState::Exited,
            exit_code: Some(3),
            failure: None,
        };
        hub.finish(exit.clone());
        assert_eq!(
            sub.live.try_recv().unwrap(),
            AttachEvent::Output {
                stream: Stream::Stderr,
                data: "two\n".into()
            }
        );
        assert_eq!(sub.live.try_recv().unwrap(), exit);
        let late = hub.subscribe();
        assert!(late.finished);
        assert_eq!(late.replay.last(), Some(&exit));
    }

    #[test]
    fn the_ring_is_bounded_and_reports_what_it_dropped() {
        let hub = OutputHub::default();
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        for _ in 0..20 {
            hub.push(Stream::Stdout, chunk.clone());
        }
        let sub = hub.subscribe();
        assert_eq!(
            sub.replay.first(),
            Some(&AttachEvent::Truncated {
                dropped_bytes: 4 * 64 * 1024
            })
        );
        assert_eq!(sub.replay.len(), 17);
    }
}
