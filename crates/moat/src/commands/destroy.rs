//! `moat destroy [RUN]`: delete a finished run's record. A run that may
//! still be alive is refused (stop it first); an ambiguous name is an error
//! listing the matches, since this changes something.

use std::io::Write;

use anyhow::{Context as _, Result};
use moat_core::lock::FileLock;
use moat_core::paths::run_files;
use moat_core::store::{RunStore, StoreError};
use moat_core::{RunId, RunState};

use crate::cli::DestroyArgs;
use crate::context::{Context, ExitStatus};
use crate::report::CliError;

pub fn destroy(ctx: &Context, args: &DestroyArgs) -> Result<ExitStatus> {
    let store = ctx.store()?;
    let id = store.resolve(args.run.as_deref(), true)?;
    ensure_finished(&store, &id)?;
    store.destroy(&id).with_context(|| format!("cannot destroy run {id}"))?;
    let mut out = ctx.printer.stdout();
    writeln!(out, "{id}")?;
    out.flush()?;
    Ok(ExitStatus::Success)
}

/// Refuses runs that are not known to be over.
fn ensure_finished(store: &RunStore, id: &RunId) -> Result<()> {
    match store.load(id) {
        Ok(meta) if meta.state.is_terminal() => Ok(()),
        Ok(meta) => Err(still_alive(id, meta.state.as_str())),
        // A run without readable metadata is over unless someone is still
        // creating it (its creator holds the run's lock).
        Err(StoreError::Corrupt { .. } | StoreError::NotFound(_)) => {
            let lock = store.run_dir(id).join(run_files::LOCK);
            if FileLock::is_held(&lock) {
                Err(still_alive(id, RunState::Creating.as_str()))
            } else {
                Ok(())
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn still_alive(id: &RunId, state: &str) -> anyhow::Error {
    CliError::new(format!("cannot destroy run {id}: it is {state}"))
        .with_hint(format!("stop it first with `moat stop {id}`"))
        .into()
}
