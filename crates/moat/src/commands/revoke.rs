//! `moat revoke PROVIDER`: delete a stored credential; a running daemon
//! drops it from live runs, whose next request goes out without it.

use anyhow::Result;
use moat_creds::CredentialStore;

use crate::cli::RevokeArgs;
use crate::commands::grant::notify_daemon;
use crate::context::{Context, ExitStatus};
use crate::report::CliError;

pub fn revoke(ctx: &Context, args: &RevokeArgs) -> Result<ExitStatus> {
    let home = ctx.home()?;
    let store = CredentialStore::open(&home, ctx.profile.as_deref())?;
    if !store.remove(&args.provider)? {
        return Err(CliError::new(format!("no credential for {}", args.provider))
            .with_hint("`moat grant list` shows what is stored")
            .into());
    }
    notify_daemon(ctx, &home);
    ctx.printer.status(format!("revoked {}", args.provider));
    Ok(ExitStatus::Success)
}
