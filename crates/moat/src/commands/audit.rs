//! `moat audit`: verify and print a run's audit log (docs/audit.md), export
//! it as a bundle, verify a bundle against a key the verifier trusts, and
//! print this `MOAT_HOME`'s public key. Verdicts: `INTACT`, or
//! `TAMPERED at seq N (why)` with exit status 1.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use moat_core::audit::{
    AuditKey, BUNDLE_FORMAT, Bundle, ChainReport, Entry, PublicKey, SIGNATURE_FILE, SignatureCheck, SignedHead,
    check_signature, verify_chain,
};
use moat_core::paths::run_files;
use serde_json::Value;

use crate::cli::{AuditAction, AuditArgs};
use crate::context::{Context, ExitStatus};
use crate::report::CliError;

/// How long an export waits for the daemon to sign the newest entries
/// (it signs within a second of each write).
const SIGNATURE_CATCH_UP: Duration = Duration::from_secs(3);

pub fn audit(ctx: &Context, args: &AuditArgs) -> Result<ExitStatus> {
    match &args.action {
        Some(AuditAction::Key) => print_key(ctx),
        Some(AuditAction::Verify {
            file,
            key,
            key_file,
            trust_embedded_key,
        }) => verify_bundle(ctx, file, key.as_deref(), key_file.as_deref(), *trust_embedded_key),
        None => audit_run(ctx, args),
    }
}

fn print_key(ctx: &Context) -> Result<ExitStatus> {
    let key = AuditKey::load_or_create(&ctx.home()?)?;
    let mut out = ctx.printer.stdout();
    writeln!(out, "{}", key.public())?;
    out.flush()?;
    Ok(ExitStatus::Success)
}

/// What was read of a run's log.
struct RunLog {
    run_id: String,
    bytes: Vec<u8>,
    report: ChainReport,
    head: Option<SignedHead>,
}

