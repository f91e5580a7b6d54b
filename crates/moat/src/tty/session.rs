//! One interactive session of the CLI with the daemon (issue 12): the
//! upgraded API connection carries keystrokes, resizes and redraw requests
//! one way and output, repaints and the exit the other. The CLI is only a
//! client: detaching, being killed or losing the daemon leaves the run to
//! the daemon, and the user's terminal is restored on every way out.

use std::io::{Read, Write};

use anyhow::Result;
use bytes::Bytes;
use moat_api::DaemonClient;
use moat_api::client::TerminalConnection;
use moat_api::terminal::{Frame, MAX_INPUT_CHUNK, read_frame, write_frame};
use moat_core::RunId;
use moat_core::config::EscapeKey;
use moat_core::logs::Stream;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::escape::{Action, Choice, EscapeScanner};
use super::raw::{self, RawTerminal};
use crate::context::ExitStatus;
use crate::live;
use crate::printer::Printer;
use crate::report::CliError;

/// Frames queued for the daemon (keystrokes wait here, not in the loop).
const OUTGOING_QUEUE: usize = 256;
/// Keystroke reads queued from the stdin thread.
const KEYS_QUEUE: usize = 64;

/// How a session behaves.
pub struct SessionOptions {
    /// Put the terminal in raw mode and treat input as keystrokes (a TTY
    /// session); otherwise stdin is streamed as it is, EOF included.
    pub tty: bool,
    /// SIGINT (pipes only: a raw terminal sends Ctrl-C to the program)
    /// stops the run instead of detaching.
    pub stop_on_interrupt: bool,
    pub escape_key: EscapeKey,
}

/// Why the session loop ended.
enum End {
    Exited(ExitStatus),
    Detached,
    Signalled(i32),
    Failed(anyhow::Error),
}

/// Runs the session until the program exits (its exit status), the user
/// detaches, or the connection is lost.
pub async fn run(
    client: &DaemonClient,
    run_id: &RunId,
    io: TerminalConnection,
    printer: &Printer,
    options: SessionOptions,
) -> Result<ExitStatus> {
    let (reader, writer) = tokio::io::split(io);
    let mut incoming = read_frames(reader);
    let outgoing = write_frames(writer);
    let size = raw::size().unwrap_or(moat_core::TerminalSize::DEFAULT);
    let raw = if options.tty { RawTerminal::enter(size)? } else { None };
    let mut session = Session {
        client,
        run_id,
        printer,
        raw,
        size,
        outgoing,
        scanner: EscapeScanner::new(options.escape_key),
        escape_key: options.escape_key,
        holds_input: true,
    };
    let end = session.pump(&mut incoming, &options).await;
    // The terminal first, then the words about it.
    drop(session.raw.take());
    match end {
        End::Exited(status) => Ok(status),
        End::Detached => {
            printer.status(format!("moat: detached; {run_id} goes on (`moat attach {run_id}`)"));
            Ok(ExitStatus::Success)
        }
        End::Signalled(signal) => {
            printer.status(format!("moat: detached; {run_id} goes on (`moat attach {run_id}`)"));
            Ok(ExitStatus::Workload(128 + i64::from(signal)))
        }
        End::Failed(e) => Err(e),
    }
}

struct Session<'a> {
    client: &'a DaemonClient,
    run_id: &'a RunId,
    printer: &'a Printer,
    raw: Option<RawTerminal>,
    size: moat_core::TerminalSize,
    outgoing: mpsc::Sender<Frame>,
    scanner: EscapeScanner,
    escape_key: EscapeKey,
    holds_input: bool,
}

