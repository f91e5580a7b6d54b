//! One client's terminal connection, after the API upgraded it: frames in
//! (input, resize, redraw, take-input, EOF), frames out (repaint, output,
//! notices, exit). Either joins a run's [`TerminalHub`] or runs an `exec`
//! with the connection as its terminal (`moat_api::terminal` for the frames).

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use moat_core::RunState;
use moat_runtime::{Attached, ExecSpec, Runtime};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::registry::RunHandle;
use crate::state::Daemon;
use crate::terminal::HubEvent;
use moat_api::terminal::{AgentExec, Exit, Frame, FrameError, Open, read_frame, write_frame};

/// Bound on the client's first frame.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames read ahead from a client.
const CLIENT_QUEUE: usize = 64;

type Io = TokioIo<Upgraded>;

/// Serves an upgraded connection for run `handle` until either side ends;
/// `joins` = the connection came to join the run's terminal, not to exec.
pub async fn serve(daemon: Daemon, handle: Arc<RunHandle>, io: Io, joins: bool) {
    let _attached = daemon.client_attached();
    let (reader, mut writer) = tokio::io::split(io);
    let mut frames = read_ahead(reader);
    let open = match tokio::time::timeout(OPEN_TIMEOUT, frames.recv()).await {
        Ok(Some(Frame::Open(open))) => open,
        Ok(_) => {
            let _ = refuse(&mut writer, "the first frame must be `open`").await;
            return;
        }
        Err(_) => {
            let _ = refuse(&mut writer, &format!("no `open` frame within {OPEN_TIMEOUT:?}")).await;
            return;
        }
    };
    let served = match open {
        Open::Attach { .. } | Open::Exec { .. } if joins != matches!(open, Open::Attach { .. }) => {
            refuse(&mut writer, "the `open` frame does not match the call").await
        }
        Open::Attach {
            take_input,
            watch,
            size,
        } => {
            attach(
                &daemon,
                &handle,
                &mut frames,
                &mut writer,
                take_input && !watch,
                watch,
                size,
            )
            .await
        }
        Open::Exec {
            command,
            size,
            as_agent,
        } => exec(&daemon, &handle, &mut frames, &mut writer, command, size, as_agent).await,
    };
    if let Err(e) = served {
        tracing::debug!(run = %handle.id(), "terminal client left: {e}");
    }
    let _ = writer.shutdown().await;
}

async fn refuse(writer: &mut WriteHalf<Io>, why: &str) -> Result<(), FrameError> {
    write_frame(writer, &Frame::Error(why.to_string())).await
}

/// Reads the client's frames into a queue (a task of its own, so a frame is
/// never cut by a `select!`); the queue ends with the connection.
fn read_ahead(mut reader: ReadHalf<Io>) -> mpsc::Receiver<Frame> {
    let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
    tokio::spawn(async move {
        loop {
            match read_frame(&mut reader).await {
                Ok(Some(frame)) => {
                    if tx.send(frame).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!("terminal client sent a bad frame: {e}");
                    return;
                }
            }
        }
    });
    rx
}

/// Joins the run's terminal: a repaint, then live output, until the run
/// exits or the client leaves (detach).
async fn attach(
    daemon: &Daemon,
    handle: &RunHandle,
    frames: &mut mpsc::Receiver<Frame>,
    writer: &mut WriteHalf<Io>,
    take_input: bool,
    watch: bool,
    size: Option<moat_runtime::TerminalSize>,
) -> Result<(), FrameError> {
    let hub = &handle.terminal;
    let joined = hub.join(take_input, watch);
    let client = joined.client;
    let _leave = Leave { handle, client };
    if joined.holds_input
        && let Some(size) = size
    {
        resize(daemon, handle, client, size).await;
    }
    write_frame(writer, &Frame::HoldsInput(joined.holds_input)).await?;
    // A resize changes the screen: paint the one the client will keep
    // (unless it gets the run's first output as it came).
    let repainted = matches!(joined.first.as_slice(), [Frame::Repaint(_)]);
    let first = match (repainted && joined.holds_input && size.is_some(), hub.repaint()) {
        (true, Some(painted)) => vec![Frame::Repaint(painted)],
        _ => joined.first,
    };
    for frame in &first {
        write_frame(writer, frame).await?;
    }
    if let Some(exit) = joined.exit {
        return write_frame(writer, &Frame::Exit(exit)).await;
    }
    let mut live = joined.live;
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => client_sent(daemon, handle, client, frame, writer).await?,
                None => return Ok(()),
            },
            event = live.recv() => match event {
                Ok(HubEvent::Output(stream, data)) => write_frame(writer, &Frame::Output(stream, data)).await?,
                Ok(HubEvent::InputMoved { to }) if to != client => {
                    write_frame(writer, &Frame::HoldsInput(false)).await?;
                }
                Ok(HubEvent::InputMoved { .. }) => write_frame(writer, &Frame::HoldsInput(true)).await?,
                Ok(HubEvent::Exit(exit)) => return write_frame(writer, &Frame::Exit(exit)).await,
                Err(RecvError::Lagged(_)) => catch_up(handle, writer).await?,
                Err(RecvError::Closed) => return Ok(()),
            },
        }
    }
}

/// Releases the input when the client goes, however it goes.
struct Leave<'a> {
    handle: &'a RunHandle,
    client: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.handle.terminal.leave(self.client);
    }
}

