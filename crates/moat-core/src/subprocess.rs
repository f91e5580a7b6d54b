//! The one way moat runs another program: stdin closed, stdout and stderr
//! captured up to a cap, the whole run bounded by a timeout, and the
//! process killed when the caller stops waiting (timeout, cancellation,
//! drop). A program can be put in a process group of its own so that the
//! signal reaches its children too (sent with `nix`). Helper CLIs (`gh`,
//! `op`, `aws`), Apple's `container`, `mmdebstrap` and `iptables` all go
//! through here.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Bytes of stdout and of stderr kept by default.
pub const DEFAULT_OUTPUT_CAP: usize = 1024 * 1024;
/// Bytes of one stderr line handed to a line callback; the rest is cut.
const MAX_LINE_BYTES: usize = 4096;
const READ_CHUNK: usize = 8192;

/// Why a program could not be run to the end.
#[derive(Debug, thiserror::Error)]
pub enum SubprocessError {
    #[error("`{program}` is not installed (not found on PATH)")]
    NotFound { program: String },
    #[error("cannot run `{program}`: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("`{program}` did not finish within {after:?} and was killed")]
    TimedOut {
        program: String,
        /// The whole command line, for messages that name the call.
        command: String,
        after: Duration,
    },
    #[error("waiting for `{program}` failed: {source}")]
    Wait { program: String, source: io::Error },
}

impl SubprocessError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, SubprocessError::NotFound { .. })
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, SubprocessError::TimedOut { .. })
    }
}

/// What a finished program printed and how it exited.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    /// The first bytes of stdout, up to the cap.
    pub stdout: String,
    /// The last bytes of stderr, up to the cap (diagnostics come last).
    pub stderr: String,
    /// Whether either stream was longer than the cap.
    pub truncated: bool,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code, or `128 + signal` for a program killed by a signal.
    pub fn code(&self) -> i32 {
        exit_code(self.status)
    }
}

/// The exit code, or `128 + signal` for a program killed by a signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(-1)
}

/// A program to run, with its bounds.
#[derive(Clone, Debug)]
pub struct Subprocess {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    /// Bytes written to stdin (closed after them); none: stdin is empty.
    input: Option<Vec<u8>>,
    timeout: Duration,
    output_cap: usize,
    /// Run in a process group of its own, sent this signal when abandoned.
    group_signal: Option<Signal>,
}

impl Subprocess {
    /// `program` (a path, or a name looked up on `PATH`), given at most
    /// `timeout` to finish.
    pub fn new(program: impl Into<PathBuf>, timeout: Duration) -> Self {
        Subprocess {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            input: None,
            timeout,
            output_cap: DEFAULT_OUTPUT_CAP,
            group_signal: None,
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets `key` to `value` in the program's environment.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Writes `input` to the program's stdin, then closes it.
    pub fn stdin_bytes(mut self, input: Vec<u8>) -> Self {
        self.input = Some(input);
        self
    }

    /// Keeps at most `bytes` of stdout and of stderr.
    pub fn output_cap(mut self, bytes: usize) -> Self {
        self.output_cap = bytes;
        self
    }

    /// Runs the program in a process group of its own and, when the caller
    /// stops waiting, sends `signal` to the whole group instead of killing
    /// the program alone (so e.g. `mmdebstrap` can clean up and stop apt).
    pub fn own_process_group(mut self, signal: Signal) -> Self {
        self.group_signal = Some(signal);
        self
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The command line, for messages.
    pub fn command_line(&self) -> String {
        let mut line = self.program.display().to_string();
        for arg in &self.args {
            line.push(' ');
            line.push_str(&arg.to_string_lossy());
        }
        line
    }

    /// Runs to completion within the timeout.
    pub async fn run(&self) -> Result<Output, SubprocessError> {
        self.run_with_stderr_lines(|_| {}).await
    }

    /// Runs to completion within the timeout, handing each stderr line
    /// (cut at 4 KiB) to `on_line` as it arrives.
    pub async fn run_with_stderr_lines(&self, on_line: impl FnMut(&str) + Send) -> Result<Output, SubprocessError> {
        let mut running = self.spawn(Stdio::piped())?;
        let stdout = running.child.stdout.take();
        let stderr = running.child.stderr.take();
        let stdin = running.child.stdin.take();
        let cap = self.output_cap;
        let finish = async {
            let (_, stdout, stderr, status) = tokio::join!(
                write_input(stdin, self.input.as_deref()),
                read_capped(stdout, cap, Keep::Head, |_| {}),
                read_capped(stderr, cap, Keep::Tail, on_line),
                running.child.wait(),
            );
            (stdout, stderr, status)
        };
        let Ok((stdout, stderr, status)) = tokio::time::timeout(self.timeout, finish).await else {
            // Dropping `running` stops the program.
            return Err(SubprocessError::TimedOut {
                program: self.program.display().to_string(),
                command: self.command_line(),
                after: self.timeout,
            });
        };
        let status = status.map_err(|source| SubprocessError::Wait {
            program: self.program.display().to_string(),
            source,
        })?;
        running.finished();
        Ok(Output {
            status,
            stdout: String::from_utf8_lossy(&stdout.bytes).into_owned(),
            stderr: String::from_utf8_lossy(&stderr.bytes).into_owned(),
            truncated: stdout.truncated || stderr.truncated,
        })
    }

    /// Runs [`Subprocess::run`] from synchronous code, on a private runtime
    /// in a thread of its own (safe inside or outside a Tokio runtime).
    pub fn run_blocking(&self) -> Result<Output, SubprocessError> {
        let spawn_error = |source: io::Error| SubprocessError::Spawn {
            program: self.program.display().to_string(),
            source,
        };
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(spawn_error)?;
                    runtime.block_on(self.run())
                })
                .join()
                .unwrap_or_else(|_| Err(spawn_error(io::Error::other("the runner thread panicked"))))
        })
    }

    /// Starts a long-running program (e.g. `logs --follow`) and hands over
    /// its stdout; stderr is discarded and no timeout applies: dropping the
    /// returned [`Streaming`] stops the program.
    pub fn stream_stdout(&self) -> Result<Streaming, SubprocessError> {
        let mut running = self.spawn(Stdio::null())?;
        let stdout = running.child.stdout.take().ok_or_else(|| SubprocessError::Spawn {
            program: self.program.display().to_string(),
            source: io::Error::other("the process has no stdout pipe"),
        })?;
        Ok(Streaming {
            _running: running,
            stdout,
        })
    }

    fn spawn(&self, stderr: Stdio) -> Result<Running, SubprocessError> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(key, value)| (key, value)))
            .stdin(if self.input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(self.group_signal.is_none());
        if self.group_signal.is_some() {
            command.process_group(0);
        }
        let child = command.spawn().map_err(|source| {
            let program = self.program.display().to_string();
            match source.kind() {
                io::ErrorKind::NotFound => SubprocessError::NotFound { program },
                _ => SubprocessError::Spawn { program, source },
            }
        })?;
        let group = self.group_signal.and_then(|signal| {
            let pid = child.id().and_then(|pid| i32::try_from(pid).ok())?;
            Some(GroupGuard {
                group: Pid::from_raw(pid),
                signal,
            })
        });
        Ok(Running { child, group })
    }
}

