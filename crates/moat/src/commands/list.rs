//! `moat list`: runs newest first, read straight from the run store (no
//! daemon); without `--all`, only the records it may show are read (the
//! store's list index knows the older finished runs). Failed runs are listed like any other, and a run whose metadata
//! cannot be read is shown as `unreadable` rather than hidden (cli.md, "What
//! the Go version got wrong").

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use chrono::{DateTime, Utc};
use moat_core::RunState;
use moat_core::env_vars;
use moat_core::store::RunEntry;
use serde::Serialize;

use crate::cli::ListArgs;
use crate::context::{Context, ExitStatus};
use crate::printer::Style;

/// Without `--all`: live runs plus this many of the most recent ones.
const RECENT_RUNS: usize = 20;

/// One run in `--json` output. Every key is always present (null when
/// unknown) so that scripts can rely on the shape.
#[derive(Debug, Serialize)]
struct RunRow {
    id: String,
    name: Option<String>,
    runtime: Option<String>,
    /// A run state, or `unreadable`.
    state: String,
    exit_code: Option<i64>,
    failure: Option<String>,
    image: Option<String>,
    workspace: Option<PathBuf>,
    created_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    exited_at: Option<DateTime<Utc>>,
    /// Why the run's metadata could not be read.
    error: Option<String>,
    /// A live run's `ports:` endpoints' URLs, by name.
    endpoints: BTreeMap<String, String>,
}

impl RunRow {
    fn from_entry(entry: RunEntry) -> Self {
        match entry {
            RunEntry::Readable(meta) => RunRow {
                endpoints: if meta.state.is_terminal() {
                    BTreeMap::new()
                } else {
                    meta.endpoints
                },
                id: meta.id.to_string(),
                name: meta.name,
                runtime: Some(meta.runtime),
                state: meta.state.to_string(),
                exit_code: meta.exit_code,
                failure: meta.failure,
                image: Some(meta.image),
                workspace: Some(meta.workspace),
                created_at: Some(meta.created_at),
                started_at: meta.started_at,
                exited_at: meta.exited_at,
                error: None,
            },
            RunEntry::Unreadable { id, reason, .. } => RunRow {
                id: id.to_string(),
                name: None,
                runtime: None,
                state: "unreadable".into(),
                exit_code: None,
                failure: None,
                image: None,
                workspace: None,
                created_at: None,
                started_at: None,
                exited_at: None,
                error: Some(reason),
                endpoints: BTreeMap::new(),
            },
        }
    }
}

pub fn list(ctx: &Context, args: &ListArgs) -> Result<ExitStatus> {
    let store = ctx.store()?;
    let (entries, total) = if args.all {
        let entries = store.list()?;
        let total = entries.len();
        (entries, total)
    } else {
        let listing = store.list_recent(RECENT_RUNS)?;
        (listing.entries, listing.total)
    };
    let shown: Vec<RunRow> = select(entries, args.all).into_iter().map(RunRow::from_entry).collect();
    let mut out = ctx.printer.stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &shown)?;
        writeln!(out)?;
    } else {
        write_table(ctx, &mut out, &shown, Utc::now())?;
    }
    out.flush()?;
    if !args.json && shown.len() < total {
        ctx.printer.status(format!(
            "{} older runs not shown; `moat list --all` shows every run",
            total - shown.len()
        ));
    }
    Ok(ExitStatus::Success)
}

/// Every run with `all`; otherwise the most recent ones, every live run and
/// every unreadable one (which needs attention).
fn select(entries: Vec<RunEntry>, all: bool) -> Vec<RunEntry> {
    if all {
        return entries;
    }
    entries
        .into_iter()
        .enumerate()
        .filter(|(i, entry)| {
            *i < RECENT_RUNS
                || match entry {
                    RunEntry::Readable(meta) => !meta.state.is_terminal(),
                    RunEntry::Unreadable { .. } => true,
                }
        })
        .map(|(_, entry)| entry)
        .collect()
}

