//! The `moat` binary: parse the arguments, run the command, turn the outcome
//! into an exit code (cli.md, "Output conventions"). Usage errors exit 2
//! (clap), moat's errors 1, `run`/`exec` the workload's own code.
//! Everything the user reads goes through [`printer::Printer`].

mod agent;
mod cli;
mod commands;
mod context;
mod dangerous;
mod exclude;
mod launch;
mod live;
mod maintenance;
mod moatd;
mod printer;
mod project_guess;
mod report;
mod resolve;
mod trust;
mod tty;
mod worktree;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::parse();
    let printer = printer::Printer::from_env(cli.verbosity());
    report::init_tracing(printer.verbosity());
    match commands::run(cli, &printer) {
        Ok(status) => status.into(),
        Err(err) => report::report(&printer, &err),
    }
}
