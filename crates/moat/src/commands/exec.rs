//! `moat exec`: run a command in a live run's container through the daemon
//! (which owns the runtimes) and exit with its code. The output arrives
//! whole once the command ends and goes to stdout/stderr as it came. The
//! daemon bounds one exec by 10 minutes; the runtime may bound it sooner
//! (Docker: its 30 s call timeout).

use std::io::{IsTerminal, Write};

use anyhow::Result;
use moat_api::ClientError;
use moat_api::terminal::Open;

use crate::cli::ExecArgs;
use crate::context::{Context, ExitStatus};
use crate::live;
use crate::report::CliError;

/// HTTP status the daemon answers when the exec (or the runtime) timed out.
const GATEWAY_TIMEOUT: u16 = 504;

pub fn exec(ctx: &Context, args: &ExecArgs) -> Result<ExitStatus> {
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
    if args.interactive || args.tty {
        return interactive(ctx, args, &home, &run_id);
    }
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

/// `exec -i` / `exec -it`: the command's stdin streamed (and a TTY of the
/// client's size with `-t`) over a terminal connection; no time bound.
fn interactive(
    ctx: &Context,
    args: &ExecArgs,
    home: &moat_core::MoatHome,
    run_id: &moat_core::RunId,
) -> Result<ExitStatus> {
    let size = match args.tty {
        false => None,
        true if std::io::stdin().is_terminal() => {
            Some(crate::tty::raw::size().unwrap_or(moat_core::TerminalSize::DEFAULT))
        }
        true => {
            return Err(CliError::new("-t needs a terminal on stdin, and stdin is not one")
                .with_hint("drop -t to stream stdin to the command: `... | moat exec -i RUN -- CMD`")
                .into());
        }
    };
    let escape_key = moat_core::config::load_global(home)?.config.escape_key;
    live::block_on(async {
        let client = live::daemon(home).await?;
        let open = Open::Exec {
            command: args.command.clone(),
            size,
            as_agent: None,
        };
        let io = client.terminal(run_id, &open).await.map_err(live::client_error)?;
        let options = crate::tty::SessionOptions {
            tty: size.is_some(),
            stop_on_interrupt: false,
            escape_key,
        };
        crate::tty::run(&client, run_id, io, &ctx.printer, options).await
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
