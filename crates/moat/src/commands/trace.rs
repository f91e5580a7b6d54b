//! `moat trace`: the run's proxied requests from `network.jsonl`, as a
//! table, JSON lines (`--json`) or an HTTP Archive (`--har FILE`). Records
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
    let records = read_records(&path)?;
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
        print_table(&mut out, &records, ctx.printer.verbosity() == Verbosity::Verbose)?;
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}

/// Every record of the file (a missing file is an empty trace); lines that
/// are not JSON are skipped.
fn read_records(path: &std::path::Path) -> Result<Vec<Value>> {
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

fn print_table(out: &mut impl Write, records: &[Value], verbose: bool) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<8} {:<7} {:<6} {:<9} {:>9}  {:<12} URL",
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
            "{:<8} {:<7} {:<6} {:<9} {:>9.1}  {:<12} {}",
            time,
            r["method"].as_str().unwrap_or("-"),
            status,
            r["decision"].as_str().unwrap_or("-"),
            r["duration_ms"].as_f64().unwrap_or(0.0),
            grants.filter(|g| !g.is_empty()).unwrap_or_else(|| "-".into()),
            r["url"].as_str().unwrap_or("-"),
        )?;
        if verbose {
            writeln!(
                out,
                "         request {} rule {} bytes out {} in {}{}",
                r["request_id"].as_str().unwrap_or("-"),
                r["rule"].as_str().unwrap_or("-"),
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