/// A started program: killed (or its group signalled) when dropped
/// before it finished.
struct Running {
    child: Child,
    group: Option<GroupGuard>,
}

impl Running {
    /// The program exited: nothing is left to stop.
    fn finished(&mut self) {
        self.group = None;
    }
}

/// A long-running program's stdout; dropping it stops the program.
pub struct Streaming {
    _running: Running,
    stdout: ChildStdout,
}

impl Streaming {
    /// Reads the next chunk of stdout into `buffer` (0 at end of output).
    pub async fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.stdout.read(buffer).await
    }
}

/// Signals a process group when dropped.
struct GroupGuard {
    group: Pid,
    signal: Signal,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Err(err) = killpg(self.group, self.signal) {
            tracing::warn!(pgid = self.group.as_raw(), %err, "could not stop an abandoned process group");
        }
    }
}

/// Which end of an over-long stream is kept.
#[derive(Clone, Copy)]
enum Keep {
    Head,
    Tail,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Captured {
    fn push(&mut self, chunk: &[u8], cap: usize, keep: Keep) {
        match keep {
            Keep::Head => {
                let room = cap.saturating_sub(self.bytes.len());
                self.bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                self.truncated |= chunk.len() > room;
            }
            Keep::Tail => {
                self.bytes.extend_from_slice(chunk);
                if self.bytes.len() > cap {
                    let excess = self.bytes.len() - cap;
                    self.bytes.drain(..excess);
                    self.truncated = true;
                }
            }
        }
    }
}

/// Writes `input` and closes stdin. A program that exits without reading
/// it all is not an error here: its exit status tells.
async fn write_input(stdin: Option<ChildStdin>, input: Option<&[u8]>) {
    if let (Some(mut stdin), Some(input)) = (stdin, input)
        && let Err(err) = stdin.write_all(input).await
    {
        tracing::debug!(%err, "the program did not read all of its input");
    }
}

/// Reads `pipe` to its end (a read error ends it too), keeping `cap`
/// bytes and handing complete lines to `on_line`.
async fn read_capped(
    pipe: Option<impl AsyncRead + Unpin>,
    cap: usize,
    keep: Keep,
    mut on_line: impl FnMut(&str),
) -> Captured {
    let mut captured = Captured::default();
    let Some(mut pipe) = pipe else { return captured };
    let mut line = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        captured.push(&chunk[..n], cap, keep);
        for &byte in &chunk[..n] {
            if byte == b'\n' {
                on_line(&String::from_utf8_lossy(&line));
                line.clear();
            } else if line.len() < MAX_LINE_BYTES {
                line.push(byte);
            }
        }
    }
    if !line.is_empty() {
        on_line(&String::from_utf8_lossy(&line));
    }
    captured
}

