//! One interactive run's terminal as the daemon owns it (issue 12): the
//! container's stdin (written by one task, fed by whichever client holds
//! the input), its output fanned out to every attached client, and the
//! current screen kept by a VT parser so a client that attaches later gets
//! a repaint instead of a replay of raw bytes. Runs without a TTY (`-i`
//! with pipes) keep a bounded ring of raw output for late clients instead.

use std::collections::VecDeque;
use std::num::NonZeroU16;
use std::sync::Mutex;

use bytes::Bytes;
use moat_core::logs::Stream;
use moat_runtime::{Attached, OutputStream, TerminalSize};
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc};

use crate::output::{LazyBroadcast, lock};
use moat_api::terminal::{Exit, Frame};

/// Raw output kept for late clients of a run without a TTY.
const RING_CAPACITY_BYTES: usize = 1 << 20;
/// Output events queued per client before it counts as lagging.
const BROADCAST_CAPACITY: usize = 4096;
/// Input chunks queued for the container's stdin.
const INPUT_QUEUE: usize = 256;
/// Scrollback the VT parser keeps (not replayed: a repaint is one screen).
const SCROLLBACK_ROWS: usize = 0;
/// A TTY's output kept raw until its first client joins: that client (the
/// `moat run -it` that created the run) gets the bytes as they came, drawn
/// from where its cursor is, instead of a full-screen repaint.
const EARLY_OUTPUT_BYTES: usize = 64 * 1024;

/// What attached clients hear.
#[derive(Clone, Debug)]
pub enum HubEvent {
    Output(Stream, Bytes),
    /// The input moved to client `to`.
    InputMoved {
        to: u64,
    },
    Exit(Exit),
}

/// A run's terminal.
pub struct TerminalHub {
    tty: bool,
    state: Mutex<HubState>,
}

struct HubState {
    screen: Option<vt100::Parser>,
    /// The TTY's output so far while nobody joined yet and it is small.
    early: Option<Vec<u8>>,
    ring: VecDeque<(Stream, Bytes)>,
    ring_bytes: usize,
    holder: Option<u64>,
    next_client: u64,
    exit: Option<Exit>,
    input: Option<mpsc::Sender<Input>>,
    /// The runtime's output stream, from the attachment made before the
    /// container started until supervision takes it.
    output: Option<OutputStream>,
    events: LazyBroadcast<HubEvent>,
}

enum Input {
    Data(Bytes),
    Eof,
}

/// A client that joined: what to draw first, then live events.
pub struct Joined {
    pub client: u64,
    pub first: Vec<Frame>,
    pub live: broadcast::Receiver<HubEvent>,
    pub holds_input: bool,
    pub exit: Option<Exit>,
}

impl TerminalHub {
    /// `size` is the TTY's initial size; `None` = pipes, no TTY.
    pub fn new(size: Option<TerminalSize>) -> Self {
        let screen = size.map(|size| {
            let (rows, cols) = nonzero(size);
            vt100::Parser::new(rows, cols, SCROLLBACK_ROWS)
        });
        TerminalHub {
            tty: size.is_some(),
            state: Mutex::new(HubState {
                early: screen.as_ref().map(|_| Vec::new()),
                screen,
                ring: VecDeque::new(),
                ring_bytes: 0,
                holder: None,
                next_client: 1,
                exit: None,
                input: None,
                output: None,
                events: LazyBroadcast::new(BROADCAST_CAPACITY),
            }),
        }
    }

    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// Takes the container's attachment: its input is written from now on
    /// (by a task of its own), its output waits for [`Self::take_output`].
    pub fn connect(&self, attached: Attached) {
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        tokio::spawn(write_input(attached.input, rx));
        let mut state = lock(&self.state);
        state.input = Some(tx);
        state.output = Some(attached.output);
    }

    /// No attachment was made yet (a run re-adopted by a new daemon).
    pub fn is_detached(&self) -> bool {
        let state = lock(&self.state);
        state.input.is_none() && state.output.is_none()
    }

    pub fn take_output(&self) -> Option<OutputStream> {
        lock(&self.state).output.take()
    }

