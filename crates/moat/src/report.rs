//! Reporting a failed command: `error: <what>: <why>` on stderr, one
//! `error:` line per line of the message, then a `hint:` when there is an
//! obvious next step. A closed stdout pipe (`moat logs | head`) is not an
//! error. Also sets up moat's own diagnostics (`MOAT_LOG`).

use std::io;
use std::process::ExitCode;

use moat_core::env_vars;
use moat_core::store::StoreError;

use crate::printer::{Printer, Verbosity};

/// An error raised by the CLI itself, with an optional next step.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    message: String,
    hint: Option<String>,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

/// Prints `err` and returns the exit code for it.
pub fn report(printer: &Printer, err: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(err) {
        return ExitCode::SUCCESS;
    }
    printer.error(format!("{err:#}"));
    if let Some(hint) = hint_for(err) {
        printer.hint(hint);
    }
    ExitCode::FAILURE
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The next step for errors that have an obvious one.
fn hint_for(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|cause| {
        if let Some(e) = cause.downcast_ref::<CliError>() {
            return e.hint().map(str::to_string);
        }
        match cause.downcast_ref::<StoreError>()? {
            StoreError::Empty => Some("start one with `moat run`".into()),
            StoreError::NoMatch { .. } => Some("`moat list --all` shows every run".into()),
            StoreError::Ambiguous { .. } => Some("use the run id (or a longer prefix)".into()),
            _ => None,
        }
    })
}

/// Diagnostics from moat's libraries go to stderr, filtered by `MOAT_LOG`
/// (default: warnings only, info with `--verbose`).
pub fn init_tracing(verbosity: Verbosity) {
    let default = if verbosity == Verbosity::Verbose {
        "info"
    } else {
        "warn"
    };
    let filter = env_vars::read(env_vars::MOAT_LOG).unwrap_or_else(|| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(io::stderr);
    let _ = builder.without_time().try_init();
}