fn read_run_log(dir: &Path, run_id: &str) -> Result<RunLog> {
    let path = dir.join(run_files::AUDIT);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let head_path = dir.join(SIGNATURE_FILE);
    let head = match std::fs::read(&head_path) {
        Ok(text) => Some(
            serde_json::from_slice(&text).with_context(|| format!("{} is not a signed head", head_path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", head_path.display())),
    };
    let report = verify_chain(run_id, &bytes);
    Ok(RunLog {
        run_id: run_id.to_string(),
        bytes,
        report,
        head,
    })
}

fn audit_run(ctx: &Context, args: &AuditArgs) -> Result<ExitStatus> {
    let home = ctx.home()?;
    let store = ctx.store()?;
    let run_id = store.resolve(args.run.as_deref(), false)?;
    let dir = store.run_dir(&run_id);
    let key = AuditKey::load_existing(&home)?.map(|k| k.public());
    let mut log = read_run_log(&dir, run_id.as_str())?;
    if args.export.is_some() {
        log = wait_for_signature(&dir, log, key.as_ref())?;
    }
    let mut out = ctx.printer.stdout();
    print_entries(&mut out, &log.report.entries)?;
    let verdict = verdict(&log, key.as_ref());
    writeln!(out, "{}", verdict.line)?;
    out.flush()?;
    if let Some(note) = &verdict.note {
        ctx.printer.hint(note);
    }
    if !verdict.intact {
        return Ok(ExitStatus::Failure);
    }
    if let Some(path) = &args.export {
        export(ctx, &log, key, path)?;
    }
    Ok(ExitStatus::Success)
}

/// Re-reads the log until the signed head covers its last entry, for at
/// most [`SIGNATURE_CATCH_UP`].
fn wait_for_signature(dir: &Path, mut log: RunLog, key: Option<&PublicKey>) -> Result<RunLog> {
    let Some(key) = key else { return Ok(log) };
    let deadline = Instant::now() + SIGNATURE_CATCH_UP;
    while Instant::now() < deadline && !fully_signed(&log, key) && log.report.tamper.is_none() {
        std::thread::sleep(Duration::from_millis(100));
        log = read_run_log(dir, &log.run_id)?;
    }
    Ok(log)
}

fn fully_signed(log: &RunLog, key: &PublicKey) -> bool {
    match &log.head {
        Some(head) => matches!(
            check_signature(&log.run_id, &log.report, head, key),
            SignatureCheck::Signed { later: 0, .. }
        ),
        None => log.report.entries.is_empty(),
    }
}

struct Verdict {
    intact: bool,
    line: String,
    note: Option<String>,
}

/// The verdict on a run's log: the chain first, then its signed head
/// against `key` (this `MOAT_HOME`'s).
fn verdict(log: &RunLog, key: Option<&PublicKey>) -> Verdict {
    let count = log.report.entries.len();
    if let Some(tamper) = &log.report.tamper {
        return tampered(tamper);
    }
    let (Some(head), Some(key)) = (&log.head, key) else {
        return Verdict {
            intact: true,
            line: format!("INTACT: {count} entries, chain verified; no signed head yet"),
            note: (count > 0).then(|| {
                "the daemon signs the head within a second of each write and when the run is cleaned; \
                 without a signature, entries removed from the end would go unnoticed"
                    .to_string()
            }),
        };
    };
    match check_signature(&log.run_id, &log.report, head, key) {
        SignatureCheck::Bad(tamper) => tampered(&tamper),
        SignatureCheck::Signed { seq, later } => Verdict {
            intact: true,
            line: format!("INTACT: {count} entries, head seq {seq} signed by {key}"),
            note: (later > 0).then(|| format!("{later} newer entries are not signed yet (the run is live)")),
        },
        SignatureCheck::Unsigned => Verdict {
            intact: true,
            line: format!("INTACT: {count} entries, chain verified; unsigned"),
            note: None,
        },
    }
}

fn tampered(tamper: &moat_core::audit::Tamper) -> Verdict {
    Verdict {
        intact: false,
        line: tamper.to_string(),
        note: None,
    }
}

fn export(ctx: &Context, log: &RunLog, key: Option<PublicKey>, path: &Path) -> Result<()> {
    let text = String::from_utf8(log.bytes.clone()).context("the audit log is not UTF-8")?;
    let bundle = Bundle {
        format: BUNDLE_FORMAT.to_string(),
        run_id: log.run_id.clone(),
        lines: text.lines().map(str::to_string).collect(),
        signature: log.head.clone(),
        public_key_for_information: key.map(|k| k.to_string()).unwrap_or_default(),
    };
    let json = serde_json::to_vec_pretty(&bundle)?;
    moat_core::atomic::write_atomic(path, &json, 0o600).with_context(|| format!("writing {}", path.display()))?;
    ctx.printer.status(format!(
        "wrote the audit bundle of {} ({} entries) to {}",
        log.run_id,
        bundle.lines.len(),
        path.display()
    ));
    Ok(())
}

fn verify_bundle(
    ctx: &Context,
    file: &Path,
    key: Option<&str>,
    key_file: Option<&Path>,
    trust_embedded: bool,
) -> Result<ExitStatus> {
    let bundle = Bundle::read(file)?;
    let key = trusted_key(ctx, &bundle, key, key_file, trust_embedded)?;
    let report = verify_chain(&bundle.run_id, &bundle.log_bytes());
    let mut out = ctx.printer.stdout();
    print_entries(&mut out, &report.entries)?;
    let line = match (&report.tamper, &bundle.signature) {
        (Some(tamper), _) => Err(tamper.to_string()),
        (None, None) => Err(format!(
            "TAMPERED at seq {} (the bundle has no signed head: nothing vouches for it)",
            report.entries.len()
        )),
        (None, Some(head)) => match check_signature(&bundle.run_id, &report, head, &key) {
            SignatureCheck::Bad(tamper) => Err(tamper.to_string()),
            SignatureCheck::Signed { later: 0, seq } => Ok(format!(
                "INTACT: run {}, {} entries, head seq {seq} signed by {key}",
                bundle.run_id,
                report.entries.len()
            )),
            SignatureCheck::Signed { seq, .. } => Err(format!(
                "TAMPERED at seq {} (entries after the signed head, seq {seq}, are covered by no signature)",
                seq + 1
            )),
            SignatureCheck::Unsigned => Err("TAMPERED at seq 0 (no signature)".to_string()),
        },
    };
    let intact = line.is_ok();
    writeln!(out, "{}", line.unwrap_or_else(|e| e))?;
    out.flush()?;
    Ok(if intact {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// The key the bundle is checked against: the verifier's, or, only when
/// asked for explicitly, the one the bundle carries (with a warning).
fn trusted_key(
    ctx: &Context,
    bundle: &Bundle,
    key: Option<&str>,
    key_file: Option<&Path>,
    trust_embedded: bool,
) -> Result<PublicKey> {
    if let Some(text) = key {
        return Ok(PublicKey::parse(text)?);
    }
    if let Some(path) = key_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading the key file {}", path.display()))?;
        return Ok(PublicKey::parse(&text)?);
    }
    if trust_embedded {
        ctx.printer.warning(
            "checking against the key inside the bundle proves nothing: whoever altered the log could have \
             replaced that key too; pin the signer's key (`moat audit key` on the signing machine) and pass --key",
        );
        return Ok(PublicKey::parse(&bundle.public_key_for_information)?);
    }
    Err(CliError::new("a bundle is verified against a key you trust")
        .with_hint("pass --key ed25519:… (or --key-file F) as printed by `moat audit key` where the run was made")
        .into())
}

fn print_entries(out: &mut impl Write, entries: &[Entry]) -> std::io::Result<()> {
    for entry in entries {
        let time = entry.time.get(..19).unwrap_or(&entry.time).replace('T', " ");
        writeln!(
            out,
            "{:>4}  {time}  {:<20} {}",
            entry.seq,
            entry.kind,
            summary(&entry.data)
        )?;
    }
    Ok(())
}

/// `key=value` pairs of an entry's data, on one line.
fn summary(data: &Value) -> String {
    let Value::Object(map) = data else {
        return data.to_string();
    };
    map.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
