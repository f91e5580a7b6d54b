//! Running a helper CLI (`gh`, `op`, `aws`) with a deadline: stdin closed,
//! output captured, the process killed when the deadline passes.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What a finished helper printed.
#[derive(Debug)]
pub(crate) struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    #[error("`{program}` is not installed (not found on PATH)")]
    NotFound { program: PathBuf },
    #[error("cannot run `{program}`: {source}")]
    Io { program: PathBuf, source: io::Error },
    #[error("`{program}` did not finish within {after:?} and was killed")]
    TimedOut { program: PathBuf, after: Duration },
}

/// Runs `program args…`, waiting at most `timeout`.
pub(crate) fn run_bounded(program: &Path, args: &[&str], timeout: Duration) -> Result<CommandOutput, CommandError> {
    let io_error = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => CommandError::NotFound {
            program: program.to_path_buf(),
        },
        _ => CommandError::Io {
            program: program.to_path_buf(),
            source,
        },
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_error)?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_until(&mut child, Instant::now() + timeout).map_err(io_error)?;
    let Some(status) = status else {
        // Reader threads are left to finish on their own: a grandchild may
        // still hold the pipes open.
        return Err(CommandError::TimedOut {
            program: program.to_path_buf(),
            after: timeout,
        });
    };
    Ok(CommandOutput {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

/// The exit status, or `None` after killing a child that outlived `deadline`.
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> Option<JoinHandle<Vec<u8>>> {
    pipe.map(|mut pipe| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    })
}

fn collect(reader: Option<JoinHandle<Vec<u8>>>) -> String {
    let bytes = reader.and_then(|handle| handle.join().ok()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Removes one trailing line ending (CLIs print the value plus `\n`).
pub(crate) fn strip_line_ending(output: &str) -> &str {
    let output = output.strip_suffix('\n').unwrap_or(output);
    output.strip_suffix('\r').unwrap_or(output)
}

/// The first lines of a helper's stderr, for an error message.
pub(crate) fn stderr_excerpt(stderr: &str) -> String {
    const MAX_CHARS: usize = 300;
    let trimmed = stderr.trim();
    if trimmed.chars().count() <= MAX_CHARS {
        return trimmed.to_owned();
    }
    let cut: String = trimmed.chars().take(MAX_CHARS).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let out = run_bounded(
            Path::new("sh"),
            &["-c", "echo out; echo err >&2; exit 3"],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    fn a_slow_command_is_killed_at_the_deadline() {
        let start = Instant::now();
        let err = run_bounded(Path::new("sleep"), &["5"], Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, CommandError::TimedOut { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(err.to_string().contains("`sleep` did not finish"), "{err}");
    }

    #[test]
    fn a_missing_program_is_reported_as_not_installed() {
        let err = run_bounded(Path::new("moat-test-no-such-program"), &[], Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, CommandError::NotFound { .. }), "{err}");
    }

    #[test]
    fn line_endings_and_long_stderr() {
        assert_eq!(strip_line_ending("value\n"), "value");
        assert_eq!(strip_line_ending("value\r\n"), "value");
        assert_eq!(strip_line_ending("value \n\n"), "value \n");
        assert_eq!(stderr_excerpt(&"x".repeat(400)).chars().count(), 301);
    }
}
