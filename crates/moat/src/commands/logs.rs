//! `moat logs [RUN]`: a run's output from its `logs.jsonl`, read straight
//! from the run store. `-n N` is the last N lines (the Go version printed
//! the first N), `-f` follows until the run's state is terminal; stdout
//! lines go to stdout and stderr lines to stderr, in the order they arrived.

use std::io::{self, Write};

use anyhow::{Context as _, Result};
use moat_core::logs::{self, LogFollower, LogRecord, Stream};
use moat_core::paths::run_files;
use moat_core::store::RunStore;
use moat_core::{RunId, RunMetadata};

use crate::cli::LogsArgs;
use crate::context::{Context, ExitStatus};

pub fn logs(ctx: &Context, args: &LogsArgs) -> Result<ExitStatus> {
    let store = ctx.store()?;
    let id = store.resolve(args.run.as_deref(), false)?;
    let path = store.run_dir(&id).join(run_files::LOGS);
    let mut sink = Sink::new(args);
    let mut malformed = 0;
    let start = match args.lines {
        Some(n) => {
            let tail = logs::tail(&path, n).with_context(|| format!("reading {}", path.display()))?;
            malformed += tail.malformed;
            for record in tail.records {
                sink.write(record)?;
            }
            tail.end_offset
        }
        None => 0,
    };
    let mut follower = LogFollower::new(&path, start);
    let read = |f: &mut LogFollower, sink: &mut Sink| -> io::Result<()> {
        if args.follow {
            f.follow(|| run_finished(&store, &id), |record| sink.write(record))
        } else {
            f.read_available(&mut |record| sink.write(record)).map(drop)
        }
    };
    if args.lines.is_none() || args.follow {
        read(&mut follower, &mut sink).with_context(|| format!("reading {}", path.display()))?;
        malformed += follower.malformed();
    }
    sink.flush()?;
    if malformed > 0 {
        ctx.printer
            .warning(format!("skipped {malformed} malformed lines in {}", path.display()));
    }
    Ok(ExitStatus::Success)
}

/// Whether following should stop: the run ended, or its record is gone.
fn run_finished(store: &RunStore, id: &RunId) -> bool {
    store
        .load(id)
        .map_or(true, |meta: RunMetadata| meta.state.is_terminal())
}

/// Where records go: each stream to its own file descriptor, or JSON lines.
struct Sink {
    stdout: io::BufWriter<io::Stdout>,
    stderr: io::Stderr,
    json: bool,
    timestamps: bool,
    follow: bool,
}

impl Sink {
    fn new(args: &LogsArgs) -> Self {
        Sink {
            stdout: io::BufWriter::new(io::stdout()),
            stderr: io::stderr(),
            json: args.json,
            timestamps: args.timestamps,
            follow: args.follow,
        }
    }

    fn write(&mut self, record: LogRecord) -> io::Result<()> {
        if self.json {
            serde_json::to_writer(&mut self.stdout, &record)?;
            writeln!(self.stdout)?;
        } else {
            let line = if self.timestamps {
                format!(
                    "{} {}",
                    record.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    record.line
                )
            } else {
                record.line
            };
            match record.stream {
                Stream::Stdout => writeln!(self.stdout, "{line}")?,
                Stream::Stderr => {
                    // Keep the interleaving: what went to stdout before this
                    // line must appear first.
                    self.stdout.flush()?;
                    writeln!(self.stderr, "{line}")?;
                }
            }
        }
        if self.follow {
            self.stdout.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stdout.flush()
    }
}