    /// Records output and sends it to every attached client.
    pub fn push(&self, stream: Stream, data: Bytes) {
        let mut state = lock(&self.state);
        if let Some(early) = &mut state.early {
            early.extend_from_slice(&data);
            if early.len() > EARLY_OUTPUT_BYTES {
                state.early = None;
            }
        }
        match &mut state.screen {
            Some(screen) => screen.process(&data),
            None => {
                state.ring_bytes += data.len();
                state.ring.push_back((stream, data.clone()));
                while state.ring_bytes > RING_CAPACITY_BYTES {
                    let Some((_, old)) = state.ring.pop_front() else { break };
                    state.ring_bytes -= old.len();
                }
            }
        }
        state.events.send(HubEvent::Output(stream, data));
    }

    /// Records the end (first call only); clients hear it after any output.
    pub fn finish(&self, exit: Exit) {
        let mut state = lock(&self.state);
        if state.exit.is_some() {
            return;
        }
        state.exit = Some(exit.clone());
        state.input = None;
        state.events.send(HubEvent::Exit(exit));
    }

    /// Adds a client. It gets the input when it asks to take it, or when
    /// nobody holds it and it does not only watch.
    pub fn join(&self, take_input: bool, watch: bool) -> Joined {
        let mut state = lock(&self.state);
        let client = state.next_client;
        state.next_client += 1;
        let holds_input = take_input || (!watch && state.holder.is_none());
        if holds_input {
            state.holder = Some(client);
            state.events.send(HubEvent::InputMoved { to: client });
        }
        let early = state.early.take();
        let first = match (&state.screen, early) {
            (Some(_), Some(early)) => vec![Frame::Output(Stream::Tty, Bytes::from(early))],
            (Some(screen), None) => vec![Frame::Repaint(repaint(screen))],
            (None, _) => state
                .ring
                .iter()
                .map(|(stream, data)| Frame::Output(*stream, data.clone()))
                .collect(),
        };
        Joined {
            client,
            first,
            live: state.events.subscribe(),
            holds_input,
            exit: state.exit.clone(),
        }
    }

    /// A client left: the input is free again if it held it.
    pub fn leave(&self, client: u64) {
        let mut state = lock(&self.state);
        if state.holder == Some(client) {
            state.holder = None;
        }
    }

    pub fn take_input(&self, client: u64) {
        let mut state = lock(&self.state);
        if state.holder != Some(client) {
            state.holder = Some(client);
            state.events.send(HubEvent::InputMoved { to: client });
        }
    }

    pub fn holds_input(&self, client: u64) -> bool {
        lock(&self.state).holder == Some(client)
    }

    /// Queues `client`'s keystrokes for the container (dropped unless it
    /// holds the input). Waits while the queue is full.
    pub async fn input(&self, client: u64, data: Bytes) {
        self.send(client, Input::Data(data)).await;
    }

    /// Closes the container's stdin (from the input holder only).
    pub async fn close_input(&self, client: u64) {
        self.send(client, Input::Eof).await;
    }

    async fn send(&self, client: u64, input: Input) {
        let sender = {
            let state = lock(&self.state);
            if state.holder != Some(client) {
                return;
            }
            state.input.clone()
        };
        if let Some(sender) = sender {
            let _ = sender.send(input).await;
        }
    }

    /// Applies the input holder's new size to the screen; returns it when
    /// the container's TTY must be resized too.
    pub fn resize(&self, client: u64, size: TerminalSize) -> Option<TerminalSize> {
        let mut state = lock(&self.state);
        if state.holder != Some(client) || size.rows == 0 || size.cols == 0 {
            return None;
        }
        let screen = state.screen.as_mut()?;
        let (rows, cols) = nonzero(size);
        screen.screen_mut().set_size(rows, cols);
        Some(size)
    }

    /// The current screen as bytes that draw it (TTY runs only).
    pub fn repaint(&self) -> Option<Bytes> {
        lock(&self.state).screen.as_ref().map(repaint)
    }
}

/// Escape sequences that draw `parser`'s screen over any terminal: the
/// right screen (alternate or main), then contents, cursor and input modes.
fn repaint(parser: &vt100::Parser) -> Bytes {
    let screen = parser.screen();
    let mut out = Vec::new();
    if screen.alternate_screen() {
        out.extend_from_slice(b"\x1b[?1049h");
    } else {
        out.extend_from_slice(b"\x1b[?1049l");
    }
    out.extend_from_slice(b"\x1b[0m\x1b[H\x1b[2J");
    out.extend_from_slice(screen.state_formatted().as_bytes());
    Bytes::from(out)
}

