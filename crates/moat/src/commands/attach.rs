//! `moat attach`: re-join a live run through the daemon until it exits
//! (then exit with its code). An interactive run's terminal comes back as
//! it is now (a repaint of its screen), with the input if nobody else holds
//! it (`--take-input` takes it); its escape menu detaches. Another run's
//! output is followed, recent output replayed; Ctrl-C detaches. Either
//! way the run goes on.

use std::io::IsTerminal;

use anyhow::Result;
use moat_api::terminal::Open;
use moat_core::config;

use crate::cli::AttachArgs;
use crate::context::{Context, ExitStatus};
use crate::live;

pub fn attach(ctx: &Context, args: &AttachArgs) -> Result<ExitStatus> {
    let store = ctx.store()?;
    let run_id = store.resolve(Some(&args.run), false)?;
    let home = ctx.home()?;
    let escape_key = config::load_global(&home)?.config.escape_key;
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    live::block_on(async {
        let client = live::daemon(&home).await?;
        let open = Open::Attach {
            take_input: args.take_input,
            watch: false,
            size: crate::tty::raw::size(),
        };
        let options = crate::tty::SessionOptions {
            tty,
            stop_on_interrupt: false,
            escape_key,
        };
        match client.terminal(&run_id, &open).await {
            Ok(io) => crate::tty::run(&client, &run_id, io, &ctx.printer, options).await,
            // Not interactive, or no longer live: its output (or recorded
            // end) is followed instead.
            Err(e) if e.status().is_some() => live::follow(&client, &run_id, &ctx.printer, false).await,
            Err(e) => Err(live::client_error(e)),
        }
    })
}
