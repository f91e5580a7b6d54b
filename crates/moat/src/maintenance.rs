//! Sweeps on request (`moat system prune`, `moat clean`, `moat doctor`):
//! asked of the daemon, which is single-flight with its own sweeps; run in
//! this process only when no daemon can be started, and then only under
//! the daemon's lifetime lock with its registry restored.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use moat_api::sweep::ObjectKey;
use moat_api::sweep::{SweepReport, SweepRequest};
use moat_core::MoatHome;
use moat_core::config;
use moat_core::lock::{FileLock, LockError};
use moat_daemon::reconcile;
use moat_daemon::runtimes::SystemRuntimes;
use moat_daemon::{Daemon, DaemonConfig};

use crate::live;
use crate::printer::Printer;
use crate::report::CliError;

/// Sweeps through the daemon, or in-process when it cannot be started.
pub async fn sweep(home: &MoatHome, printer: &Printer, request: &SweepRequest) -> Result<SweepReport> {
    match moat_api::ensure_running(home).await {
        Ok(client) => client.reap(request).await.map_err(live::client_error),
        Err(e) => {
            printer.warning(format!("no daemon ({e}); sweeping in this process"));
            sweep_in_process(home, request).await
        }
    }
}

/// Bound on taking the daemon's lifetime lock for an in-process sweep.
const DAEMON_LOCK_WAIT: Duration = Duration::from_secs(1);

/// Sweeps as the daemon would, holding its lifetime lock (so no daemon
/// starts meanwhile, and none that still holds it is raced) and with its
/// registry restored from `runs.json`; refuses when either is impossible.
async fn sweep_in_process(home: &MoatHome, request: &SweepRequest) -> Result<SweepReport> {
    let lock_path = home.daemon_lock();
    let _lifetime = FileLock::acquire(&lock_path, DAEMON_LOCK_WAIT).map_err(|e| match e {
        LockError::Timeout { .. } => CliError::new(format!(
            "a moat daemon ({}) holds this MOAT_HOME but does not answer; not sweeping beside it",
            FileLock::holder(&lock_path).map_or("pid unknown".to_string(), |pid| format!("pid {pid}"))
        ))
        .with_hint("`moat daemon restart` replaces it; `moat daemon status` shows it")
        .into(),
        other => anyhow::Error::from(other),
    })?;
    let global = config::load_global(home)?.config;
    let runtimes = Arc::new(SystemRuntimes::new(&global).context("configuring runtimes")?);
    let mut daemon_config = DaemonConfig::new(home.clone());
    daemon_config.egress = None;
    let daemon = Daemon::new(daemon_config, runtimes, None);
    reconcile::load_registry(&daemon).map_err(|e| {
        CliError::new(format!("not sweeping: the run registry cannot be read ({e})"))
            .with_hint("start the daemon (`moat daemon restart`): it recovers runs from their directories")
    })?;
    Ok(daemon.reaper().sweep(&daemon, request, "in-process (no daemon)").await)
}

/// How to remove what `print_legacy` lists.
pub const LEGACY_HINT: &str = "moat system prune --legacy";

/// Lists objects left by moat's Go implementation, which sweeps never remove.
pub fn print_legacy(legacy: &[ObjectKey], out: &mut impl std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "  {} object(s) left by moat's Go implementation (never swept):",
        legacy.len()
    )?;
    for key in legacy {
        writeln!(out, "    {} {}", key.kind, key.name)?;
    }
    writeln!(out, "  remove them with: {LEGACY_HINT}")
}

/// Prints a sweep report for people.
pub fn print_report(report: &SweepReport, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let verb = if report.dry_run { "would remove" } else { "removed" };
    if report.runtimes.is_empty() {
        writeln!(out, "no runtime is available to sweep")?;
    }
    for sweep in &report.runtimes {
        writeln!(
            out,
            "{}: {} candidate(s), {} of live runs, {} {verb}, {} awaiting a second sighting, {} protected, {} failed",
            sweep.runtime,
            sweep.candidates,
            sweep.live,
            sweep.removed.len(),
            sweep.awaiting_second_sighting,
            sweep.protected,
            sweep.failed.len()
        )?;
        for key in &sweep.removed {
            writeln!(out, "  {verb} {} {}", key.kind, key.name)?;
        }
        for failed in &sweep.failed {
            writeln!(
                out,
                "  failed {} {}: {} ({} time(s))",
                failed.object.kind, failed.object.name, failed.error, failed.failures
            )?;
        }
        for error in &sweep.errors {
            writeln!(out, "  error: {error}")?;
        }
        if !report.legacy && !sweep.legacy.is_empty() {
            print_legacy(&sweep.legacy, out)?;
        }
    }
    if let Some(error) = &report.error {
        writeln!(out, "error: {error}")?;
    }
    writeln!(out, "took {} ms", report.duration_ms)
}

#[cfg(test)]
mod tests {
    use moat_api::sweep::ObjectKind;
    use moat_api::sweep::RuntimeSweep;
    use moat_runtime::RuntimeKind;

    use super::*;

    fn report(legacy_requested: bool) -> SweepReport {
        let go_net = ObjectKey {
            runtime: RuntimeKind::Docker,
            kind: ObjectKind::Network,
            name: "moat-legacy".into(),
        };
        SweepReport {
            dry_run: true,
            legacy: legacy_requested,
            runtimes: vec![RuntimeSweep {
                runtime: RuntimeKind::Docker,
                candidates: 0,
                live: 0,
                removed: if legacy_requested { vec![go_net.clone()] } else { vec![] },
                awaiting_second_sighting: 0,
                protected: 0,
                failed: vec![],
                errors: vec![],
                legacy: vec![go_net],
            }],
            ..Default::default()
        }
    }

    fn printed(report: &SweepReport) -> String {
        let mut out = Vec::new();
        print_report(report, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn go_era_objects_are_listed_with_the_flag_that_removes_them() {
        let text = printed(&report(false));
        assert!(text.contains("    network moat-legacy"), "{text}");
        assert!(text.contains("remove them with: moat system prune --legacy"), "{text}");
        assert!(!text.contains("would remove network"), "{text}");
    }

    #[test]
    fn with_legacy_they_are_among_what_would_be_removed() {
        let text = printed(&report(true));
        assert!(text.contains("would remove network moat-legacy"), "{text}");
        assert!(!text.contains("--legacy"), "{text}");
    }
}