fn nonzero(size: TerminalSize) -> (NonZeroU16, NonZeroU16) {
    let rows = NonZeroU16::new(size.rows).unwrap_or(vt100::Parser::DEFAULT_ROWS);
    let cols = NonZeroU16::new(size.cols).unwrap_or(vt100::Parser::DEFAULT_COLS);
    (rows, cols)
}

/// Writes queued input to the container until the queue closes or input
/// ends (then its stdin is shut, which closes it for a run without a TTY).
async fn write_input(
    mut stdin: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    mut queue: mpsc::Receiver<Input>,
) {
    while let Some(input) = queue.recv().await {
        let written = match input {
            Input::Data(data) => match stdin.write_all(&data).await {
                Ok(()) => stdin.flush().await,
                Err(e) => Err(e),
            },
            Input::Eof => {
                let _ = stdin.shutdown().await;
                return;
            }
        };
        if let Err(e) = written {
            tracing::debug!("writing to the container's stdin failed: {e}");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen_of(bytes: &[u8]) -> vt100::Parser {
        let mut parser = vt100::Parser::new(NonZeroU16::new(10).unwrap(), NonZeroU16::new(40).unwrap(), 0);
        parser.process(bytes);
        parser
    }

    #[test]
    fn a_repaint_redraws_the_alternate_screen_and_cursor() {
        let hub = TerminalHub::new(Some(TerminalSize { rows: 10, cols: 40 }));
        hub.push(Stream::Tty, Bytes::from_static(b"shell prompt\r\n"));
        hub.push(
            Stream::Tty,
            Bytes::from_static(b"\x1b[?1049h\x1b[H\x1b[2Jfull screen\x1b[5;7Hhere"),
        );
        let painted = hub.repaint().unwrap();
        // Drawn over a terminal showing something else entirely.
        let mut other = screen_of(b"garbage everywhere\r\nmore garbage");
        other.process(&painted);
        let screen = other.screen();
        assert!(screen.alternate_screen());
        assert!(screen.contents().starts_with("full screen"), "{}", screen.contents());
        assert!(!screen.contents().contains("garbage"));
        assert_eq!(screen.cursor_position(), (4, 10));
    }

    #[test]
    fn the_first_client_gets_the_early_output_raw_and_later_ones_a_repaint() {
        let hub = TerminalHub::new(Some(TerminalSize::DEFAULT));
        hub.push(Stream::Tty, Bytes::from_static(b"$ "));
        let first = hub.join(true, false);
        assert_eq!(first.first, vec![Frame::Output(Stream::Tty, Bytes::from_static(b"$ "))]);
        let second = hub.join(false, false);
        assert!(matches!(&second.first[..], [Frame::Repaint(_)]));
    }

    #[test]
    fn one_client_holds_the_input_and_take_input_moves_it() {
        let hub = TerminalHub::new(Some(TerminalSize::DEFAULT));
        let first = hub.join(false, false);
        let watcher = hub.join(false, false);
        assert!(first.holds_input && !watcher.holds_input);
        assert_eq!(hub.resize(watcher.client, TerminalSize { rows: 5, cols: 5 }), None);
        let taker = hub.join(true, false);
        assert!(taker.holds_input && !hub.holds_input(first.client));
        hub.leave(taker.client);
        let next = hub.join(false, false);
        assert!(next.holds_input, "a freed input goes to the next client");
        let only_watching = hub.join(false, true);
        assert!(!only_watching.holds_input);
    }

    #[test]
    fn late_clients_of_a_pipe_run_get_its_raw_output() {
        let hub = TerminalHub::new(None);
        hub.push(Stream::Stdout, Bytes::from_static(b"\xffbinary"));
        hub.push(Stream::Stderr, Bytes::from_static(b"err"));
        let joined = hub.join(false, false);
        assert_eq!(
            joined.first,
            vec![
                Frame::Output(Stream::Stdout, Bytes::from_static(b"\xffbinary")),
                Frame::Output(Stream::Stderr, Bytes::from_static(b"err")),
            ]
        );
    }
}
