//! `moat trace`: the run's proxied requests from `network.jsonl`, as a
//! table, JSON lines (`--json`) or an HTTP Archive (`--har FILE`);
//! `--blocked` keeps only what was refused, or what a shadow run let
//! through that strict would have refused (docs/policy.md). Records
//! never hold header values or bodies, so nothing here can leak a secret.

use std::io::{BufRead, BufReader, Write};

use anyhow::{Context as _, Result};
use moat_core::paths::run_files;
use serde_json::{Value, json};

use crate::cli::TraceArgs;
use crate::context::{Context, ExitStatus};
use crate::printer::Verbosity;

pub fn trace(ctx: &Context, args: &TraceArgs) -> Result<ExitStatus> {
    let store = ctx.store()?;
    let run_id = store.resolve(args.run.as_deref(), false)?;
    let path = store.run_dir(&run_id).join(run_files::NETWORK);
    let mut records = read_records(&path)?;
    if args.blocked {
        records.retain(is_blocked);
    }
    if let Some(har) = &args.har {
        let archive = serde_json::to_vec_pretty(&har_of(&records))?;
        moat_core::atomic::write_atomic(har, &archive, 0o600).with_context(|| format!("writing {}", har.display()))?;
        ctx.printer.status(format!(
            "wrote {} request(s) of {run_id} to {}",
            records.len(),
            har.display()
        ));
        return Ok(ExitStatus::Success);
    }
    let mut out = ctx.printer.stdout();
    if args.json {
        for record in &records {
            writeln!(out, "{record}")?;
        }
    } else {
        let verbose = ctx.printer.verbosity() == Verbosity::Verbose;
        print_table(&mut out, &records, verbose, args.blocked)?;
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}

/// Refused, or (shadow runs) allowed where strict would have refused it.
fn is_blocked(record: &Value) -> bool {
    record["decision"] == "deny" || record["would_block"].is_string()
}

/// What the DECISION column says: `would-deny` for a shadow run's request
/// that strict would have refused.
fn decision_of(record: &Value) -> &str {
    if record["would_block"].is_string() && record["decision"] == "allow" {
        return "would-deny";
    }
    record["decision"].as_str().unwrap_or("-")
}

/// Every record of the file (a missing file is an empty trace); lines that
/// are not JSON are skipped.
pub(crate) fn read_records(path: &std::path::Path) -> Result<Vec<Value>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut records = Vec::new();
    for line in BufReader::new(file).lines() {
        if let Ok(record) = serde_json::from_str::<Value>(&line?) {
            records.push(record);
        }
    }
    Ok(records)
}

fn print_table(out: &mut impl Write, records: &[Value], verbose: bool, rules: bool) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<8} {:<7} {:<6} {:<10} {:>9}  {:<12} URL",
        "TIME", "METHOD", "STATUS", "DECISION", "MS", "GRANTS"
    )?;
    for r in records {
        let time = r["time"].as_str().and_then(|t| t.get(11..19)).unwrap_or("-");
        let status = r["status"].as_u64().map_or_else(|| "-".into(), |s| s.to_string());
        let grants = r["grants"]
            .as_array()
            .map(|g| g.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","));
        writeln!(
            out,
            "{:<8} {:<7} {:<6} {:<10} {:>9.1}  {:<12} {}",
            time,
            r["method"].as_str().unwrap_or("-"),
            status,
            decision_of(r),
            r["duration_ms"].as_f64().unwrap_or(0.0),
            grants.filter(|g| !g.is_empty()).unwrap_or_else(|| "-".into()),
            r["url"].as_str().unwrap_or("-"),
        )?;
        if rules && !verbose {
            let rule = r["would_block"].as_str().or(r["rule"].as_str()).unwrap_or("-");
            writeln!(out, "         rule: {rule}")?;
        }
        if verbose {
            writeln!(
                out,
                "         request {} rule {}{} bytes out {} in {}{}",
                r["request_id"].as_str().unwrap_or("-"),
                r["rule"].as_str().unwrap_or("-"),
                r["would_block"]
                    .as_str()
                    .map(|rule| format!(" (strict would refuse: {rule})"))
                    .unwrap_or_default(),
                r["bytes_out"],
                r["bytes_in"],
                r["error"].as_str().map(|e| format!(" error: {e}")).unwrap_or_default(),
            )?;
        }
    }
    Ok(())
}

/// A minimal HTTP Archive 1.2 (headers and bodies are not recorded).
fn har_of(records: &[Value]) -> Value {
    let entries: Vec<Value> = records
        .iter()
        .map(|r| {
            let time = r["duration_ms"].as_f64().unwrap_or(0.0);
            json!({
                "startedDateTime": r["time"],
                "time": time,
                "request": {
                    "method": r["method"], "url": r["url"], "httpVersion": "HTTP/1.1",
                    "headers": [], "queryString": [], "cookies": [], "headersSize": -1, "bodySize": r["bytes_out"],
                },
                "response": {
                    "status": r["status"].as_u64().unwrap_or(0), "statusText": "", "httpVersion": "HTTP/1.1",
                    "headers": [], "cookies": [], "content": { "size": r["bytes_in"], "mimeType": "" },
                    "redirectURL": "", "headersSize": -1, "bodySize": r["bytes_in"],
                },
                "cache": {},
                "timings": { "send": 0, "wait": time, "receive": 0 },
                "comment": format!("moat: {} ({})", r["decision"].as_str().unwrap_or("-"), r["rule"].as_str().unwrap_or("-")),
            })
        })
        .collect();
    json!({ "log": { "version": "1.2", "creator": { "name": "moat", "version": env!("CARGO_PKG_VERSION") }, "entries": entries } })
}