const HEADERS: [&str; 7] = ["NAME", "RUN ID", "RUNTIME", "STATE", "EXIT", "AGE", "WORKSPACE"];

fn write_table(ctx: &Context, out: &mut impl Write, rows: &[RunRow], now: DateTime<Utc>) -> std::io::Result<()> {
    let home = env_vars::read_os_non_empty(env_vars::HOME).map(PathBuf::from);
    let cells: Vec<[String; 7]> = rows.iter().map(|row| table_cells(row, now, home.as_deref())).collect();
    let mut widths = HEADERS.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = HEADERS.iter().map(|h| h.to_string()).collect();
    write_row(out, &widths, &header, |_, text| {
        ctx.printer.paint_stdout(Style::Bold, text)
    })?;
    for (row, cells) in rows.iter().zip(&cells) {
        write_row(out, &widths, cells, |column, text| match column {
            3 => match state_style(text) {
                Some(style) => ctx.printer.paint_stdout(style, text),
                None => text.to_string(),
            },
            _ => text.to_string(),
        })?;
        for (endpoint, url) in &row.endpoints {
            writeln!(out, "  {endpoint}: {url}")?;
        }
    }
    Ok(())
}

/// Pads every column but the last, then lets `paint` colour the padded text.
fn write_row(
    out: &mut impl Write,
    widths: &[usize; 7],
    cells: &[String],
    paint: impl Fn(usize, &str) -> String,
) -> std::io::Result<()> {
    let last = cells.len() - 1;
    let mut line = String::new();
    for (column, cell) in cells.iter().enumerate() {
        if column == last {
            line.push_str(&paint(column, cell));
        } else {
            let padding = widths[column] - cell.chars().count();
            line.push_str(&paint(column, cell));
            line.push_str(&" ".repeat(padding + 2));
        }
    }
    writeln!(out, "{}", line.trim_end())
}

fn table_cells(row: &RunRow, now: DateTime<Utc>, home: Option<&Path>) -> [String; 7] {
    let dash = || "-".to_string();
    [
        row.name.clone().unwrap_or_else(dash),
        row.id.clone(),
        row.runtime.clone().unwrap_or_else(dash),
        row.state.clone(),
        row.exit_code.map_or_else(dash, |c| c.to_string()),
        row.created_at.map_or_else(dash, |t| age(now, t)),
        row.workspace
            .as_deref()
            .map_or_else(dash, |w| display_workspace(w, home)),
    ]
}

fn state_style(state: &str) -> Option<Style> {
    match state {
        "running" => Some(Style::Green),
        "failed" | "unreadable" => Some(Style::Red),
        s if s == RunState::Exited.as_str() => Some(Style::Dim),
        _ => None,
    }
}

/// `42s`, `5m`, `3h`, `12d`: the largest whole unit, Docker-style.
fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The workspace with the home directory shown as `~`.
fn display_workspace(workspace: &Path, home: Option<&Path>) -> String {
    match home.and_then(|h| workspace.strip_prefix(h).ok()) {
        Some(rest) if rest.as_os_str().is_empty() => "~".into(),
        Some(rest) => format!("~/{}", rest.display()),
        None => workspace.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn ages_use_the_largest_whole_unit() {
        let now = Utc::now();
        let ago = |secs| age(now, now - Duration::seconds(secs));
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(125), "2m");
        assert_eq!(ago(3 * 3600 + 5), "3h");
        assert_eq!(ago(47 * 3600), "47h");
        assert_eq!(ago(5 * 86_400), "5d");
        assert_eq!(age(now, now + Duration::seconds(30)), "0s");
    }

    #[test]
    fn workspaces_under_home_use_a_tilde() {
        let home = Path::new("/home/u");
        assert_eq!(display_workspace(Path::new("/home/u/src/x"), Some(home)), "~/src/x");
        assert_eq!(display_workspace(Path::new("/home/u"), Some(home)), "~");
        assert_eq!(display_workspace(Path::new("/home/uv"), Some(home)), "/home/uv");
        assert_eq!(display_workspace(Path::new("/srv"), None), "/srv");
    }
}