/// A client that fell behind: a TTY's gets the current screen; a pipe
/// run's is told what it missed.
async fn catch_up(handle: &RunHandle, writer: &mut WriteHalf<Io>) -> Result<(), FrameError> {
    match handle.terminal.repaint() {
        Some(painted) => write_frame(writer, &Frame::Repaint(painted)).await,
        None => {
            let notice = format!(
                "output was dropped while this client lagged (see `moat logs {}`)",
                handle.id()
            );
            write_frame(writer, &Frame::Notice(notice)).await
        }
    }
}

async fn client_sent(
    daemon: &Daemon,
    handle: &RunHandle,
    client: u64,
    frame: Frame,
    writer: &mut WriteHalf<Io>,
) -> Result<(), FrameError> {
    let hub = &handle.terminal;
    match frame {
        Frame::Input(data) => hub.input(client, data).await,
        Frame::Eof => hub.close_input(client).await,
        Frame::Resize(size) => resize(daemon, handle, client, size).await,
        Frame::TakeInput => hub.take_input(client),
        Frame::Redraw => {
            if let Some(painted) = hub.repaint() {
                write_frame(writer, &Frame::Repaint(painted)).await?;
            }
        }
        other => tracing::debug!("ignoring an unexpected frame from a terminal client: {other:?}"),
    }
    Ok(())
}

/// Resizes the run's TTY to the input holder's size.
async fn resize(daemon: &Daemon, handle: &RunHandle, client: u64, size: moat_runtime::TerminalSize) {
    if handle.terminal.resize(client, size).is_none() {
        return;
    }
    let meta = handle.metadata();
    let container = meta.container_id.unwrap_or_else(|| meta.id.to_string());
    let resized = async {
        let runtime = daemon.runtimes().for_spec(&handle.spec).await?;
        runtime.resize_container(&container, size).await?;
        Ok::<_, crate::supervisor::RunError>(())
    };
    if let Err(e) = resized.await {
        tracing::warn!(run = %meta.id, "resizing the terminal failed: {e}");
    }
}

/// Runs a command in the run's container with this connection as its
/// terminal, until it ends; then its exit code.
async fn exec(
    daemon: &Daemon,
    handle: &RunHandle,
    frames: &mut mpsc::Receiver<Frame>,
    writer: &mut WriteHalf<Io>,
    command: Vec<String>,
    size: Option<moat_runtime::TerminalSize>,
    as_agent: Option<AgentExec>,
) -> Result<(), FrameError> {
    let meta = handle.metadata();
    if meta.state != RunState::Running {
        return refuse(writer, &format!("run {} is {}, not running", meta.id, meta.state)).await;
    }
    if command.is_empty() {
        return refuse(writer, "exec needs a command").await;
    }
    let spec = match as_agent {
        None => ExecSpec {
            command,
            tty: size,
            user: None,
            env: Vec::new(),
        },
        Some(agent) => match crate::supervisor::agent_exec(&handle.spec, command, size, agent) {
            Ok(spec) => spec,
            Err(reason) => return refuse(writer, &reason).await,
        },
    };
    let container = meta.container_id.unwrap_or_else(|| meta.id.to_string());
    let started = async {
        let runtime = daemon.runtimes().for_spec(&handle.spec).await?;
        let (exec_id, attached) = runtime.exec_attached(&container, &spec).await?;
        Ok::<_, crate::supervisor::RunError>((runtime, exec_id, attached))
    };
    let (runtime, exec_id, attached) = match started.await {
        Ok(started) => started,
        Err(e) => return refuse(writer, &e.to_string()).await,
    };
    pump_exec(runtime.as_ref(), &exec_id, attached, frames, writer).await?;
    let exit = match runtime.exec_exit_code(&exec_id).await {
        Ok(exit_code) => Exit {
            state: RunState::Exited,
            exit_code,
            failure: None,
        },
        Err(e) => Exit {
            state: RunState::Failed,
            exit_code: None,
            failure: Some(e.to_string()),
        },
    };
    write_frame(writer, &Frame::Exit(exit)).await
}

/// Copies the exec's output to the client and the client's input to the
/// exec until the exec's output ends (it exited).
async fn pump_exec(
    runtime: &dyn Runtime,
    exec_id: &str,
    attached: Attached,
    frames: &mut mpsc::Receiver<Frame>,
    writer: &mut WriteHalf<Io>,
) -> Result<(), FrameError> {
    use futures_util::StreamExt;
    let Attached { mut output, mut input } = attached;
    let mut client_gone = false;
    loop {
        tokio::select! {
            chunk = output.next() => match chunk {
                Some(Ok(chunk)) => write_frame(writer, &Frame::Output(chunk.stream, chunk.data)).await?,
                Some(Err(e)) => return refuse(writer, &e.to_string()).await,
                None => return Ok(()),
            },
            frame = frames.recv(), if !client_gone => match frame {
                Some(Frame::Input(data)) => {
                    if input.write_all(&data).await.is_ok() {
                        let _ = input.flush().await;
                    }
                }
                Some(Frame::Eof) => {
                    let _ = input.shutdown().await;
                }
                Some(Frame::Resize(size)) => {
                    if let Err(e) = runtime.resize_exec(exec_id, size).await {
                        tracing::debug!("resizing exec {exec_id} failed: {e}");
                    }
                }
                Some(_) => {}
                // The client left: the command goes on to its end unseen,
                // like a detached run.
                None => client_gone = true,
            },
        }
    }
}
