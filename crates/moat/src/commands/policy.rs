//! `moat policy suggest`: reads a run's `network.jsonl` and prints the
//! narrowest `network.rules` that would have allowed what it did, as a
//! moat.yaml snippet or JSON (the proposal itself is built in `suggest`).

use std::io::Write;

use anyhow::{Context as _, Result};
use moat_api::suggestion::Suggestion;
use serde_json::json;

use crate::cli::{PolicyAction, PolicyArgs};
use crate::context::{Context, ExitStatus};
use crate::live;

pub fn policy(ctx: &Context, args: &PolicyArgs) -> Result<ExitStatus> {
    match &args.action {
        PolicyAction::Suggest { run, json } => suggest(ctx, run.as_deref(), *json),
    }
}

fn suggest(ctx: &Context, run: Option<&str>, as_json: bool) -> Result<ExitStatus> {
    let store = ctx.store()?;
    let run_id = store.resolve(run, false)?;
    let home = ctx.home()?;
    let suggestion = live::block_on(async {
        let client = live::daemon(&home).await?;
        client.suggest_policy(&run_id).await.map_err(live::client_error)
    })
    .with_context(|| format!("proposing rules from the trace of {run_id}"))?;
    let mut out = ctx.printer.stdout();
    if as_json {
        let document = json!({
            "run": run_id,
            "network": suggestion.network_policy(),
            "hosts": suggestion.hosts,
            "skipped": suggestion.skipped,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&document)?)?;
    } else {
        write!(out, "{}", suggestion.to_yaml(run_id.as_str()))?;
    }
    out.flush()?;
    report_skipped(ctx, &suggestion);
    Ok(ExitStatus::Success)
}

/// Says on stderr what the proposal leaves out, so a user applying it knows
/// what strict will still refuse.
fn report_skipped(ctx: &Context, suggestion: &Suggestion) {
    let skipped = &suggestion.skipped;
    if suggestion.hosts.is_empty() {
        ctx.printer
            .warning("the run made no allowed request through the proxy: the suggestion allows nothing");
    }
    let notes = [
        (skipped.refused, "refused at the time (not allowed by the suggestion)"),
        (
            skipped.connections,
            "tunnel record(s) without a request (refused, or a failed TLS handshake)",
        ),
        (
            skipped.unjudgeable_paths,
            "request(s) with a path rules cannot judge (strict refuses them where path rules apply)",
        ),
        (
            skipped.unnameable_hosts,
            "request(s) to a host no rule can name (IPv6 literal or redacted)",
        ),
    ];
    for (count, what) in notes.into_iter().filter(|(count, _)| *count > 0) {
        ctx.printer.status(format!("left out: {count} {what}"));
    }
}
