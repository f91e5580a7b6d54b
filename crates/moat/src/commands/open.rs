//! `moat open RUN [ENDPOINT]`: the URL of a live run's endpoint on the
//! daemon's routing endpoint, printed, and opened in a browser when this
//! session has one.

use std::process::{Command, Stdio};

use anyhow::Result;

use crate::cli::OpenArgs;
use crate::context::{Context, ExitStatus};
use crate::report::CliError;

pub fn open(ctx: &Context, args: &OpenArgs) -> Result<ExitStatus> {
    let store = ctx.store()?;
    let run_id = store.resolve(Some(&args.run), false)?;
    let meta = store.load(&run_id)?;
    if meta.state.is_terminal() {
        return Err(CliError::new(format!("run {run_id} is {}: its endpoints are gone", meta.state)).into());
    }
    let url = match &args.endpoint {
        Some(name) => meta.endpoints.get(name).ok_or_else(|| {
            let known: Vec<&str> = meta.endpoints.keys().map(String::as_str).collect();
            CliError::new(format!("run {run_id} has no endpoint {name:?}"))
                .with_hint(format!("its endpoints: {}", list_or_none(&known)))
        })?,
        None => meta.endpoints.values().next().ok_or_else(|| {
            CliError::new(format!("run {run_id} has no endpoints"))
                .with_hint("name container ports in moat.yaml, e.g. `ports: {web: 3000}`")
        })?,
    };
    ctx.printer.data(url)?;
    if let Some(opener) = browser_opener() {
        let opened = Command::new(opener)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(e) = opened {
            ctx.printer.detail(format!("could not start {opener}: {e}"));
        }
    }
    Ok(ExitStatus::Success)
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The program that opens a URL in this session's browser, when it has one
/// (a desktop session; never over a bare SSH login or in CI).
fn browser_opener() -> Option<&'static str> {
    if cfg!(target_os = "macos") {
        return std::env::var_os("SSH_CONNECTION").is_none().then_some("open");
    }
    let desktop = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()));
    desktop.then_some("xdg-open")
}
