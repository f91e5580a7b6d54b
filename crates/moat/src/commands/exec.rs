//! `moat exec`: run a command in a live run's container through the daemon
//! (which owns the runtimes) and exit with its code. The output arrives
//! whole once the command ends and goes to stdout/stderr as it came. The
//! daemon bounds one exec by 10 minutes; the runtime may bound it sooner
//! (Docker: its 30 s call timeout).

use std::io::Write;

use anyhow::Result;
use moat_api::ClientError;

use crate::cli::ExecArgs;
use crate::context::{Context, ExitStatus};
use crate::live;
use crate::report::CliError;

/// HTTP status the daemon answers when the exec (or the runtime) timed out.
const GATEWAY_TIMEOUT: u16 = 504;

pub fn exec(ctx: &Context, args: &ExecArgs) -> Result<ExitStatus> {
    if args.interactive {
        return Err(CliError::new("moat exec -i (interactive) is not supported yet")
            .with_hint("run a non-interactive command: `moat exec RUN -- CMD`")
            .into());
    }
    let store = ctx.store()?;
    let run_id = store.resolve(Some(&args.run), true)?;
    let meta = store.load(&run_id)?;
    if meta.state.is_terminal() {
        return Err(
            CliError::new(format!("run {run_id} already {}; exec needs a live run", meta.state))
                .with_hint(format!(
                    "start a new one with `moat run`, or read its output: `moat logs {run_id}`"
                ))
                .into(),
        );
    }
    let home = ctx.home()?;
    let result = live::block_on(async {
        let client = live::daemon(&home).await?;
        client.exec(&run_id, &args.command).await.map_err(exec_error)
    })?;
    write_all(&mut std::io::stdout().lock(), &result.stdout)?;
    write_all(&mut std::io::stderr().lock(), &result.stderr)?;
    Ok(match result.exit_code {
        Some(code) => ExitStatus::Workload(code),
        None => {
            ctx.printer
                .error(format!("the runtime did not report how the command in {run_id} ended"));
            ExitStatus::Failure
        }
    })
}

/// A timed-out exec gets a hint about the bound; other errors keep theirs.
fn exec_error(e: ClientError) -> anyhow::Error {
    if e.status().map(|status| status.as_u16()) == Some(GATEWAY_TIMEOUT) {
        return CliError::new(e.to_string())
            .with_hint("moat exec is for short commands; put long work in the run's own command")
            .into();
    }
    live::client_error(e)
}

fn write_all(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.flush()
}