/// Removes one trailing line ending (CLIs print a value plus `\n`).
pub fn strip_line_ending(output: &str) -> &str {
    let output = output.strip_suffix('\n').unwrap_or(output);
    output.strip_suffix('\r').unwrap_or(output)
}

/// The start of a program's stderr, for an error message.
pub fn stderr_excerpt(stderr: &str) -> String {
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
    use std::time::Instant;

    use super::*;

    fn sh(script: &str) -> Subprocess {
        Subprocess::new("sh", Duration::from_secs(10)).args(["-c", script])
    }

    #[tokio::test]
    async fn captures_output_and_status() {
        let out = sh("echo out; echo err >&2; exit 3").run().await.unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.code(), 3);
        assert!(!out.success() && !out.truncated);
    }

    #[tokio::test]
    async fn a_signal_shows_as_128_plus_its_number() {
        let out = sh("kill -TERM $$").run().await.unwrap();
        assert_eq!(out.code(), 128 + 15);
    }

    #[tokio::test]
    async fn a_slow_command_is_killed_at_the_deadline() {
        let start = Instant::now();
        let err = Subprocess::new("sleep", Duration::from_millis(200))
            .args(["5"])
            .run()
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(err.to_string().contains("`sleep` did not finish"), "{err}");
        let SubprocessError::TimedOut { command, .. } = err else {
            unreachable!()
        };
        assert_eq!(command, "sleep 5");
    }

    #[test]
    fn blocking_runs_work_outside_and_inside_a_runtime() {
        let err = Subprocess::new("sleep", Duration::from_millis(200))
            .args(["5"])
            .run_blocking()
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let out = runtime.block_on(async { sh("printf hi").run_blocking() }).unwrap();
        assert_eq!(out.stdout, "hi");
    }

    #[tokio::test]
    async fn a_missing_program_is_reported_as_not_installed() {
        let err = Subprocess::new("moat-test-no-such-program", Duration::from_secs(1))
            .run()
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[tokio::test]
    async fn output_beyond_the_cap_is_dropped_keeping_stdout_head_and_stderr_tail() {
        let out = sh("printf 0123456789; printf abcdefghij >&2")
            .output_cap(4)
            .run()
            .await
            .unwrap();
        assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("0123", "ghij"));
        assert!(out.truncated);
    }

    #[tokio::test]
    async fn a_flood_of_output_does_not_grow_memory_or_block_the_program() {
        let out = sh("head -c 20000000 /dev/zero; echo done >&2")
            .output_cap(1024)
            .run()
            .await
            .unwrap();
        assert_eq!(out.stdout.len(), 1024);
        assert_eq!(out.stderr, "done\n");
    }

    #[tokio::test]
    async fn stderr_lines_arrive_one_by_one() {
        let mut lines = Vec::new();
        sh("echo 'I: one' >&2; echo 'I: two' >&2; printf tail >&2")
            .run_with_stderr_lines(|line| lines.push(line.to_string()))
            .await
            .unwrap();
        assert_eq!(lines, ["I: one", "I: two", "tail"]);
    }

    #[tokio::test]
    async fn an_abandoned_group_is_signalled_children_included() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child-alive");
        let script = format!("(sleep 1; touch {}) & wait", marker.display());
        let err = Subprocess::new("sh", Duration::from_millis(200))
            .args(["-c", &script])
            .own_process_group(Signal::SIGKILL)
            .run()
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the grandchild outlived the abandoned run");
    }

    #[tokio::test]
    async fn dropping_a_stream_stops_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("still-running");
        let script = format!("printf a; sleep 1; touch {}", marker.display());
        let mut stream = Subprocess::new("sh", Duration::ZERO)
            .args(["-c", &script])
            .stream_stdout()
            .unwrap();
        let mut buffer = [0u8; 8];
        assert_eq!(stream.read(&mut buffer).await.unwrap(), 1);
        drop(stream);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the program outlived its stream");
    }

    #[tokio::test]
    async fn input_and_environment_reach_the_program() {
        let out = sh("printf \"$GREETING \"; cat")
            .env("GREETING", "hello")
            .stdin_bytes(b"world".to_vec())
            .run()
            .await
            .unwrap();
        assert_eq!(out.stdout, "hello world");
    }

    #[test]
    fn line_endings_and_long_stderr() {
        assert_eq!(strip_line_ending("value\n"), "value");
        assert_eq!(strip_line_ending("value\r\n"), "value");
        assert_eq!(strip_line_ending("value \n\n"), "value \n");
        assert_eq!(stderr_excerpt(&"x".repeat(400)).chars().count(), 301);
    }
}
