//! One module per command (`commands/<name>.rs`), each a function taking the
//! resolved arguments; this file only dispatches.

mod agent;
mod agents;
mod attach;
mod audit;
mod clean;
mod completions;
mod daemon;
mod destroy;
mod doctor;
mod exec;
mod grant;
mod grant_aws;
mod grant_oauth;
mod grant_ssh;
mod init;
mod join;
mod list;
mod logs;
mod open;
mod policy;
mod revoke;
mod run;
mod snapshot;
mod status;
mod stop;
mod system;
mod trace;
mod trust;
mod version;
mod wt;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::context::{Context, ExitStatus};
use crate::printer::Printer;

pub fn run(cli: Cli, printer: &Printer) -> Result<ExitStatus> {
    let ctx = Context {
        printer: printer.clone(),
        profile: cli.profile,
    };
    match cli.command {
        Command::Run(args) => run::run(&ctx, args),
        Command::Wt(args) => wt::wt(&ctx, args),
        Command::Attach(args) => attach::attach(&ctx, &args),
        Command::List(args) => list::list(&ctx, &args),
        Command::Status(args) => status::status(&ctx, &args),
        Command::Logs(args) => logs::logs(&ctx, &args),
        Command::Stop(args) => stop::stop(&ctx, &args),
        Command::Open(args) => open::open(&ctx, &args),
        Command::Destroy(args) => destroy::destroy(&ctx, &args),
        Command::Exec(args) => exec::exec(&ctx, &args),
        Command::Join(args) => join::join(&ctx, &args),
        Command::Snapshot(args) => snapshot::snapshot(&ctx, &args),
        Command::Trace(args) => trace::trace(&ctx, &args),
        Command::Audit(args) => audit::audit(&ctx, &args),
        Command::Policy(args) => policy::policy(&ctx, &args),
        Command::Init(args) => init::init(&ctx, &args),
        Command::Grant(args) => grant::grant(&ctx, &args),
        Command::Revoke(args) => revoke::revoke(&ctx, &args),
        Command::Clean(args) => clean::clean(&ctx, &args),
        Command::System(args) => system::system(&ctx, &args),
        Command::Doctor(args) => doctor::doctor(&ctx, &args),
        Command::Trust(args) => trust::trust(&ctx, &args),
        Command::Daemon(args) => daemon::daemon(&ctx, &args),
        Command::Completions(args) => completions::completions(&ctx, &args),
        Command::Version(args) => version::version(&ctx, &args),
        Command::Agents(args) => agents::agents(&ctx, &args),
        Command::Agent(command) => agent::agent(&ctx, &command),
    }
}
