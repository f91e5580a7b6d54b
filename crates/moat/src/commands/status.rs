//! `moat status`: whether the runtime answers, whether the daemon runs
//! (asked, never started) and the memory and files it uses, the live runs
//! on record, the disk used by run records, and warnings about what looks
//! wrong.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Result;
use chrono::{DateTime, Utc};
use moat_api::{ClientError, DaemonClient};
use moat_api::{Health, RunView};
use moat_core::store::{RunEntry, RunStore};
use moat_core::{RunId, RunState};
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::context::{Context, ExitStatus};
use crate::live;
use crate::moatd;
use moat_api::RuntimeCheck;

#[derive(Serialize)]
struct Status {
    runtimes: Vec<RuntimeCheck>,
    daemon: DaemonState,
    live_runs: Vec<LiveRun>,
    disk: DiskUse,
    warnings: Vec<String>,
}

#[derive(Serialize)]
struct DaemonState {
    running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<Health>,
    /// Why the daemon could not be asked, when it is not simply absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

/// A run whose record is in a non-terminal state.
#[derive(Serialize)]
struct LiveRun {
    id: RunId,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    state: RunState,
    created_at: DateTime<Utc>,
    /// Whether the running daemon supervises it (`None`: no daemon to ask).
    #[serde(skip_serializing_if = "Option::is_none")]
    supervised: Option<bool>,
    /// Its `ports:` endpoints' URLs, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    endpoints: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct DiskUse {
    runs_dir: String,
    runs: usize,
    bytes: u64,
}

pub fn status(ctx: &Context, args: &StatusArgs) -> Result<ExitStatus> {
    let store = ctx.store()?;
    let status = live::block_on(gather(&store))?;
    let mut out = ctx.printer.stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &status)?;
        writeln!(out)?;
    } else {
        print(&status, &mut out)?;
    }
    out.flush()?;
    Ok(if status.runtimes.iter().any(|r| r.available) {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

async fn gather(store: &RunStore) -> Result<Status> {
    let runtime = moatd::runtime_check(store.home()).await;
    let client = DaemonClient::new(store.home().daemon_socket());
    let (daemon, supervised) = ask_daemon(&client).await;
    let entries = store.list()?;
    let mut warnings = Vec::new();
    if !runtime.available {
        warnings.push(format!("runtime unreachable: {}", runtime.describe()));
    }
    if let Some(problem) = &daemon.problem {
        warnings.push(format!("the daemon does not answer: {problem}"));
    }
    let live_runs = live_runs(&entries, supervised.as_deref());
    warnings.extend(run_warnings(&entries, &live_runs, &daemon));
    let runs_dir = store.home().runs_dir();
    let disk = DiskUse {
        runs_dir: runs_dir.display().to_string(),
        runs: entries.len(),
        bytes: bytes_under(&runs_dir),
    };
    Ok(Status {
        runtimes: vec![runtime],
        daemon,
        live_runs,
        disk,
        warnings,
    })
}

/// The daemon's health and the runs it supervises; never starts it.
async fn ask_daemon(client: &DaemonClient) -> (DaemonState, Option<Vec<RunView>>) {
    match client.health().await {
        Ok(health) => {
            let runs = client.list_runs().await.ok();
            let state = DaemonState {
                running: true,
                health: Some(health),
                problem: None,
            };
            (state, runs)
        }
        Err(ClientError::NotRunning(_)) => (
            DaemonState {
                running: false,
                health: None,
                problem: None,
            },
            None,
        ),
        Err(e) => (
            DaemonState {
                running: false,
                health: None,
                problem: Some(e.to_string()),
            },
            None,
        ),
    }
}

fn live_runs(entries: &[RunEntry], supervised: Option<&[RunView]>) -> Vec<LiveRun> {
    entries
        .iter()
        .filter_map(|entry| match entry {
            RunEntry::Readable(meta) if !meta.state.is_terminal() => Some(LiveRun {
                id: meta.id.clone(),
                name: meta.name.clone(),
                state: meta.state,
                created_at: meta.created_at,
                supervised: supervised.map(|views| views.iter().any(|v| v.run_id == meta.id)),
                endpoints: meta.endpoints.clone(),
            }),
            _ => None,
        })
        .collect()
}

fn run_warnings(entries: &[RunEntry], live_runs: &[LiveRun], daemon: &DaemonState) -> Vec<String> {
    let mut warnings = Vec::new();
    for run in live_runs {
        if !daemon.running {
            warnings.push(format!(
                "run {} is {} but no daemon is running; `moat daemon restart` adopts or records it",
                run.id, run.state
            ));
        } else if run.supervised == Some(false) {
            warnings.push(format!(
                "run {} is {} on record but the daemon does not supervise it",
                run.id, run.state
            ));
        }
    }
    for entry in entries {
        if let RunEntry::Unreadable { id, dir, reason } = entry {
            warnings.push(format!("run {id} at {} is unreadable: {reason}", dir.display()));
        }
    }
    warnings
}

/// Sum of the sizes of the files under `dir` (symlinks not followed;
/// unreadable entries count as empty).
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => bytes_under(&entry.path()),
            Ok(meta) if meta.is_file() => meta.len(),
            _ => 0,
        })
        .sum()
}

fn print(s: &Status, out: &mut impl Write) -> std::io::Result<()> {
    for runtime in &s.runtimes {
        writeln!(out, "runtime: {}", runtime.describe())?;
    }
    match &s.daemon.health {
        Some(h) => writeln!(
            out,
            "daemon: running, pid {}, version {}, {} live run(s){}",
            h.pid,
            h.version,
            h.live_runs,
            daemon_usage(h)
        )?,
        None => writeln!(out, "daemon: not running (starts on demand)")?,
    }
    writeln!(out, "live runs: {}", s.live_runs.len())?;
    for run in &s.live_runs {
        let name = run.name.as_deref().unwrap_or("-");
        let since = run.created_at.format("%Y-%m-%d %H:%M:%S UTC");
        writeln!(out, "  {}  {name}  {}  since {since}", run.id, run.state)?;
        for (endpoint, url) in &run.endpoints {
            writeln!(out, "    {endpoint}: {url}")?;
        }
    }
    writeln!(
        out,
        "disk: {} in {} run record(s) under {}",
        human_bytes(s.disk.bytes),
        s.disk.runs,
        s.disk.runs_dir
    )?;
    for warning in &s.warnings {
        writeln!(out, "warning: {warning}")?;
    }
    Ok(())
}

/// `, memory 14.2 MiB, 31 of 65536 files open`: what the daemon said of
/// its own use (an older daemon says nothing).
fn daemon_usage(h: &Health) -> String {
    let memory = h.rss_bytes.map(|rss| format!(", memory {}", human_bytes(rss)));
    let files = match (h.open_files, h.open_files_limit) {
        (Some(open), Some(limit)) => Some(format!(", {open} of {limit} files open")),
        (Some(open), None) => Some(format!(", {open} files open")),
        _ => None,
    };
    [memory, files].into_iter().flatten().collect()
}

pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_picks_the_largest_whole_unit() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn bytes_under_sums_nested_files() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("moat-status-test");
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("x"), vec![0u8; 10]).unwrap();
        std::fs::write(dir.join("a/b/y"), vec![0u8; 32]).unwrap();
        assert_eq!(bytes_under(&dir), 42);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(bytes_under(&dir), 0);
    }
}
