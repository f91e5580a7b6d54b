//! `moat doctor`: which runtime and socket moat found (or why none), the
//! daemon's state, its last sweeps, how many orphaned objects could be
//! reclaimed (a dry run) and how, what moat's Go implementation left behind
//! (never swept; `moat system prune --legacy`), the health of stored
//! credentials, and where their encryption key is kept (OS keyring or key
//! file, per `MOAT_KEYRING_BACKEND`).

use std::io::Write;

use anyhow::Result;
use moat_api::DaemonClient;
use moat_api::sweep::ObjectKey;
use moat_api::sweep::{SweepReport, SweepRequest};
use moat_core::MoatHome;
use moat_creds::KeyBackend;
use serde::Serialize;

use crate::cli::DoctorArgs;
use crate::context::{Context, ExitStatus};
use crate::probe::{self, RuntimeCheck};
use crate::{live, maintenance};

#[derive(Serialize)]
struct Diagnosis {
    runtime: RuntimeCheck,
    daemon: Option<moat_api::Health>,
    /// Dry run: what a forced sweep would remove now.
    reclaimable: Option<SweepReport>,
    /// Objects left by moat's Go implementation, which sweeps never remove.
    legacy: Vec<ObjectKey>,
    /// How to remove `legacy`, when there is any.
    #[serde(skip_serializing_if = "Option::is_none")]
    legacy_hint: Option<&'static str>,
    credentials: Vec<moat_creds::CredentialSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credentials_error: Option<String>,
    /// Where the credential encryption key is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    credential_key: Option<moat_creds::KeyStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential_key_error: Option<String>,
}

pub fn doctor(ctx: &Context, args: &DoctorArgs) -> Result<ExitStatus> {
    let home = ctx.home()?;
    let diagnosis = live::block_on(diagnose(ctx, &home))?;
    let mut out = ctx.printer.stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &diagnosis)?;
        writeln!(out)?;
    } else {
        print(&diagnosis, &mut out)?;
    }
    out.flush()?;
    Ok(if diagnosis.runtime.available {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

async fn diagnose(ctx: &Context, home: &MoatHome) -> Result<Diagnosis> {
    let runtime = probe::check_docker().await;
    let (daemon, reclaimable) = if runtime.available {
        let dry_run = SweepRequest {
            dry_run: true,
            force: true,
            ..Default::default()
        };
        let report = maintenance::sweep(home, &ctx.printer, &dry_run).await.ok();
        (DaemonClient::new(home.daemon_socket()).health().await.ok(), report)
    } else {
        (DaemonClient::new(home.daemon_socket()).health().await.ok(), None)
    };
    let (credentials, credentials_error) = match moat_creds::CredentialStore::open(home, ctx.profile.as_deref()) {
        Ok(store) => match store.list() {
            Ok(list) => (list, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        },
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    // After listing, which may have moved a key file into a required keyring.
    let (credential_key, credential_key_error) = match KeyBackend::from_env().and_then(|b| b.key_store(home)) {
        Ok(keys) => (Some(keys.status()), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let legacy: Vec<ObjectKey> = reclaimable
        .iter()
        .flat_map(|report| &report.runtimes)
        .flat_map(|sweep| sweep.legacy.iter().cloned())
        .collect();
    let legacy_hint = (!legacy.is_empty()).then_some(maintenance::LEGACY_HINT);
    Ok(Diagnosis {
        runtime,
        daemon,
        reclaimable,
        legacy,
        legacy_hint,
        credentials,
        credentials_error,
        credential_key,
        credential_key_error,
    })
}

fn print(d: &Diagnosis, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "runtime: {}", probe::describe(&d.runtime))?;
    match &d.daemon {
        Some(h) => writeln!(
            out,
            "daemon: running, pid {}, version {}, {} live run(s), proxy port {}",
            h.pid,
            h.version,
            h.live_runs,
            h.proxy_port.map_or_else(|| "-".into(), |p| p.to_string())
        )?,
        None => writeln!(out, "daemon: not running (starts on demand)")?,
    }
    if let Some(sweep) = d.daemon.as_ref().and_then(|h| h.last_sweep.as_ref()) {
        writeln!(
            out,
            "last sweep: {} ({}), {} ms",
            sweep["started_at"].as_str().unwrap_or("?"),
            sweep["trigger"].as_str().unwrap_or("?"),
            sweep["duration_ms"]
        )?;
        if let Some(error) = sweep["error"].as_str() {
            writeln!(out, "  {error}")?;
        }
    }
    let last_error = d.daemon.as_ref().and_then(|h| h.last_sweep.as_ref()?["error"].as_str());
    match d.reclaimable.as_ref().and_then(|r| r.error.as_deref()) {
        Some(error) if Some(error) == last_error => writeln!(out, "reclaimable: unknown (as above)")?,
        Some(error) => writeln!(out, "reclaimable: unknown ({error})")?,
        None => {}
    }
    if let Some(report) = &d.reclaimable {
        for sweep in &report.runtimes {
            let count = |kind| sweep.removed.iter().filter(|k| k.kind == kind).count();
            use moat_api::sweep::ObjectKind::{Container, Network, Volume};
            writeln!(
                out,
                "reclaimable on {}: {} container(s), {} network(s), {} volume(s)",
                sweep.runtime,
                count(Container),
                count(Network),
                count(Volume)
            )?;
            if !sweep.removed.is_empty() {
                writeln!(out, "  reclaim them with: moat system prune --force")?;
            }
            if !sweep.legacy.is_empty() {
                maintenance::print_legacy(&sweep.legacy, out)?;
            }
        }
    }
    if let Some(error) = &d.credentials_error {
        writeln!(out, "credentials: {error}")?;
    } else {
        let broken = d.credentials.iter().filter(|c| c.error.is_some()).count();
        writeln!(
            out,
            "credentials: {} stored, {} unreadable",
            d.credentials.len(),
            broken
        )?;
    }
    match (&d.credential_key, &d.credential_key_error) {
        (Some(status), _) => writeln!(out, "credential key: {status}")?,
        (None, Some(error)) => writeln!(out, "credential key: {error}")?,
        (None, None) => {}
    }
    Ok(())
}