impl Session<'_> {
    async fn pump(&mut self, incoming: &mut mpsc::Receiver<Frame>, options: &SessionOptions) -> End {
        let (Ok(mut winch), Ok(mut term), Ok(mut hup), Ok(mut int)) = (
            signal(SignalKind::window_change()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
            signal(SignalKind::interrupt()),
        ) else {
            return End::Failed(CliError::new("cannot install signal handlers for the session").into());
        };
        let mut keys = read_keys();
        let mut keys_open = true;
        let mut interrupted = false;
        loop {
            tokio::select! {
                frame = incoming.recv() => match frame {
                    Some(frame) => if let Some(end) = self.received(frame) { return end },
                    None => return End::Failed(self.lost()),
                },
                read = keys.recv(), if keys_open => match read {
                    Some(data) => if let Some(end) = self.typed(data).await { return end },
                    None => {
                        keys_open = false;
                        if self.raw.is_some() {
                            // The terminal went away (hang-up).
                            return End::Detached;
                        }
                        self.send(Frame::Eof).await;
                    }
                },
                _ = winch.recv() => self.resized().await,
                _ = term.recv() => return End::Signalled(libc_signal::TERM),
                _ = hup.recv() => return End::Signalled(libc_signal::HUP),
                _ = int.recv() => {
                    if !options.stop_on_interrupt {
                        return End::Detached;
                    }
                    let kill = std::mem::replace(&mut interrupted, true);
                    self.printer.status(format!(
                        "moat: {} {} (Ctrl-C again to kill it)",
                        if kill { "killing" } else { "stopping" },
                        self.run_id
                    ));
                    self.stop(kill);
                }
            }
        }
    }

    /// Shows a frame from the daemon; `Some` when the session is over.
    fn received(&mut self, frame: Frame) -> Option<End> {
        match frame {
            Frame::Output(stream, data) => self.show(stream, &data),
            Frame::Repaint(data) => self.show(Stream::Tty, &data),
            Frame::Notice(text) => self.notice(&text),
            Frame::HoldsInput(holds) => {
                if self.holds_input && !holds {
                    self.notice(&format!(
                        "another client took the input; watching (`moat attach --take-input {}` takes it back)",
                        self.run_id
                    ));
                }
                self.holds_input = holds;
            }
            Frame::Exit(exit) => {
                drop(self.raw.take());
                return Some(End::Exited(live::exit_status(
                    self.printer,
                    self.run_id,
                    exit.state,
                    exit.exit_code,
                    exit.failure,
                )));
            }
            Frame::Error(message) => return Some(End::Failed(CliError::new(message).into())),
            other => tracing::debug!("ignoring an unexpected frame from the daemon: {other:?}"),
        }
        None
    }

    fn show(&mut self, stream: Stream, data: &[u8]) {
        if let Some(raw) = &mut self.raw {
            raw.saw(data);
        }
        let written = match stream {
            Stream::Stderr => write_flushed(&mut std::io::stderr().lock(), data),
            Stream::Stdout | Stream::Tty => write_flushed(&mut std::io::stdout().lock(), data),
        };
        if let Err(e) = written {
            tracing::debug!("writing output failed: {e}");
        }
    }

    /// A line for the user: on the bottom row of a raw terminal, on stderr
    /// otherwise.
    fn notice(&self, text: &str) {
        match &self.raw {
            Some(_) => raw::draw_notice(self.size.rows, text),
            None => self.printer.status(format!("moat: {text}")),
        }
    }

    /// Keystrokes: through the escape scanner on a terminal, as they are
    /// from a pipe.
    async fn typed(&mut self, data: Vec<u8>) -> Option<End> {
        if self.raw.is_none() {
            self.send(Frame::Input(Bytes::from(data))).await;
            return None;
        }
        for action in self.scanner.feed(&data) {
            match action {
                Action::Send(bytes) => self.send(Frame::Input(Bytes::from(bytes))).await,
                Action::OpenMenu => raw::draw_menu(self.size.rows, &self.escape_key.label()),
                Action::Chose(choice) => {
                    if let Some(end) = self.chose(choice).await {
                        return Some(end);
                    }
                }
            }
        }
        None
    }

    async fn chose(&mut self, choice: Choice) -> Option<End> {
        match choice {
            Choice::Detach => {
                raw::clear_menu(self.size.rows);
                return Some(End::Detached);
            }
            Choice::Stop => {
                self.send(Frame::Redraw).await;
                self.stop(false);
            }
            Choice::Redraw | Choice::Dismiss => self.send(Frame::Redraw).await,
            Choice::SendPrefix => {
                self.send(Frame::Redraw).await;
                let prefix = self.scanner.prefix_bytes();
                self.send(Frame::Input(Bytes::from(prefix))).await;
            }
        }
        None
    }

    async fn resized(&mut self) {
        let Some(size) = raw::size() else { return };
        self.size = size;
        if let Some(raw) = &mut self.raw {
            raw.resized(size);
        }
        self.send(Frame::Resize(size)).await;
    }

    /// Asks the daemon to stop the run (in the background: the exit comes
    /// through the session).
    fn stop(&self, kill: bool) {
        let client = self.client.clone();
        let run_id = self.run_id.clone();
        tokio::spawn(async move {
            let _ = client.stop_run(&run_id, kill).await;
        });
    }

    async fn send(&self, frame: Frame) {
        // A closed queue means the connection is gone; the incoming side
        // reports it.
        let _ = self.outgoing.send(frame).await;
    }

    fn lost(&self) -> anyhow::Error {
        CliError::new(format!("lost the connection to the moat daemon during {}", self.run_id))
            .with_hint(format!(
                "the run may go on: `moat list` shows it, `moat attach {}` rejoins it",
                self.run_id
            ))
            .into()
    }
}

/// Signal numbers for the exit code after a signal (128 + n).
mod libc_signal {
    pub const HUP: i32 = 1;
    pub const TERM: i32 = 15;
}

fn write_flushed(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    out.write_all(data)?;
    out.flush()
}

/// The daemon's frames, read by a task of their own; the queue closes when
/// the connection does (or carries garbage).
fn read_frames(mut reader: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> mpsc::Receiver<Frame> {
    let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
    tokio::spawn(async move {
        while let Ok(Some(frame)) = read_frame(&mut reader).await {
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Writes queued frames to the daemon, so that a slow write never holds up
/// reading output.
fn write_frames(mut writer: impl tokio::io::AsyncWrite + Unpin + Send + 'static) -> mpsc::Sender<Frame> {
    let (tx, mut rx) = mpsc::channel::<Frame>(OUTGOING_QUEUE);
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if write_frame(&mut writer, &frame).await.is_err() {
                return;
            }
        }
    });
    tx
}

/// Stdin, read by a thread of its own (a blocking read cannot be cancelled;
/// the thread ends with the process). The queue closes at EOF.
fn read_keys() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(KEYS_QUEUE);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = vec![0u8; MAX_INPUT_CHUNK];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(buffer[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
    rx
}
