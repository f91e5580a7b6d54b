//! The daemon's executable run for one answer, for when no daemon answers
//! and none should (or can) be started: `moatd probe` for the runtime's
//! health, `moatd sweep` for a sweep under the daemon's lock. Each is
//! bounded; its JSON answer is on stdout, its complaint on stderr.

use std::time::Duration;

use anyhow::{Context as _, Result};
use moat_api::RuntimeCheck;
use moat_api::spawn::daemon_executable;
use moat_api::sweep::{SweepReport, SweepRequest};
use moat_core::subprocess::{Subprocess, SubprocessError};
use moat_core::{MoatHome, env_vars};
use serde::de::DeserializeOwned;

use crate::report::CliError;

/// Bound on `moatd probe` (a Docker ping is bounded at 5 s by the runtime).
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on `moatd sweep`: a sweep is bounded at 2 minutes.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(150);

/// The runtime's health as the daemon sees it, asked of the running daemon
/// or of `moatd probe` (which starts nothing).
pub async fn runtime_check(home: &MoatHome) -> RuntimeCheck {
    let client = moat_api::DaemonClient::new(home.daemon_socket());
    if let Ok(check) = client.runtime_check().await {
        return check;
    }
    match call::<RuntimeCheck>(home, "probe", None, PROBE_TIMEOUT).await {
        Ok(check) => check,
        Err(e) => RuntimeCheck {
            kind: "docker".into(),
            endpoint: None,
            found_via: None,
            available: false,
            problem: Some(format!("{e:#}")),
        },
    }
}

/// A sweep run by `moatd sweep` in a process of its own.
pub async fn sweep(home: &MoatHome, request: &SweepRequest) -> Result<SweepReport> {
    let input = serde_json::to_vec(request).context("encoding the sweep request")?;
    call(home, "sweep", Some(input), SWEEP_TIMEOUT).await
}

async fn call<T: DeserializeOwned>(
    home: &MoatHome,
    command: &str,
    input: Option<Vec<u8>>,
    bound: Duration,
) -> Result<T> {
    let exe = daemon_executable().map_err(crate::live::spawn_error)?;
    let mut moatd = Subprocess::new(&exe, bound)
        .args([command])
        .env(env_vars::MOAT_HOME, home.root());
    if let Some(input) = input {
        moatd = moatd.stdin_bytes(input);
    }
    let output = moatd.run().await.map_err(|e| match e {
        SubprocessError::TimedOut { .. } => {
            CliError::new(format!("moatd {command} did not finish within {bound:?}")).into()
        }
        e => anyhow::Error::from(e).context(format!("running {} {command}", exe.display())),
    })?;
    if !output.success() {
        let complaint = output.stderr.trim().trim_start_matches("moatd: ");
        let (message, hint) = match complaint.split_once("\nhint: ") {
            Some((message, hint)) => (message, Some(hint)),
            None => (complaint, None),
        };
        let error = CliError::new(message.to_string());
        return Err(match hint {
            Some(hint) => error.with_hint(hint.to_string()),
            None => error,
        }
        .into());
    }
    serde_json::from_str(&output.stdout).with_context(|| format!("reading the answer of moatd {command}"))
}
