//! Sweeps on request (`moat system prune`, `moat clean`, `moat doctor`):
//! asked of the daemon, which is single-flight with its own sweeps; run by
//! `moatd sweep` only when no daemon can be started, and then only under
//! the daemon's lifetime lock with its registry restored. And how sweep
//! reports are printed.

use anyhow::Result;
use moat_api::sweep::ObjectKey;
use moat_api::sweep::{SweepReport, SweepRequest};
use moat_core::MoatHome;

use crate::printer::Printer;
use crate::{live, moatd};

/// Sweeps through the daemon, or by `moatd sweep` (under the daemon's
/// lifetime lock, with its registry restored) when no daemon can be started.
pub async fn sweep(home: &MoatHome, printer: &Printer, request: &SweepRequest) -> Result<SweepReport> {
    match moat_api::ensure_running(home).await {
        Ok(client) => client.reap(request).await.map_err(live::client_error),
        Err(e) => {
            printer.warning(format!("no daemon ({e}); sweeping in a process of its own"));
            moatd::sweep(home, request).await
        }
    }
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
    use moat_core::RuntimeKind;

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
