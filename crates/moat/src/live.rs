//! The CLI's side of talking to the daemon: an async runtime for the
//! command, finding or starting the daemon, and following a run's output to
//! the terminal (stdout to stdout, stderr to stderr) until its exit code.

use std::future::Future;
use std::io::Write;

use anyhow::{Context as _, Result};
use futures_util::StreamExt;
use moat_api::AttachEvent;
use moat_api::{ClientError, DaemonClient, SpawnError};
use moat_core::{MoatHome, RunId, RunState};

use crate::context::ExitStatus;
use crate::printer::Printer;
use crate::report::CliError;

/// Runs `future` on a runtime made for this command.
pub fn block_on<T>(future: impl Future<Output = Result<T>>) -> Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start moat's async runtime")?;
    runtime.block_on(future)
}

/// A client for this home's daemon, starting one if needed.
pub async fn daemon(home: &MoatHome) -> Result<DaemonClient> {
    moat_api::ensure_running(home).await.map_err(spawn_error)
}

fn spawn_error(e: SpawnError) -> anyhow::Error {
    let hint = e.hint();
    let error = CliError::new(format!("cannot reach the moat daemon: {e}"));
    match hint {
        Some(hint) => error.with_hint(hint).into(),
        None => error.into(),
    }
}

/// Turns a daemon client error into a CLI error carrying its hint.
pub fn client_error(e: ClientError) -> anyhow::Error {
    let hint = e.hint().map(String::from);
    let error = CliError::new(e.to_string());
    match hint {
        Some(hint) => error.with_hint(hint).into(),
        None => error.into(),
    }
}

/// What Ctrl-C has done so far while following a run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Interrupts {
    None,
    Stopping,
    Killing,
}

/// Streams a run's output until it ends and returns its exit status.
/// With `stop_on_interrupt`, Ctrl-C stops the run and a second Ctrl-C kills
/// it; otherwise Ctrl-C only detaches (the run goes on).
pub async fn follow(
    client: &DaemonClient,
    run_id: &RunId,
    printer: &Printer,
    stop_on_interrupt: bool,
) -> Result<ExitStatus> {
    follow_observed(client, run_id, printer, stop_on_interrupt, &mut || {}).await
}

/// [`follow`], calling `on_output` before each piece of output is written
/// (`--timings` notes the first).
pub async fn follow_observed(
    client: &DaemonClient,
    run_id: &RunId,
    printer: &Printer,
    stop_on_interrupt: bool,
    on_output: &mut dyn FnMut(),
) -> Result<ExitStatus> {
    let events = client.attach(run_id).await.map_err(client_error)?;
    tokio::pin!(events);
    let mut interrupts = Interrupts::None;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = tokio::signal::ctrl_c() => {
                if !stop_on_interrupt {
                    printer.status(format!("detached; {run_id} goes on (moat attach {run_id})"));
                    return Ok(ExitStatus::Success);
                }
                interrupts = interrupt(client, run_id, printer, interrupts).await;
                continue;
            }
        };
        match event {
            Some(Ok(AttachEvent::Output { stream, data })) => {
                on_output();
                write_output(stream, &data)?;
            }
            Some(Ok(AttachEvent::Truncated { dropped_bytes })) => printer.warning(format!(
                "{dropped_bytes} bytes of earlier output are not shown (see `moat logs {run_id}`)"
            )),
            Some(Ok(AttachEvent::Exit {
                state,
                exit_code,
                failure,
            })) => return Ok(exit_status(printer, run_id, state, exit_code, failure)),
            Some(Err(e)) => return Err(client_error(e)),
            None => {
                return Err(
                    CliError::new(format!("lost the connection to the daemon while following {run_id}"))
                        .with_hint(format!(
                            "the run goes on: `moat attach {run_id}` or `moat logs -f {run_id}`"
                        ))
                        .into(),
                );
            }
        }
    }
}

async fn interrupt(client: &DaemonClient, run_id: &RunId, printer: &Printer, so_far: Interrupts) -> Interrupts {
    let (kill, next) = match so_far {
        Interrupts::None => {
            printer.status(format!("stopping {run_id} (Ctrl-C again to kill it)"));
            (false, Interrupts::Stopping)
        }
        Interrupts::Stopping | Interrupts::Killing => {
            printer.status(format!("killing {run_id}"));
            (true, Interrupts::Killing)
        }
    };
    let client = client.clone();
    let run_id = run_id.clone();
    // The stop call waits for the grace period; keep streaming meanwhile.
    tokio::spawn(async move {
        let _ = client.stop_run(&run_id, kill).await;
    });
    next
}

fn write_output(stream: moat_core::logs::Stream, data: &str) -> Result<()> {
    match stream {
        moat_core::logs::Stream::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(data.as_bytes())?;
            out.flush()?;
        }
        moat_core::logs::Stream::Stderr => {
            let mut err = std::io::stderr().lock();
            err.write_all(data.as_bytes())?;
            err.flush()?;
        }
    }
    Ok(())
}

fn exit_status(
    printer: &Printer,
    run_id: &RunId,
    state: RunState,
    exit_code: Option<i64>,
    failure: Option<String>,
) -> ExitStatus {
    match (state, exit_code) {
        (RunState::Exited, Some(code)) => ExitStatus::Workload(code),
        (RunState::Exited, None) => ExitStatus::Success,
        _ => {
            let why = failure.unwrap_or_else(|| format!("it ended as {state}"));
            printer.error(format!("run {run_id} failed: {why}"));
            ExitStatus::Failure
        }
    }
}
